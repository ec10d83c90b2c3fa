package bot

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	k8sretry "k8s.io/client-go/util/retry"

	"rollbot/platforms"
	"rollbot/platforms/kube"
	"rollbot/platforms/migrations"
	"rollbot/testkit/kubetest"
	"rollbot/testkit/wait"
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

// rbacDocs is rollbot rbac's output decoded: Roles and RoleBindings keyed
// "namespace/name", ClusterRoles and ClusterRoleBindings by name.
type rbacDocs struct {
	roles           map[string]*rbacv1.Role
	bindings        map[string]*rbacv1.RoleBinding
	clusterRoles    map[string]*rbacv1.ClusterRole
	clusterBindings map[string]*rbacv1.ClusterRoleBinding
}

// rbacObjects decodes rollbot rbac's output; anything but the four RBAC
// kinds fails the test.
func rbacObjects(t *testing.T, out string) rbacDocs {
	t.Helper()
	d := rbacDocs{roles: map[string]*rbacv1.Role{}, bindings: map[string]*rbacv1.RoleBinding{},
		clusterRoles: map[string]*rbacv1.ClusterRole{}, clusterBindings: map[string]*rbacv1.ClusterRoleBinding{}}
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
			d.roles[o.Namespace+"/"+o.Name] = o
		case *rbacv1.RoleBinding:
			d.bindings[o.Namespace+"/"+o.Name] = o
		case *rbacv1.ClusterRole:
			d.clusterRoles[o.Name] = o
		case *rbacv1.ClusterRoleBinding:
			d.clusterBindings[o.Name] = o
		default:
			t.Fatalf("unexpected object %T", obj)
		}
	}
	return d
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
func grants(role *rbacv1.Role) []string { return ruleGrants(role.Rules, true) }

// ruleGrants lists rules as "group/resource/verb[names]", or without the
// names ("group/resource/verb").
func ruleGrants(rules []rbacv1.PolicyRule, names bool) []string {
	var out []string
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					if names {
						out = append(out, fmt.Sprintf("%s/%s/%s%v", g, res, v, r.ResourceNames))
					} else {
						out = append(out, g+"/"+res+"/"+v)
					}
				}
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// permGrants lists perms as grants names, naming the names of the
// resources in named.
func permGrants(perms []kube.Permission, named map[string][]string) []string {
	var w []string
	for _, p := range perms {
		if n, ok := named[p.Resource]; ok && len(n) == 0 {
			continue
		}
		w = append(w, fmt.Sprintf("%s/%s/%s%v", p.Group, p.Resource, p.Verb, named[p.Resource]))
	}
	slices.Sort(w)
	return w
}

