package kube_test

import (
	"context"
	"strings"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"rollbot/platforms"
	"rollbot/platforms/kube"
	"rollbot/testkit/kubetest"
)

// Impersonation: rollbot's ServiceAccount may read, and impersonate exactly
// two users (resourceNames), but not patch. The write for a click runs as
// the clicker's mapped identity: alice may only read and is refused with
// the cluster's message, bob is bound to the adapter's Role and rolls back.
// An unmapped clicker, a mapped name outside the resourceNames, and rollbot
// writing as itself are refused too; nothing changes until bob's write.
func TestImpersonatedWrites(t *testing.T) {
	c := cluster(t)
	ctx := context.Background()
	e := &env{c: c, admin: c.AdminClient, name: "myapp"}
	e.ns = kubetest.CreateNamespace(t, e.admin, "imp")
	kubetest.Create(t, e.admin, kubetest.NewDeployment(e.ns, e.name, v1, 2))
	kubetest.WaitRolledOut(t, e.admin, e.ns, e.name)
	e.deploy(t, v2)

	read := []rbacv1.PolicyRule{
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get", "watch"}},
		{APIGroups: []string{"apps"}, Resources: []string{"replicasets"}, Verbs: []string{"list"}},
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list"}},
	}
	path, _ := c.KubeconfigForRules(t, e.ns, "rollbot-reader", read)
	kc, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sa := kc.Contexts[kc.CurrentContext].AuthInfo
	saUser := "system:serviceaccount:" + e.ns + ":" + sa
	alice, bob := "alice-"+e.ns, "bob-"+e.ns

	// What deploy/kubernetes/rbac.yaml ships as rollbot-impersonate, for these names.
	imp, err := kubetest.LoadClusterRole(rbacFile, "rollbot-impersonate")
	if err != nil {
		t.Fatal(err)
	}
	imp.Name = "rollbot-impersonate-" + e.ns
	imp.Rules[0].ResourceNames = []string{alice, bob}
	if _, err := e.admin.RbacV1().ClusterRoles().Create(ctx, imp, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: imp.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: imp.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: e.ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role, err := kubetest.LoadRole(rbacFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []struct {
		user  string
		rules []rbacv1.PolicyRule
	}{{bob, role.Rules}, {alice, read}} {
		name := "as-" + b.user
		if _, err := e.admin.RbacV1().Roles(e.ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: b.rules}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.admin.RbacV1().RoleBindings(e.ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: b.user}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	allowed := func(user string, attrs authorizationv1.ResourceAttributes) func(context.Context) (bool, error) {
		return func(ctx context.Context) (bool, error) {
			r, err := e.admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
				Spec: authorizationv1.SubjectAccessReviewSpec{User: user, ResourceAttributes: &attrs}}, metav1.CreateOptions{})
			return err == nil && r.Status.Allowed, err
		}
	}
	kubetest.Poll(t, "RBAC: bob may patch", allowed(bob, authorizationv1.ResourceAttributes{Namespace: e.ns, Group: "apps", Resource: "deployments", Verb: "patch"}))
	kubetest.Poll(t, "RBAC: rollbot may impersonate bob", allowed(saUser, authorizationv1.ResourceAttributes{Resource: "users", Verb: "impersonate", Name: bob}))

	a, err := kube.New(kube.Config{Kubeconfig: path, Namespace: e.ns, Deployment: e.name, Impersonate: map[string]kube.Identity{
		"U0ALICE": {User: alice}, "U0BOB": {User: bob}, "U0MALLORY": {User: "mallory-" + e.ns},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := a.Snapshot(ctx) // reads run as rollbot
	if err != nil {
		t.Fatal(err)
	}
	good, _ := platforms.LastKnownGood(snap.History, snap.Current, nil)
	gen := e.get(t).Generation
	for _, tc := range []struct{ actor, want string }{
		{"U0ALICE", "the cluster refused " + alice + " (for <@U0ALICE>): deployments.apps \"myapp\" is forbidden: User \"" + alice + "\" cannot patch resource \"deployments\""},
		{"U0MALLORY", "the cluster refused mallory-" + e.ns + " (for <@U0MALLORY>): users \"mallory-" + e.ns + "\" is forbidden: User \"" + saUser + "\" cannot impersonate resource \"users\""},
		{"U0EVE", "<@U0EVE> has no Kubernetes identity in rollbot's `impersonate:`"},
		{"", "this write has no Slack user"},
	} {
		actx := ctx
		if tc.actor != "" {
			actx = platforms.WithActor(ctx, tc.actor)
		}
		_, err := a.Rollback(actx, good, false, nil)
		msg, ok := platforms.UserMessage(err)
		if !ok || !strings.Contains(msg, tc.want) {
			t.Fatalf("as %q: %v\nwant a message with %q", tc.actor, err, tc.want)
		}
	}
	// rollbot as itself may not write.
	self, err := kube.New(kube.Config{Kubeconfig: path, Namespace: e.ns, Deployment: e.name}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := self.Stop(ctx, false); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("rollbot as itself: %v", err)
	}
	if e.get(t).Generation != gen {
		t.Fatal("a refused write changed the Deployment")
	}
	res, err := a.Rollback(platforms.WithActor(ctx, "U0BOB"), good, false, nil)
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("as bob: %+v %v", res, err)
	}
	e.wantPods(t, v1, 2)
}
