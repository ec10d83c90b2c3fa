package bot

import (
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"rollbot/handlers"
	"rollbot/testkit/slackemu"
)

// The demo's timings and simulated services pass the config validation
// (every step budget covers the waits inside it), as a file would.
func TestDemoConfigIsValid(t *testing.T) {
	light(t)
	if err := demoConfig().Validate(); err != nil {
		t.Fatalf("the demo's timings do not validate:\n%v", err)
	}
	// The check can fail: a demo service slower than its budget is refused.
	c := demoConfig()
	slow := *c.Services["myapp"].Simulated
	slow.StepDelay = 10 * time.Minute
	s := c.Services["myapp"]
	s.Simulated = &slow
	c.Services["myapp"] = s
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "budgets.rollout (15m0s, the default) is shorter than 3 pods × services.myapp.simulated.step_delay (10m0s)") {
		t.Fatalf("a demo service slower than its budget: %v", err)
	}
}

// The demo runs on the embedded in-memory Redis: the lifecycle's scripts
// and transactions work there too, and both demo services complete.
func TestDemoCompletesOnEmbeddedRedis(t *testing.T) {
	lightLong(t)
	mr := miniredis.RunT(t)
	services, err := DemoServices()
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, services, DemoEngineOptions())
	h.stop()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	h.opts.Redis, h.opts.Prefix = rdb, ""
	h.start()

	// How long each rollback takes, command to verdict (logged, for the
	// README; not asserted: speed is not a test's to judge).
	start := time.Now()
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	// The simulated history times the onset at v1.5.0's deploy, and
	// search, myapp's healthy neighbour, is measured too.
	rel := tableRows(t, a)["Deployment-related?"]
	if rel == nil || rel[colVerdict] != "✅ likely this deploy" ||
		!strings.HasPrefix(rel[colMeasured], "Started ") || !strings.HasSuffix(rel[colMeasured], " after the deploy; other services healthy (1 of 1)") ||
		!strings.Contains(rel[colSource], "healthy: search") {
		t.Errorf("Deployment-related? row %q", rel)
	}
	wantAll(t, "assessment", a.PlainText(), "other services healthy (1 of 1) → likely this deploy.")
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	v := h.waitFor("verified", inThread(a.TS, textHas("Rollback verified")))
	// The demo's short soak, labelled: every automatic check held 10s.
	wantAll(t, "verified checklist", v.PlainText(), "held for the 10s soak", "verified by rollbot: held 1", "(soak 10s)")
	h.waitFor("post-rollback actions", inThread(a.TS, textHas("Post-rollback actions")))
	t.Logf("demo: /rollback myapp to its post-rollback actions in %s (soak %s)", time.Since(start).Round(100*time.Millisecond), DemoVerifySoak)

	start = time.Now()

	h.slash(slackemu.UserAlice, "payments")
	p := h.waitFor("payments assessment", func(m slackemu.Message) bool {
		return hasAction(handlers.ActConfirm)(m) && m.TS != a.TS
	})
	h.click(slackemu.UserBob, p.TS, handlers.ActConfirm)
	db := h.waitFor("DB approval request", inThread(p.TS, hasAction(handlers.ActDBApprove)))
	if ack := h.approve(slackemu.UserDana, db, "payments"); len(ack.Errors) > 0 {
		t.Fatalf("approval refused: %+v", ack.Errors)
	}
	h.waitFor("payments verified", inThread(p.TS, textHas("Rollback verified")))
	t.Logf("demo: /rollback payments to verified in %s, the DB approval included", time.Since(start).Round(100*time.Millisecond))
}
