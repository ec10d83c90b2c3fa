package kube_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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
	alice, bob := "alice-"+e.ns, "bob-"+e.ns
	path, saUser := impersonator(t, e, read, []string{alice, bob}, nil)
	role, err := kubetest.LoadRole(rbacFile)
	if err != nil {
		t.Fatal(err)
	}
	grant(t, e, "as-bob", role.Rules, rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: bob})
	grant(t, e, "as-alice", read, rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: alice})
	waitAllowed(t, e, "bob may patch", authorizationv1.SubjectAccessReviewSpec{User: bob,
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: e.ns, Group: "apps", Resource: "deployments", Verb: "patch"}})

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

	// A drill's deploy (and its restore) is a write like the others: the
	// identity of whoever started it, never rollbot's own.
	gen = e.get(t).Generation
	for _, tc := range []struct{ actor, want string }{
		{"U0ALICE", "the cluster refused " + alice + " (for <@U0ALICE>): deployments.apps \"myapp\" is forbidden: User \"" + alice + "\" cannot patch resource \"deployments\""},
		{"", "this write has no Slack user"},
	} {
		actx := ctx
		if tc.actor != "" {
			actx = platforms.WithActor(ctx, tc.actor)
		}
		_, err := a.Deploy(actx, v2, v1, false)
		msg, ok := platforms.UserMessage(err)
		if !ok || !strings.Contains(msg, tc.want) {
			t.Fatalf("deploy as %q: %v\nwant a message with %q", tc.actor, err, tc.want)
		}
	}
	if e.get(t).Generation != gen {
		t.Fatal("a refused deploy changed the Deployment")
	}
	if res, err := a.Deploy(platforms.WithActor(ctx, "U0BOB"), v2, v1, false); err != nil || res.Outcome != platforms.Done {
		t.Fatalf("deploy as bob: %+v %v", res, err)
	}
	e.wantPods(t, v2, 2)
}

// impersonator makes rollbot's ServiceAccount in e.ns: bound to read only,
// and to rbac.yaml's rollbot-impersonate narrowed to users and groups
// (resourceNames; no groups rule without groups). It returns its
// kubeconfig and its user name, once RBAC allows the impersonation.
func impersonator(t *testing.T, e *env, read []rbacv1.PolicyRule, users, groups []string) (path, saUser string) {
	t.Helper()
	ctx := context.Background()
	path, _ = e.c.KubeconfigForRules(t, e.ns, "rollbot-reader", read)
	kc, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sa := kc.Contexts[kc.CurrentContext].AuthInfo
	saUser = "system:serviceaccount:" + e.ns + ":" + sa
	imp, err := kubetest.LoadClusterRole(rbacFile, kube.ImpersonateClusterRole)
	if err != nil {
		t.Fatal(err)
	}
	imp.Name = kube.ImpersonateClusterRole + "-" + e.ns
	var rules []rbacv1.PolicyRule
	for _, r := range imp.Rules {
		switch r.Resources[0] {
		case "users":
			r.ResourceNames = users
		case "groups":
			if len(groups) == 0 {
				continue
			}
			r.ResourceNames = groups
		}
		rules = append(rules, r)
	}
	imp.Rules = rules
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
	t.Cleanup(func() {
		e.admin.RbacV1().ClusterRoleBindings().Delete(ctx, imp.Name, metav1.DeleteOptions{})
		e.admin.RbacV1().ClusterRoles().Delete(ctx, imp.Name, metav1.DeleteOptions{})
	})
	for _, u := range users {
		waitAllowed(t, e, "rollbot may impersonate "+u, authorizationv1.SubjectAccessReviewSpec{User: saUser,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Resource: "users", Verb: "impersonate", Name: u}})
	}
	for _, g := range groups {
		waitAllowed(t, e, "rollbot may impersonate group "+g, authorizationv1.SubjectAccessReviewSpec{User: saUser,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Resource: "groups", Verb: "impersonate", Name: g}})
	}
	return path, saUser
}

