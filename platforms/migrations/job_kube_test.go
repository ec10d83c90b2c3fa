package migrations

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"

	"rollbot/platforms"
	"rollbot/testkit/kubetest"
)

// The Job runner against a real control plane (testkit/kubetest):
// kube-apiserver with RBAC, the Job controller of kube-controller-manager,
// the scheduler and kwok as the node. kwok runs no container: it moves a
// Job's pod to Succeeded (exit code 0), or Failed (exit code 1) for an
// image tagged -fail, or leaves it Pending in ErrImagePull for an image
// tagged -missing; the container log it serves is what the test sets with
// SetContainerLog. Everything else — the Job, its pod, the Job's
// conditions, the log through the pods/log API, RBAC — is the real thing.

const rbacFile = "../../deploy/kubernetes/rbac.yaml"

var (
	kubeOnce    sync.Once
	kubeCluster *kubetest.Cluster // stopped by TestMain
	kubeErr     error
)

func jobCluster(t *testing.T) *kubetest.Cluster {
	t.Helper()
	kubeOnce.Do(func() {
		kubeCluster, kubeErr = kubetest.StartCluster(context.Background(), kubetest.Options{Logf: log.Printf})
	})
	if kubeErr != nil {
		t.Fatalf("kubernetes control plane: %v", kubeErr)
	}
	if err := kubeCluster.Err(); err != nil {
		t.Fatal(err)
	}
	return kubeCluster
}

// jobEnv is a namespace and a runner whose ServiceAccount is bound to
// exactly the Role JobRole of deploy/kubernetes/rbac.yaml.
type jobEnv struct {
	c      *kubetest.Cluster
	ns     string
	runner *JobRunner
	token  string
	logs   *lines
}

