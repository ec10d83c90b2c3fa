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

	appsv1 "k8s.io/api/apps/v1"
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

// The GitOps owners' resources the tests create and read.
var (
	argoApplications    = schema.GroupVersionResource{Group: "argoproj.io", Version: "v1alpha1", Resource: "applications"}
	fluxKustomizations  = schema.GroupVersionResource{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Resource: "kustomizations"}
	fluxGitRepositories = schema.GroupVersionResource{Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "gitrepositories"}
	gitopsResources     = map[string]schema.GroupVersionResource{"Application": argoApplications, "Kustomization": fluxKustomizations, "GitRepository": fluxGitRepositories}
)

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

// fluxApp is a Kustomization applying the service's path of a
// GitRepository; suspend is written out (false), so that resume-sync has a
// value to put back.
const fluxApp = `
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata:
  name: fleet
spec:
  interval: 1m
  url: https://git.example.com/platform/fleet.git
  ref:
    branch: main
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: %APP%
spec:
  interval: 10m
  path: ./clusters/prod/%APP%
  prune: true
  suspend: false
  sourceRef:
    kind: GitRepository
    name: fleet
`

// gitopsCluster is a real control plane with GitOps tools' real CRDs. Each
// of its services is a namespace with a Deployment of the same name that
// its owner's labels name, rolled out to the bad v2 after v1.
type gitopsCluster struct {
	t   *testing.T
	c   *kubetest.Cluster
	dyn dynamic.Interface
}

func startGitops(t *testing.T, crds ...kubetest.ModuleCRDs) *gitopsCluster {
	t.Helper()
	c := kubetest.Start(t)
	for _, m := range crds {
		c.InstallCRDs(t, m)
	}
	dyn, err := dynamic.NewForConfig(c.AdminConfig)
	if err != nil {
		t.Fatal(err)
	}
	return &gitopsCluster{t: t, c: c, dyn: dyn}
}

type gitopsService struct {
	ns      string
	svc     *handlers.Service
	adapter *kube.Adapter
	gate    *healthGate // open unless the test closes it
}

