package kube_test

// These tests run the adapter against a real control plane (kubetest:
// etcd, kube-apiserver with RBAC, kube-controller-manager, kube-scheduler,
// kwok), started once for the package. The adapter always authenticates as
// a ServiceAccount bound to exactly the Role shipped in
// deploy/kubernetes/rbac.yaml.

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"rollbot/platforms"
	"rollbot/platforms/kube"
	"rollbot/testkit/kubetest"

	"rollbot/testkit/logtest"
)

const (
	rbacFile = "../../deploy/kubernetes/rbac.yaml"
	v1       = "registry.local/myapp:v1"
	v2       = "registry.local/myapp:v2"
	v3       = "registry.local/myapp:v3"
	v2Broken = "registry.local/myapp:v2-broken"
)

var (
	binDir      string
	clusterOnce sync.Once
	theCluster  *kubetest.Cluster
	clusterErr  error
)

func TestMain(m *testing.M) {
	// Find (or build, ≈10 min cold) the binaries before m.Run, outside
	// go test's -timeout.
	dir, err := kubetest.BinDir(log.Printf)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	if theCluster != nil {
		theCluster.Stop()
	}
	os.Exit(code)
}

// cluster starts the package's control plane on first use.
func cluster(t testing.TB) *kubetest.Cluster {
	t.Helper()
	clusterOnce.Do(func() {
		theCluster, clusterErr = kubetest.StartCluster(context.Background(), kubetest.Options{BinDir: binDir, Logf: log.Printf})
	})
	if clusterErr != nil {
		t.Fatal(clusterErr)
	}
	if err := theCluster.Err(); err != nil {
		t.Fatal(err)
	}
	return theCluster
}

// env is one namespace with one Deployment and an adapter on it that uses
// a ServiceAccount bound to the shipped Role.
type env struct {
	c          *kubetest.Cluster
	admin      kubernetes.Interface
	ns, name   string
	a          *kube.Adapter
	kubeconfig string
	token      string
	logs       *logtest.Buffer
}

func newEnv(t *testing.T, image string, replicas int32, mutate ...func(*appsv1.Deployment)) *env {
	t.Helper()
	c := cluster(t)
	e := &env{c: c, admin: c.AdminClient, name: "myapp", logs: &logtest.Buffer{}}
	e.ns = kubetest.CreateNamespace(t, e.admin, "kube")
	d := kubetest.NewDeployment(e.ns, e.name, image, replicas)
	for _, m := range mutate {
		m(d)
	}
	kubetest.Create(t, e.admin, d)
	role, err := kubetest.LoadRole(rbacFile)
	if err != nil {
		t.Fatal(err)
	}
	e.kubeconfig, e.token = c.KubeconfigForRules(t, e.ns, role.Name, role.Rules)
	e.a = e.adapter(t, e.name)
	t.Cleanup(func() {
		if strings.Contains(e.logs.String(), e.token) {
			t.Errorf("the ServiceAccount token appears in the adapter's log")
		}
	})
	return e
}

