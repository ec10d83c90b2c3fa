package kube_test

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"

	"rollbot/platforms"
	"rollbot/platforms/kube"
	"rollbot/testkit/kubetest"
)

// The owners' real CRDs, read from Argo CD's and Flux's own Go modules,
// installed once on the package's control plane.
var crdsOnce sync.Once

func gitopsCluster(t *testing.T) *kubetest.Cluster {
	t.Helper()
	c := cluster(t)
	crdsOnce.Do(func() {
		c.InstallCRDs(t, kubetest.ArgoCDCRDs)
		c.InstallCRDs(t, kubetest.FluxKustomizeCRDs)
		c.InstallCRDs(t, kubetest.FluxSourceCRDs)
		// Flux's HelmRelease CRD is deliberately not installed: the
		// "CRD absent" case.
	})
	return c
}

var (
	applications   = schema.GroupVersionResource{Group: "argoproj.io", Version: "v1alpha1", Resource: "applications"}
	kustomizations = schema.GroupVersionResource{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Resource: "kustomizations"}
	gitRepos       = schema.GroupVersionResource{Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "gitrepositories"}
)

// ownerEnv is a namespace with the Deployment myapp (labelled by mutate),
// the owners' objects in the same namespace, and an adapter running as a
// ServiceAccount bound to roles of rbac.yaml.
type ownerEnv struct {
	*env
	dyn dynamic.Interface
}