// rollbot rbac prints, per namespace, the adapter's Role with the
// Deployments named, rollbot-workloads with the StatefulSets and
// DaemonSets named, and the down Job's Role where a service uses one, each
// bound to the ServiceAccount; per cluster, rollbot-nodes. Each grants
// what the code declares and the same as deploy/kubernetes/rbac.yaml's
// Role of that name, but for the names.
func TestRBACOutput(t *testing.T) {
	light(t)
	c, err := ParseConfig([]byte(rbacConfig + `
  db:
    platform: kubernetes
    kubernetes: {namespace: prod, kind: statefulset, name: db}
    approvers: {groups: [S0ONCALL]}
  agent:
    platform: kubernetes
    kubernetes: {namespace: prod, kind: DaemonSet, name: agent}
    approvers: {groups: [S0ONCALL]}
  node-exporter:
    platform: kubernetes
    kubernetes: {namespace: monitoring, kind: daemonset, name: node-exporter}
    approvers: {groups: [S0ONCALL]}
`))
	if err != nil {
		t.Fatal(err)
	}
	out := validRBAC(t, c, "ops/rollbot-bot", true)
	docs := rbacObjects(t, out)
	roles, bindings := docs.roles, docs.bindings

	wantAdapter := func(names ...string) []string {
		return permGrants(kube.RequiredPermissions, map[string][]string{"deployments": names})
	}
	var jobPerms []kube.Permission
	for _, p := range migrations.JobPermissions {
		jobPerms = append(jobPerms, kube.Permission(p))
	}
	wantJob := permGrants(jobPerms, nil)
	wantHelm := permGrants(kube.HelmPermissions, nil)
	want := map[string][]string{
		"prod/rollbot":               wantAdapter("cart-api", "shop"),
		"prod/" + migrations.JobRole: wantJob,
		"search/rollbot":             wantAdapter("search"),
		// --helm: the Role for the releases' Secrets beside each adapter Role.
		"prod/" + kube.HelmRole:   wantHelm,
		"search/" + kube.HelmRole: wantHelm,
		// StatefulSets and DaemonSets, named; a kind absent from the
		// namespace is not granted there.
		"prod/" + kube.WorkloadsRole:       permGrants(kube.WorkloadPermissions, map[string][]string{"statefulsets": {"db"}, "daemonsets": {"agent"}}),
		"monitoring/" + kube.WorkloadsRole: permGrants(kube.WorkloadPermissions, map[string][]string{"statefulsets": nil, "daemonsets": {"node-exporter"}}),
	}
	if len(roles) != len(want) {
		t.Errorf("Roles %v, want %d", slices.Sorted(maps.Keys(roles)), len(want))
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
	// Cluster-scoped: the nodes, for the Deployments' assessment; nothing
	// to impersonate in this config.
	if len(docs.clusterRoles) != 1 || docs.clusterRoles[kube.NodesClusterRole] == nil {
		t.Fatalf("ClusterRoles %v, want only %s", slices.Sorted(maps.Keys(docs.clusterRoles)), kube.NodesClusterRole)
	}
	if got, w := ruleGrants(docs.clusterRoles[kube.NodesClusterRole].Rules, true), permGrants(kube.NodePermissions, nil); !slices.Equal(got, w) {
		t.Errorf("%s grants %v, want %v", kube.NodesClusterRole, got, w)
	}
	if b := docs.clusterBindings[kube.NodesClusterRole]; b == nil || b.RoleRef.Kind != "ClusterRole" || b.RoleRef.Name != kube.NodesClusterRole ||
		len(b.Subjects) != 1 || b.Subjects[0] != (rbacv1.Subject{Kind: "ServiceAccount", Name: "rollbot-bot", Namespace: "ops"}) {
		t.Errorf("ClusterRoleBinding %s = %+v", kube.NodesClusterRole, b)
	}
	// The same grants as the shipped rbac.yaml, but for the names.
	for name, got := range map[string][]rbacv1.PolicyRule{
		RBACRole:              roles["prod/rollbot"].Rules,
		kube.WorkloadsRole:    roles["prod/"+kube.WorkloadsRole].Rules,
		kube.HelmRole:         roles["prod/"+kube.HelmRole].Rules,
		migrations.JobRole:    roles["prod/"+migrations.JobRole].Rules,
		kube.NodesClusterRole: docs.clusterRoles[kube.NodesClusterRole].Rules,
	} {
		if w := shippedGrants(t, name); !slices.Equal(ruleGrants(got, false), w) {
			t.Errorf("%s: rollbot rbac grants\n%v\n%s grants\n%v", name, ruleGrants(got, false), shippedRBAC, w)
		}
	}
	// The comment says what is and is not narrowed.
	for _, s := range []string{"Narrowed to these Deployments", "Narrowed to these statefulsets", "NOT narrowed"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q", s)
		}
	}

	var plain strings.Builder
	if err := WriteRBAC(&plain, c, "ops/rollbot-bot", false); err != nil {
		t.Fatal(err)
	}
	if roles := rbacObjects(t, plain.String()).roles; len(roles) != 5 || !strings.Contains(plain.String(), "add --helm") {
		t.Errorf("without --helm: %d Roles, want 5 and a hint at --helm:\n%s", len(roles), plain.String())
	}
	if err := WriteRBAC(io.Discard, c, "rollbot", false); err == nil {
		t.Error("a service account without a namespace was accepted")
	}
	noKube, _ := ParseConfig([]byte("incident_channels: [C0INCIDENT]\nservices:\n  legacy:\n    platform: simulated\n    simulated: {versions: [{artifact: \"app:v1\"}]}\n    approvers: {groups: [S0ONCALL]}\n"))
	if err := WriteRBAC(io.Discard, noKube, "rollbot/rollbot", false); err == nil {
		t.Error("a config without kubernetes services printed RBAC")
	}
}

