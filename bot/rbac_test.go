package bot

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"

	"rollbot/platforms"
	"rollbot/platforms/kube"
	"rollbot/platforms/migrations"
	"rollbot/testkit/kubetest"
)

const rbacConfig = `
incident_channels: [C0INCIDENT]
services:
  shop:
    platform: kubernetes
    kubernetes: {namespace: prod, deployment: shop}
    approvers: {groups: [S0ONCALL]}
    database:
      driver: postgres
      dsn_env: SHOP_DSN
      tool: django
      down: {kind: kubernetes_job, command: [python, manage.py, migrate], env_from_secret: shop-db}
      approvers: {groups: [S0DBA]}
  cart:
    platform: kubernetes
    kubernetes: {namespace: prod, deployment: cart-api}
    approvers: {groups: [S0ONCALL]}
  search:
    platform: kubernetes
    kubernetes: {namespace: search, deployment: search}
    approvers: {groups: [S0ONCALL]}
  legacy:
    platform: simulated
    simulated: {versions: [{artifact: "app:v1"}]}
    approvers: {groups: [S0ONCALL]}
`

// rbacObjects decodes rollbot rbac's output into Roles and RoleBindings
// keyed "namespace/name"; anything else fails the test.
func rbacObjects(t *testing.T, out string) (map[string]*rbacv1.Role, map[string]*rbacv1.RoleBinding) {
	t.Helper()
	roles, bindings := map[string]*rbacv1.Role{}, map[string]*rbacv1.RoleBinding{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(out)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(bytes.TrimSpace(stripYAMLComments(doc))) == 0 {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("decode %s: %v", doc, err)
		}
		switch o := obj.(type) {
		case *rbacv1.Role:
			roles[o.Namespace+"/"+o.Name] = o
		case *rbacv1.RoleBinding:
			bindings[o.Namespace+"/"+o.Name] = o
		default:
			t.Fatalf("unexpected object %T", obj)
		}
	}
	return roles, bindings
}

func stripYAMLComments(doc []byte) []byte {
	var out []byte
	for l := range bytes.Lines(doc) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			out = append(out, l...)
		}
	}
	return out
}

// grants lists a Role's rules as "group/resource/verb[names]".
func grants(role *rbacv1.Role) []string {
	var out []string
	for _, r := range role.Rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					out = append(out, fmt.Sprintf("%s/%s/%s%v", g, res, v, r.ResourceNames))
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// rollbot rbac prints, per namespace, the adapter's Role with the
// Deployments named and the down Job's Role where a service uses one,
// each bound to the ServiceAccount.
func TestRBACOutput(t *testing.T) {
	c, err := ParseConfig([]byte(rbacConfig))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := WriteRBAC(&out, c, "ops/rollbot-bot", true); err != nil {
		t.Fatal(err)
	}
	roles, bindings := rbacObjects(t, out.String())

	wantAdapter := func(names ...string) []string {
		var w []string
		for _, p := range kube.RequiredPermissions {
			var rn []string
			if p.Resource == "deployments" {
				rn = names
			}
			w = append(w, fmt.Sprintf("%s/%s/%s%v", p.Group, p.Resource, p.Verb, rn))
		}
		slices.Sort(w)
		return w
	}
	var wantJob []string
	for _, p := range migrations.JobPermissions {
		wantJob = append(wantJob, fmt.Sprintf("%s/%s/%s[]", p.Group, p.Resource, p.Verb))
	}
	slices.Sort(wantJob)
	var wantHelm []string
	for _, p := range kube.HelmPermissions {
		wantHelm = append(wantHelm, fmt.Sprintf("%s/%s/%s[]", p.Group, p.Resource, p.Verb))
	}
	slices.Sort(wantHelm)
	want := map[string][]string{
		"prod/rollbot":               wantAdapter("cart-api", "shop"),
		"prod/" + migrations.JobRole: wantJob,
		"search/rollbot":             wantAdapter("search"),
		// --helm: the Role for the releases' Secrets beside each adapter Role.
		"prod/" + kube.HelmRole:   wantHelm,
		"search/" + kube.HelmRole: wantHelm,
	}
	if len(roles) != len(want) {
		t.Errorf("Roles %v, want %d", slices.Sorted(func(yield func(string) bool) {
			for k := range roles {
				if !yield(k) {
					return
				}
			}
		}), len(want))
	}
	for key, w := range want {
		role, ok := roles[key]
		if !ok {
			t.Errorf("no Role %s", key)
			continue
		}
		if got := grants(role); !slices.Equal(got, w) {
			t.Errorf("Role %s grants\n%v\nwant\n%v", key, got, w)
		}
		b, ok := bindings[key]
		if !ok {
			t.Errorf("no RoleBinding %s", key)
			continue
		}
		if b.RoleRef.Kind != "Role" || b.RoleRef.Name != role.Name || len(b.Subjects) != 1 ||
			b.Subjects[0] != (rbacv1.Subject{Kind: "ServiceAccount", Name: "rollbot-bot", Namespace: "ops"}) {
			t.Errorf("RoleBinding %s = %+v", key, b)
		}
	}
	if len(bindings) != len(want) {
		t.Errorf("%d RoleBindings, want %d", len(bindings), len(want))
	}
	// The comment says what is and is not narrowed.
	for _, s := range []string{"Narrowed to these Deployments", "NOT narrowed"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("output lacks %q", s)
		}
	}

	var plain strings.Builder
	if err := WriteRBAC(&plain, c, "ops/rollbot-bot", false); err != nil {
		t.Fatal(err)
	}
	if roles, _ := rbacObjects(t, plain.String()); len(roles) != 3 || !strings.Contains(plain.String(), "add --helm") {
		t.Errorf("without --helm: %d Roles, want 3 and a hint at --helm:\n%s", len(roles), plain.String())
	}
	if err := WriteRBAC(io.Discard, c, "rollbot", false); err == nil {
		t.Error("a service account without a namespace was accepted")
	}
	noKube, _ := ParseConfig([]byte("incident_channels: [C0INCIDENT]\nservices:\n  legacy:\n    platform: simulated\n    simulated: {versions: [{artifact: \"app:v1\"}]}\n    approvers: {groups: [S0ONCALL]}\n"))
	if err := WriteRBAC(io.Discard, noKube, "rollbot/rollbot", false); err == nil {
		t.Error("a config without kubernetes services printed RBAC")
	}
}