func newJobEnv(t *testing.T) *jobEnv {
	t.Helper()
	c := jobCluster(t)
	role, err := kubetest.LoadRoleNamed(rbacFile, JobRole)
	if err != nil {
		t.Fatal(err)
	}
	e := &jobEnv{c: c, ns: kubetest.CreateNamespace(t, c.AdminClient, "dbjob"), logs: &lines{}}
	var path string
	path, e.token = c.KubeconfigForRules(t, e.ns, role.Name, role.Rules)
	e.runner = NewJobRunner(clientFor(t, path), slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	e.runner.poll = 50 * time.Millisecond
	return e
}

func clientFor(t *testing.T, kubeconfig string) kubernetes.Interface {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func (e *jobEnv) downConfig() DownConfig {
	return DownConfig{
		Kind:      DownKubernetesJob,
		Namespace: e.ns,
		Command:   []string{"migrate", "-path", "/migrations", "-database", "$(DATABASE_URL)", "down", "$(ROLLBOT_STEPS)"},
		SecretEnv: map[string]SecretRef{"DATABASE_URL": {Secret: "myapp-db", Key: "migrate_url"}},
		Timeout:   2 * time.Minute,
	}
}

func (e *jobEnv) job(t *testing.T, name string) *batchv1.Job {
	t.Helper()
	j, err := e.c.AdminClient.BatchV1().Jobs(e.ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get job %s/%s: %v", e.ns, name, err)
	}
	return j
}

func (e *jobEnv) noTokenLeaked(t *testing.T, texts ...string) {
	t.Helper()
	for _, s := range append(texts, e.logs.String()) {
		if strings.Contains(s, e.token) {
			t.Error("the ServiceAccount token leaked into an error, the output or the log")
		}
	}
}

// golang-migrate's own output for `migrate down 1`, as the container
// would write it.
var migrateDownLog = []string{
	"4/d add_sku_to_products (12.481ms)",
	"3/d add_price_index (8.113ms)",
}

// TestJobRunnerOnCluster: the down Job with the bad release's image runs
// to completion and its log is streamed exactly once, in order; a failing
// Job is reported with its exit code and the end of its log; a Job whose
// image cannot be pulled is deleted before it can run; a Job that never
// gets a node is stopped by its own deadline.
func TestJobRunnerOnCluster(t *testing.T) {
	e := newJobEnv(t)
	ctx := context.Background()
	vars := Report{Tool: ToolGolangMigrate, Steps: 2, Target: "2", Current: "4"}.DownVars()

	t.Run("completes", func(t *testing.T) {
		if err := e.c.SetContainerLog(migrateDownLog...); err != nil {
			t.Fatal(err)
		}
		var out lines
		run, err := e.runner.Run(ctx, e.downConfig(), "RB-100", "registry.local/myapp:v2", vars, &out)
		if err != nil {
			t.Fatalf("Run: %v\n%s", err, e.logs.String())
		}
		name := run.Name
		if run.Attached || run.Image != "registry.local/myapp:v2" {
			t.Errorf("Run = %+v, want a created Job", run)
		}
		want := append([]string{fmt.Sprintf("job %s/%s created with image registry.local/myapp:v2\n", e.ns, name)}, withNL(migrateDownLog)...)
		if !slices.Equal(out.l, want) {
			t.Errorf("output, one write per line:\n%q\nwant\n%q", out.l, want)
		}
		j := e.job(t, name)
		if complete, _, _ := jobFinished(j); !complete || j.Status.Succeeded != 1 || j.Status.Failed != 0 {
			t.Errorf("job status %+v", j.Status)
		}
		c := j.Spec.Template.Spec.Containers[0]
		if c.Image != "registry.local/myapp:v2" || !slices.Equal(c.Command, e.downConfig().Command) || *j.Spec.BackoffLimit != 0 {
			t.Errorf("the Job on the cluster: image %s command %q backoffLimit %d", c.Image, c.Command, *j.Spec.BackoffLimit)
		}
		env := map[string]corev1.EnvVar{}
		for _, v := range c.Env {
			env[v.Name] = v
		}
		if env["ROLLBOT_STEPS"].Value != "2" || env["DATABASE_URL"].ValueFrom == nil || env["DATABASE_URL"].Value != "" {
			t.Errorf("container env %+v", c.Env)
		}
		e.noTokenLeaked(t, out.String())
	})

	t.Run("fails", func(t *testing.T) {
		failLog := []string{
			"4/d add_sku_to_products (10.2ms)",
			"error: migration failed: column \"price\" does not exist in line 0: ALTER TABLE products DROP COLUMN price (details: pq: column \"price\" does not exist)",
		}
		if err := e.c.SetContainerLog(failLog...); err != nil {
			t.Fatal(err)
		}
		var out lines
		run, err := e.runner.Run(ctx, e.downConfig(), "RB-101", "registry.local/myapp:v2-fail", vars, &out)
		name := run.Name
		if err == nil {
			t.Fatal("a failed Job reported success")
		}
		msg, ok := platforms.UserMessage(err)
		if !ok {
			t.Fatalf("not a user error: %v", err)
		}
		wantMsg := "the down Job " + e.ns + "/" + name + " failed: its container exited with code 1: check the migration table before anything else. The end of its log:\n> " +
			failLog[0] + "\n> " + failLog[1]
		if msg != wantMsg {
			t.Errorf("message\n%s\nwant\n%s", msg, wantMsg)
		}
		if !strings.Contains(err.Error(), "BackoffLimitExceeded") || !strings.Contains(err.Error(), "exit code 1") {
			t.Errorf("cause %v lacks the Job's reason and the exit code", err)
		}
		if !slices.Equal(out.l[1:], withNL(failLog)) {
			t.Errorf("output %q", out.l)
		}
		if _, _, finished := jobFinished(e.job(t, name)); !finished {
			t.Error("the failed Job is not finished on the cluster")
		}
		e.noTokenLeaked(t, out.String(), err.Error())
	})

	t.Run("image cannot be pulled", func(t *testing.T) {
		var out lines
		run, err := e.runner.Run(ctx, e.downConfig(), "RB-102", "registry.local/myapp:v2-missing", vars, &out)
		name := run.Name
		msg, _ := platforms.UserMessage(err)
		want := "the down Job " + e.ns + "/" + name + " cannot start (ErrImagePull: failed to pull image \"registry.local/myapp:v2-missing\": not found); rollbot deleted it so that it cannot run later unobserved. The database was not changed"
		if msg != want {
			t.Fatalf("message\n%s\nwant\n%s\n(err %v)", msg, want, err)
		}
		kubetest.Poll(t, "job "+name+" and its pod gone", func(ctx context.Context) (bool, error) {
			_, err := e.c.AdminClient.BatchV1().Jobs(e.ns).Get(ctx, name, metav1.GetOptions{})
			if !apierrors.IsNotFound(err) {
				return false, err
			}
			pods, err := e.c.AdminClient.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=" + name})
			return err == nil && len(pods.Items) == 0, err
		})
	})

	t.Run("deadline before a node", func(t *testing.T) {
		// No node takes the pod: the Job's activeDeadlineSeconds ends it.
		cordon(t, e.c.AdminClient, true)
		t.Cleanup(func() { cordon(t, e.c.AdminClient, false) })
		cfg := e.downConfig()
		cfg.Timeout = 2 * time.Second
		var out lines
		run, err := e.runner.Run(ctx, cfg, "RB-103", "registry.local/myapp:v2", vars, &out)
		name := run.Name
		msg, _ := platforms.UserMessage(err)
		want := "the down Job " + e.ns + "/" + name + " did not finish within its timeout of 2s and was stopped: check the migration table before anything else"
		if msg != want {
			t.Fatalf("message\n%s\nwant\n%s\n(err %v)", msg, want, err)
		}
	})
}

func withNL(ls []string) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l + "\n"
	}
	return out
}