const shippedRBAC = "../deploy/kubernetes/rbac.yaml"

// shippedGrants is what the Role or ClusterRole name of rbac.yaml grants,
// without resourceNames.
func shippedGrants(t *testing.T, name string) []string {
	t.Helper()
	if role, err := kubetest.LoadRoleNamed(shippedRBAC, name); err == nil {
		return ruleGrants(role.Rules, false)
	}
	cr, err := kubetest.LoadClusterRole(shippedRBAC, name)
	if err != nil {
		t.Fatalf("%s has no Role or ClusterRole %s: %v", shippedRBAC, name, err)
	}
	return ruleGrants(cr.Rules, false)
}

// impersonate: rollbot rbac prints rollbot-impersonate naming exactly the
// configured identities' users and groups of each cluster (user-id and
// user-group keys alike), the same grants as rbac.yaml's but for the
// names; a namespace whose every service impersonates gets its Roles
// without the write verbs (the clickers write), one with a service that
// does not, or that runs drills (which deploy as rollbot), keeps them.
func TestRBACImpersonation(t *testing.T) {
	light(t)
	c, err := ParseConfig([]byte(`
incident_channels: [C0INCIDENT]
services:
  shop:
    platform: kubernetes
    kubernetes:
      namespace: prod
      deployment: shop
      impersonate:
        U0BOB: {user: bob@example.com, groups: [sre]}
        S0ONCALL: {user: oncall-bot, groups: [oncall, sre]}
    approvers: {groups: [S0ONCALL]}
  db:
    platform: kubernetes
    kubernetes: {namespace: prod, kind: statefulset, name: db, impersonate: {S0DBA: {user: dba-bot, groups: [dba]}}}
    approvers: {groups: [S0ONCALL]}
  web:
    platform: kubernetes
    kubernetes: {namespace: web, deployment: web, impersonate: {U0ALICE: {user: alice@example.com}}}
    approvers: {groups: [S0ONCALL]}
  web-canary:
    platform: kubernetes
    kubernetes: {namespace: web, deployment: web-canary}
    approvers: {groups: [S0ONCALL]}
  staging:
    platform: kubernetes
    kubernetes: {namespace: staging, deployment: shop, impersonate: {U0ALICE: {user: alice@example.com}}}
    approvers: {groups: [S0ONCALL]}
    drills: true
    drill: {bad: "registry.local/shop:bad"}
  east:
    platform: kubernetes
    kubernetes: {context: east, namespace: prod, deployment: shop, impersonate: {U0ERIN: {user: erin@example.com}}}
    approvers: {groups: [S0ONCALL]}
`))
	if err != nil {
		t.Fatal(err)
	}
	out := validRBAC(t, c, "rollbot/rollbot", false)
	// One block per cluster: split at the cluster headers.
	blocks := map[string]rbacDocs{}
	for _, part := range strings.Split(out, "# ==== cluster ")[1:] {
		name, rest, _ := strings.Cut(part, " ====\n")
		blocks[name] = rbacObjects(t, rest)
	}
	def, east := blocks[`"default kubeconfig"`], blocks[`"default kubeconfig context east"`]
	if def.roles == nil || east.roles == nil {
		t.Fatalf("clusters %v", slices.Sorted(maps.Keys(blocks)))
	}
	imp := def.clusterRoles[kube.ImpersonateClusterRole]
	if imp == nil {
		t.Fatalf("no %s:\n%s", kube.ImpersonateClusterRole, out)
	}
	if got, w := ruleGrants(imp.Rules, true), []string{
		"/groups/impersonate[dba oncall sre]",
		"/users/impersonate[alice@example.com bob@example.com dba-bot oncall-bot]",
	}; !slices.Equal(got, w) {
		t.Errorf("%s grants %v, want %v", kube.ImpersonateClusterRole, got, w)
	}
	if w := shippedGrants(t, kube.ImpersonateClusterRole); !slices.Equal(ruleGrants(imp.Rules, false), w) {
		t.Errorf("%s: rollbot rbac grants %v, %s %v", kube.ImpersonateClusterRole, ruleGrants(imp.Rules, false), shippedRBAC, w)
	}
	if b := def.clusterBindings[kube.ImpersonateClusterRole]; b == nil || b.RoleRef.Name != kube.ImpersonateClusterRole || b.Subjects[0].Name != "rollbot" {
		t.Errorf("ClusterRoleBinding %s = %+v", kube.ImpersonateClusterRole, b)
	}
	// The other cluster impersonates only its own identity, and no groups.
	if got := ruleGrants(east.clusterRoles[kube.ImpersonateClusterRole].Rules, true); !slices.Equal(got, []string{"/users/impersonate[erin@example.com]"}) {
		t.Errorf("east's %s grants %v", kube.ImpersonateClusterRole, got)
	}

	reads := func(perms []kube.Permission, named map[string][]string) []string {
		return permGrants(slices.DeleteFunc(slices.Clone(perms), kube.Permission.IsWrite), named)
	}
	for key, w := range map[string][]string{
		// Every service impersonates: reads only.
		"prod/rollbot":               reads(kube.RequiredPermissions, map[string][]string{"deployments": {"shop"}}),
		"prod/" + kube.WorkloadsRole: reads(kube.WorkloadPermissions, map[string][]string{"statefulsets": {"db"}, "daemonsets": nil}),
		// web-canary writes as rollbot.
		"web/rollbot": permGrants(kube.RequiredPermissions, map[string][]string{"deployments": {"web", "web-canary"}}),
		// Drills deploy as rollbot.
		"staging/rollbot": permGrants(kube.RequiredPermissions, map[string][]string{"deployments": {"shop"}}),
	} {
		if got := grants(def.roles[key]); !slices.Equal(got, w) {
			t.Errorf("Role %s grants\n%v\nwant\n%v", key, got, w)
		}
	}
	if !strings.Contains(out, "so this Role only reads") {
		t.Error("the output does not say why a Role only reads")
	}

	// Without impersonate: no rollbot-impersonate at all.
	plain, _ := ParseConfig([]byte(rbacConfig))
	var po strings.Builder
	if err := WriteRBAC(&po, plain, "rollbot/rollbot", false); err != nil {
		t.Fatal(err)
	}
	if _, ok := rbacObjects(t, po.String()).clusterRoles[kube.ImpersonateClusterRole]; ok {
		t.Error("a config without impersonate: printed rollbot-impersonate")
	}
}

