package migrations

import (
	"context"
	"encoding/json"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

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
	job := DownJob(cfg, "RB-42", image, rep.DownVars())

	if job.Namespace != "prod" || job.Name != "rollbot-db-down-rb-42" || job.GenerateName != "" || job.Labels[LabelManagedBy] != "rollbot" ||
		job.Labels[LabelIncident] != "RB-42" || job.Annotations[LabelIncident] != "RB-42" {
		t.Errorf("metadata %+v", job.ObjectMeta)
	}
	if job.Spec.Template.Labels[LabelIncident] != "RB-42" {
		t.Errorf("pod labels %v", job.Spec.Template.Labels)
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
	if *DownJob(noSA, "RB-42", image, nil).Spec.Template.Spec.AutomountServiceAccountToken {
		t.Error("without a service account the pod must not mount an API token")
	}
	fixed := cfg
	fixed.ImageFrom, fixed.Image = ImageFromFixed, "registry.example/migrator:3"
	if got := fixed.ImageFor("bad", "good"); got != "registry.example/migrator:3" {
		t.Errorf("ImageFor fixed = %s", got)
	}
}

func TestJobStatus(t *testing.T) {
	cond := func(typ batchv1.JobConditionType, reason, msg string) *batchv1.Job {
		return &batchv1.Job{Status: batchv1.JobStatus{Conditions: []batchv1.JobCondition{{Type: typ, Status: corev1.ConditionTrue, Reason: reason, Message: msg}}}}
	}
	tests := []struct {
		name               string
		job                *batchv1.Job
		complete, finished bool
		reason             string
	}{
		{"complete", cond(batchv1.JobComplete, "", ""), true, true, ""},
		{"failed", cond(batchv1.JobFailed, "BackoffLimitExceeded", "Job has reached the specified backoff limit"), false, true, "BackoffLimitExceeded: Job has reached the specified backoff limit"},
		{"deadline", cond(batchv1.JobFailed, "DeadlineExceeded", ""), false, true, "DeadlineExceeded"},
		{"running", &batchv1.Job{}, false, false, ""},
		{"failure target only", cond(batchv1.JobFailureTarget, "BackoffLimitExceeded", ""), false, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			complete, reason, finished := jobFinished(tt.job)
			if complete != tt.complete || reason != tt.reason || finished != tt.finished {
				t.Errorf("jobFinished = %v %q %v, want %v %q %v", complete, reason, finished, tt.complete, tt.reason, tt.finished)
			}
		})
	}
	pod := corev1.Pod{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "not found"}}}}}}
	if got := podStuck(pod); got != "ImagePullBackOff: not found" {
		t.Errorf("ImagePullBackOff: podStuck = %q", got)
	}
	pod.Status.ContainerStatuses[0].State.Waiting.Reason = "ContainerCreating"
	if podStuck(pod) != "" {
		t.Error("ContainerCreating is not stuck")
	}
}

// copyNewLines passes on whole lines; a stream that breaks drops its
// partial last line, and the second read skips what was passed on.
func TestCopyNewLines(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		breakErr  error
		skip      int
		want      []string
		wantN     int
		wantEnded bool
	}{
		{"complete log", "a\nb\n", nil, 0, []string{"a\n", "b\n"}, 2, true},
		{"no final newline", "a\nb", nil, 0, []string{"a\n", "b\n"}, 2, true},
		{"empty", "", nil, 0, nil, 0, true},
		{"broken mid-line", "a\nb\nhal", context.Canceled, 0, []string{"a\n", "b\n"}, 2, false},
		{"catch-up skips what was passed on", "a\nb\nhalf done\nlast", nil, 2, []string{"half done\n", "last\n"}, 4, true},
		{"catch-up with nothing new", "a\nb\n", nil, 2, nil, 2, true},
		{"blank lines count", "\n\nx\n", nil, 1, []string{"\n", "x\n"}, 3, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r io.Reader = strings.NewReader(tt.in)
			if tt.breakErr != nil {
				r = io.MultiReader(r, errReader{tt.breakErr})
			}
			var out lines
			n, ended, err := copyNewLines(&out, r, tt.skip)
			if n != tt.wantN || ended != tt.wantEnded || !slices.Equal(out.l, tt.want) {
				t.Errorf("copyNewLines = %d %v %v, writes %q; want %d %v, %q", n, ended, err, out.l, tt.wantN, tt.wantEnded, tt.want)
			}
			if (err != nil) != (tt.breakErr != nil) {
				t.Errorf("err = %v, want %v", err, tt.breakErr)
			}
		})
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// TestJobNameAndLabel: the down Job's name and incident label are valid
// for Kubernetes (a DNS label of at most 63 characters; a label value),
// the same for the same incident and different for different ones.
func TestJobNameAndLabel(t *testing.T) {
	dnsLabel := regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	long := strings.Repeat("incident-", 12)
	tests := []struct{ id, name, label string }{
		{"RB-42", "rollbot-db-down-rb-42", "RB-42"},
		{"rb-42", "rollbot-db-down-rb-42", "rb-42"}, // same name: the annotation tells them apart
		{"RB 7/ops", "rollbot-db-down-rb-7-ops", ""},
		{"--", "", ""},
		{long, "", ""},
		{long + "x", "", ""},
	}
	seen := map[string]string{}
	for _, tt := range tests {
		name, label := JobName(tt.id), IncidentLabel(tt.id)
		if !dnsLabel.MatchString(name) || len(name) > 63 || !strings.HasPrefix(name, jobNamePrefix) {
			t.Errorf("JobName(%q) = %q: not a valid Job name", tt.id, name)
		}
		if !labelValueRe.MatchString(label) {
			t.Errorf("IncidentLabel(%q) = %q: not a label value", tt.id, label)
		}
		if tt.name != "" && name != tt.name {
			t.Errorf("JobName(%q) = %q, want %q", tt.id, name, tt.name)
		}
		if tt.label != "" && label != tt.label {
			t.Errorf("IncidentLabel(%q) = %q, want %q", tt.id, label, tt.label)
		}
		if JobName(tt.id) != name || IncidentLabel(tt.id) != label {
			t.Errorf("JobName/IncidentLabel(%q) not deterministic", tt.id)
		}
		if other, dup := seen[label]; dup {
			t.Errorf("IncidentLabel(%q) = IncidentLabel(%q) = %q", tt.id, other, label)
		}
		seen[label] = tt.id
	}
	if JobName(long) == JobName(long+"x") {
		t.Errorf("two long ids share the name %s", JobName(long))
	}
}
