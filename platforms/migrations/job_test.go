package migrations

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"rollbot/platforms"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

// TestDownJob checks the Job that runs `migrate down` with the bad
// release's image: never retried, bounded, kept for the postmortem, the
// DSN only as a secretKeyRef, the ROLLBOT_* variables for $(NAME).
func TestDownJob(t *testing.T) {
	cfg := DownConfig{
		Kind:           DownKubernetesJob,
		Namespace:      "prod",
		Command:        []string{"migrate", "-path", "/migrations", "-database", "$(DATABASE_URL)", "down", "$(ROLLBOT_STEPS)"},
		Env:            map[string]string{"TZ": "UTC", "ROLLBOT_STEPS": "override-not-allowed"},
		SecretEnv:      map[string]SecretRef{"DATABASE_URL": {Secret: "myapp-db", Key: "migrate_url"}},
		EnvFromSecret:  "myapp-extra",
		ServiceAccount: "myapp-migrate",
		Timeout:        5 * time.Minute,
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	image := cfg.ImageFor("registry.example/myapp:v2-bad", "registry.example/myapp:v1")
	if image != "registry.example/myapp:v2-bad" {
		t.Fatalf("ImageFor default = %s, want the bad release's image", image)
	}
	rep := Report{Tool: ToolGolangMigrate, Steps: 2, Target: "2", Current: "4"}
	job := DownJob(cfg, image, rep.DownVars())

	if job.Namespace != "prod" || job.GenerateName != "rollbot-db-down-" || job.Labels[LabelManagedBy] != "rollbot" {
		t.Errorf("metadata %+v", job.ObjectMeta)
	}
	s := job.Spec
	if *s.BackoffLimit != 0 || *s.Completions != 1 || *s.Parallelism != 1 {
		t.Errorf("a down Job must run once: backoffLimit %d completions %d parallelism %d", *s.BackoffLimit, *s.Completions, *s.Parallelism)
	}
	if *s.ActiveDeadlineSeconds != 300 || *s.TTLSecondsAfterFinished != int32(KeepFinishedJob/time.Second) {
		t.Errorf("deadline %d ttl %d", *s.ActiveDeadlineSeconds, *s.TTLSecondsAfterFinished)
	}
	p := s.Template.Spec
	if p.RestartPolicy != corev1.RestartPolicyNever || p.ServiceAccountName != "myapp-migrate" || !*p.AutomountServiceAccountToken {
		t.Errorf("pod spec %+v", p)
	}
	if len(p.Containers) != 1 {
		t.Fatalf("%d containers", len(p.Containers))
	}
	c := p.Containers[0]
	if c.Image != image || !slices.Equal(c.Command, cfg.Command) || c.Args != nil {
		t.Errorf("container image %s command %q args %q", c.Image, c.Command, c.Args)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		if _, dup := env[e.Name]; dup {
			t.Errorf("variable %s set twice", e.Name)
		}
		env[e.Name] = e
	}
	if env["ROLLBOT_STEPS"].Value != "override-not-allowed" {
		// cfg.Env wins over the computed variables: the team's config is explicit.
		t.Errorf("ROLLBOT_STEPS = %q", env["ROLLBOT_STEPS"].Value)
	}
	if env["ROLLBOT_TARGET"].Value != "2" || env["ROLLBOT_CURRENT"].Value != "4" || env["TZ"].Value != "UTC" {
		t.Errorf("env %+v", c.Env)
	}
	dsn := env["DATABASE_URL"]
	if dsn.Value != "" || dsn.ValueFrom == nil || dsn.ValueFrom.SecretKeyRef.Name != "myapp-db" || dsn.ValueFrom.SecretKeyRef.Key != "migrate_url" {
		t.Errorf("DATABASE_URL must come from the Secret: %+v", dsn)
	}
	if len(c.EnvFrom) != 1 || c.EnvFrom[0].SecretRef.Name != "myapp-extra" {
		t.Errorf("envFrom %+v", c.EnvFrom)
	}
	// It serialises as a batch/v1 Job.
	b, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	var back batchv1.Job
	if err := json.Unmarshal(b, &back); err != nil || back.APIVersion != "batch/v1" || back.Kind != "Job" {
		t.Errorf("round trip: %v %s/%s", err, back.APIVersion, back.Kind)
	}

	noSA := cfg
	noSA.ServiceAccount = ""
	if *DownJob(noSA, image, nil).Spec.Template.Spec.AutomountServiceAccountToken {
		t.Error("without a service account the pod must not mount an API token")
	}
	fixed := cfg
	fixed.ImageFrom, fixed.Image = ImageFromFixed, "registry.example/migrator:3"
	if got := fixed.ImageFor("bad", "good"); got != "registry.example/migrator:3" {
		t.Errorf("ImageFor fixed = %s", got)
	}
}

func TestJobStatus(t *testing.T) {
	cond := func(typ batchv1.JobConditionType, reason string) *batchv1.Job {
		return &batchv1.Job{Status: batchv1.JobStatus{Conditions: []batchv1.JobCondition{{Type: typ, Status: corev1.ConditionTrue, Reason: reason}}}}
	}
	if done, err := jobFinished(cond(batchv1.JobComplete, "")); !done || err != nil {
		t.Errorf("complete: %v %v", done, err)
	}
	if done, err := jobFinished(cond(batchv1.JobFailed, "DeadlineExceeded")); !done || err == nil {
		t.Errorf("failed: %v %v", done, err)
	}
	if done, _ := jobFinished(&batchv1.Job{}); done {
		t.Error("a job without conditions is finished")
	}
	pod := corev1.Pod{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "not found"}}}}}}
	if podStuck(pod) == "" {
		t.Error("ImagePullBackOff is stuck")
	}
	pod.Status.ContainerStatuses[0].State.Waiting.Reason = "ContainerCreating"
	if podStuck(pod) != "" {
		t.Error("ContainerCreating is not stuck")
	}
}