// The generated Role on a real control plane: the adapter's every
// operation works as a ServiceAccount bound to exactly it, and the same
// ServiceAccount can neither read nor patch another Deployment of the
// namespace.
func TestRBACGeneratedRoleOnACluster(t *testing.T) {
	heavy(t)
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
	roles := rbacObjects(t, out.String()).roles
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

	t.Run("impersonate", func(t *testing.T) { rbacImpersonationOnACluster(t, cl) })
}

// rbacImpersonationOnACluster applies rollbot rbac's output for services
// that impersonate (a Deployment and a StatefulSet, mapped by a Slack user
// id and a Slack user group) as it is printed, ServiceAccount included, and
// rolls both back with it: rollbot's ServiceAccount may only read and
// impersonate the configured names, so it cannot write by itself, an
// unmapped clicker is refused, and the mapped identities, whose own RBAC
// the cluster's admin grants, roll back.
func rbacImpersonationOnACluster(t *testing.T, cl *kubetest.Cluster) {
	ctx := context.Background()
	cs := cl.AdminClient
	ns := kubetest.CreateNamespace(t, cs, "rbacimp")
	kubetest.CreateDeployment(t, cs, ns, "shop", "registry.local/shop:v1", 1)
	kubetest.WaitRolledOut(t, cs, ns, "shop")
	kubetest.SetImage(t, cs, ns, "shop", "registry.local/shop:v2")
	kubetest.WaitRolledOut(t, cs, ns, "shop")
	sts := createStatefulSet(t, cs, ns, "db", 1, "registry.local/db:v1")
	setStatefulSetImage(t, cs, ns, "db", "registry.local/db:v2")
	waitStatefulSet(t, cs, ns, "db", "registry.local/db:v2")

	bob, oncall, oncallGroup := "bob-"+ns, "oncall-"+ns, "oncall-group-"+ns
	c, err := ParseConfig(fmt.Appendf(nil, `
incident_channels: [C0INCIDENT]
services:
  shop:
    platform: kubernetes
    kubernetes:
      namespace: %[1]s
      deployment: shop
      impersonate: {U0BOB: {user: %[2]s}, S0ONCALL: {user: %[3]s, groups: [%[4]s]}}
    approvers: {groups: [S0ONCALL]}
  db:
    platform: kubernetes
    kubernetes:
      namespace: %[1]s
      kind: statefulset
      name: db
      impersonate: {U0BOB: {user: %[2]s}, S0ONCALL: {user: %[3]s, groups: [%[4]s]}}
    approvers: {groups: [S0ONCALL]}
`, ns, bob, oncall, oncallGroup))
	if err != nil {
		t.Fatal(err)
	}
	out := validRBAC(t, c, ns+"/rollbot", false)
	docs := rbacObjects(t, out)
	for _, key := range []string{ns + "/rollbot", ns + "/" + kube.WorkloadsRole} {
		if docs.roles[key] == nil || slices.ContainsFunc(grants(docs.roles[key]), func(g string) bool { return strings.Contains(g, "/patch") }) {
			t.Fatalf("Role %s, every service impersonating: %v; want reads only", key, docs.roles[key])
		}
	}
	if docs.clusterRoles[kube.ImpersonateClusterRole] == nil {
		t.Fatalf("no %s printed:\n%s", kube.ImpersonateClusterRole, out)
	}

	// Apply the output as printed, with the ServiceAccount it binds.
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "rollbot"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, r := range docs.roles {
		if _, err := cs.RbacV1().Roles(r.Namespace).Create(ctx, r, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s: %v", "Role "+r.Name, err)
		}
	}
	for _, b := range docs.bindings {
		if _, err := cs.RbacV1().RoleBindings(b.Namespace).Create(ctx, b, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s: %v", "RoleBinding "+b.Name, err)
		}
	}
	for _, r := range docs.clusterRoles {
		if _, err := cs.RbacV1().ClusterRoles().Create(ctx, r, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s: %v", "ClusterRole "+r.Name, err)
		}
	}
	for _, b := range docs.clusterBindings {
		if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, b, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s: %v", "ClusterRoleBinding "+b.Name, err)
		}
	}
	day := int64(24 * 3600)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "rollbot", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &day}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	path, err := cl.WriteKubeconfig("rollbot-"+ns+".kubeconfig", "rollbot", tr.Status.Token)
	if err != nil {
		t.Fatal(err)
	}

	// The identities' own RBAC, the cluster admin's: what rbac.yaml's
	// rollbot and rollbot-workloads Roles grant, bound to bob and to the
	// on-call group (not to the on-call user).
	var writerRules []rbacv1.PolicyRule
	for _, name := range []string{RBACRole, kube.WorkloadsRole} {
		r, err := kubetest.LoadRoleNamed(shippedRBAC, name)
		if err != nil {
			t.Fatal(err)
		}
		writerRules = append(writerRules, r.Rules...)
	}
	if _, err := cs.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "writers"}, Rules: writerRules}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create %s: %v", "Role writers", err)
	}
	if _, err := cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "writers"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "writers"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: bob}, {Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: oncallGroup}}},
		metav1.CreateOptions{}); err != nil {
		t.Fatalf("create %s: %v", "RoleBinding writers", err)
	}
	saUser := "system:serviceaccount:" + ns + ":rollbot"
	for what, spec := range map[string]authorizationv1.SubjectAccessReviewSpec{
		"rollbot may impersonate bob":               {User: saUser, ResourceAttributes: &authorizationv1.ResourceAttributes{Resource: "users", Verb: "impersonate", Name: bob}},
		"rollbot may impersonate the on-call group": {User: saUser, ResourceAttributes: &authorizationv1.ResourceAttributes{Resource: "groups", Verb: "impersonate", Name: oncallGroup}},
		"rollbot may read db":                       {User: saUser, ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Group: "apps", Resource: "statefulsets", Verb: "get", Name: "db"}},
		"bob may patch shop":                        {User: bob, ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Group: "apps", Resource: "deployments", Verb: "patch", Name: "shop"}},
		"the on-call group may patch db": {User: oncall, Groups: []string{oncallGroup},
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Group: "apps", Resource: "statefulsets", Verb: "patch", Name: "db"}},
	} {
		wait.For(t, 10*time.Second, "RBAC: "+what, func() (bool, error) {
			r, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: spec}, metav1.CreateOptions{})
			return err == nil && r.Status.Allowed, err
		})
	}
	for what, spec := range map[string]authorizationv1.SubjectAccessReviewSpec{
		"rollbot patches shop":                {User: saUser, ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Group: "apps", Resource: "deployments", Verb: "patch", Name: "shop"}},
		"rollbot patches db":                  {User: saUser, ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Group: "apps", Resource: "statefulsets", Verb: "patch", Name: "db"}},
		"rollbot impersonates someone else":   {User: saUser, ResourceAttributes: &authorizationv1.ResourceAttributes{Resource: "users", Verb: "impersonate", Name: "admin"}},
		"rollbot impersonates system:masters": {User: saUser, ResourceAttributes: &authorizationv1.ResourceAttributes{Resource: "groups", Verb: "impersonate", Name: "system:masters"}},
	} {
		r, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: spec}, metav1.CreateOptions{})
		if err != nil || r.Status.Allowed {
			t.Errorf("%s: allowed %v, %v", what, r.Status.Allowed, err)
		}
	}

	shopCfg, dbCfg := *c.Services["shop"].Kubernetes, *c.Services["db"].Kubernetes
	shopCfg.Kubeconfig, dbCfg.Kubeconfig = path, path
	shopCfg.RolloutTimeout, dbCfg.RolloutTimeout = time.Minute, time.Minute
	shop, err := kube.NewPlatform(shopCfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	db, err := kube.NewPlatform(dbCfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := shop.(platforms.AccessChecker).CheckAccess(ctx); err != nil {
		t.Errorf("CheckAccess of an impersonating adapter with the generated read-only Role: %v", err)
	}
	// rollbot as itself cannot write either workload.
	for name, k := range map[string]kube.Config{"shop": shopCfg, "db": dbCfg} {
		k.Impersonate = nil
		self, err := kube.NewPlatform(k, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := self.Stop(ctx, false); !apierrors.IsForbidden(err) {
			t.Errorf("%s: Stop as rollbot itself = %v, want Forbidden", name, err)
		}
	}
	dbGen := sts(t).Generation
	if _, err := db.Rollback(platforms.WithActor(ctx, "U0EVE", "S0OTHER"), platforms.Revision{ID: "1"}, false, nil); err == nil {
		t.Fatal("an unmapped clicker rolled db back")
	} else if msg, _ := platforms.UserMessage(err); !strings.Contains(msg, "<@U0EVE> has no Kubernetes identity") {
		t.Errorf("unmapped clicker: %q", msg)
	}
	if s := sts(t); s.Generation != dbGen {
		t.Fatalf("db changed although the clicker was refused: generation %d -> %d", dbGen, s.Generation)
	}

	// bob by his user id on the Deployment; alice through the on-call
	// group on the StatefulSet.
	if res, err := shop.Rollback(platforms.WithActor(ctx, "U0BOB"), platforms.Revision{ID: "1"}, false, nil); err != nil || res.Outcome != platforms.Done {
		t.Fatalf("shop as bob: %+v %v", res, err)
	}
	if images, _ := kubetest.PodImages(t, cs, ns, "shop"); !slices.Contains(images, "registry.local/shop:v1") {
		t.Errorf("shop's pods run %v after the rollback", images)
	}
	res, err := db.Rollback(platforms.WithActor(ctx, "U0ALICE", "S0ONCALL"), platforms.Revision{ID: "1"}, false, nil)
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("db as the on-call group: %+v %v", res, err)
	}
	waitStatefulSet(t, cs, ns, "db", "registry.local/db:v1")
	if res, err := db.MarkDoNotDeploy(platforms.WithActor(ctx, "U0ALICE", "S0ONCALL"), platforms.Revision{Artifact: "registry.local/db:v2"}, "U0ALICE"); err != nil || res.Outcome != platforms.Done {
		t.Fatalf("mark as the on-call group: %+v %v", res, err)
	}
}

// createStatefulSet creates a StatefulSet of replicas pods on image, waits
// until it is rolled out and returns a getter of its current state.
func createStatefulSet(t *testing.T, cs kubernetes.Interface, ns, name string, replicas int32, image string) func(*testing.T) *appsv1.StatefulSet {
	t.Helper()
	ctx := context.Background()
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}
	tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}}}
	if _, err := cs.AppsV1().StatefulSets(ns).Create(ctx, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.StatefulSetSpec{Replicas: &replicas, Selector: sel, ServiceName: name, PodManagementPolicy: appsv1.ParallelPodManagement, Template: tmpl}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitStatefulSet(t, cs, ns, name, image)
	return func(t *testing.T) *appsv1.StatefulSet {
		t.Helper()
		s, err := cs.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
}

func setStatefulSetImage(t *testing.T, cs kubernetes.Interface, ns, name, image string) {
	t.Helper()
	ctx := context.Background()
	if err := k8sretry.RetryOnConflict(k8sretry.DefaultRetry, func() error {
		s, err := cs.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		s.Spec.Template.Spec.Containers[0].Image = image
		_, err = cs.AppsV1().StatefulSets(ns).Update(ctx, s, metav1.UpdateOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// waitStatefulSet waits until every pod of the StatefulSet runs image, Ready.
func waitStatefulSet(t *testing.T, cs kubernetes.Interface, ns, name, image string) {
	t.Helper()
	ctx := context.Background()
	wait.For(t, 60*time.Second, name+" on "+image, func() (bool, error) {
		s, err := cs.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		want := int32(1)
		if s.Spec.Replicas != nil {
			want = *s.Spec.Replicas
		}
		return s.Spec.Template.Spec.Containers[0].Image == image && s.Status.ObservedGeneration >= s.Generation &&
			s.Status.UpdatedReplicas == want && s.Status.ReadyReplicas == want && s.Status.CurrentRevision == s.Status.UpdateRevision, nil
	})
}

// validRBAC is what rollbot rbac prints for c, which must be valid, with
// the bot's ServiceAccount sa ("namespace/name") and, with helm, the Helm
// Role.
func validRBAC(t *testing.T, c *Config, sa string, helm bool) string {
	t.Helper()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := WriteRBAC(&out, c, sa, helm); err != nil {
		t.Fatal(err)
	}
	return out.String()
}
