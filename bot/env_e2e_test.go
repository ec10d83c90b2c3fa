package bot

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"rollbot/handlers"
	"rollbot/platforms/kube"
	"rollbot/state"
	"rollbot/testkit/kubetest"
	"rollbot/testkit/slackemu"
)

// myapp in staging (the simulated platform) and in prod (a real
// Kubernetes control plane): --env and name@env pick the right one, a
// bare name bound to both in a channel is asked about and nothing is
// done; a channel that sees only staging picks it; the two environments'
// locks, incidents, DO_NOT_DEPLOY marks and timelines stay apart.
func TestEnvironmentsStagingAndProd(t *testing.T) {
	heavy(t)
	c := kubetest.Shared(t)
	ns := kubetest.CreateNamespace(t, c.AdminClient, "env")
	kubetest.CreateDeployment(t, c.AdminClient, ns, "myapp", "registry.local/myapp:v1", 3)
	kubetest.WaitRolledOut(t, c.AdminClient, ns, "myapp")
	kubetest.SetImage(t, c.AdminClient, ns, "myapp", "registry.local/myapp:v2")
	kubetest.WaitRolledOut(t, c.AdminClient, ns, "myapp")
	adapter, err := kube.New(kube.Config{Kubeconfig: c.KubeconfigFor(t, ns, "../deploy/kubernetes/rbac.yaml"), Namespace: ns, Deployment: "myapp", RolloutTimeout: time.Minute},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	prod := &handlers.Service{Name: handlers.ServiceKey("myapp", "prod"), Env: "prod", Platform: adapter, Metrics: imageMetrics{adapter},
		Thresholds: handlers.Thresholds{ErrorRate: 0.01, LatencyFactor: 2, Restarts: 3, UnreadyRatio: 0.5, BaselineP95: 100 * time.Millisecond},
		Approvers:  handlers.Access{Users: []string{slackemu.UserBob}}}
	staging, stSim := simService(t, handlers.ServiceKey("myapp", "staging"), 10*time.Millisecond)
	staging.Env = "staging"
	staging.Channels = []string{slackemu.ChannelIncident, slackemu.ChannelTeamPay}
	eng := fastEngine()
	eng.VerifyTimeout = 30 * time.Second
	h := newHarness(t, []*handlers.Service{prod, staging}, eng)
	ctx := context.Background()

	// Ambiguous in the shared channel: asked, nothing done.
	h.slash(slackemu.UserAlice, `myapp --reason "errors"`)
	ask := h.ephemeralIn(slackemu.ChannelIncident, slackemu.UserAlice, "runs in 2 environments here")
	wantAll(t, "the question", ask.PlainText(), "`prod`", "`staging`", `/rollback myapp --reason "errors" --env prod`, "--env staging", "Nothing was done")
	if active, _ := h.store.Active(ctx); len(active) != 0 {
		t.Fatalf("an ambiguous call opened incidents: %+v", active)
	}
	h.slash(slackemu.UserAlice, "myapp --env qa")
	h.ephemeralIn(slackemu.ChannelIncident, slackemu.UserAlice, "`myapp` has no environment `qa` in this channel; here it has `prod`, `staging`")

	// Staging first, left waiting for its confirmation: it holds myapp@staging only.
	h.slash(slackemu.UserAlice, "myapp --env staging")
	sa := h.waitFor("staging assessment", func(m slackemu.Message) bool {
		return strings.Contains(m.PlainText(), "Rollback of myapp@staging") && slices.Contains(m.ActionIDs(), handlers.ActConfirm)
	})
	wantAll(t, "staging assessment", sa.PlainText(), "Bad version:* 3 (app:v3)", "simulated")

	// Prod is not blocked by the staging lock.
	h.slash(slackemu.UserAlice, "myapp@prod")
	pa := h.waitFor("prod assessment", func(m slackemu.Message) bool {
		return strings.Contains(m.PlainText(), "Rollback of myapp@prod") && slices.Contains(m.ActionIDs(), handlers.ActConfirm)
	})
	wantAll(t, "prod assessment", pa.PlainText(), "Bad version:* 2 (registry.local/myapp:v2)", "Last known good:* 1 (registry.local/myapp:v1)")
	ls, _ := h.store.LockHolder(ctx, "myapp@staging")
	lp, _ := h.store.LockHolder(ctx, "myapp@prod")
	if ls == nil || lp == nil || ls.Incident == lp.Incident {
		t.Fatalf("locks: staging %+v, prod %+v; want one per environment", ls, lp)
	}
	if l, _ := h.store.LockHolder(ctx, "myapp"); l != nil {
		t.Fatalf("a lock on the bare name: %+v", l)
	}

	h.click(slackemu.UserBob, pa.TS, handlers.ActConfirm)
	h.tickChecksByHand(slackemu.UserBob, pa.TS)
	h.waitFor("prod verified", func(m slackemu.Message) bool {
		return m.ThreadTS == pa.TS && strings.Contains(m.PlainText(), "Rollback verified")
	})
	h.waitStatus(lp.Incident, state.Completed)
	images, ready := kubetest.PodImages(t, c.AdminClient, ns, "myapp")
	if len(images) != 3 || ready != 3 || slices.ContainsFunc(images, func(s string) bool { return s != "registry.local/myapp:v1" }) {
		t.Fatalf("prod after its rollback: images %v, %d ready", images, ready)
	}
	if got := current(t, stSim); got != "app:v3" {
		t.Fatalf("the prod rollback changed staging: it runs %s", got)
	}

	h.click(slackemu.UserBob, sa.TS, handlers.ActConfirm)
	h.waitStatus(ls.Incident, state.Completed)
	if got := current(t, stSim); got != "app:v2" {
		t.Fatalf("staging runs %s after its rollback, want app:v2", got)
	}

	// Marks and incident lists per environment.
	ms, _ := h.store.Marks(ctx, "myapp@staging")
	mp, _ := h.store.Marks(ctx, "myapp@prod")
	if _, ok := ms["app:v3"]; !ok || len(ms) != 1 {
		t.Errorf("staging marks = %v, want app:v3 only", ms)
	}
	if _, ok := mp["registry.local/myapp:v2"]; !ok || len(mp) != 1 {
		t.Errorf("prod marks = %v, want registry.local/myapp:v2 only", mp)
	}
	for env, id := range map[string]string{"myapp@staging": ls.Incident, "myapp@prod": lp.Incident} {
		rec, _ := h.store.Recent(ctx, env, 10)
		if len(rec) != 1 || rec[0].ID != id {
			t.Errorf("incidents of %s = %v, want only %s", env, rec, id)
		}
	}
	evs, _ := h.store.Timeline(ctx, lp.Incident)
	for _, e := range evs {
		if strings.Contains(e.Detail, "app:v3") || strings.Contains(e.Detail, "simulated") {
			t.Errorf("prod's timeline has a staging event: %+v", e)
		}
	}

	// A channel bound to staging only: the bare name is not ambiguous there.
	h.slashIn(slackemu.ChannelTeamPay, slackemu.UserAlice, "myapp --dry-run")
	h.waitFor("staging dry run in #payments-incidents", inChannel(slackemu.ChannelTeamPay, textHas("Dry run: rollback of myapp@staging")))
	h.slashIn(slackemu.ChannelTeamPay, slackemu.UserAlice, "myapp --env prod")
	h.ephemeralIn(slackemu.ChannelTeamPay, slackemu.UserAlice, "has no environment `prod` in this channel")
}