func (e *env) adapter(t *testing.T, deployment string) *kube.Adapter {
	t.Helper()
	a, err := kube.New(kube.Config{Kubeconfig: e.kubeconfig, Context: "kubetest", Cluster: "kubetest", Namespace: e.ns, Deployment: deployment},
		slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// deploy sets the image as a CI pipeline would and waits for the rollout.
func (e *env) deploy(t *testing.T, image string) {
	t.Helper()
	kubetest.SetImage(t, e.admin, e.ns, e.name, image)
	kubetest.WaitRolledOut(t, e.admin, e.ns, e.name)
}

func (e *env) get(t *testing.T) *appsv1.Deployment {
	t.Helper()
	d, err := e.admin.AppsV1().Deployments(e.ns).Get(context.Background(), e.name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (e *env) snapshot(t *testing.T) *platforms.Snapshot {
	t.Helper()
	s, err := e.a.Snapshot(context.Background())
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	return s
}

// checkErr asserts err is a user error without the token.
func (e *env) checkErr(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		t.Fatal("want an error, got nil")
	}
	if e.token != "" && strings.Contains(err.Error(), e.token) {
		t.Errorf("error contains the ServiceAccount token")
	}
	msg, ok := platforms.UserMessage(err)
	if !ok {
		t.Fatalf("error %q carries no user message", err)
	}
	return msg
}

// wantPods asserts every pod of the Deployment runs image and n are Ready.
func (e *env) wantPods(t *testing.T, image string, n int) {
	t.Helper()
	kubetest.Poll(t, fmt.Sprintf("%d Ready pods on %s", n, image), func(ctx context.Context) (bool, error) {
		images, ready := kubetest.PodImages(t, e.admin, e.ns, e.name)
		if len(images) != n || ready != n {
			return false, nil
		}
		for _, im := range images {
			if im != image {
				return false, nil
			}
		}
		return true, nil
	})
}

type progressLog struct {
	mu sync.Mutex
	ps []platforms.Progress
}

func (p *progressLog) add(x platforms.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ps = append(p.ps, x)
}

func (p *progressLog) all() []platforms.Progress {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.ps)
}

func ids(h []platforms.Revision) []string {
	var out []string
	for _, r := range h {
		out = append(out, r.ID)
	}
	return out
}

// v1 → v2 (crash-looping) → assess → pause → roll back to the last known
// good revision → 3 Ready pods on v1.
func TestRollbackBadRelease(t *testing.T) {
	e := newEnv(t, v1, 3)
	ctx := context.Background()
	kubetest.SetImage(t, e.admin, e.ns, e.name, v2Broken)

	var snap *platforms.Snapshot
	kubetest.Poll(t, "the bad release to crash-loop", func(ctx context.Context) (bool, error) {
		s, err := e.a.Snapshot(ctx)
		snap = s
		return err == nil && s.Health.Restarts > 3, err
	})
	if snap.Current.ID != "2" || snap.Current.Artifact != v2Broken || !snap.RolloutInProgress || snap.Paused {
		t.Errorf("snapshot current=%+v inProgress=%v paused=%v; want revision 2 %s in progress, not paused", snap.Current, snap.RolloutInProgress, snap.Paused, v2Broken)
	}
	h := snap.Health
	// maxUnavailable 0: the 3 old pods keep serving, the surge pod crash-loops.
	if !h.Known || h.Desired != 3 || h.Ready != 3 || h.RestartWindow != kube.RestartWindow {
		t.Errorf("health = %+v; want 3/3 ready", h)
	}
	for _, want := range []string{"3/3 pods Ready", "revision 2: 0/1 Ready", "1 CrashLoopBackOff", "restarts in 5m"} {
		if !strings.Contains(h.Detail, want) {
			t.Errorf("health detail %q lacks %q", h.Detail, want)
		}
	}
	if got := ids(snap.History); !slices.Equal(got, []string{"2", "1"}) {
		t.Errorf("history = %v, want [2 1]", got)
	}
	if snap.History[0].ChangeCause != "deploy "+v2Broken || snap.History[1].Artifact != v1 {
		t.Errorf("history = %+v", snap.History)
	}

	res, err := e.a.Stop(ctx, false)
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("Stop = %+v, %v; want done", res, err)
	}
	if !e.snapshot(t).Paused {
		t.Fatal("not paused after Stop")
	}
	if res, err := e.a.Stop(ctx, false); err != nil || res.Outcome != platforms.Skipped {
		t.Fatalf("second Stop = %+v, %v; want skipped", res, err)
	}

	lkg, ok := platforms.LastKnownGood(snap.History, snap.Current, nil)
	if !ok || lkg.ID != "1" || lkg.Artifact != v1 {
		t.Fatalf("LastKnownGood = %+v, %v; want revision 1", lkg, ok)
	}
	var prog progressLog
	start := time.Now()
	res, err = e.a.Rollback(ctx, lkg, false, prog.add)
	if err != nil {
		t.Fatalf("Rollback: %v", err)
	}
	t.Logf("rollback took %s: %s", time.Since(start).Round(time.Millisecond), res.Detail)
	if res.Outcome != platforms.Done || !strings.Contains(res.Detail, "3/3 pods ready") {
		t.Errorf("Rollback = %+v", res)
	}
	ps := prog.all()
	if len(ps) == 0 || !ps[len(ps)-1].Done || ps[len(ps)-1].Ready != 3 || !strings.Contains(ps[len(ps)-1].Message, "successfully rolled out") {
		t.Errorf("progress = %+v; want it to end with a done report", ps)
	}
	e.wantPods(t, v1, 3)
	d := e.get(t)
	if d.Spec.Paused || d.Spec.Template.Spec.Containers[0].Image != v1 {
		t.Errorf("deployment paused=%v image=%s; want resumed on v1", d.Spec.Paused, d.Spec.Template.Spec.Containers[0].Image)
	}
	after := e.snapshot(t)
	// The controller reuses revision 1's ReplicaSet and renumbers it 3.
	if after.Current.ID != "3" || after.Current.Artifact != v1 || after.RolloutInProgress || after.Paused || after.Health.Ready != 3 {
		t.Errorf("after rollback: %+v", after)
	}
	if got := ids(after.History); !slices.Equal(got, []string{"3", "2"}) {
		t.Errorf("history after rollback = %v, want [3 2]", got)
	}
	if after.Current.ChangeCause != "deploy "+v1 {
		t.Errorf("change cause after rollback = %q, want revision 1's", after.Current.ChangeCause)
	}
}

func TestRollbackToExplicitRevision(t *testing.T) {
	e := newEnv(t, v1, 3)
	e.deploy(t, v2)
	e.deploy(t, v3)
	ctx := context.Background()
	var prog progressLog
	res, err := e.a.Rollback(ctx, platforms.Revision{ID: "1"}, false, prog.add)
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("Rollback to 1 = %+v, %v", res, err)
	}
	if !strings.Contains(res.Detail, "to revision 1 ("+v1+") (now numbered 4)") {
		t.Errorf("detail = %q", res.Detail)
	}
	e.wantPods(t, v1, 3)
	snap := e.snapshot(t)
	if snap.Current.ID != "4" || snap.Current.Artifact != v1 {
		t.Errorf("current = %+v, want revision 4 on v1", snap.Current)
	}
	// Its former number still finds it: already there.
	res, err = e.a.Rollback(ctx, platforms.Revision{ID: "1"}, false, nil)
	if err != nil || res.Outcome != platforms.Skipped {
		t.Fatalf("second Rollback to 1 = %+v, %v; want skipped", res, err)
	}
	// Explicit older revision than N-1.
	res, err = e.a.Rollback(ctx, platforms.Revision{ID: "2"}, false, nil)
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("Rollback to 2 = %+v, %v", res, err)
	}
	e.wantPods(t, v2, 3)
}

