package kube_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/action"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/release/common"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"rollbot/platforms"
	"rollbot/platforms/kube"
	"rollbot/testkit/helmtest"
	"rollbot/testkit/kubetest"
	"rollbot/testkit/logtest"
)

// helmEnv is a namespace with a Helm release "shop" of helmtest's chart,
// installed and upgraded through Helm's SDK as the admin, and an adapter
// authenticated as a ServiceAccount bound to exactly the Roles `rollbot`
// and `rollbot-helm` of deploy/kubernetes/rbac.yaml.
type helmEnv struct {
	c    *kubetest.Cluster
	ns   string
	cfg  *action.Configuration
	ch   *chart.Chart
	a    *kube.Adapter
	logs *logtest.Buffer
}

func newHelmEnv(t testing.TB, images ...string) *helmEnv {
	t.Helper()
	c := cluster(t)
	e := &helmEnv{c: c, logs: &logtest.Buffer{}}
	e.ns = kubetest.CreateNamespace(t, c.AdminClient, "helm")
	cfg := helmtest.Config(t, c.AdminKubeconfig, e.ns)
	ch := helmtest.Chart(t)
	e.cfg, e.ch = cfg, ch
	for i, img := range images {
		if i == 0 {
			helmtest.Install(t, cfg, ch, e.ns, "shop", img)
		} else {
			helmtest.Upgrade(t, cfg, ch, "shop", img)
		}
		kubetest.WaitRolledOut(t, c.AdminClient, e.ns, "shop")
	}
	path := c.KubeconfigForRoles(t, e.ns, rbacFile, "rollbot", kube.HelmRole)
	a, err := kube.New(kube.Config{Kubeconfig: path, Namespace: e.ns, Deployment: "shop", RolloutTimeout: time.Minute},
		slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	e.a = a
	kc, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	token := kc.AuthInfos[kc.Contexts[kc.CurrentContext].AuthInfo].Token
	t.Cleanup(func() {
		// Helm logs through the adapter's logger (at debug level here),
		// never with the credentials.
		if token == "" || strings.Contains(e.logs.String(), token) {
			t.Errorf("the ServiceAccount token (%d bytes) is empty or appears in the adapter's log", len(token))
		}
	})
	return e
}

// TestHelmRollback: revision 1 (v1) deployed, 2 (v2) deployed and then
// marked DO_NOT_DEPLOY in rollbot's state, 3 (v3-broken) failed Helm's
// wait. The snapshot's history is the release's; the target is revision
// 1 (2 is marked, 3 failed); the dry run names it and changes nothing; the
// rollback (after Stop paused the Deployment) goes through Helm: the
// history gets revision 4 "Rollback to 1", deployed, the Deployment runs
// v1 and is no longer paused. A second call (a resumed step) is skipped.
func TestHelmRollback(t *testing.T) {
	v3b := "registry.local/shop:v3-broken"
	e := newHelmEnv(t, "registry.local/shop:v1", "registry.local/shop:v2")
	helmtest.UpgradeFailing(t, e.cfg, e.ch, "shop", v3b)
	ctx := context.Background()

	snap, err := e.a.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if o := snap.Owner; o == nil || o.Kind != platforms.OwnerHelm || o.Problem != "" || o.Detail != "Helm release "+e.ns+"/shop (revision 3, failed)" {
		t.Fatalf("owner: %+v", snap.Owner)
	}
	ids := func(rs []platforms.Revision) (out []string) {
		for _, r := range rs {
			out = append(out, r.ID+"="+r.Artifact)
		}
		return out
	}
	if got, want := ids(snap.History), []string{"3=" + v3b, "2=registry.local/shop:v2", "1=registry.local/shop:v1"}; !slices.Equal(got, want) {
		t.Fatalf("history %v, want %v", got, want)
	}
	if snap.Current.ID != "3" || !strings.Contains(snap.History[0].Unusable, "Helm revision 3 failed") || snap.History[1].Unusable != "" || snap.History[2].Unusable != "" {
		t.Fatalf("current %+v; history %+v", snap.Current, snap.History)
	}
	marked := func(r platforms.Revision) bool { return r.Artifact == "registry.local/shop:v2" }
	good, ok := platforms.LastKnownGood(snap.History, snap.Current, marked)
	if !ok || good.ID != "1" || good.Artifact != "registry.local/shop:v1" {
		t.Fatalf("target %+v %v, want revision 1", good, ok)
	}
	if unmarked, _ := platforms.LastKnownGood(snap.History, snap.Current, nil); unmarked.ID != "2" {
		t.Fatalf("without the mark the target is %+v, want revision 2", unmarked)
	}

	if _, err := e.a.Stop(ctx, false); err != nil {
		t.Fatal(err)
	}
	dry, err := e.a.Rollback(ctx, good, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantPlan := []string{
		"helm release " + e.ns + "/shop: roll back from revision 3 (" + v3b + ") to revision 1 (registry.local/shop:v1), recorded as revision 4",
		"deployment " + e.ns + "/shop: resume the paused rollout",
	}
	if dry.Outcome != platforms.Planned || !slices.Equal(dry.Plan, wantPlan) {
		t.Fatalf("dry run: %+v\nwant plan %q", dry, wantPlan)
	}
	if h := helmtest.History(t, e.cfg, "shop"); len(h) != 3 {
		t.Fatalf("the dry run wrote a revision: %d revisions", len(h))
	}

	var progress []string
	res, err := e.a.Rollback(ctx, good, false, func(p platforms.Progress) { progress = append(progress, p.Message) })
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != platforms.Done || !strings.Contains(res.Detail, "rolled back Helm release "+e.ns+"/shop to revision 1 (registry.local/shop:v1) (recorded as revision 4): 2/2 pods") {
		t.Fatalf("rollback: %+v", res)
	}
	if !strings.Contains(e.logs.String(), "helm rollback written") {
		t.Errorf("the rollback is not in the adapter's log:\n%s", e.logs.String())
	}
	if len(progress) == 0 || !strings.Contains(progress[len(progress)-1], "successfully rolled out") {
		t.Fatalf("progress: %q", progress)
	}
	h := helmtest.History(t, e.cfg, "shop")
	if len(h) != 4 || h[0].Version != 4 || h[0].Info.Status != common.StatusDeployed || h[0].Info.RollbackRevision != 1 ||
		h[0].Info.Description != "Rollback to 1 by rollbot" || h[1].Info.Status != common.StatusFailed || h[2].Info.Status != common.StatusSuperseded {
		for _, r := range h {
			t.Logf("revision %d: %s %q rollback of %d", r.Version, r.Info.Status, r.Info.Description, r.Info.RollbackRevision)
		}
		t.Fatal("release history after the rollback")
	}
	d, err := e.c.AdminClient.AppsV1().Deployments(e.ns).Get(ctx, "shop", metav1.GetOptions{})
	if err != nil || d.Spec.Paused || d.Spec.Template.Spec.Containers[0].Image != "registry.local/shop:v1" {
		t.Fatalf("deployment after the rollback: paused %v image %s (%v)", d.Spec.Paused, d.Spec.Template.Spec.Containers[0].Image, err)
	}
	images, ready := kubetest.PodImages(t, e.c.AdminClient, e.ns, "shop")
	if ready != 2 || slices.ContainsFunc(images, func(s string) bool { return s != "registry.local/shop:v1" }) {
		t.Fatalf("pods after the rollback: %v, %d ready", images, ready)
	}

	again, err := e.a.Rollback(ctx, good, false, nil)
	if err != nil || again.Outcome != platforms.Skipped {
		t.Fatalf("second rollback: %+v %v", again, err)
	}
	if h := helmtest.History(t, e.cfg, "shop"); len(h) != 4 {
		t.Fatalf("the second rollback wrote a revision: %d", len(h))
	}
	// The DO_NOT_DEPLOY mark of the bad Helm revision goes on the
	// ReplicaSet that ran its image, and comes back in the history.
	if _, err := e.a.MarkDoNotDeploy(ctx, platforms.Revision{ID: "3", Artifact: v3b}, "U0BOB"); err != nil {
		t.Fatal(err)
	}
	snap, err = e.a.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(snap.History, func(r platforms.Revision) bool { return r.ID == "3" }); i < 0 || !snap.History[i].DoNotDeploy {
		t.Fatalf("revision 3 not marked: %+v", snap.History)
	}
	if snap.Current.ID != "4" || snap.Current.Artifact != "registry.local/shop:v1" {
		t.Fatalf("current after the rollback: %+v", snap.Current)
	}
}

// TestHelmRollbackRefusesUnusable: asked (--to) for a revision that failed,
// the adapter refuses without writing; a revision whose image changed since
// it was chosen is refused as a conflict.
func TestHelmRollbackRefusesUnusable(t *testing.T) {
	e := newHelmEnv(t, "registry.local/shop:v1")
	helmtest.UpgradeFailing(t, e.cfg, e.ch, "shop", "registry.local/shop:v2-broken")
	helmtest.Upgrade(t, e.cfg, e.ch, "shop", "registry.local/shop:v3")
	kubetest.WaitRolledOut(t, e.c.AdminClient, e.ns, "shop")
	ctx := context.Background()
	_, err := e.a.Rollback(ctx, platforms.Revision{ID: "2", Artifact: "registry.local/shop:v2-broken"}, false, nil)
	if msg, ok := platforms.UserMessage(err); !ok || !strings.Contains(msg, "will not roll Helm release "+e.ns+"/shop back to revision 2") || !strings.Contains(msg, "failed") {
		t.Fatalf("rollback to the failed revision: %v", err)
	}
	_, err = e.a.Rollback(ctx, platforms.Revision{ID: "1", Artifact: "registry.local/shop:v0"}, false, nil)
	if msg, ok := platforms.UserMessage(err); !ok || !strings.Contains(msg, "now has registry.local/shop:v1, not registry.local/shop:v0") {
		t.Fatalf("rollback to a revision that changed: %v", err)
	}
	if h := helmtest.History(t, e.cfg, "shop"); len(h) != 3 {
		t.Fatalf("a refused rollback wrote a revision: %d", len(h))
	}
}

// TestHelmMissingRelease: the Deployment's annotations name a release that
// does not exist. The Owner says so, the rollback is refused with what to
// do, and the Deployment is not written.
func TestHelmMissingRelease(t *testing.T) {
	c := cluster(t)
	ns := kubetest.CreateNamespace(t, c.AdminClient, "helmghost")
	d := kubetest.NewDeployment(ns, "shop", "registry.local/shop:v1", 2)
	d.Labels["app.kubernetes.io/managed-by"] = "Helm"
	d.Annotations["meta.helm.sh/release-name"] = "ghost"
	d.Annotations["meta.helm.sh/release-namespace"] = ns
	kubetest.Create(t, c.AdminClient, d)
	kubetest.SetImage(t, c.AdminClient, ns, "shop", "registry.local/shop:v2")
	before := kubetest.WaitRolledOut(t, c.AdminClient, ns, "shop")
	path := c.KubeconfigForRoles(t, ns, rbacFile, "rollbot", kube.HelmRole)
	a, err := kube.New(kube.Config{Kubeconfig: path, Namespace: ns, Deployment: "shop"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	o, err := a.OwnerOf(ctx)
	want := "Helm release " + ns + "/ghost was not found, though deployment " + ns + "/shop names it in its meta.helm.sh/release-name / meta.helm.sh/release-namespace annotations"
	if err != nil || o == nil || !strings.HasPrefix(o.Problem, want) {
		t.Fatalf("owner %+v, %v; want problem %q", o, err, want)
	}
	_, err = a.Rollback(ctx, platforms.Revision{ID: "1", Artifact: "registry.local/shop:v1"}, false, nil)
	if msg, ok := platforms.UserMessage(err); !ok || !strings.Contains(msg, want) {
		t.Fatalf("rollback: %v", err)
	}
	after, err := c.AdminClient.AppsV1().Deployments(ns).Get(ctx, "shop", metav1.GetOptions{})
	if err != nil || after.Generation != before.Generation {
		t.Fatalf("the Deployment was written: generation %d -> %d (%v)", before.Generation, after.Generation, err)
	}
}

// The Helm client of a write runs with the clicker's impersonation, as
// every write does: mapped to a user rollbot may not impersonate, the Helm
// rollback is refused by the cluster (rollbot's own ServiceAccount could
// have done it: it is bound to rollbot-helm), and no revision is recorded.
func TestHelmRollbackImpersonates(t *testing.T) {
	e := newHelmEnv(t, "registry.local/shop:v1", "registry.local/shop:v2")
	path := e.c.KubeconfigForRoles(t, e.ns, rbacFile, "rollbot", kube.HelmRole)
	a, err := kube.New(kube.Config{Kubeconfig: path, Namespace: e.ns, Deployment: "shop",
		Impersonate: map[string]kube.Identity{"U0ALICE": {User: "alice-" + e.ns}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := platforms.WithActor(context.Background(), "U0ALICE")
	_, err = a.Rollback(ctx, platforms.Revision{ID: "1", Artifact: "registry.local/shop:v1"}, false, nil)
	msg, ok := platforms.UserMessage(err)
	if !ok || !strings.Contains(msg, "the cluster refused alice-"+e.ns+" (for <@U0ALICE>)") || !strings.Contains(msg, "cannot impersonate") {
		t.Fatalf("rollback as alice: %v", err)
	}
	if h := helmtest.History(t, e.cfg, "shop"); len(h) != 2 {
		t.Fatalf("a refused rollback recorded a revision: %d", len(h))
	}
	// Without impersonation the same ServiceAccount rolls it back.
	if res, err := e.a.Rollback(context.Background(), platforms.Revision{ID: "1", Artifact: "registry.local/shop:v1"}, false, nil); err != nil || res.Outcome != platforms.Done {
		t.Fatalf("rollback as rollbot: %+v %v", res, err)
	}
}