// grant binds rules, as the Role name in e.ns, to subjects: the
// impersonated identities' own RBAC, which the cluster's admin keeps.
func grant(t *testing.T, e *env, name string, rules []rbacv1.PolicyRule, subjects ...rbacv1.Subject) {
	t.Helper()
	ctx := context.Background()
	if _, err := e.admin.RbacV1().Roles(e.ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.RbacV1().RoleBindings(e.ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}, Subjects: subjects}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func waitAllowed(t *testing.T, e *env, what string, spec authorizationv1.SubjectAccessReviewSpec) {
	t.Helper()
	kubetest.Poll(t, "RBAC: "+what, func(ctx context.Context) (bool, error) {
		r, err := e.admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: spec}, metav1.CreateOptions{})
		return err == nil && r.Status.Allowed, err
	})
}

// workloadReads is kube.WorkloadPermissions without its writes: what
// rollbot's ServiceAccount keeps when every write is a clicker's.
func workloadReads() []rbacv1.PolicyRule {
	var rules []rbacv1.PolicyRule
	for _, p := range kube.WorkloadPermissions {
		if !p.IsWrite() {
			rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{p.Group}, Resources: []string{p.Resource}, Verbs: []string{p.Verb}})
		}
	}
	return rules
}

// workloadState is what a refused write must leave as it was: the
// workload's spec generation and its revisions' annotations.
func workloadState(t *testing.T, e *env, kind string) string {
	t.Helper()
	ctx := context.Background()
	var gen int64
	var sel *metav1.LabelSelector
	if kind == kube.KindStatefulSet {
		s, err := e.admin.AppsV1().StatefulSets(e.ns).Get(ctx, e.name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		gen, sel = s.Generation, s.Spec.Selector
	} else {
		d, err := e.admin.AppsV1().DaemonSets(e.ns).Get(ctx, e.name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		gen, sel = d.Generation, d.Spec.Selector
	}
	crs, err := e.admin.AppsV1().ControllerRevisions(e.ns).List(ctx, metav1.ListOptions{LabelSelector: metav1.FormatLabelSelector(sel)})
	if err != nil {
		t.Fatal(err)
	}
	st := fmt.Sprintf("generation %d", gen)
	for _, cr := range crs.Items {
		st += fmt.Sprintf("; %s %v", cr.Name, cr.Annotations)
	}
	return st
}

// A StatefulSet or DaemonSet with impersonate: rollbot's ServiceAccount
// may read it and impersonate alice and bob, never patch. As itself it is
// refused by the cluster; every write for an unmapped clicker, or with no
// clicker, is refused before anything is sent; alice, mapped but without
// patch, is refused with the cluster's message; nothing changes (spec
// generation, revision annotations) until bob, who may patch, stops, rolls
// back and marks it.
func TestRevisionAdapterNeverWritesAsItself(t *testing.T) {
	for _, kind := range []string{kube.KindStatefulSet, kube.KindDaemonSet} {
		t.Run(kind, func(t *testing.T) {
			e, _ := workloadEnv(t, kind)
			ctx := context.Background()
			alice, bob := "alice-"+e.ns, "bob-"+e.ns
			path, _ := impersonator(t, e, workloadReads(), []string{alice, bob}, nil)
			shipped, err := kubetest.LoadRoleNamed(rbacFile, kube.WorkloadsRole)
			if err != nil {
				t.Fatal(err)
			}
			grant(t, e, "as-bob", shipped.Rules, rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: bob})
			grant(t, e, "as-alice", workloadReads(), rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: alice})
			waitAllowed(t, e, "bob may patch", authorizationv1.SubjectAccessReviewSpec{User: bob,
				ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: e.ns, Group: "apps", Resource: kind + "s", Verb: "patch", Name: e.name}})

			cfg := kube.Config{Kubeconfig: path, Namespace: e.ns, Kind: kind, Name: e.name, RolloutTimeout: time.Minute,
				Impersonate: map[string]kube.Identity{"U0ALICE": {User: alice}, "U0BOB": {User: bob}}}
			p, err := kube.NewPlatform(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			snap, err := p.Snapshot(ctx) // reads run as rollbot
			if err != nil {
				t.Fatal(err)
			}
			good, _ := platforms.LastKnownGood(snap.History, snap.Current, nil)
			fb := p.(platforms.Fallbacks)
			writes := map[string]func(context.Context) error{
				"stop":               func(ctx context.Context) error { _, err := p.Stop(ctx, false); return err },
				"dry-run stop":       func(ctx context.Context) error { _, err := p.Stop(ctx, true); return err },
				"rollback":           func(ctx context.Context) error { _, err := p.Rollback(ctx, good, false, nil); return err },
				"dry-run rollback":   func(ctx context.Context) error { _, err := p.Rollback(ctx, good, true, nil); return err },
				"set artifact":       func(ctx context.Context) error { _, err := fb.SetArtifact(ctx, v1, false, nil); return err },
				"scale to zero":      func(ctx context.Context) error { _, err := fb.ScaleToZero(ctx, false); return err },
				"mark do-not-deploy": func(ctx context.Context) error { _, err := p.MarkDoNotDeploy(ctx, snap.Current, "U0EVE"); return err },
			}
			before := workloadState(t, e, kind)
			for name, write := range writes {
				for actor, want := range map[string]string{
					"U0EVE": "<@U0EVE> has no Kubernetes identity in rollbot's `impersonate:` for " + p.Target() + ", so rollbot changed nothing",
					"":      "this write has no Slack user in rollbot's `impersonate:`",
				} {
					actx := ctx
					if actor != "" {
						actx = platforms.WithActor(ctx, actor)
					}
					msg, _ := platforms.UserMessage(write(actx))
					if !strings.Contains(msg, want) {
						t.Errorf("%s as %q: %q, want %q", name, actor, msg, want)
					}
				}
			}
			// alice is mapped, but her own RBAC has no patch.
			msg, _ := platforms.UserMessage(writes["rollback"](platforms.WithActor(ctx, "U0ALICE")))
			if want := "the cluster refused " + alice + " (for <@U0ALICE>): " + kind + "s.apps \"" + e.name + "\" is forbidden: User \"" + alice + "\" cannot patch resource \"" + kind + "s\""; !strings.HasPrefix(msg, want) {
				t.Errorf("alice's rollback: %q, want %q", msg, want)
			}
			// rollbot as itself may not write.
			self := cfg
			self.Impersonate = nil
			sp, err := kube.NewPlatform(self, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := sp.Stop(ctx, false); !apierrors.IsForbidden(err) {
				t.Errorf("stop as rollbot itself: %v, want Forbidden", err)
			}
			if after := workloadState(t, e, kind); after != before {
				t.Fatalf("a refused write changed the %s:\n%s\n%s", kind, before, after)
			}

			asBob := platforms.WithActor(ctx, "U0BOB")
			if res, err := p.Stop(asBob, false); err != nil || res.Outcome != platforms.Done {
				t.Fatalf("stop as bob: %+v %v", res, err)
			}
			if res, err := p.Rollback(asBob, good, false, nil); err != nil || res.Outcome != platforms.Done {
				t.Fatalf("rollback as bob: %+v %v", res, err)
			}
			waitWorkload(t, p, v1)
			if res, err := p.MarkDoNotDeploy(asBob, platforms.Revision{Artifact: v2}, "U0BOB"); err != nil || res.Outcome != platforms.Done {
				t.Fatalf("mark as bob: %+v %v", res, err)
			}
		})
	}
}

// impersonate: keyed by Slack user groups on a StatefulSet: the identity's
// Kubernetes groups are impersonated too (only the on-call group, not its
// user, may patch); among several of the clicker's groups the first in
// sorted id order is taken; a user's own entry wins over their groups; a
// failed group lookup is refused as such; nothing changes until the
// on-call group rolls back.
func TestImpersonatedGroupsOnAStatefulSet(t *testing.T) {
	e, _ := workloadEnv(t, kube.KindStatefulSet)
	ctx := context.Background()
	oncall, oncallGroup, dba, dbaGroup, bob := "oncall-"+e.ns, "oncall-g-"+e.ns, "dba-"+e.ns, "dba-g-"+e.ns, "bob-"+e.ns
	path, _ := impersonator(t, e, workloadReads(), []string{bob, dba, oncall}, []string{dbaGroup, oncallGroup})
	shipped, err := kubetest.LoadRoleNamed(rbacFile, kube.WorkloadsRole)
	if err != nil {
		t.Fatal(err)
	}
	grant(t, e, "oncall-writes", shipped.Rules, rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: oncallGroup})
	grant(t, e, "readers", workloadReads(),
		rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: dbaGroup},
		rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: bob},
		rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: oncall})
	patch := &authorizationv1.ResourceAttributes{Namespace: e.ns, Group: "apps", Resource: "statefulsets", Verb: "patch", Name: e.name}
	waitAllowed(t, e, "the on-call group may patch", authorizationv1.SubjectAccessReviewSpec{User: oncall, Groups: []string{oncallGroup}, ResourceAttributes: patch})
	if r, err := e.admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{User: oncall, ResourceAttributes: patch}}, metav1.CreateOptions{}); err != nil || r.Status.Allowed {
		t.Fatalf("the on-call user may patch without its group: %v", err)
	}

	p, err := kube.NewPlatform(kube.Config{Kubeconfig: path, Namespace: e.ns, Kind: kube.KindStatefulSet, Name: e.name, RolloutTimeout: time.Minute,
		Impersonate: map[string]kube.Identity{
			"S0ONCALL": {User: oncall, Groups: []string{oncallGroup}},
			"S0DBA":    {User: dba, Groups: []string{dbaGroup}},
			"U0BOB":    {User: bob},
		}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.(platforms.SlackGroupMapper).SlackGroups(); !slices.Equal(got, []string{"S0DBA", "S0ONCALL"}) {
		t.Fatalf("SlackGroups = %v", got)
	}
	snap, err := p.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	good, _ := platforms.LastKnownGood(snap.History, snap.Current, nil)
	before := workloadState(t, e, kube.KindStatefulSet)
	forbidden := func(user string) string {
		return ": statefulsets.apps \"" + e.name + "\" is forbidden: User \"" + user + "\" cannot patch resource \"statefulsets\""
	}
	for _, tc := range []struct {
		name string
		ctx  context.Context
		want string
	}{
		{"sorted groups: S0DBA before S0ONCALL", platforms.WithActor(ctx, "U0ALICE", "S0ONCALL", "S0DBA"),
			"the cluster refused " + dba + " (for <@U0ALICE> via <!subteam^S0DBA>)" + forbidden(dba)},
		{"the user's entry wins", platforms.WithActor(ctx, "U0BOB", "S0ONCALL"),
			"the cluster refused " + bob + " (for <@U0BOB>)" + forbidden(bob)},
		{"no mapped group", platforms.WithActor(ctx, "U0EVE", "S0OTHER"),
			"<@U0EVE> has no Kubernetes identity in rollbot's `impersonate:` for " + p.Target() + " (neither by user id nor through a user group)"},
		{"group lookup failed", platforms.WithActorGroupsError(platforms.WithActor(ctx, "U0ALICE"), errors.New("usergroups.users.list: internal_error")),
			"the Slack user-group lookup for <@U0ALICE> failed, so rollbot changed nothing on " + p.Target()},
	} {
		_, err := p.Rollback(tc.ctx, good, false, nil)
		if msg, _ := platforms.UserMessage(err); !strings.HasPrefix(msg, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, msg, tc.want)
		}
	}
	if after := workloadState(t, e, kube.KindStatefulSet); after != before {
		t.Fatalf("a refused write changed the StatefulSet:\n%s\n%s", before, after)
	}
	res, err := p.Rollback(platforms.WithActor(ctx, "U0ALICE", "S0ONCALL"), good, false, nil)
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("rollback as the on-call group: %+v %v", res, err)
	}
	waitWorkload(t, p, v1)
	images, _ := kubetest.PodImages(t, e.admin, e.ns, e.name)
	if slices.ContainsFunc(images, func(s string) bool { return s != v1 }) {
		t.Fatalf("pods after the rollback: %v", images)
	}
}