// A paused Deployment cannot be rolled back by `kubectl rollout undo`; the
// adapter restores the template and resumes in one write. The dry run
// plans exactly that and changes nothing.
func TestRollbackPausedDeployment(t *testing.T) {
	e := newEnv(t, v1, 3)
	e.deploy(t, v2)
	ctx := context.Background()
	if res, err := e.a.Stop(ctx, true); err != nil || res.Outcome != platforms.Planned ||
		!slices.Equal(res.Plan, []string{"deployment " + e.ns + "/myapp: pause rollout"}) {
		t.Fatalf("Stop dry run = %+v, %v", res, err)
	}
	if e.get(t).Spec.Paused {
		t.Fatal("dry-run Stop paused the deployment")
	}
	if res, err := e.a.Stop(ctx, false); err != nil || res.Outcome != platforms.Done {
		t.Fatalf("Stop = %+v, %v", res, err)
	}
	before := e.get(t)

	plan := []string{
		"deployment " + e.ns + "/myapp: pod template revision 2 (" + v2 + ") -> revision 1 (" + v1 + ")",
		"deployment " + e.ns + "/myapp: container app image " + v2 + " -> " + v1,
		"deployment " + e.ns + "/myapp: resume the paused rollout",
	}
	res, err := e.a.Rollback(ctx, platforms.Revision{ID: "1"}, true, nil)
	if err != nil || res.Outcome != platforms.Planned {
		t.Fatalf("dry-run Rollback = %+v, %v", res, err)
	}
	if !slices.Equal(res.Plan, plan) {
		t.Errorf("dry-run plan =\n%q\nwant\n%q", res.Plan, plan)
	}
	// (The controller may still write status after the pause: compare the spec's generation.)
	if d := e.get(t); d.Generation != before.Generation || !d.Spec.Paused || d.Spec.Template.Spec.Containers[0].Image != v2 {
		t.Fatalf("dry run changed the deployment: generation %d -> %d, paused %v, image %s", before.Generation, d.Generation, d.Spec.Paused, d.Spec.Template.Spec.Containers[0].Image)
	}

	res, err = e.a.Rollback(ctx, platforms.Revision{ID: "1"}, false, nil)
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("Rollback of paused deployment = %+v, %v", res, err)
	}
	if !slices.Equal(res.Plan, plan) {
		t.Errorf("plan = %q, want the dry run's", res.Plan)
	}
	e.wantPods(t, v1, 3)
	if e.get(t).Spec.Paused {
		t.Error("still paused after rollback")
	}
}

