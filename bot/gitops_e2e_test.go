package bot

import (
	"context"
	"errors"
	"reflect"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"rollbot/handlers"
	"rollbot/platforms"
	"rollbot/platforms/kube"
	"rollbot/state"
	"rollbot/testkit/kubetest"
	"rollbot/testkit/slackemu"
	"rollbot/testkit/wait"
)

// healthGate is a health check the test opens when it is ready for the
// verification to pass (the real part is the cluster; this only decides
// when the checklist may end).
type healthGate struct{ open atomic.Bool }

func (g *healthGate) Health(context.Context) (bool, string, error) {
	if g.open.Load() {
		return true, "200 OK", nil
	}
	return false, "waiting for the test", nil
}

func (g *healthGate) Smoke(context.Context) (bool, string, error) { return true, "ok", nil }

var incidentID = regexp.MustCompile(`RB-[0-9]+`)

var argoApplications = schema.GroupVersionResource{Group: "argoproj.io", Version: "v1alpha1", Resource: "applications"}

const gitopsApp = `
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: %APP%
spec:
  project: default
  source:
    repoURL: https://git.example.com/platform/deploy.git
    path: apps/%APP%/prod
    targetRevision: release-7
  destination:
    server: https://kubernetes.default.svc
    namespace: %NS%
  syncPolicy:
    automated:
      prune: true
      selfHeal: true
`

