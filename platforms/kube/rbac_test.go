package kube_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"

	"rollbot/platforms"
	"rollbot/platforms/kube"
	"rollbot/testkit/kubetest"

	"rollbot/testkit/logtest"
)

// The shipped Roles grant exactly what the adapters declare they use:
// `rollbot` kube.RequiredPermissions, `rollbot-helm` kube.HelmPermissions,
// `rollbot-workloads` kube.WorkloadPermissions, the ClusterRole
// `rollbot-nodes` kube.NodePermissions; the ClusterRole
// `rollbot-impersonate` grants only impersonate on users and groups, each
// narrowed by resourceNames.
func TestShippedRoleMatchesRequiredPermissions(t *testing.T) {
	for name, want := range map[string][]kube.Permission{
		"rollbot": kube.RequiredPermissions, kube.HelmRole: kube.HelmPermissions,
		kube.WorkloadsRole: kube.WorkloadPermissions, kube.NodesClusterRole: kube.NodePermissions,
	} {
		var rules []rbacv1.PolicyRule
		if role, err := kubetest.LoadRoleNamed(rbacFile, name); err == nil {
			rules = role.Rules
		} else if cr, cerr := kubetest.LoadClusterRole(rbacFile, name); cerr == nil {
			rules = cr.Rules
		} else {
			t.Fatalf("%v; %v", err, cerr)
		}
		var got []kube.Permission
		for _, r := range rules {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						got = append(got, kube.Permission{Group: g, Resource: res, Verb: v})
					}
				}
			}
		}
		key := func(p kube.Permission) string { return p.Group + "/" + p.Resource + "/" + p.Verb }
		cmp := func(a, b kube.Permission) int { return strings.Compare(key(a), key(b)) }
		want := slices.Clone(want)
		slices.SortFunc(got, cmp)
		slices.SortFunc(want, cmp)
		if !slices.Equal(got, want) {
			t.Fatalf("%s in %s grants\n%v\nthe adapter uses\n%v", name, rbacFile, got, want)
		}
	}
	imp, err := kubetest.LoadClusterRole(rbacFile, kube.ImpersonateClusterRole)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, r := range imp.Rules {
		if !slices.Equal(r.APIGroups, []string{""}) || !slices.Equal(r.Verbs, []string{"impersonate"}) || len(r.Resources) != 1 || len(r.ResourceNames) == 0 {
			t.Errorf("%s rule %+v: want impersonate on one resource, narrowed by resourceNames", imp.Name, r)
		}
		kinds = append(kinds, r.Resources...)
	}
	if !slices.Equal(kinds, []string{"users", "groups"}) {
		t.Errorf("%s impersonates %v, want users and groups", imp.Name, kinds)
	}
}