func TestRollbackAlreadyAtTarget(t *testing.T) {
	e := newEnv(t, v1, 2)
	e.deploy(t, v2)
	before := e.get(t)
	res, err := e.a.Rollback(context.Background(), platforms.Revision{ID: "2"}, false, nil)
	if err != nil || res.Outcome != platforms.Skipped {
		t.Fatalf("Rollback to current = %+v, %v; want skipped", res, err)
	}
	want := fmt.Sprintf("deployment %s/myapp (cluster kubetest) is already at revision 2 (%s)", e.ns, v2)
	if res.Detail != want {
		t.Errorf("detail = %q, want %q", res.Detail, want)
	}
	// Generation counts spec changes; the field manager shows who wrote.
	d := e.get(t)
	wrote := slices.ContainsFunc(d.ManagedFields, func(f metav1.ManagedFieldsEntry) bool { return f.Manager == "rollbot" })
	if d.Generation != before.Generation || wrote {
		t.Errorf("a skipped rollback wrote the deployment (generation %d -> %d, rollbot in managedFields: %v)", before.Generation, d.Generation, wrote)
	}
}

func TestRollbackMissingRevision(t *testing.T) {
	e := newEnv(t, v1, 2)
	e.deploy(t, v2)
	for _, id := range []string{"7", "", "latest"} {
		_, err := e.a.Rollback(context.Background(), platforms.Revision{ID: id}, false, nil)
		if !errors.Is(err, platforms.ErrNotFound) {
			t.Fatalf("Rollback to %q: %v; want ErrNotFound", id, err)
		}
		want := fmt.Sprintf("deployment %s/myapp (cluster kubetest) has no revision %q; available revisions: 2 (%s), 1 (%s)", e.ns, id, v2, v1)
		if msg := e.checkErr(t, err); msg != want {
			t.Errorf("message = %q\nwant      %q", msg, want)
		}
	}
}

// interceptPatch runs before() once, just before the first PATCH of the
// Deployment reaches the API server: a real concurrent deploy between the
// adapter's read and its write.
type interceptPatch struct {
	next   http.RoundTripper
	path   string
	once   sync.Once
	before func()
}

func (i *interceptPatch) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPatch && r.URL.Path == i.path {
		i.once.Do(i.before)
	}
	return i.next.RoundTrip(r)
}

// adapterWithHook is an adapter whose first PATCH of the Deployment is
// preceded by before().
func (e *env) adapterWithHook(t *testing.T, before func()) *kube.Adapter {
	t.Helper()
	return e.adapterWithPathHook(t, "/apis/apps/v1/namespaces/"+e.ns+"/deployments/"+e.name, before)
}

// adapterWithPathHook is an adapter whose first PATCH of path is preceded
// by before().
func (e *env) adapterWithPathHook(t *testing.T, path string, before func()) *kube.Adapter {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", e.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return &interceptPatch{next: rt, path: path, before: before}
	})
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return kube.NewWithClient(cs, kube.Config{Namespace: e.ns, Deployment: e.name}, slogTo(e.logs))
}