// service creates the service name: its Deployment with labels, the
// objects of manifest (YAML) in its namespace (in both, %APP% stands for
// name and %NS% for the namespace), and its adapter running as a
// ServiceAccount bound to roles of rbac.yaml.
func (g *gitopsCluster) service(name string, labels map[string]string, manifest string, roles ...string) gitopsService {
	t := g.t
	t.Helper()
	ns := kubetest.CreateNamespace(t, g.c.AdminClient, name)
	vars := strings.NewReplacer("%APP%", name, "%NS%", ns)
	d := kubetest.NewDeployment(ns, name, "registry.local/"+name+":v1", 2)
	d.Labels = map[string]string{}
	for k, v := range labels {
		d.Labels[k] = vars.Replace(v)
	}
	kubetest.Create(t, g.c.AdminClient, d)
	kubetest.WaitRolledOut(t, g.c.AdminClient, ns, name)
	kubetest.SetImage(t, g.c.AdminClient, ns, name, "registry.local/"+name+":v2")
	kubetest.WaitRolledOut(t, g.c.AdminClient, ns, name)
	objs, err := kubetest.DecodeYAML([]byte(vars.Replace(manifest)))
	if err != nil {
		t.Fatal(err)
	}
	for _, obj := range objs {
		if _, err := g.dyn.Resource(gitopsResources[obj.GetKind()]).Namespace(ns).Create(context.Background(), obj, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s %s: %v", obj.GetKind(), obj.GetName(), err)
		}
	}
	kubeconfig := g.c.KubeconfigForRoles(t, ns, "../deploy/kubernetes/rbac.yaml", roles...)
	adapter, err := kube.New(kube.Config{Kubeconfig: kubeconfig, Namespace: ns, Deployment: name, ArgoCDNamespace: ns, RolloutTimeout: time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	gate := &healthGate{}
	gate.open.Store(true)
	return gitopsService{ns: ns, adapter: adapter, gate: gate, svc: &handlers.Service{Name: name, Platform: adapter, Metrics: imageMetrics{adapter}, Health: gate, HasHealth: true,
		Thresholds: handlers.Thresholds{ErrorRate: 0.01, LatencyFactor: 2, Restarts: 3, UnreadyRatio: 0.5, BaselineP95: 100 * time.Millisecond},
		Approvers:  handlers.Access{Groups: []string{slackemu.GroupOnCall}}}}
}

func (g *gitopsCluster) get(gvr schema.GroupVersionResource, ns, name string) *unstructured.Unstructured {
	g.t.Helper()
	obj, err := g.dyn.Resource(gvr).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		g.t.Fatal(err)
	}
	return obj
}

func (g *gitopsCluster) deployment(ns, name string) *appsv1.Deployment {
	g.t.Helper()
	d, err := g.c.AdminClient.AppsV1().Deployments(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		g.t.Fatal(err)
	}
	return d
}

func (g *gitopsCluster) image(ns, name string) string {
	g.t.Helper()
	return g.deployment(ns, name).Spec.Template.Spec.Containers[0].Image
}

func incidentOf(t *testing.T, m slackemu.Message) string {
	t.Helper()
	if id := incidentID.FindString(m.PlainText()); id != "" {
		return id
	}
	t.Fatalf("no incident id in %q", m.PlainText())
	return ""
}

// assessmentOf matches the assessment (with its Roll back button) of
// service name running v2, other than the message at ts except.
func assessmentOf(name, except string) func(slackemu.Message) bool {
	return func(m slackemu.Message) bool {
		return m.TS != except && slicesHas(m.ActionIDs(), handlers.ActConfirm) && strings.Contains(m.PlainText(), name+":v2")
	}
}

// gitopsOwned is what the rollback through Slack of a service whose GitOps
// owner reconciles shows and does to that owner.
type gitopsOwned struct {
	gitopsService
	gvr       schema.GroupVersionResource // the owner's resource
	owner     string                      // its name, in the service's namespace
	label     string                      // as users read it ("Flux Kustomization ns/name")
	row, plan string                      // the Owner row of the assessment, the confirmation's plan
	field     string                      // the field the pause changes
	previous  string                      // its value before the pause, as JSON
	pause     func(obj map[string]any)    // the exact pause, applied to a copy of the owner
	git       []string                    // lines of the "Change Git" message
	checklist string                      // the Git item's detail in the post-rollback checklist
}

// rollBackOwned: /rollback through the local Slack server pauses the owner
// with exactly o.pause before the rollback, verifies, says what to change
// in Git (also a checklist item), and `/rollback resume-sync` restores the
// owner exactly. Then v2 is deployed again and rolled back again, and
// during the verification the "Git" manifest is applied again (the sync
// someone resumed): rollbot says at once that the bad version is back, and
// the verification fails at its timeout.
func (g *gitopsCluster) rollBackOwned(h *harness, eng handlers.Options, o gitopsOwned) {
	t := g.t
	t.Helper()
	ctx := context.Background()
	name := o.svc.Name
	bad, good := "registry.local/"+name+":v2", "registry.local/"+name+":v1"
	original := g.get(o.gvr, o.ns, o.owner)

	// --- pause, roll back, verify, Git change, resume-sync.
	h.slash(slackemu.UserAlice, name)
	a := h.waitFor("assessment", assessmentOf(name, ""))
	wantAll(t, "assessment", a.PlainText(), "Owner", o.row, o.plan, "`/rollback resume-sync "+name+"`")
	id := incidentOf(t, a)
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	h.waitFor("owner paused", textHas("Owner paused before the rollback:* paused "+o.label))
	want := original.DeepCopy()
	o.pause(want.Object)
	wantMarks := map[string]string{kube.AnnotationPausedBy: id, kube.AnnotationPausedPrevious: o.previous}
	if got := g.get(o.gvr, o.ns, o.owner); !reflect.DeepEqual(got.Object["spec"], want.Object["spec"]) || !reflect.DeepEqual(got.GetAnnotations(), wantMarks) {
		t.Fatalf("%s after the pause: spec %v annotations %v\nwant spec %v annotations %v", o.label, got.Object["spec"], got.GetAnnotations(), want.Object["spec"], wantMarks)
	}
	h.tickChecksByHand(slackemu.UserBob, a.TS)
	git := h.waitFor("git change", textHas("Change Git so the rollback sticks"))
	wantAll(t, "git change", git.PlainText(), append(o.git, "Image: `"+bad+"` → `"+good+"`")...)
	post := h.waitFor("post-rollback actions", textHas("Post-rollback actions"))
	wantAll(t, "checklist", post.PlainText(), "Revert the image in Git so the rollback sticks", o.checklist)
	h.waitStatus(id, state.Completed)
	if got := g.get(o.gvr, o.ns, o.owner); !reflect.DeepEqual(got.Object["spec"], want.Object["spec"]) {
		t.Fatalf("%s is no longer paused after the rollback: spec %v", o.label, got.Object["spec"])
	}
	if got := g.image(o.ns, name); got != good {
		t.Fatalf("%s runs %s after the rollback", name, got)
	}
	h.slash(slackemu.UserBob, "resume-sync "+name)
	h.waitFor("resumed", textHas("resumed the sync ("+id+"): resumed "+o.label+": "+o.field+" is "+o.previous+" again"))
	if got := g.get(o.gvr, o.ns, o.owner); !reflect.DeepEqual(got.Object["spec"], original.Object["spec"]) || len(got.GetAnnotations()) != 0 {
		t.Fatalf("after resume-sync: spec %v annotations %v\nwant spec %v", got.Object["spec"], got.GetAnnotations(), original.Object["spec"])
	}

	// --- again: the bad version comes back during the verification.
	kubetest.SetImage(t, g.c.AdminClient, o.ns, name, bad)
	kubetest.WaitRolledOut(t, g.c.AdminClient, o.ns, name)
	o.gate.open.Store(false)
	h.slash(slackemu.UserAlice, name)
	a2 := h.waitFor("second assessment", assessmentOf(name, a.TS))
	id2 := incidentOf(t, a2)
	h.click(slackemu.UserBob, a2.TS, handlers.ActConfirm)
	h.waitFor("verifying", func(m slackemu.Message) bool {
		return m.ThreadTS == a2.TS && strings.Contains(m.PlainText(), "Verifying the rollback")
	})
	if got := g.image(o.ns, name); got != good {
		t.Fatalf("%s runs %s during the verification", name, got)
	}
	// The sync someone resumed applies the "Git" manifest again.
	kubetest.SetImage(t, g.c.AdminClient, o.ns, name, bad)
	back := h.waitFor("bad version back", func(m slackemu.Message) bool {
		return m.ThreadTS == a2.TS && strings.Contains(m.PlainText(), "The bad version is back")
	})
	wantAll(t, "bad version back", back.PlainText(), "runs `"+bad+"` again", o.label)
	// The verification then fails (the bad version runs) at its timeout.
	wait.For(t, eng.VerifyTimeout+10*time.Second, id2+" reaching "+string(state.VerifyFailed), func() (bool, error) {
		in, err := h.store.Get(ctx, id2)
		if err != nil {
			return false, err
		}
		return in.Status == state.VerifyFailed, errors.New(string(in.Status))
	})
}

// TestArgoCDOwnedRollbackThroughSlack: Deployments owned by Argo CD
// Applications (the real Application CRD from Argo CD's Go module) on a
// real control plane, rolled back through the local Slack server.
//   - myapp (rollBackOwned): the Owner row and the confirmation name the
//     Application; the pause removes exactly spec.syncPolicy.automated;
//     `/rollback resume-sync myapp` restores it exactly; the bad version
//     coming back is reported.
//   - locked: rollbot may not touch Applications (only the adapter's Role):
//     nothing is rolled back, the cluster's Forbidden is shown, and "Roll
//     back anyway" rolls back without the pause.
//   - ghost: its label names an Application that does not exist: the Owner
//     row says so, and the confirmation changes nothing.
func TestArgoCDOwnedRollbackThroughSlack(t *testing.T) {
	heavyLong(t)
	g := startGitops(t, kubetest.ArgoCDCRDs)
	argoOwned := func(name string) map[string]string { return map[string]string{"argocd.argoproj.io/instance": name} }
	myapp := g.service("myapp", argoOwned("myapp"), gitopsApp, "rollbot", kube.GitOpsRole)
	locked := g.service("locked", argoOwned("locked"), gitopsApp, "rollbot")
	ghost := g.service("ghost", argoOwned("nowhere"), "", "rollbot", kube.GitOpsRole)

	eng := fastEngine()
	eng.VerifyTimeout = 12 * time.Second
	h := newHarness(t, []*handlers.Service{myapp.svc, locked.svc, ghost.svc}, eng)

	label := "Argo CD Application " + myapp.ns + "/myapp"
	g.rollBackOwned(h, eng, gitopsOwned{gitopsService: myapp, gvr: argoApplications, owner: "myapp", label: label,
		row:   label + " (auto-sync, self-heal, prune)",
		plan:  "Auto-sync of " + label + " is turned off first",
		field: "spec.syncPolicy.automated", previous: `{"prune":true,"selfHeal":true}`,
		pause:     func(obj map[string]any) { unstructured.RemoveNestedField(obj, "spec", "syncPolicy", "automated") },
		git:       []string{"Repository: https://git.example.com/platform/deploy.git", "Path: apps/myapp/prod", "Target revision: release-7"},
		checklist: "path apps/myapp/prod"})

	// --- locked: the pause is Forbidden; nothing is rolled back until an
	// approver chooses "Roll back anyway".
	h.slash(slackemu.UserAlice, "locked")
	la := h.waitFor("locked assessment", assessmentOf("locked", ""))
	wantAll(t, "locked assessment", la.PlainText(), "cannot pause", "rollbot may not get applications.argoproj.io in "+locked.ns)
	h.click(slackemu.UserBob, la.TS, handlers.ActConfirm)
	refused := h.waitFor("refusal", hasAction(handlers.ActOwnerOverride))
	wantAll(t, "refusal", refused.PlainText(), "Not rolled back", "could not be paused", "forbidden", "Roll back anyway")
	if got := g.image(locked.ns, "locked"); got != "registry.local/locked:v2" {
		t.Fatalf("locked was changed although the owner could not be paused: %s", got)
	}
	h.click(slackemu.UserBob, refused.TS, handlers.ActOwnerOverride)
	h.tickChecksByHand(slackemu.UserBob, la.TS)
	h.waitFor("locked verified", func(m slackemu.Message) bool {
		return m.ThreadTS == la.TS && strings.Contains(m.PlainText(), "Rollback verified")
	})
	if got := g.image(locked.ns, "locked"); got != "registry.local/locked:v1" {
		t.Fatalf("locked runs %s after rolling back anyway", got)
	}

	// --- ghost: the Application does not exist.
	before := g.deployment(ghost.ns, "ghost").Generation
	h.slash(slackemu.UserAlice, "ghost")
	ga := h.waitFor("ghost assessment", assessmentOf("ghost", ""))
	wantAll(t, "ghost assessment", ga.PlainText(), "Argo CD Application "+ghost.ns+"/nowhere not found, though deployment "+ghost.ns+"/ghost names it as its owner")
	h.click(slackemu.UserBob, ga.TS, handlers.ActConfirm)
	gr := h.waitFor("ghost refusal", func(m slackemu.Message) bool {
		return m.ThreadTS == ga.TS && slicesHas(m.ActionIDs(), handlers.ActOwnerOverride)
	})
	wantAll(t, "ghost refusal", gr.PlainText(), "Not rolled back", "nowhere not found")
	if g.deployment(ghost.ns, "ghost").Generation != before {
		t.Fatal("the Deployment of ghost was written although its owner is missing")
	}
}

// TestFluxOwnedRollbackThroughSlack: a Deployment owned by a Flux
// Kustomization whose source is a GitRepository (the real CRDs from Flux's
// Go modules) on a real control plane, rolled back through the local Slack
// server (rollBackOwned): the Owner row and the confirmation name the
// Kustomization; the pause is exactly spec.suspend: true (what `flux
// suspend` does); the Git change names the GitRepository's URL and branch
// and the Kustomization's path; `/rollback resume-sync` puts suspend back
// to false; the bad version coming back is reported.
//
// Flux's HelmRelease CRD (helm-controller's module) is not served by the
// module proxy this project reaches, so no HelmRelease variant runs here;
// platforms/kube's tests cover the HelmRelease owner as far as it goes
// without its CRD.
func TestFluxOwnedRollbackThroughSlack(t *testing.T) {
	heavy(t)
	g := startGitops(t, kubetest.FluxKustomizeCRDs, kubetest.FluxSourceCRDs)
	app := g.service("myapp", map[string]string{"kustomize.toolkit.fluxcd.io/name": "%APP%", "kustomize.toolkit.fluxcd.io/namespace": "%NS%"},
		fluxApp, "rollbot", kube.GitOpsRole)
	eng := fastEngine()
	eng.VerifyTimeout = 12 * time.Second
	h := newHarness(t, []*handlers.Service{app.svc}, eng)

	label := "Flux Kustomization " + app.ns + "/myapp"
	g.rollBackOwned(h, eng, gitopsOwned{gitopsService: app, gvr: fluxKustomizations, owner: "myapp", label: label,
		row:   label + " (reconciling)",
		plan:  label + " is suspended first (spec.suspend: true, as `flux suspend` does)",
		field: "spec.suspend", previous: "false",
		pause: func(obj map[string]any) { unstructured.SetNestedField(obj, true, "spec", "suspend") },
		git: []string{"read from " + label + ", GitRepository " + app.ns + "/fleet", "Repository: https://git.example.com/platform/fleet.git",
			"Path: ./clusters/prod/myapp", "Target revision: branch main"},
		checklist: "in https://git.example.com/platform/fleet.git, path ./clusters/prod/myapp, revision branch main"})
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
	heavy(t)
	g := startGitops(t, kubetest.ArgoCDCRDs)
	ctx := context.Background()
	s := g.service("myapp", map[string]string{"argocd.argoproj.io/instance": "myapp"}, gitopsApp, "rollbot", kube.GitOpsRole)
	ns, adapter := s.ns, s.adapter
	original := g.get(argoApplications, ns, "myapp")
	h := newHarness(t, []*handlers.Service{s.svc}, fastEngine())

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
	paused := g.get(argoApplications, ns, "myapp")
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
	if got := g.get(argoApplications, ns, "myapp"); got.GetResourceVersion() != paused.GetResourceVersion() {
		t.Fatalf("the Application was written again after the takeover (resourceVersion %s -> %s)", paused.GetResourceVersion(), got.GetResourceVersion())
	}
	h.slash(slackemu.UserBob, "resume-sync myapp")
	h.waitFor("resumed", textHas("resumed the sync ("+id+")"))
	if got := g.get(argoApplications, ns, "myapp"); !reflect.DeepEqual(got.Object["spec"], original.Object["spec"]) {
		t.Fatalf("after resume-sync: %v", got.Object["spec"])
	}
}
