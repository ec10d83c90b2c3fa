package bot

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"rollbot/handlers"
	"rollbot/platforms/kube"
	"rollbot/testkit/kubetest"
	"rollbot/testkit/slackemu"
	"rollbot/testkit/wait"
)

// TestImpersonationThroughSlack: kubernetes.impersonate maps Alice and Bob
// to Kubernetes users; rollbot's ServiceAccount may read and impersonate
// exactly those two (rbac.yaml's rollbot-impersonate, narrowed), never
// patch. Alice confirms: the cluster refuses her (no patch), and the thread
// shows its message; Bob then chooses the fallback, which runs as him and
// rolls the Deployment back. Then a service mapped by Slack user group
// (@oncall → an on-call identity whose Kubernetes group may patch): while
// Slack cannot list the group, Alice's confirmation is refused as a failed
// group lookup and nothing is written; once it can, her fallback runs as
// the on-call identity, found through her membership in @oncall.
func TestImpersonationThroughSlack(t *testing.T) {
	heavy(t)
	c := kubetest.Start(t)
	ctx := context.Background()
	ns := kubetest.CreateNamespace(t, c.AdminClient, "imp")
	kubetest.CreateDeployment(t, c.AdminClient, ns, "shop", "registry.local/shop:v1", 2)
	kubetest.WaitRolledOut(t, c.AdminClient, ns, "shop")
	kubetest.SetImage(t, c.AdminClient, ns, "shop", "registry.local/shop:v2")
	kubetest.WaitRolledOut(t, c.AdminClient, ns, "shop")

	read := []rbacv1.PolicyRule{
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get", "watch"}},
		{APIGroups: []string{"apps"}, Resources: []string{"replicasets"}, Verbs: []string{"list"}},
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list"}},
	}
	path, _ := c.KubeconfigForRules(t, ns, "rollbot-reader", read)
	kc, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sa := kc.Contexts[kc.CurrentContext].AuthInfo
	alice, bob := "alice@"+ns, "bob@"+ns
	imp, err := kubetest.LoadClusterRole("../deploy/kubernetes/rbac.yaml", "rollbot-impersonate")
	if err != nil {
		t.Fatal(err)
	}
	imp.Name = "rollbot-impersonate-" + ns
	oncall, oncallGroup := "oncall@"+ns, "oncall-group@"+ns
	imp.Rules[0].ResourceNames = []string{alice, bob, oncall}
	imp.Rules[1].ResourceNames = []string{oncallGroup}
	cs := c.AdminClient
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, imp, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: imp.Name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: imp.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: ns}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role, err := kubetest.LoadRole("../deploy/kubernetes/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for user, rules := range map[string][]rbacv1.PolicyRule{bob: role.Rules, alice: read} {
		short, _, _ := strings.Cut(user, "@")
		name := "as-" + short
		if _, err := cs.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, 10*time.Second, "RBAC for bob and the impersonation", func() (bool, error) {
		ok := true
		for _, r := range []authorizationv1.SubjectAccessReviewSpec{
			{User: bob, ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Group: "apps", Resource: "deployments", Verb: "patch"}},
			{User: "system:serviceaccount:" + ns + ":" + sa, ResourceAttributes: &authorizationv1.ResourceAttributes{Resource: "users", Verb: "impersonate", Name: bob}},
		} {
			res, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: r}, metav1.CreateOptions{})
			if err != nil {
				return false, err
			}
			ok = ok && res.Status.Allowed
		}
		return ok, nil
	})

	p, err := kube.NewPlatform(kube.Config{Kubeconfig: path, Namespace: ns, Deployment: "shop", RolloutTimeout: time.Minute,
		Impersonate: map[string]kube.Identity{slackemu.UserAlice: {User: alice}, slackemu.UserBob: {User: bob}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	svc := &handlers.Service{Name: "shop", Platform: p, Metrics: imageMetrics{p},
		Thresholds: handlers.Thresholds{ErrorRate: 0.01, LatencyFactor: 2, Restarts: 3, UnreadyRatio: 0.5, BaselineP95: 100 * time.Millisecond},
		Approvers:  handlers.Access{Groups: []string{slackemu.GroupOnCall}}}
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.slash(slackemu.UserAlice, "shop")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserAlice, a.TS, handlers.ActConfirm)
	failed := h.waitFor("refused as alice", hasAction(handlers.ActFallbackImage))
	wantAll(t, "refusal", failed.PlainText(), "the cluster refused "+alice+" (for <@"+slackemu.UserAlice+">)",
		`User "`+alice+`" cannot patch resource "deployments"`)
	if d, err := cs.AppsV1().Deployments(ns).Get(ctx, "shop", metav1.GetOptions{}); err != nil || d.Spec.Paused || d.Spec.Template.Spec.Containers[0].Image != "registry.local/shop:v2" {
		t.Fatalf("shop changed although alice was refused: %+v %v", d.Spec, err)
	}
	h.click(slackemu.UserBob, failed.TS, handlers.ActFallbackImage)
	h.tickChecksByHand(slackemu.UserBob, failed.ThreadTS)
	images, ready := kubetest.PodImages(t, cs, ns, "shop")
	if len(images) != 2 || ready != 2 || slices.ContainsFunc(images, func(s string) bool { return s != "registry.local/shop:v1" }) {
		t.Fatalf("after bob's fallback: %v, %d ready", images, ready)
	}

	// Mapped by Slack user group: only the on-call Kubernetes group may
	// patch (not the on-call user by itself).
	kubetest.CreateDeployment(t, cs, ns, "cart", "registry.local/cart:v1", 2)
	kubetest.WaitRolledOut(t, cs, ns, "cart")
	kubetest.SetImage(t, cs, ns, "cart", "registry.local/cart:v2")
	kubetest.WaitRolledOut(t, cs, ns, "cart")
	if _, err := cs.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "as-oncall"}, Rules: role.Rules}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "as-oncall"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "as-oncall"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: oncallGroup}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "RBAC for the on-call group", func() (bool, error) {
		res, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: oncall, Groups: []string{oncallGroup}, ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Group: "apps", Resource: "deployments", Verb: "patch"}}},
			metav1.CreateOptions{})
		return err == nil && res.Status.Allowed, err
	})
	cartCfg := kube.Config{Kubeconfig: path, Namespace: ns, Deployment: "cart", RolloutTimeout: time.Minute,
		Impersonate: map[string]kube.Identity{slackemu.GroupOnCall: {User: oncall, Groups: []string{oncallGroup}}}}
	cartP, err := kube.NewPlatform(cartCfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Approvers by user id: deciding who may click needs no group lookup,
	// so the failed lookup below is the impersonation's own.
	cart := &handlers.Service{Name: "cart", Platform: cartP, Metrics: imageMetrics{cartP}, Thresholds: svc.Thresholds,
		Approvers: handlers.Access{Users: []string{slackemu.UserAlice, slackemu.UserBob}}}
	h2 := newHarness(t, []*handlers.Service{cart}, fastEngine())
	h2.emu.FailMethod("usergroups.users.list", "internal_error", -1)
	h2.slash(slackemu.UserAlice, "cart")
	a2 := h2.waitFor("cart assessment", hasAction(handlers.ActConfirm))
	h2.click(slackemu.UserAlice, a2.TS, handlers.ActConfirm)
	lookupFailed := h2.waitFor("refused: group lookup failed", hasAction(handlers.ActFallbackImage))
	wantAll(t, "lookup refusal", lookupFailed.PlainText(), "the Slack user-group lookup for <@"+slackemu.UserAlice+"> failed, so rollbot changed nothing on deployment "+ns+"/cart")
	if strings.Contains(lookupFailed.PlainText(), "has no Kubernetes identity") {
		t.Errorf("a failed lookup reported as a missing identity: %s", lookupFailed.PlainText())
	}
	if d, err := cs.AppsV1().Deployments(ns).Get(ctx, "cart", metav1.GetOptions{}); err != nil || d.Spec.Paused || d.Generation != 2 {
		t.Fatalf("cart changed although the lookup failed: paused %v generation %d %v", d.Spec.Paused, d.Generation, err)
	}
	h2.emu.FailMethod("usergroups.users.list", "", 0)
	h2.click(slackemu.UserAlice, lookupFailed.TS, handlers.ActFallbackImage)
	h2.tickChecksByHand(slackemu.UserAlice, lookupFailed.ThreadTS)
	images, ready = kubetest.PodImages(t, cs, ns, "cart")
	if len(images) != 2 || ready != 2 || slices.ContainsFunc(images, func(s string) bool { return s != "registry.local/cart:v1" }) {
		t.Fatalf("after alice's fallback through @oncall: %v, %d ready", images, ready)
	}
}