func TestRollbackConcurrentChange(t *testing.T) {
	ctx := context.Background()
	t.Run("a deploy between read and write fails the rollback", func(t *testing.T) {
		e := newEnv(t, v1, 2)
		e.deploy(t, v2)
		const v9 = "registry.local/myapp:v9"
		a := e.adapterWithHook(t, func() { kubetest.SetImage(t, e.admin, e.ns, e.name, v9) })
		_, err := a.Rollback(ctx, platforms.Revision{ID: "1"}, false, nil)
		if !errors.Is(err, platforms.ErrConflict) {
			t.Fatalf("Rollback racing a deploy: %v; want ErrConflict", err)
		}
		msg := e.checkErr(t, err)
		if !strings.Contains(msg, "changed while rollbot was writing it") || !strings.Contains(msg, "rollbot changed nothing") {
			t.Errorf("message = %q", msg)
		}
		// The concurrent deploy won; rollbot did not fight it.
		kubetest.WaitRolledOut(t, e.admin, e.ns, e.name)
		e.wantPods(t, v9, 2)
	})
	t.Run("a metadata or status change is not a conflict", func(t *testing.T) {
		e := newEnv(t, v1, 2)
		e.deploy(t, v2)
		a := e.adapterWithHook(t, func() {
			// Bumps resourceVersion, not generation: like the controller's status writes.
			_, err := e.admin.AppsV1().Deployments(e.ns).Patch(ctx, e.name, types.MergePatchType, []byte(`{"metadata":{"labels":{"touched":"yes"}}}`), metav1.PatchOptions{})
			if err != nil {
				t.Error(err)
			}
		})
		before := e.get(t)
		res, err := a.Rollback(ctx, platforms.Revision{ID: "1"}, false, nil)
		if err != nil || res.Outcome != platforms.Done {
			t.Fatalf("Rollback = %+v, %v", res, err)
		}
		e.wantPods(t, v1, 2)
		if d := e.get(t); d.Labels["touched"] != "yes" || d.Generation != before.Generation+1 {
			t.Errorf("labels %v generation %d -> %d", d.Labels, before.Generation, d.Generation)
		}
	})
}

// The bad revision is marked on the cluster, with who did it, and
// LastKnownGood skips it.
func TestMarkDoNotDeploy(t *testing.T) {
	e := newEnv(t, v1, 2)
	e.deploy(t, v2)
	e.deploy(t, v3)
	ctx := context.Background()
	snap := e.snapshot(t)
	bad := snap.History[1]
	if bad.ID != "2" || bad.Artifact != v2 {
		t.Fatalf("history = %+v", snap.History)
	}
	res, err := e.a.MarkDoNotDeploy(ctx, bad, "alice")
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("MarkDoNotDeploy = %+v, %v", res, err)
	}
	rss, err := e.admin.AppsV1().ReplicaSets(e.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=myapp"})
	if err != nil {
		t.Fatal(err)
	}
	marked := 0
	for _, rs := range rss.Items {
		if rs.Annotations[kube.AnnotationDoNotDeploy] == "true" {
			marked++
			if rs.Annotations["deployment.kubernetes.io/revision"] != "2" || !strings.HasPrefix(rs.Annotations[kube.AnnotationDoNotDeployBy], "alice at 20") {
				t.Errorf("marked ReplicaSet %s: %v", rs.Name, rs.Annotations)
			}
		}
	}
	if marked != 1 {
		t.Errorf("%d ReplicaSets marked, want 1", marked)
	}

	snap = e.snapshot(t)
	if !snap.History[1].DoNotDeploy || !strings.HasPrefix(snap.History[1].DoNotDeployBy, "alice at ") || snap.History[0].DoNotDeploy || snap.History[2].DoNotDeploy {
		t.Errorf("history marks = %+v", snap.History)
	}
	lkg, ok := platforms.LastKnownGood(snap.History, snap.Current, nil)
	if !ok || lkg.ID != "1" {
		t.Fatalf("LastKnownGood = %+v; want revision 1, not the marked 2", lkg)
	}
	if res, err := e.a.MarkDoNotDeploy(ctx, bad, "bob"); err != nil || res.Outcome != platforms.Skipped || !strings.Contains(res.Detail, "alice") {
		t.Errorf("second mark = %+v, %v; want skipped naming alice", res, err)
	}
	if _, err := e.a.MarkDoNotDeploy(ctx, platforms.Revision{ID: "9"}, "bob"); !errors.Is(err, platforms.ErrNotFound) {
		t.Errorf("mark of a missing revision: %v; want ErrNotFound", err)
	}
	if _, err := e.a.MarkDoNotDeploy(ctx, platforms.Revision{ID: "1", Artifact: v3}, "bob"); !errors.Is(err, platforms.ErrConflict) {
		t.Errorf("mark of revision 1 as %s: %v; want ErrConflict", v3, err)
	}

	// The ReplicaSet is renumbered between the read and the mark: the
	// patch's test operations fail it, nothing is marked.
	var rs3 string
	for _, rs := range rss.Items {
		if rs.Annotations["deployment.kubernetes.io/revision"] == "3" {
			rs3 = rs.Name
		}
	}
	a := e.adapterWithPathHook(t, "/apis/apps/v1/namespaces/"+e.ns+"/replicasets/"+rs3, func() {
		_, err := e.admin.AppsV1().ReplicaSets(e.ns).Patch(ctx, rs3, types.MergePatchType,
			[]byte(`{"metadata":{"annotations":{"deployment.kubernetes.io/revision":"30"}}}`), metav1.PatchOptions{})
		if err != nil {
			t.Error(err)
		}
	})
	_, err = a.MarkDoNotDeploy(ctx, platforms.Revision{ID: "3", Artifact: v3}, "dave")
	if !errors.Is(err, platforms.ErrConflict) {
		t.Fatalf("mark of a ReplicaSet renumbered meanwhile: %v; want ErrConflict", err)
	}
	if msg := e.checkErr(t, err); !strings.Contains(msg, "changed while rollbot was marking it") {
		t.Errorf("message = %q", msg)
	}
	if rs, err := e.admin.AppsV1().ReplicaSets(e.ns).Get(ctx, rs3, metav1.GetOptions{}); err != nil || rs.Annotations[kube.AnnotationDoNotDeploy] != "" {
		t.Errorf("renumbered ReplicaSet got marked: %v %v", rs.Annotations, err)
	}

	if res, err := e.a.Rollback(ctx, lkg, false, nil); err != nil || res.Outcome != platforms.Done {
		t.Fatalf("Rollback = %+v, %v", res, err)
	}
	e.wantPods(t, v1, 2)
	// The mark stays on the ReplicaSet and does not travel to the Deployment.
	if d := e.get(t); d.Annotations[kube.AnnotationDoNotDeploy] != "" {
		t.Errorf("deployment got the mark: %v", d.Annotations)
	}
	snap = e.snapshot(t)
	for _, r := range snap.History {
		if r.Artifact == v2 && !r.DoNotDeploy {
			t.Errorf("mark lost after rollback: %+v", r)
		}
	}
}