// cordon marks the kwok node (un)schedulable.
func cordon(t *testing.T, cs kubernetes.Interface, on bool) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := cs.CoreV1().Nodes().Get(context.Background(), kubetest.NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Spec.Unschedulable = on
		_, err = cs.CoreV1().Nodes().Update(context.Background(), n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("cordon %v: %v", on, err)
	}
}

// The Role JobRole grants exactly what the runner declares it uses.
func TestJobRoleMatchesJobPermissions(t *testing.T) {
	role, err := kubetest.LoadRoleNamed(rbacFile, JobRole)
	if err != nil {
		t.Fatal(err)
	}
	var got []JobPermission
	for _, r := range role.Rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					got = append(got, JobPermission{Group: g, Resource: res, Verb: v})
				}
			}
		}
	}
	key := func(p JobPermission) string { return p.Group + "/" + p.Resource + "/" + p.Verb }
	cmp := func(a, b JobPermission) int { return strings.Compare(key(a), key(b)) }
	want := slices.Clone(JobPermissions)
	slices.SortFunc(got, cmp)
	slices.SortFunc(want, cmp)
	if !slices.Equal(got, want) {
		t.Fatalf("Role %s in %s grants\n%v\nthe runner uses\n%v", JobRole, rbacFile, got, want)
	}
	if first, err := kubetest.LoadRole(rbacFile); err != nil || first.Name == JobRole {
		t.Errorf("LoadRole(%s) = %v, %v: the Kubernetes adapter's Role must stay the first", rbacFile, first.Name, err)
	}
}