// Every permission in the Role is needed: without it, the operation that
// uses it fails with a message naming the missing verb and resource (or,
// for the migration log, warns), and CheckAccess lists it. With the whole
// Role, CheckAccess passes.
func TestRBACEachPermissionIsNeeded(t *testing.T) {
	e := newEnv(t, v1, 1, func(d *appsv1.Deployment) {
		d.Spec.Template.Spec.InitContainers = []corev1.Container{{Name: "init-migrate", Image: "registry.local/myapp-migrate:v1"}}
	})
	e.deploy(t, v2)
	ctx := context.Background()
	// The migration log is read only once a pod's init-migrate has run;
	// kwok reports that a moment after the rollout is complete.
	kubetest.Poll(t, "init-migrate to have run in a pod", func(ctx context.Context) (bool, error) {
		pods, err := e.admin.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + e.name})
		if err != nil {
			return false, err
		}
		for _, p := range pods.Items {
			for _, s := range p.Status.InitContainerStatuses {
				if s.Name == "init-migrate" && (s.State.Terminated != nil || s.State.Running != nil) && p.Spec.InitContainers[0].Image == "registry.local/myapp-migrate:v1" && p.Spec.Containers[0].Image == v2 {
					return true, nil
				}
			}
		}
		return false, nil
	})
	if err := e.a.CheckAccess(ctx); err != nil {
		t.Fatalf("CheckAccess with the shipped Role: %v", err)
	}
	role, err := kubetest.LoadRole(rbacFile)
	if err != nil {
		t.Fatal(err)
	}

	// op exercises the adapter; it returns the error to inspect.
	ops := map[string]func(a *kube.Adapter) error{
		"get deployments":   func(a *kube.Adapter) error { _, err := a.Snapshot(ctx); return err },
		"list replicasets":  func(a *kube.Adapter) error { _, err := a.Snapshot(ctx); return err },
		"list pods":         func(a *kube.Adapter) error { _, err := a.Snapshot(ctx); return err },
		"patch deployments": func(a *kube.Adapter) error { _, err := a.Stop(ctx, false); return err },
		"patch replicasets": func(a *kube.Adapter) error {
			_, err := a.MarkDoNotDeploy(ctx, platforms.Revision{ID: "1"}, "carol")
			return err
		},
		"watch deployments": func(a *kube.Adapter) error {
			_, err := a.Rollback(ctx, platforms.Revision{ID: "1"}, false, nil)
			return err
		},
		"get pods/log": nil, // Snapshot still works; the log read is warned about
		"list events":  nil, // Capture still works; the events are named as not captured
	}
	for _, p := range kube.RequiredPermissions {
		name := p.Verb + " " + p.Resource
		t.Run(name, func(t *testing.T) {
			op, ok := ops[name]
			if !ok {
				t.Fatalf("no operation listed for %s", name)
			}
			rules := without(role.Rules, p)
			path, token := e.c.KubeconfigForRules(t, e.ns, "less-"+strings.NewReplacer("/", "-").Replace(p.Verb+"-"+p.Resource), rules)
			var logs logtest.Buffer
			a, err := kube.New(kube.Config{Kubeconfig: path, Namespace: e.ns, Deployment: e.name}, slogTo(&logs))
			if err != nil {
				t.Fatal(err)
			}
			wantMsg := "rollbot's ServiceAccount may not " + p.Verb + " " + p.Resource + " in " + e.ns +
				": add `" + p.Verb + "` on " + p.Resource + " to its Role (deploy/kubernetes/rbac.yaml)"

			err = a.CheckAccess(ctx)
			msg, _ := platforms.UserMessage(err)
			if !strings.Contains(msg, p.String()) || strings.Count(msg, "`") != 2 {
				t.Errorf("CheckAccess without %s: %q; want exactly it listed", name, msg)
			}

			if op == nil && p.Resource == "events" {
				ev, err := a.Capture(ctx, platforms.CaptureLimits{})
				if err != nil {
					t.Fatalf("Capture without %s: %v", name, err)
				}
				if !slices.ContainsFunc(ev.Missing, func(m string) bool { return strings.Contains(m, "events not readable (forbidden") }) {
					t.Errorf("Capture without %s does not say the events were not captured: %q", name, ev.Missing)
				}
			} else if op == nil {
				if _, err := a.Snapshot(ctx); err != nil {
					t.Fatalf("Snapshot without %s: %v", name, err)
				}
				if !strings.Contains(logs.String(), "may not get pods/log") {
					t.Errorf("no warning naming pods/log in the log:\n%s", logs.String())
				}
			} else {
				err := op(a)
				if err == nil {
					t.Fatalf("operation without %s succeeded", name)
				}
				msg, ok := platforms.UserMessage(err)
				if !ok || msg != wantMsg {
					t.Errorf("error without %s:\n%q\nwant\n%q\n(cause %v)", name, msg, wantMsg, err)
				}
				if strings.Contains(err.Error(), token) {
					t.Error("the error contains the token")
				}
			}
			if strings.Contains(logs.String(), token) {
				t.Error("the log contains the token")
			}
		})
	}
}