// A rollout that stops progressing fails at the Deployment's progress
// deadline with a message offering the fallbacks, which then work.
func TestProgressDeadlineAndFallbacks(t *testing.T) {
	e := newEnv(t, v1, 2, func(d *appsv1.Deployment) {
		deadline := int32(2)
		d.Spec.ProgressDeadlineSeconds = &deadline
	})
	ctx := context.Background()

	// A broken release through the set-image fallback: fails at the deadline.
	var prog progressLog
	start := time.Now()
	_, err := e.a.SetArtifact(ctx, v2Broken, false, prog.add)
	if !errors.Is(err, kube.ErrProgressDeadline) {
		t.Fatalf("SetArtifact(%s): %v; want ErrProgressDeadline", v2Broken, err)
	}
	t.Logf("progress deadline reported after %s", time.Since(start).Round(time.Millisecond))
	msg := e.checkErr(t, err)
	for _, want := range []string{"within its progress deadline (2s)", "set the image explicitly", "scale to zero"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if len(prog.all()) == 0 {
		t.Error("no progress reported while waiting")
	}

	// Rolling back from the timed-out rollout works: the old
	// ProgressDeadlineExceeded condition does not fail the new wait.
	res, err := e.a.Rollback(ctx, platforms.Revision{ID: "1"}, false, nil)
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("Rollback after a timed-out rollout = %+v, %v", res, err)
	}
	e.wantPods(t, v1, 2)

	// Rolling back to a broken revision fails at the deadline too.
	_, err = e.a.Rollback(ctx, platforms.Revision{ID: "2"}, false, nil)
	if !errors.Is(err, kube.ErrProgressDeadline) {
		t.Fatalf("Rollback to the broken revision: %v; want ErrProgressDeadline", err)
	}
	e.checkErr(t, err)

	// Fallback 1: set the image explicitly.
	res, err = e.a.SetArtifact(ctx, v1, true, nil)
	if err != nil || res.Outcome != platforms.Planned ||
		!slices.Equal(res.Plan, []string{"deployment " + e.ns + "/myapp: container app image " + v2Broken + " -> " + v1}) {
		t.Fatalf("dry-run SetArtifact = %+v, %v", res, err)
	}
	res, err = e.a.SetArtifact(ctx, v1, false, nil)
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("SetArtifact(v1) = %+v, %v", res, err)
	}
	e.wantPods(t, v1, 2)
	if d := e.get(t); d.Annotations["kubernetes.io/change-cause"] != "rollbot: set image app="+v1 {
		t.Errorf("change-cause = %q", d.Annotations["kubernetes.io/change-cause"])
	}
	if res, err := e.a.SetArtifact(ctx, v1, false, nil); err != nil || res.Outcome != platforms.Skipped {
		t.Errorf("SetArtifact to the running image = %+v, %v; want skipped", res, err)
	}

	// Fallback 2: scale to zero.
	res, err = e.a.ScaleToZero(ctx, true)
	if err != nil || res.Outcome != platforms.Planned || !slices.Equal(res.Plan, []string{"deployment " + e.ns + "/myapp: replicas 2 -> 0"}) {
		t.Fatalf("dry-run ScaleToZero = %+v, %v", res, err)
	}
	if n := *e.get(t).Spec.Replicas; n != 2 {
		t.Fatalf("dry run scaled to %d", n)
	}
	res, err = e.a.ScaleToZero(ctx, false)
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("ScaleToZero = %+v, %v", res, err)
	}
	if images, _ := kubetest.PodImages(t, e.admin, e.ns, e.name); len(images) != 0 {
		t.Errorf("pods left after ScaleToZero: %v", images)
	}
	if res, err := e.a.ScaleToZero(ctx, false); err != nil || res.Outcome != platforms.Skipped {
		t.Errorf("second ScaleToZero = %+v, %v; want skipped", res, err)
	}
}