// Every permission of JobRole is needed: without any one, Run creates no
// Job and says exactly which permission to add.
func TestJobRunnerNeedsEachPermission(t *testing.T) {
	e := newJobEnv(t)
	ctx := context.Background()
	role, err := kubetest.LoadRoleNamed(rbacFile, JobRole)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range JobPermissions {
		t.Run(p.Verb+" "+p.Resource, func(t *testing.T) {
			var rules []rbacv1.PolicyRule
			for _, r := range role.Rules {
				if slices.Contains(r.APIGroups, p.Group) && slices.Contains(r.Resources, p.Resource) {
					r = *r.DeepCopy()
					r.Verbs = slices.DeleteFunc(r.Verbs, func(v string) bool { return v == p.Verb })
					if len(r.Verbs) == 0 {
						continue
					}
				}
				rules = append(rules, r)
			}
			path, token := e.c.KubeconfigForRules(t, e.ns, "less-"+strings.NewReplacer("/", "-").Replace(p.Verb+"-"+p.Resource), rules)
			r := NewJobRunner(clientFor(t, path), slog.New(slog.DiscardHandler))
			var out lines
			run, runErr := r.Run(ctx, e.downConfig(), "RB-104", "registry.local/myapp:v2", nil, &out)
			name := run.Name
			msg, _ := platforms.UserMessage(runErr)
			want := "rollbot may not run the down Job in namespace " + e.ns + ": add " + p.String() + " to the Role " + JobRole + " bound to rollbot there (deploy/kubernetes/rbac.yaml)"
			if msg != want || name != "" {
				t.Errorf("Run without %s: job %q, message\n%s\nwant\n%s", p, name, msg, want)
			}
			jobs, err := e.c.AdminClient.BatchV1().Jobs(e.ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(jobs.Items) != 0 {
				t.Errorf("%d Jobs created without %s", len(jobs.Items), p)
			}
			if strings.Contains(fmt.Sprint(runErr), token) || out.String() != "" {
				t.Errorf("err %v, output %q", runErr, out.String())
			}
		})
	}
}

// TestJobRunnerAttaches: Run is re-entrant per incident. A second Run for
// RB-1 (another replica resuming the incident) creates no Job: it attaches
// to the first one and reports the same outcome, log included; RB-2 gets
// its own Job; a Job that has not finished yet is followed to its end; a
// failed Job is reported again, never re-run; a same-named Job of another
// incident is neither followed nor replaced.
func TestJobRunnerAttaches(t *testing.T) {
	e := newJobEnv(t)
	ctx := context.Background()
	vars := Report{Tool: ToolGolangMigrate, Steps: 2, Target: "2", Current: "4"}.DownVars()
	jobsOf := func(t *testing.T, incident string) []batchv1.Job {
		t.Helper()
		sel := LabelIncident + "=" + IncidentLabel(incident)
		if incident == "" {
			sel = LabelIncident
		}
		l, err := e.c.AdminClient.BatchV1().Jobs(e.ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			t.Fatal(err)
		}
		return l.Items
	}
	if err := e.c.SetContainerLog(migrateDownLog...); err != nil {
		t.Fatal(err)
	}

	var first lines
	run1, err := e.runner.Run(ctx, e.downConfig(), "RB-1", "registry.local/myapp:v2", vars, &first)
	if err != nil || run1.Attached {
		t.Fatalf("first Run = %+v, %v\n%s", run1, err, e.logs.String())
	}
	if n := len(jobsOf(t, "RB-1")); n != 1 {
		t.Fatalf("%d Jobs for RB-1 after the first Run, want 1", n)
	}

	// The second attempt would run another image: it must not matter.
	var second lines
	run2, err := e.runner.Run(ctx, e.downConfig(), "RB-1", "registry.local/myapp:v3", vars, &second)
	if err != nil {
		t.Fatalf("second Run: %v\n%s", err, e.logs.String())
	}
	if !run2.Attached || run2.Name != run1.Name || run2.Image != "registry.local/myapp:v2" {
		t.Errorf("second Run = %+v, want attached to %s (image registry.local/myapp:v2)", run2, run1.Name)
	}
	want := append([]string{fmt.Sprintf("attached to job %s/%s started by an earlier attempt (image registry.local/myapp:v2)\n", e.ns, run1.Name)}, withNL(migrateDownLog)...)
	if !slices.Equal(second.l, want) {
		t.Errorf("second Run's output:\n%q\nwant\n%q", second.l, want)
	}
	if n := len(jobsOf(t, "RB-1")); n != 1 {
		t.Errorf("%d Jobs for RB-1 after the second Run, want 1", n)
	}

	run3, err := e.runner.Run(ctx, e.downConfig(), "RB-2", "registry.local/myapp:v2", vars, &lines{})
	if err != nil || run3.Attached || run3.Name == run1.Name {
		t.Errorf("Run for RB-2 = %+v, %v; want its own Job", run3, err)
	}
	if n1, n2, all := len(jobsOf(t, "RB-1")), len(jobsOf(t, "RB-2")), len(jobsOf(t, "")); n1 != 1 || n2 != 1 || all != 2 {
		t.Errorf("Jobs: RB-1 %d, RB-2 %d, all %d; want 1, 1, 2", n1, n2, all)
	}

	t.Run("in flight", func(t *testing.T) {
		// The stopped replica created the Job; no node has taken its pod yet.
		cordon(t, e.c.AdminClient, true)
		t.Cleanup(func() { cordon(t, e.c.AdminClient, false) })
		created, err := e.c.AdminClient.BatchV1().Jobs(e.ns).Create(ctx, DownJob(e.downConfig(), "RB-3", "registry.local/myapp:v2", vars), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		attached := make(chan struct{})
		out := &lines{on: func(l string) {
			if strings.HasPrefix(l, "attached to job") {
				close(attached)
			}
		}}
		type result struct {
			run JobRun
			err error
		}
		done := make(chan result, 1)
		go func() {
			r, err := e.runner.Run(ctx, e.downConfig(), "RB-3", "registry.local/myapp:v2", vars, out)
			done <- result{r, err}
		}()
		<-attached
		if _, _, finished := jobFinished(e.job(t, created.Name)); finished {
			t.Fatal("the Job finished before Run attached: the test proves nothing")
		}
		cordon(t, e.c.AdminClient, false)
		res := <-done
		if res.err != nil || !res.run.Attached || res.run.Name != created.Name {
			t.Fatalf("Run = %+v, %v\n%s", res.run, res.err, e.logs.String())
		}
		if complete, _, _ := jobFinished(e.job(t, created.Name)); !complete {
			t.Error("Run returned before the Job completed")
		}
		if !slices.Equal(out.l[1:], withNL(migrateDownLog)) {
			t.Errorf("output %q", out.l)
		}
		if n := len(jobsOf(t, "RB-3")); n != 1 {
			t.Errorf("%d Jobs for RB-3, want 1", n)
		}
	})

	t.Run("failed stays failed", func(t *testing.T) {
		_, err1 := e.runner.Run(ctx, e.downConfig(), "RB-4", "registry.local/myapp:v2-fail", vars, &lines{})
		_, err2 := e.runner.Run(ctx, e.downConfig(), "RB-4", "registry.local/myapp:v2", vars, &lines{})
		msg1, _ := platforms.UserMessage(err1)
		msg2, _ := platforms.UserMessage(err2)
		if err1 == nil || msg1 == "" || msg1 != msg2 {
			t.Errorf("first %q\nsecond %q\nwant the same failure twice", msg1, msg2)
		}
		if n := len(jobsOf(t, "RB-4")); n != 1 {
			t.Errorf("%d Jobs for RB-4, want 1", n)
		}
	})

	t.Run("another incident's job", func(t *testing.T) {
		// rb-5 and RB-5 share the Job name; only the annotation differs.
		other, err := e.c.AdminClient.BatchV1().Jobs(e.ns).Create(ctx, DownJob(e.downConfig(), "rb-5", "registry.local/myapp:v2", vars), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		run, err := e.runner.Run(ctx, e.downConfig(), "RB-5", "registry.local/myapp:v2", vars, &lines{})
		msg, _ := platforms.UserMessage(err)
		if !strings.Contains(msg, "a Job named "+other.Name+" already exists in namespace "+e.ns+", but it was not started for RB-5") || run.Name != "" {
			t.Errorf("Run = %+v, message %q", run, msg)
		}
		if n := len(jobsOf(t, "RB-5")); n != 0 {
			t.Errorf("%d Jobs for RB-5, want 0", n)
		}
	})
}