// scriptedCluster plays the job controller and kubelet through the
// runner's narrow jobAPI, one step per poll. It exercises the runner's
// sequencing only; no real cluster here runs containers (see the report).
type scriptedCluster struct {
	created *batchv1.Job
	polls   int
	pod     corev1.Pod
	finish  batchv1.JobConditionType
	logs    string
	stuck   string
}

func (c *scriptedCluster) createJob(_ context.Context, job *batchv1.Job) (*batchv1.Job, error) {
	j := job.DeepCopy()
	j.Name = job.GenerateName + "x7k2p"
	c.created = j
	return j, nil
}

func (c *scriptedCluster) getJob(_ context.Context, ns, name string) (*batchv1.Job, error) {
	c.polls++
	j := c.created.DeepCopy()
	if c.polls >= 4 && c.finish != "" {
		j.Status.Conditions = []batchv1.JobCondition{{Type: c.finish, Status: corev1.ConditionTrue, Reason: "BackoffLimitExceeded", Message: "pod failed"}}
	}
	return j, nil
}

func (c *scriptedCluster) jobPods(_ context.Context, ns, job string) ([]corev1.Pod, error) {
	switch {
	case c.polls < 2:
		return nil, nil
	case c.stuck != "":
		c.pod.Status.ContainerStatuses = []corev1.ContainerStatus{{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: c.stuck}}}}
	default:
		c.pod.Status.Phase = corev1.PodRunning
	}
	c.pod.Name = job + "-pod"
	return []corev1.Pod{c.pod}, nil
}

func (c *scriptedCluster) podLogs(_ context.Context, ns, pod string) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader(c.logs)), nil
}

func TestJobRunnerSequence(t *testing.T) {
	cfg := DownConfig{Kind: DownKubernetesJob, Namespace: "prod", Command: []string{"flyway", "undo"}, Timeout: time.Minute}
	tests := []struct {
		name    string
		cluster *scriptedCluster
		wantErr string
		wantOut string
	}{
		{"completes", &scriptedCluster{finish: batchv1.JobComplete, logs: "Undoing migration of schema \"public\" to version 3\nSuccessfully undid 1 migration\n"}, "", "Successfully undid 1 migration\n"},
		{"fails", &scriptedCluster{finish: batchv1.JobFailed, logs: "ERROR: Flyway Teams Edition required\n"}, "failed (BackoffLimitExceeded: pod failed)", "Teams Edition"},
		{"image missing", &scriptedCluster{stuck: "ImagePullBackOff"}, "cannot start: ImagePullBackOff", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &JobRunner{api: tt.cluster, log: slog.New(slog.NewTextHandler(io.Discard, nil)), poll: time.Millisecond}
			var out lines
			name, err := r.Run(context.Background(), cfg, "myapp:v2", map[string]string{"ROLLBOT_STEPS": "1"}, &out)
			if name != "rollbot-db-down-x7k2p" {
				t.Errorf("job name %q", name)
			}
			msg, _ := platforms.UserMessage(err)
			if (tt.wantErr == "") != (err == nil) || !strings.Contains(msg, tt.wantErr) {
				t.Errorf("err = %v, want %q", err, tt.wantErr)
			}
			if !strings.Contains(out.String(), "job prod/rollbot-db-down-x7k2p created with image myapp:v2") || !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("output %q", out.String())
			}
			if tt.cluster.created.Spec.Template.Spec.Containers[0].Image != "myapp:v2" {
				t.Error("the Job was not created from DownJob")
			}
		})
	}
}