func TestSnapshotHealthy(t *testing.T) {
	e := newEnv(t, v1, 3)
	snap := e.snapshot(t)
	if snap.Current.ID != "1" || snap.Current.Artifact != v1 || snap.Current.ChangeCause != "deploy "+v1 || len(snap.History) != 1 {
		t.Errorf("current = %+v, history %+v", snap.Current, snap.History)
	}
	h := snap.Health
	if !h.Known || h.Desired != 3 || h.Ready != 3 || h.Restarts != 0 || h.Detail != "3/3 pods Ready" || h.UnreadyRatio() != 0 {
		t.Errorf("health = %+v", h)
	}
	if snap.RolloutInProgress || snap.Paused || snap.MigrationLog != "" {
		t.Errorf("snapshot = %+v", snap)
	}
	rss, err := e.admin.AppsV1().ReplicaSets(e.ns).List(context.Background(), metav1.ListOptions{})
	if err != nil || len(rss.Items) != 1 {
		t.Fatalf("replicasets: %v, %v", rss, err)
	}
	if !snap.DeployedAt.Equal(rss.Items[0].CreationTimestamp.Time) {
		t.Errorf("DeployedAt = %v, want the ReplicaSet's creation %v", snap.DeployedAt, rss.Items[0].CreationTimestamp.Time)
	}
}

func TestSnapshotUnready(t *testing.T) {
	e := newEnv(t, v1, 1)
	ctx := context.Background()
	d := kubetest.NewDeployment(e.ns, "unready", "registry.local/other:unready", 2)
	if _, err := e.admin.AppsV1().Deployments(e.ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The Role is per namespace: the same ServiceAccount reads the second Deployment.
	a := e.adapter(t, "unready")
	var snap *platforms.Snapshot
	kubetest.Poll(t, "2 running unready pods", func(ctx context.Context) (bool, error) {
		pods, err := e.admin.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=unready"})
		if err != nil || len(pods.Items) != 2 {
			return false, err
		}
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodRunning {
				return false, nil
			}
		}
		snap, err = a.Snapshot(ctx)
		return err == nil, err
	})
	h := snap.Health
	if h.Desired != 2 || h.Ready != 0 || h.Restarts != 0 || h.UnreadyRatio() != 1 || h.Detail != "0/2 pods Ready" {
		t.Errorf("health = %+v; want 0/2 ready, no restarts", h)
	}
	if !snap.RolloutInProgress {
		t.Error("rollout of never-ready pods reported complete")
	}
}

