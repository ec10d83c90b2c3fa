package bot

import (
	"slices"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/release/common"
	rbacv1 "k8s.io/api/rbac/v1"

	"rollbot/handlers"
	"rollbot/platforms/kube"
	"rollbot/state"
	"rollbot/testkit/helmtest"
	"rollbot/testkit/kubetest"
	"rollbot/testkit/slackemu"
)

// TestHelmRollbackThroughSlack: Deployments owned by Helm releases of a
// chart built in a temp dir, installed (v1) and upgraded to a bad image
// (v2) through Helm's SDK on a real control plane; rollbot's adapter runs
// as a ServiceAccount bound to exactly the Roles `rollbot` and
// `rollbot-helm` of deploy/kubernetes/rbac.yaml.
//   - shop: the dry run names Helm revision 1 and changes nothing; the
//     rollback goes through Helm: the release history (SDK) shows revision
//     3 "Rollback to 1", deployed, and the pods run v1.
//   - cart: rollbot's Role for Helm lacks `create` on Secrets, so the Helm
//     rollback fails (Helm cannot record its revision, and applies
//     nothing); the thread shows the cluster's message and offers the
//     fallbacks, and "set the image" rolls the Deployment back to v1.
//   - ghost: the annotations name a release that does not exist: the Owner
//     row says so, and the confirmation writes nothing.
func TestHelmRollbackThroughSlack(t *testing.T) {
	heavy(t)
	c := kubetest.Shared(t)
	ch := helmtest.Chart(t)
	type svcEnv struct {
		ns  string
		cfg *action.Configuration
		svc *handlers.Service
	}
	role, err := kubetest.LoadRole("../deploy/kubernetes/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	setup := func(name string, install bool) svcEnv {
		ns := kubetest.CreateNamespace(t, c.AdminClient, name)
		e := svcEnv{ns: ns}
		if install {
			e.cfg = helmtest.Config(t, c.AdminKubeconfig, ns)
			helmtest.Install(t, e.cfg, ch, ns, name, "registry.local/"+name+":v1")
			kubetest.WaitRolledOut(t, c.AdminClient, ns, name)
			helmtest.Upgrade(t, e.cfg, ch, name, "registry.local/"+name+":v2")
		} else {
			d := kubetest.NewDeployment(ns, name, "registry.local/"+name+":v1", 2)
			d.Labels["app.kubernetes.io/managed-by"] = "Helm"
			d.Annotations["meta.helm.sh/release-name"] = "nowhere"
			d.Annotations["meta.helm.sh/release-namespace"] = ns
			kubetest.Create(t, c.AdminClient, d)
			kubetest.SetImage(t, c.AdminClient, ns, name, "registry.local/"+name+":v2")
		}
		kubetest.WaitRolledOut(t, c.AdminClient, ns, name)
		kubeconfig := c.KubeconfigForRoles(t, ns, "../deploy/kubernetes/rbac.yaml", "rollbot", kube.HelmRole)
		if name == "cart" { // rollbot-helm without create
			kubeconfig, _ = c.KubeconfigForRules(t, ns, "rollbot-no-create", append(slices.Clone(role.Rules),
				rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list", "update"}}))
		}
		adapter, err := kube.New(kube.Config{Kubeconfig: kubeconfig, Namespace: ns, Deployment: name, RolloutTimeout: time.Minute}, nil)
		if err != nil {
			t.Fatal(err)
		}
		g := &healthGate{}
		g.open.Store(true)
		e.svc = &handlers.Service{Name: name, Platform: adapter, Metrics: imageMetrics{adapter}, Health: g, HasHealth: true,
			Thresholds: handlers.Thresholds{ErrorRate: 0.01, LatencyFactor: 2, Restarts: 3, UnreadyRatio: 0.5, BaselineP95: 100 * time.Millisecond},
			Approvers:  handlers.Access{Groups: []string{slackemu.GroupOnCall}}}
		return e
	}
	shop, cart, ghost := setup("shop", true), setup("cart", true), setup("ghost", false)
	h := newHarness(t, []*handlers.Service{shop.svc, cart.svc, ghost.svc}, fastEngine())
	image := func(ns, name string) string {
		t.Helper()
		return kubetest.Get(t, c.AdminClient, ns, name).Spec.Template.Spec.Containers[0].Image
	}
	assessment := func(name string) slackemu.Message {
		t.Helper()
		h.slash(slackemu.UserAlice, name)
		return h.waitFor(name+" assessment", func(m slackemu.Message) bool {
			return slicesHas(m.ActionIDs(), handlers.ActConfirm) && strings.Contains(m.PlainText(), name+":v2")
		})
	}

	// --- shop: dry run, then the rollback through Helm.
	h.slash(slackemu.UserAlice, "shop --dry-run")
	plan := h.waitFor("shop plan", textHas("Plan (dry run: nothing was changed)"))
	wantAll(t, "shop plan", plan.PlainText(),
		"rollback: helm release "+shop.ns+"/shop: roll back from revision 2 (registry.local/shop:v2) to revision 1 (registry.local/shop:v1), recorded as revision 3")
	if hist := helmtest.History(t, shop.cfg, "shop"); len(hist) != 2 || image(shop.ns, "shop") != "registry.local/shop:v2" {
		t.Fatalf("the dry run changed shop: %d revisions, image %s", len(hist), image(shop.ns, "shop"))
	}
	a := assessment("shop")
	wantAll(t, "shop assessment", a.PlainText(), "Owner", "Helm release "+shop.ns+"/shop (revision 2, deployed)",
		"rollbot rolls back through Helm", "newest earlier Helm revision that deployed successfully")
	id := incidentID.FindString(a.PlainText())
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	h.tickChecksByHand(slackemu.UserBob, a.TS)
	h.waitStatusWithin(id, state.Completed, time.Minute)
	hist := helmtest.History(t, shop.cfg, "shop")
	if len(hist) != 3 || hist[0].Info.Status != common.StatusDeployed || hist[0].Info.RollbackRevision != 1 || hist[1].Info.Status != common.StatusSuperseded {
		for _, r := range hist {
			t.Logf("revision %d: %s %q", r.Version, r.Info.Status, r.Info.Description)
		}
		t.Fatal("shop's release history after the rollback")
	}
	images, ready := kubetest.PodImages(t, c.AdminClient, shop.ns, "shop")
	if len(images) != 2 || ready != 2 || slices.ContainsFunc(images, func(s string) bool { return s != "registry.local/shop:v1" }) {
		t.Fatalf("shop's pods after the rollback: %v, %d ready", images, ready)
	}

	// --- cart: the Helm rollback fails; the fallback sets the image.
	ca := assessment("cart")
	h.click(slackemu.UserBob, ca.TS, handlers.ActConfirm)
	failed := h.waitFor("cart failure", func(m slackemu.Message) bool {
		return m.ThreadTS == ca.TS && slicesHas(m.ActionIDs(), handlers.ActFallbackImage)
	})
	wantAll(t, "cart failure", failed.PlainText(), "Helm could not roll Helm release "+cart.ns+"/cart back to revision 1 (registry.local/cart:v1)",
		`cannot create resource \"secrets\"`, "grant the rollbot-helm Role")
	if !slicesHas(failed.ActionIDs(), handlers.ActFallbackZero) {
		t.Errorf("the failure offers %v, want the scale-to-zero fallback too", failed.ActionIDs())
	}
	if hist := helmtest.History(t, cart.cfg, "cart"); len(hist) != 2 || image(cart.ns, "cart") != "registry.local/cart:v2" {
		t.Fatalf("the failed Helm rollback changed cart: %d revisions, image %s", len(hist), image(cart.ns, "cart"))
	}
	h.click(slackemu.UserBob, failed.TS, handlers.ActFallbackImage)
	h.tickChecksByHand(slackemu.UserBob, ca.TS)
	images, ready = kubetest.PodImages(t, c.AdminClient, cart.ns, "cart")
	if len(images) != 2 || ready != 2 || slices.ContainsFunc(images, func(s string) bool { return s != "registry.local/cart:v1" }) {
		t.Fatalf("cart's pods after the fallback: %v, %d ready", images, ready)
	}

	// --- ghost: the release does not exist; nothing is written.
	before := kubetest.Get(t, c.AdminClient, ghost.ns, "ghost").Generation
	ga := assessment("ghost")
	wantAll(t, "ghost assessment", ga.PlainText(), "cannot roll back through Helm",
		"Helm release "+ghost.ns+"/nowhere was not found, though deployment "+ghost.ns+"/ghost names it")
	h.click(slackemu.UserBob, ga.TS, handlers.ActConfirm)
	gr := h.waitFor("ghost refusal", func(m slackemu.Message) bool {
		return m.ThreadTS == ga.TS && strings.Contains(m.PlainText(), "Nothing was changed")
	})
	wantAll(t, "ghost refusal", gr.PlainText(), "rolls deployment "+ghost.ns+"/ghost back through Helm release "+ghost.ns+"/nowhere", "was not found")
	if kubetest.Get(t, c.AdminClient, ghost.ns, "ghost").Generation != before || image(ghost.ns, "ghost") != "registry.local/ghost:v2" {
		t.Fatal("the Deployment of ghost was written although its release is missing")
	}
}