// The generated Role on a real control plane: the adapter's every
// operation works as a ServiceAccount bound to exactly it, and the same
// ServiceAccount can neither read nor patch another Deployment of the
// namespace.
func TestRBACGeneratedRoleOnACluster(t *testing.T) {
	cl := kubetest.Start(t)
	ns := kubetest.CreateNamespace(t, cl.AdminClient, "rbac")
	for _, name := range []string{"shop", "other"} {
		kubetest.CreateDeployment(t, cl.AdminClient, ns, name, "registry.local/"+name+":v1", 1)
		kubetest.WaitRolledOut(t, cl.AdminClient, ns, name)
		kubetest.SetImage(t, cl.AdminClient, ns, name, "registry.local/"+name+":v2")
		kubetest.WaitRolledOut(t, cl.AdminClient, ns, name)
	}
	c, err := ParseConfig(fmt.Appendf(nil, `
incident_channels: [C0INCIDENT]
services:
  shop:
    platform: kubernetes
    kubernetes: {namespace: %s, deployment: shop}
    approvers: {groups: [S0ONCALL]}
    database:
      driver: postgres
      dsn_env: SHOP_DSN
      tool: django
      down: {kind: kubernetes_job, command: [python, manage.py, migrate], env_from_secret: shop-db}
      approvers: {groups: [S0DBA]}
`, ns))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := WriteRBAC(&out, c, "rollbot/rollbot", false); err != nil {
		t.Fatal(err)
	}
	roles, _ := rbacObjects(t, out.String())
	adapterRole, jobRole := roles[ns+"/rollbot"], roles[ns+"/"+migrations.JobRole]
	if adapterRole == nil || jobRole == nil {
		t.Fatalf("Roles printed: %v", roles)
	}
	path, token := cl.KubeconfigForRules(t, ns, "rollbot", adapterRole.Rules)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	a, err := kube.New(kube.Config{Kubeconfig: path, Namespace: ns, Deployment: "shop", RolloutTimeout: time.Minute}, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := a.CheckAccess(ctx); err != nil {
		t.Fatalf("CheckAccess with the generated Role: %v", err)
	}
	snap, err := a.Snapshot(ctx)
	if err != nil || snap.Current.Artifact != "registry.local/shop:v2" {
		t.Fatalf("Snapshot = %+v, %v", snap.Current, err)
	}
	if _, err := a.Stop(ctx, false); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	res, err := a.Rollback(ctx, platforms.Revision{ID: "1"}, false, nil)
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("Rollback = %+v, %v", res, err)
	}
	if _, err := a.MarkDoNotDeploy(ctx, platforms.Revision{ID: "2"}, "carol"); err != nil {
		t.Fatalf("MarkDoNotDeploy: %v", err)
	}
	if images, _ := kubetest.PodImages(t, cl.AdminClient, ns, "shop"); !slices.Contains(images, "registry.local/shop:v1") {
		t.Errorf("shop's pods run %v after the rollback", images)
	}

	// The same credentials, another Deployment of the namespace: refused.
	other, err := kube.New(kube.Config{Kubeconfig: path, Namespace: ns, Deployment: "other", RolloutTimeout: time.Minute}, log)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Snapshot(ctx); !apierrors.IsForbidden(err) {
		t.Errorf("Snapshot of another Deployment = %v, want Forbidden", err)
	}
	if _, err := other.Stop(ctx, false); !apierrors.IsForbidden(err) {
		t.Errorf("Stop of another Deployment = %v, want Forbidden", err)
	}
	if d, err := cl.AdminClient.AppsV1().Deployments(ns).Get(ctx, "other", metavOpts()); err != nil || d.Spec.Paused || d.Generation != 2 {
		t.Errorf("another Deployment was changed: paused %v, generation %d, %v", d.Spec.Paused, d.Generation, err)
	}

	// The down Job's Role: the runner's own access check passes with it.
	jobPath, _ := cl.KubeconfigForRules(t, ns, migrations.JobRole, jobRole.Rules)
	cs, err := kube.Clientset(kube.Config{Kubeconfig: jobPath, Namespace: ns, Deployment: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if err := migrations.NewJobRunner(cs, log).CheckAccess(ctx, ns); err != nil {
		t.Errorf("down Job CheckAccess with the generated Role: %v", err)
	}
	if strings.Contains(logs.String(), token) {
		t.Error("the log contains the token")
	}
}