// without returns rules minus the one verb p.
func without(rules []rbacv1.PolicyRule, p kube.Permission) []rbacv1.PolicyRule {
	var out []rbacv1.PolicyRule
	for _, r := range rules {
		if slices.Contains(r.APIGroups, p.Group) && slices.Contains(r.Resources, p.Resource) {
			r = *r.DeepCopy()
			r.Verbs = slices.DeleteFunc(r.Verbs, func(v string) bool { return v == p.Verb })
			if len(r.Verbs) == 0 {
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

// The Role without patch: the pause and the rollback fail with a message
// saying what to add, and nothing is changed.
func TestRBACRoleWithoutPatch(t *testing.T) {
	e := newEnv(t, v1, 2)
	e.deploy(t, v2)
	ctx := context.Background()
	role, err := kubetest.LoadRole(rbacFile)
	if err != nil {
		t.Fatal(err)
	}
	var rules []rbacv1.PolicyRule
	for _, r := range role.Rules {
		r = *r.DeepCopy()
		r.Verbs = slices.DeleteFunc(r.Verbs, func(v string) bool { return v == "patch" })
		rules = append(rules, r)
	}
	path, _ := e.c.KubeconfigForRules(t, e.ns, "no-patch", rules)
	a, err := kube.New(kube.Config{Kubeconfig: path, Namespace: e.ns, Deployment: e.name}, nil)
	if err != nil {
		t.Fatal(err)
	}
	before := e.get(t)
	want := "rollbot's ServiceAccount may not patch deployments in " + e.ns + ": add `patch` on deployments to its Role (deploy/kubernetes/rbac.yaml)"
	for name, op := range map[string]func() error{
		"stop":             func() error { _, err := a.Stop(ctx, false); return err },
		"rollback":         func() error { _, err := a.Rollback(ctx, platforms.Revision{ID: "1"}, false, nil); return err },
		"dry-run rollback": func() error { _, err := a.Rollback(ctx, platforms.Revision{ID: "1"}, true, nil); return err },
	} {
		err := op()
		if msg, _ := platforms.UserMessage(err); msg != want {
			t.Errorf("%s: %q (%v), want %q", name, msg, err, want)
		}
		var se *apierrors.StatusError
		if !errors.As(err, &se) || !apierrors.IsForbidden(err) {
			t.Errorf("%s: cause %v is not the API's Forbidden", name, err)
		}
	}
	// Generation counts spec changes only (the controller keeps writing
	// status, which moves resourceVersion while the rollout goes on).
	if d := e.get(t); d.Generation != before.Generation || d.Spec.Paused != before.Spec.Paused {
		t.Errorf("the deployment's spec changed: generation %d -> %d", before.Generation, d.Generation)
	}
	err = a.CheckAccess(ctx)
	msg, _ := platforms.UserMessage(err)
	if want := "rollbot's ServiceAccount lacks permissions in " + e.ns + ": add `patch` on deployments, `patch` on replicasets to its Role (deploy/kubernetes/rbac.yaml)"; msg != want {
		t.Errorf("CheckAccess = %q, want %q", msg, want)
	}
}

// deploy/kubernetes/*.yaml apply cleanly; the bot's Deployment rolls out;
// its ServiceAccount gets every permission in namespace prod and nothing in
// another; the example config in the ConfigMap is a valid kube.Config.
func TestDeployManifests(t *testing.T) {
	c := cluster(t)
	ctx := context.Background()
	cs := c.AdminClient
	for _, ns := range []string{"prod", "rollbot", "argocd"} { // argocd: the rollbot-gitops Role
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	kubetest.Poll(t, "ServiceAccount rollbot/default", func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts("rollbot").Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	var cfgYAML string
	for _, file := range []string{"../../deploy/kubernetes/rbac.yaml", "../../deploy/kubernetes/rollbot.yaml"} {
		for _, obj := range decodeAll(t, file) {
			var err error
			switch o := obj.(type) {
			case *corev1.Namespace:
				_, err = cs.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
			case *corev1.ServiceAccount:
				_, err = cs.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
			case *rbacv1.Role:
				_, err = cs.RbacV1().Roles(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
			case *rbacv1.RoleBinding:
				_, err = cs.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
			case *rbacv1.ClusterRole:
				_, err = cs.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
			case *rbacv1.ClusterRoleBinding:
				_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
			case *corev1.ConfigMap:
				cfgYAML = o.Data["rollbot.yaml"]
				_, err = cs.CoreV1().ConfigMaps(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
			case *appsv1.Deployment:
				if o.Spec.Template.Spec.ServiceAccountName != "rollbot" || o.Spec.Template.Spec.Containers[0].Image != "rollbot" ||
					!slices.Equal(o.Spec.Template.Spec.Containers[0].Args, []string{"serve", "--config", "/etc/rollbot/rollbot.yaml"}) {
					t.Errorf("rollbot Deployment: %+v", o.Spec.Template.Spec)
				}
				_, err = cs.AppsV1().Deployments(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
			case *policyv1.PodDisruptionBudget:
				_, err = cs.PolicyV1().PodDisruptionBudgets(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
			default:
				t.Fatalf("%s: unexpected %T", file, obj)
			}
			if err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatalf("%s: create %T: %v", file, obj, err)
			}
		}
	}
	kubetest.WaitRolledOut(t, cs, "rollbot", "rollbot")

	user := "system:serviceaccount:rollbot:rollbot"
	allowed := func(ns string, p kube.Permission) bool {
		res, sub, _ := strings.Cut(p.Resource, "/")
		r, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user, ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Group: p.Group, Resource: res, Subresource: sub, Verb: p.Verb},
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return r.Status.Allowed
	}
	for _, p := range kube.RequiredPermissions {
		kubetest.Poll(t, user+" may "+p.String()+" in prod", func(ctx context.Context) (bool, error) { return allowed("prod", p), nil })
		if allowed("default", p) {
			t.Errorf("%s may %s in namespace default too", user, p)
		}
	}
	// The GitOps owners' Role: where Argo CD's Applications live.
	for _, p := range []kube.Permission{{"argoproj.io", "applications", "patch"}, {"kustomize.toolkit.fluxcd.io", "kustomizations", "patch"}} {
		kubetest.Poll(t, user+" may "+p.String()+" in argocd", func(ctx context.Context) (bool, error) { return allowed("argocd", p), nil })
	}
	// StatefulSets and DaemonSets (rollbot-workloads).
	for _, p := range []kube.Permission{{"apps", "statefulsets", "patch"}, {"apps", "controllerrevisions", "list"}} {
		kubetest.Poll(t, user+" may "+p.String()+" in prod", func(ctx context.Context) (bool, error) { return allowed("prod", p), nil })
	}
	// Helm releases' Secrets (rollbot-helm): never deleted.
	for _, p := range []kube.Permission{{"", "secrets", "list"}, {"", "secrets", "create"}} {
		kubetest.Poll(t, user+" may "+p.String()+" in prod", func(ctx context.Context) (bool, error) { return allowed("prod", p), nil })
	}
	if allowed("default", kube.Permission{Resource: "secrets", Verb: "get"}) {
		t.Errorf("%s may get secrets in namespace default", user)
	}
	for _, extra := range []kube.Permission{{"apps", "deployments", "delete"}, {"", "secrets", "delete"}, {"apps", "deployments", "update"}} {
		if allowed("prod", extra) {
			t.Errorf("%s may %s in prod", user, extra)
		}
	}

	var cfg struct {
		Services map[string]struct {
			Kubernetes kube.Config `yaml:"kubernetes"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal([]byte(cfgYAML), &cfg); err != nil {
		t.Fatalf("ConfigMap rollbot.yaml: %v", err)
	}
	kc := cfg.Services["myapp"].Kubernetes
	if err := kc.Validate(); err != nil || !kc.InCluster || kc.Namespace != "prod" || kc.MigrationContainer != "init-migrate" {
		t.Errorf("example config = %+v, Validate: %v", kc, err)
	}
}

func decodeAll(t *testing.T, path string) []runtime.Object {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var out []runtime.Object
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, obj)
	}
}