func slogTo(w *logtest.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// The init-migrate container's log is read through the API server's
// pods/log (kwok serves Cluster.ContainerLog as every container's log).
func TestSnapshotMigrationLog(t *testing.T) {
	e := newEnv(t, v1, 2, func(d *appsv1.Deployment) {
		d.Spec.Template.Spec.InitContainers = []corev1.Container{{Name: "init-migrate", Image: "registry.local/myapp-migrate:v1"}}
	})
	var lines []string
	for i := range 25 {
		lines = append(lines, fmt.Sprintf("Migrating schema `app` to version %d", i+1))
	}
	lines = append(lines, "Successfully applied 26 migrations to schema `app`")
	if err := e.c.SetContainerLog(lines...); err != nil {
		t.Fatal(err)
	}
	snap := e.snapshot(t)
	want := strings.Join(lines[len(lines)-20:], "\n")
	if snap.MigrationLog != want {
		t.Errorf("MigrationLog =\n%s\nwant the last 20 lines:\n%s\nadapter log:\n%s", snap.MigrationLog, want, e.logs.String())
	}
	if strings.Contains(e.logs.String(), "read migration log") {
		t.Errorf("warning although the log was readable:\n%s", e.logs.String())
	}
}

// With several containers, `container:` picks the artifact; the others are
// left alone by every write.
func TestContainerSelection(t *testing.T) {
	const envoy = "registry.local/envoy:1.30"
	e := newEnv(t, v1, 2, func(d *appsv1.Deployment) {
		d.Spec.Template.Spec.Containers = []corev1.Container{{Name: "proxy", Image: envoy}, {Name: "app", Image: v1}}
	})
	ctx := context.Background()
	a, err := kube.New(kube.Config{Kubeconfig: e.kubeconfig, Namespace: e.ns, Deployment: e.name, Container: "app"}, slogTo(e.logs))
	if err != nil {
		t.Fatal(err)
	}
	if snap, err := a.Snapshot(ctx); err != nil || snap.Current.Artifact != v1 {
		t.Fatalf("Snapshot = %+v, %v; want artifact %s", snap, err, v1)
	}
	if res, err := a.SetArtifact(ctx, v2, false, nil); err != nil || res.Outcome != platforms.Done {
		t.Fatalf("SetArtifact = %+v, %v", res, err)
	}
	images := func() []string {
		var out []string
		for _, c := range e.get(t).Spec.Template.Spec.Containers {
			out = append(out, c.Name+"="+c.Image)
		}
		return out
	}
	if got := images(); !slices.Equal(got, []string{"proxy=" + envoy, "app=" + v2}) {
		t.Errorf("containers after SetArtifact = %v", got)
	}
	res, err := a.Rollback(ctx, platforms.Revision{ID: "1"}, true, nil)
	if err != nil || !slices.Equal(res.Plan[1:], []string{"deployment " + e.ns + "/myapp: container app image " + v2 + " -> " + v1}) {
		t.Errorf("dry-run Rollback = %+v, %v", res, err)
	}
	if res, err := a.Rollback(ctx, platforms.Revision{ID: "1"}, false, nil); err != nil || res.Outcome != platforms.Done {
		t.Fatalf("Rollback = %+v, %v", res, err)
	}
	if got := images(); !slices.Equal(got, []string{"proxy=" + envoy, "app=" + v1}) {
		t.Errorf("containers after Rollback = %v", got)
	}

	bad, err := kube.New(kube.Config{Kubeconfig: e.kubeconfig, Namespace: e.ns, Deployment: e.name, Container: "web"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = bad.Snapshot(ctx)
	if msg := e.checkErr(t, err); !errors.Is(err, platforms.ErrNotFound) || !strings.Contains(msg, `has no container "web" (it has: [proxy app])`) {
		t.Errorf("unknown container: %q (%v)", msg, err)
	}
	// And a Deployment that does not exist.
	_, err = e.adapter(t, "nope").Snapshot(ctx)
	if msg := e.checkErr(t, err); !errors.Is(err, platforms.ErrNotFound) || msg != "deployment "+e.ns+"/nope not found in cluster kubetest: check `namespace:` and `deployment:` in rollbot's config" {
		t.Errorf("missing deployment: %q (%v)", msg, err)
	}
}
