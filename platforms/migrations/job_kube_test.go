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
		name, err := e.runner.Run(ctx, e.downConfig(), "registry.local/myapp:v2", vars, &out)
		if err != nil {
			t.Fatalf("Run: %v\n%s", err, e.logs.String())
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
		name, err := e.runner.Run(ctx, e.downConfig(), "registry.local/myapp:v2-fail", vars, &out)
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
		name, err := e.runner.Run(ctx, e.downConfig(), "registry.local/myapp:v2-missing", vars, &out)
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
		name, err := e.runner.Run(ctx, cfg, "registry.local/myapp:v2", vars, &out)
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
			name, runErr := r.Run(ctx, e.downConfig(), "registry.local/myapp:v2", nil, &out)
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