// TestArgoCDOwnedRollbackThroughSlack: Deployments owned by Argo CD
// Applications (the real Application CRD from Argo CD's Go module) on a
// real control plane, rolled back through the local Slack server.
//   - myapp: the Owner row and the confirmation name the Application; the
//     pause removes spec.syncPolicy.automated before the rollback; after the
//     verification the Git change is posted and is a checklist item;
//     `/rollback resume-sync myapp` restores automated exactly. Then v2 is
//     deployed again and rolled back again, and during the verification the
//     "Git" manifest is applied again (the sync someone resumed): rollbot
//     says at once that the bad version is back.
//   - locked: rollbot may not touch Applications (only the adapter's Role):
//     nothing is rolled back, the cluster's Forbidden is shown, and "Roll
//     back anyway" rolls back without the pause.
//   - ghost: its label names an Application that does not exist: the Owner
//     row says so, and the confirmation changes nothing.
func TestArgoCDOwnedRollbackThroughSlack(t *testing.T) {
	c := kubetest.Start(t)
	c.InstallCRDs(t, kubetest.ArgoCDCRDs)
	dyn, err := dynamic.NewForConfig(c.AdminConfig)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	type svcEnv struct {
		ns   string
		svc  *handlers.Service
		gate *healthGate
	}
	setup := func(name, appLabel string, roles ...string) svcEnv {
		ns := kubetest.CreateNamespace(t, c.AdminClient, name)
		d := kubetest.NewDeployment(ns, name, "registry.local/"+name+":v1", 2)
		d.Labels = map[string]string{"argocd.argoproj.io/instance": appLabel}
		kubetest.Create(t, c.AdminClient, d)
		kubetest.WaitRolledOut(t, c.AdminClient, ns, name)
		kubetest.SetImage(t, c.AdminClient, ns, name, "registry.local/"+name+":v2")
		kubetest.WaitRolledOut(t, c.AdminClient, ns, name)
		if appLabel == name {
			objs, err := kubetest.DecodeYAML([]byte(strings.NewReplacer("%APP%", name, "%NS%", ns).Replace(gitopsApp)))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := dyn.Resource(argoApplications).Namespace(ns).Create(ctx, objs[0], metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		kubeconfig := c.KubeconfigForRoles(t, ns, "../deploy/kubernetes/rbac.yaml", roles...)
		adapter, err := kube.New(kube.Config{Kubeconfig: kubeconfig, Namespace: ns, Deployment: name, ArgoCDNamespace: ns, RolloutTimeout: time.Minute}, nil)
		if err != nil {
			t.Fatal(err)
		}
		g := &healthGate{}
		g.open.Store(true)
		return svcEnv{ns: ns, gate: g, svc: &handlers.Service{Name: name, Platform: adapter, Metrics: imageMetrics{adapter}, Health: g, HasHealth: true,
			Thresholds: handlers.Thresholds{ErrorRate: 0.01, LatencyFactor: 2, Restarts: 3, UnreadyRatio: 0.5, BaselineP95: 100 * time.Millisecond},
			Approvers:  handlers.Access{Groups: []string{slackemu.GroupOnCall}}}}
	}
	myapp := setup("myapp", "myapp", "rollbot", kube.GitOpsRole)
	locked := setup("locked", "locked", "rollbot")
	ghost := setup("ghost", "nowhere", "rollbot", kube.GitOpsRole)

	eng := fastEngine()
	eng.VerifyTimeout = 12 * time.Second
	h := newHarness(t, []*handlers.Service{myapp.svc, locked.svc, ghost.svc}, eng)
	app := func(ns, name string) *unstructured.Unstructured {
		t.Helper()
		obj, err := dyn.Resource(argoApplications).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return obj
	}
	original := app(myapp.ns, "myapp")
	image := func(ns, name string) string {
		t.Helper()
		d, err := c.AdminClient.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return d.Spec.Template.Spec.Containers[0].Image
	}
	incident := func(m slackemu.Message) string {
		t.Helper()
		if id := incidentID.FindString(m.PlainText()); id != "" {
			return id
		}
		t.Fatalf("no incident id in %q", m.PlainText())
		return ""
	}

	// --- myapp: pause, roll back, verify, Git change, resume-sync.
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", func(m slackemu.Message) bool {
		return slicesHas(m.ActionIDs(), handlers.ActConfirm) && strings.Contains(m.PlainText(), "myapp:v2")
	})
	wantAll(t, "assessment", a.PlainText(),
		"Owner", "Argo CD Application "+myapp.ns+"/myapp (auto-sync, self-heal, prune)",
		"Auto-sync of Argo CD Application "+myapp.ns+"/myapp is turned off first",
		"`/rollback resume-sync myapp`")
	id := incident(a)
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	h.waitFor("owner paused", textHas("Owner paused before the rollback:* paused Argo CD Application "+myapp.ns+"/myapp"))
	h.tickChecksByHand(slackemu.UserBob, a.TS)
	git := h.waitFor("git change", textHas("Change Git so the rollback sticks"))
	wantAll(t, "git change", git.PlainText(), "Repository: https://git.example.com/platform/deploy.git", "Path: apps/myapp/prod",
		"Target revision: release-7", "Image: `registry.local/myapp:v2` → `registry.local/myapp:v1`")
	post := h.waitFor("post-rollback actions", textHas("Post-rollback actions"))
	wantAll(t, "checklist", post.PlainText(), "Revert the image in Git so the rollback sticks", "path apps/myapp/prod")
	h.waitStatus(id, state.Completed)
	if _, found, _ := unstructured.NestedFieldNoCopy(app(myapp.ns, "myapp").Object, "spec", "syncPolicy", "automated"); found {
		t.Fatal("auto-sync still on after the rollback")
	}
	if got := image(myapp.ns, "myapp"); got != "registry.local/myapp:v1" {
		t.Fatalf("myapp runs %s after the rollback", got)
	}
	h.slash(slackemu.UserBob, "resume-sync myapp")
	h.waitFor("resumed", textHas("resumed the sync ("+id+")"))
	if got := app(myapp.ns, "myapp"); !reflect.DeepEqual(got.Object["spec"], original.Object["spec"]) || len(got.GetAnnotations()) != 0 {
		t.Fatalf("after resume-sync: spec %v annotations %v\nwant spec %v", got.Object["spec"], got.GetAnnotations(), original.Object["spec"])
	}

	// --- myapp again: the bad version comes back during the verification.
	kubetest.SetImage(t, c.AdminClient, myapp.ns, "myapp", "registry.local/myapp:v2")
	kubetest.WaitRolledOut(t, c.AdminClient, myapp.ns, "myapp")
	myapp.gate.open.Store(false)
	h.slash(slackemu.UserAlice, "myapp")
	a2 := h.waitFor("second assessment", func(m slackemu.Message) bool {
		return m.TS != a.TS && slicesHas(m.ActionIDs(), handlers.ActConfirm) && strings.Contains(m.PlainText(), "myapp:v2")
	})
	id2 := incident(a2)
	h.click(slackemu.UserBob, a2.TS, handlers.ActConfirm)
	h.waitFor("verifying", func(m slackemu.Message) bool {
		return m.ThreadTS == a2.TS && strings.Contains(m.PlainText(), "Verifying the rollback")
	})
	if got := image(myapp.ns, "myapp"); got != "registry.local/myapp:v1" {
		t.Fatalf("myapp runs %s during the verification", got)
	}
	// The sync someone resumed applies the "Git" manifest again.
	kubetest.SetImage(t, c.AdminClient, myapp.ns, "myapp", "registry.local/myapp:v2")
	back := h.waitFor("bad version back", func(m slackemu.Message) bool {
		return m.ThreadTS == a2.TS && strings.Contains(m.PlainText(), "The bad version is back")
	})
	wantAll(t, "bad version back", back.PlainText(), "runs `registry.local/myapp:v2` again", "Argo CD Application "+myapp.ns+"/myapp")
	// The verification then fails (the bad version runs) at its timeout.
	wait.For(t, eng.VerifyTimeout+10*time.Second, id2+" reaching "+string(state.VerifyFailed), func() (bool, error) {
		in, err := h.store.Get(ctx, id2)
		if err != nil {
			return false, err
		}
		return in.Status == state.VerifyFailed, errors.New(string(in.Status))
	})

	// --- locked: the pause is Forbidden; nothing is rolled back until an
	// approver chooses "Roll back anyway".
	h.slash(slackemu.UserAlice, "locked")
	la := h.waitFor("locked assessment", func(m slackemu.Message) bool {
		return slicesHas(m.ActionIDs(), handlers.ActConfirm) && strings.Contains(m.PlainText(), "locked:v2")
	})
	wantAll(t, "locked assessment", la.PlainText(), "cannot pause", "rollbot may not get applications.argoproj.io in "+locked.ns)
	h.click(slackemu.UserBob, la.TS, handlers.ActConfirm)
	refused := h.waitFor("refusal", hasAction(handlers.ActOwnerOverride))
	wantAll(t, "refusal", refused.PlainText(), "Not rolled back", "could not be paused", "forbidden", "Roll back anyway")
	if got := image(locked.ns, "locked"); got != "registry.local/locked:v2" {
		t.Fatalf("locked was changed although the owner could not be paused: %s", got)
	}
	h.click(slackemu.UserBob, refused.TS, handlers.ActOwnerOverride)
	h.tickChecksByHand(slackemu.UserBob, la.TS)
	h.waitFor("locked verified", func(m slackemu.Message) bool {
		return m.ThreadTS == la.TS && strings.Contains(m.PlainText(), "Rollback verified")
	})
	if got := image(locked.ns, "locked"); got != "registry.local/locked:v1" {
		t.Fatalf("locked runs %s after rolling back anyway", got)
	}

	// --- ghost: the Application does not exist.
	gen := func() int64 {
		d, err := c.AdminClient.AppsV1().Deployments(ghost.ns).Get(ctx, "ghost", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return d.Generation
	}
	before := gen()
	h.slash(slackemu.UserAlice, "ghost")
	ga := h.waitFor("ghost assessment", func(m slackemu.Message) bool {
		return slicesHas(m.ActionIDs(), handlers.ActConfirm) && strings.Contains(m.PlainText(), "ghost:v2")
	})
	wantAll(t, "ghost assessment", ga.PlainText(), "Argo CD Application "+ghost.ns+"/nowhere not found, though deployment "+ghost.ns+"/ghost names it as its owner")
	h.click(slackemu.UserBob, ga.TS, handlers.ActConfirm)
	gr := h.waitFor("ghost refusal", func(m slackemu.Message) bool {
		return m.ThreadTS == ga.TS && slicesHas(m.ActionIDs(), handlers.ActOwnerOverride)
	})
	wantAll(t, "ghost refusal", gr.PlainText(), "Not rolled back", "nowhere not found")
	if gen() != before {
		t.Fatal("the Deployment of ghost was written although its owner is missing")
	}
}

func slicesHas(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// TestArgoCDPauseOnceAcrossTakeover: a replica paused the Application for
// its incident and stopped before it could record the pause (Steps["owner"]
// is "started", no OwnerPause in Redis). The bot that takes the incident
// over does not pause again — the Application is not written a second time
// — and recovers the exact previous value from the owner's annotations, so
// resume-sync still restores it.
func TestArgoCDPauseOnceAcrossTakeover(t *testing.T) {
	c := kubetest.Start(t)
	c.InstallCRDs(t, kubetest.ArgoCDCRDs)
	dyn, err := dynamic.NewForConfig(c.AdminConfig)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ns := kubetest.CreateNamespace(t, c.AdminClient, "takeover")
	d := kubetest.NewDeployment(ns, "myapp", "registry.local/myapp:v1", 2)
	d.Labels = map[string]string{"argocd.argoproj.io/instance": "myapp"}
	kubetest.Create(t, c.AdminClient, d)
	kubetest.WaitRolledOut(t, c.AdminClient, ns, "myapp")
	kubetest.SetImage(t, c.AdminClient, ns, "myapp", "registry.local/myapp:v2")
	kubetest.WaitRolledOut(t, c.AdminClient, ns, "myapp")
	objs, err := kubetest.DecodeYAML([]byte(strings.NewReplacer("%APP%", "myapp", "%NS%", ns).Replace(gitopsApp)))
	if err != nil {
		t.Fatal(err)
	}
	original, err := dyn.Resource(argoApplications).Namespace(ns).Create(ctx, objs[0], metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := c.KubeconfigForRoles(t, ns, "../deploy/kubernetes/rbac.yaml", "rollbot", kube.GitOpsRole)
	adapter, err := kube.New(kube.Config{Kubeconfig: kubeconfig, Namespace: ns, Deployment: "myapp", ArgoCDNamespace: ns, RolloutTimeout: time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	svc := &handlers.Service{Name: "myapp", Platform: adapter, Metrics: imageMetrics{adapter},
		Thresholds: handlers.Thresholds{ErrorRate: 0.01, LatencyFactor: 2, Restarts: 3, UnreadyRatio: 0.5, BaselineP95: 100 * time.Millisecond},
		Approvers:  handlers.Access{Groups: []string{slackemu.GroupOnCall}}}
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())

	// The replica that stopped: its incident, its lock, its pause.
	id, err := h.store.NextID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lock, err := h.store.AcquireLock(ctx, "myapp", id, slackemu.UserAlice, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := adapter.PauseOwner(ctx, id, false); err != nil {
		t.Fatal(err)
	}
	paused, err := dyn.Resource(argoApplications).Namespace(ns).Get(ctx, "myapp", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h.store.SetLease(time.Second)
	now := time.Now()
	if err := h.store.Create(ctx, &state.Incident{ID: id, Service: "myapp", Channel: slackemu.ChannelIncident, RequestedBy: slackemu.UserAlice,
		DecidedBy: slackemu.UserBob, Status: state.Stopping, Platform: "kubernetes", PlatformTgt: adapter.Target(), Lock: lock.Token,
		Bad:    platforms.Revision{ID: "2", Artifact: "registry.local/myapp:v2"},
		Target: platforms.Revision{ID: "1", Artifact: "registry.local/myapp:v1"},
		Steps:  map[string]string{"owner": "started"}, Owner: "replica-that-stopped", Fence: 1, StepStarted: now, DeployedAt: now.Add(-time.Minute),
		Messages: map[string]string{}}); err != nil {
		t.Fatal(err)
	}

	h.waitFor("owner already paused", textHas("Argo CD Application "+ns+"/myapp was already paused for "+id))
	h.tickChecksByHand(slackemu.UserBob, "")
	in := h.waitStatus(id, state.Completed)
	if p := in.OwnerPause; p == nil || !p.Changed || string(p.Previous) != `{"prune":true,"selfHeal":true}` {
		t.Fatalf("pause record after the takeover: %+v", in.OwnerPause)
	}
	if got, err := dyn.Resource(argoApplications).Namespace(ns).Get(ctx, "myapp", metav1.GetOptions{}); err != nil || got.GetResourceVersion() != paused.GetResourceVersion() {
		t.Fatalf("the Application was written again after the takeover (resourceVersion %s -> %v, %v)", paused.GetResourceVersion(), got.GetResourceVersion(), err)
	}
	h.slash(slackemu.UserBob, "resume-sync myapp")
	h.waitFor("resumed", textHas("resumed the sync ("+id+")"))
	got, err := dyn.Resource(argoApplications).Namespace(ns).Get(ctx, "myapp", metav1.GetOptions{})
	if err != nil || !reflect.DeepEqual(got.Object["spec"], original.Object["spec"]) {
		t.Fatalf("after resume-sync: %v %v", got.Object["spec"], err)
	}
}