func newOwnerEnv(t *testing.T, labels, annotations map[string]string, roles ...string) *ownerEnv {
	t.Helper()
	c := gitopsCluster(t)
	e := &env{c: c, admin: c.AdminClient, name: "myapp", logs: nil}
	e.ns = kubetest.CreateNamespace(t, e.admin, "owner")
	d := kubetest.NewDeployment(e.ns, e.name, v1, 2)
	d.Labels, d.Annotations = labels, annotations
	kubetest.Create(t, e.admin, d)
	kubetest.WaitRolledOut(t, e.admin, e.ns, e.name)
	e.kubeconfig = c.KubeconfigForRoles(t, e.ns, rbacFile, roles...)
	a, err := kube.New(kube.Config{Kubeconfig: e.kubeconfig, Namespace: e.ns, Deployment: e.name, ArgoCDNamespace: e.ns}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.a = a
	dyn, err := dynamic.NewForConfig(c.AdminConfig)
	if err != nil {
		t.Fatal(err)
	}
	return &ownerEnv{env: e, dyn: dyn}
}

func (e *ownerEnv) create(t *testing.T, gvr schema.GroupVersionResource, yaml string) *unstructured.Unstructured {
	t.Helper()
	objs, err := kubetest.DecodeYAML([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := e.dyn.Resource(gvr).Namespace(e.ns).Create(context.Background(), objs[0], metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create %s: %v", gvr.Resource, err)
	}
	return obj
}

func (e *ownerEnv) getObj(t *testing.T, gvr schema.GroupVersionResource, name string) *unstructured.Unstructured {
	t.Helper()
	obj, err := e.dyn.Resource(gvr).Namespace(e.ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return obj
}

// setMeta sets the Deployment's labels and annotations (the controller
// writes its status meanwhile: retried on conflict).
func (e *ownerEnv) setMeta(t *testing.T, labels, annotations map[string]string) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d, err := e.admin.AppsV1().Deployments(e.ns).Get(context.Background(), e.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		d.Labels, d.Annotations = labels, annotations
		_, err = e.admin.AppsV1().Deployments(e.ns).Update(context.Background(), d, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

const argoApp = `
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: myapp
spec:
  project: default
  source:
    repoURL: https://git.example.com/platform/deploy.git
    path: apps/myapp/prod
    targetRevision: release-7
  destination:
    server: https://kubernetes.default.svc
    namespace: prod
  syncPolicy:
    automated:
      prune: true
      selfHeal: true
    syncOptions:
    - CreateNamespace=true
`

// An Argo CD Application: the Owner row, the exact pause (automated
// removed, nothing else of the spec touched, the old value and the incident
// in annotations), a second pause for the same incident changing nothing,
// the resume restoring automated exactly, and the Git change.
func TestArgoCDPauseAndResume(t *testing.T) {
	e := newOwnerEnv(t, map[string]string{"argocd.argoproj.io/instance": "myapp"}, nil, "rollbot", kube.GitOpsRole)
	before := e.create(t, applications, argoApp)
	ctx := context.Background()

	snap := e.snapshot(t)
	if o := snap.Owner; o == nil || o.Kind != platforms.OwnerArgoCD || o.Name != "myapp" || o.Namespace != e.ns || o.Problem != "" || !o.Reconciles ||
		o.Detail != "Argo CD Application "+e.ns+"/myapp (auto-sync, self-heal, prune)" {
		t.Fatalf("owner = %+v", snap.Owner)
	}

	// A dry run is accepted by the API server and changes nothing.
	res, _, err := e.a.PauseOwner(ctx, "RB-7", true)
	if err != nil || res.Outcome != platforms.Planned {
		t.Fatalf("dry run: %+v, %v", res, err)
	}
	if got := e.getObj(t, applications, "myapp"); !reflect.DeepEqual(got.Object["spec"], before.Object["spec"]) {
		t.Fatalf("the dry run changed the spec: %v", got.Object["spec"])
	}

	res, pause, err := e.a.PauseOwner(ctx, "RB-7", false)
	if err != nil {
		t.Fatal(err)
	}
	wantPlan := "Argo CD Application " + e.ns + `/myapp: remove spec.syncPolicy.automated (was {"prune":true,"selfHeal":true})`
	if res.Outcome != platforms.Done || !slices.Equal(res.Plan, []string{wantPlan}) {
		t.Fatalf("pause: %+v", res)
	}
	if pause == nil || !pause.Changed || pause.Field != "spec.syncPolicy.automated" || string(pause.Previous) != `{"prune":true,"selfHeal":true}` || pause.Incident != "RB-7" {
		t.Fatalf("pause record: %+v", pause)
	}
	after := e.getObj(t, applications, "myapp")
	wantSpec := before.DeepCopy()
	unstructured.RemoveNestedField(wantSpec.Object, "spec", "syncPolicy", "automated")
	if !reflect.DeepEqual(after.Object["spec"], wantSpec.Object["spec"]) {
		t.Fatalf("spec after the pause:\n%v\nwant\n%v", after.Object["spec"], wantSpec.Object["spec"])
	}
	if an := after.GetAnnotations(); !reflect.DeepEqual(an, map[string]string{kube.AnnotationPausedBy: "RB-7", kube.AnnotationPausedPrevious: `{"prune":true,"selfHeal":true}`}) {
		t.Fatalf("annotations after the pause: %v", an)
	}

	// A replica that takes the incident over pauses again: nothing changes,
	// and it gets the same record (from the annotations).
	res, again, err := e.a.PauseOwner(ctx, "RB-7", false)
	if err != nil || res.Outcome != platforms.Skipped || again == nil || string(again.Previous) != string(pause.Previous) || !again.Changed {
		t.Fatalf("second pause: %+v %+v %v", res, again, err)
	}
	if got := e.getObj(t, applications, "myapp"); got.GetResourceVersion() != after.GetResourceVersion() {
		t.Fatal("the second pause wrote to the Application")
	}
	// Another incident does not take the pause over.
	if res, other, err := e.a.PauseOwner(ctx, "RB-8", false); err != nil || res.Outcome != platforms.Skipped || other.Changed {
		t.Fatalf("pause for another incident: %+v %+v %v", res, other, err)
	}

	g, err := e.a.GitChange(ctx, *pause, platforms.Revision{Artifact: v2}, platforms.Revision{Artifact: v1})
	if err != nil {
		t.Fatal(err)
	}
	if g.Repo != "https://git.example.com/platform/deploy.git" || g.Path != "apps/myapp/prod" || g.Revision != "release-7" || g.From != v2 || g.To != v1 {
		t.Fatalf("git change: %+v", g)
	}

	res, err = e.a.ResumeOwner(ctx, *pause)
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("resume: %+v %v", res, err)
	}
	resumed := e.getObj(t, applications, "myapp")
	if !reflect.DeepEqual(resumed.Object["spec"], before.Object["spec"]) {
		t.Fatalf("spec after the resume:\n%v\nwant exactly as before\n%v", resumed.Object["spec"], before.Object["spec"])
	}
	if len(resumed.GetAnnotations()) != 0 {
		t.Fatalf("annotations left: %v", resumed.GetAnnotations())
	}
	if res, err := e.a.ResumeOwner(ctx, *pause); err != nil || res.Outcome != platforms.Skipped {
		t.Fatalf("second resume: %+v %v", res, err)
	}
}

// A Flux Kustomization: spec.suspend: true, as `flux suspend` does; the
// resume removes it again (it was not set); the Git change comes from the
// GitRepository.
func TestFluxSuspendAndResume(t *testing.T) {
	e := newOwnerEnv(t, map[string]string{"kustomize.toolkit.fluxcd.io/name": "apps"}, nil, "rollbot", kube.GitOpsRole)
	e.create(t, gitRepos, `
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata:
  name: fleet
spec:
  interval: 1m
  url: ssh://git@git.example.com/platform/fleet.git
  ref:
    branch: main
`)
	before := e.create(t, kustomizations, `
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: apps
spec:
  interval: 10m
  path: ./clusters/prod/myapp
  prune: true
  sourceRef:
    kind: GitRepository
    name: fleet
`)
	ctx := context.Background()
	if o := e.snapshot(t).Owner; o == nil || o.Kind != platforms.OwnerFluxKustomize || o.Namespace != e.ns || o.Detail != "Flux Kustomization "+e.ns+"/apps (reconciling)" {
		t.Fatalf("owner = %+v", o)
	}
	res, pause, err := e.a.PauseOwner(ctx, "RB-3", false)
	if err != nil || res.Outcome != platforms.Done || string(pause.Previous) != "null" || pause.Field != "spec.suspend" {
		t.Fatalf("pause: %+v %+v %v", res, pause, err)
	}
	if want := "Flux Kustomization " + e.ns + "/apps: spec.suspend: true (was null)"; !slices.Equal(res.Plan, []string{want}) {
		t.Fatalf("plan %q, want %q", res.Plan, want)
	}
	got := e.getObj(t, kustomizations, "apps")
	want := before.DeepCopy()
	unstructured.SetNestedField(want.Object, true, "spec", "suspend")
	if !reflect.DeepEqual(got.Object["spec"], want.Object["spec"]) {
		t.Fatalf("spec after the pause: %v", got.Object["spec"])
	}
	g, err := e.a.GitChange(ctx, *pause, platforms.Revision{Artifact: v2}, platforms.Revision{Artifact: v1})
	if err != nil || g.Repo != "ssh://git@git.example.com/platform/fleet.git" || g.Path != "./clusters/prod/myapp" || g.Revision != "branch main" {
		t.Fatalf("git change: %+v %v", g, err)
	}
	if res, err := e.a.ResumeOwner(ctx, *pause); err != nil || res.Outcome != platforms.Done {
		t.Fatalf("resume: %+v %v", res, err)
	}
	if got := e.getObj(t, kustomizations, "apps"); !reflect.DeepEqual(got.Object["spec"], before.Object["spec"]) || len(got.GetAnnotations()) != 0 {
		t.Fatalf("after the resume: spec %v annotations %v", got.Object["spec"], got.GetAnnotations())
	}
}

// Without permission to patch the Application (a user with only get on
// it), the pause is refused with the cluster's message and nothing changes;
// without any permission on it, the Owner row already says so.
func TestOwnerPauseForbidden(t *testing.T) {
	e := newOwnerEnv(t, nil, map[string]string{"argocd.argoproj.io/tracking-id": "myapp:apps/Deployment:x/myapp"}, "rollbot")
	before := e.create(t, applications, argoApp)
	ctx := context.Background()

	o := e.snapshot(t).Owner
	if o == nil || !strings.Contains(o.Problem, "rollbot may not get applications.argoproj.io in "+e.ns) || !strings.Contains(o.Problem, "forbidden") {
		t.Fatalf("owner = %+v", o)
	}
	_, _, err := e.a.PauseOwner(ctx, "RB-1", false)
	if msg := e.checkErr(t, err); !strings.Contains(msg, "cannot pause Argo CD Application "+e.ns+"/myapp: rollbot may not get") {
		t.Fatalf("message %q", msg)
	}

	// get, but not patch.
	path, _ := e.c.KubeconfigForRules(t, e.ns, "owner-read-only", []rbacv1.PolicyRule{
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get"}},
		{APIGroups: []string{"argoproj.io"}, Resources: []string{"applications"}, Verbs: []string{"get"}},
	})
	ro, err := kube.New(kube.Config{Kubeconfig: path, Namespace: e.ns, Deployment: e.name, ArgoCDNamespace: e.ns}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = ro.PauseOwner(ctx, "RB-1", false)
	msg := e.checkErr(t, err)
	if !strings.Contains(msg, "cannot pause Argo CD Application "+e.ns+"/myapp: rollbot may not patch applications.argoproj.io in "+e.ns) ||
		!strings.Contains(msg, `cannot patch resource \"applications\"`) {
		t.Fatalf("message %q", msg)
	}
	if got := e.getObj(t, applications, "myapp"); got.GetResourceVersion() != before.GetResourceVersion() {
		t.Fatal("the refused pause changed the Application")
	}
}

// Bad input: the owner label names an Application that does not exist,
// or a Flux HelmRelease whose CRD is not installed: the Owner row says
// so, the pause is a clear user error, and nothing is written.
func TestOwnerMissingOrWithoutCRD(t *testing.T) {
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   string
	}{
		{"missing application", map[string]string{"argocd.argoproj.io/instance": "ghost"}, "Argo CD Application %s/ghost not found, though deployment %s/myapp names it as its owner"},
		{"no helmrelease CRD", map[string]string{"helm.toolkit.fluxcd.io/name": "myapp", "helm.toolkit.fluxcd.io/namespace": "%s"}, "the cluster has no helmreleases.helm.toolkit.fluxcd.io API (v2): is Flux installed?"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newOwnerEnv(t, nil, nil, "rollbot", kube.GitOpsRole)
			labels := map[string]string{}
			for k, v := range tc.labels {
				labels[k] = strings.ReplaceAll(v, "%s", e.ns)
			}
			e.setMeta(t, labels, nil)
			want := tc.want
			if strings.Count(want, "%s") == 2 {
				want = fmt.Sprintf(want, e.ns, e.ns)
			}
			o := e.snapshot(t).Owner
			if o == nil || !strings.Contains(o.Problem, want) {
				t.Fatalf("owner = %+v\nwant problem %q", o, want)
			}
			gen := e.get(t).Generation
			_, p, err := e.a.PauseOwner(context.Background(), "RB-9", false)
			if msg := e.checkErr(t, err); !strings.Contains(msg, want) || p != nil {
				t.Fatalf("message %q, pause %+v", msg, p)
			}
			if e.get(t).Generation != gen {
				t.Fatal("the Deployment was changed")
			}
		})
	}
}

// Helm, Flux HelmRelease over Helm's labels, Argo CD in another namespace
// (tracking id "<ns>_<name>"), and none.
func TestOwnerDetection(t *testing.T) {
	e := newOwnerEnv(t, nil, nil, "rollbot", kube.GitOpsRole)
	for _, tc := range []struct {
		labels, annotations map[string]string
		kind, name, ns      string
	}{
		{map[string]string{"app.kubernetes.io/managed-by": "Helm"}, map[string]string{"meta.helm.sh/release-name": "shop", "meta.helm.sh/release-namespace": "prod"}, platforms.OwnerHelm, "shop", "prod"},
		{map[string]string{"app.kubernetes.io/managed-by": "Helm", "helm.toolkit.fluxcd.io/name": "shop", "helm.toolkit.fluxcd.io/namespace": "flux-system"}, nil, platforms.OwnerFluxHelmRelease, "shop", "flux-system"},
		{nil, map[string]string{"argocd.argoproj.io/tracking-id": "team-a_shop:apps/Deployment:prod/myapp"}, platforms.OwnerArgoCD, "shop", "team-a"},
		{nil, nil, "", "", ""},
	} {
		e.setMeta(t, tc.labels, tc.annotations)
		o, err := e.a.OwnerOf(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if tc.kind == "" {
			if o != nil {
				t.Fatalf("no labels: owner %+v", o)
			}
			continue
		}
		if o == nil || o.Kind != tc.kind || o.Name != tc.name || o.Namespace != tc.ns {
			t.Fatalf("labels %v annotations %v: owner %+v", tc.labels, tc.annotations, o)
		}
		// The release lives in prod, where this ServiceAccount has no
		// rollbot-helm Role: the owner says so (helm_test.go rolls
		// releases back).
		if want := "rollbot may not read Helm's release Secrets in prod"; tc.kind == platforms.OwnerHelm && !strings.HasPrefix(o.Problem, want) {
			t.Fatalf("helm owner problem %q, want %q…", o.Problem, want)
		}
	}
}
