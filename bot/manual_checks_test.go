package bot

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"rollbot/handlers"
	"rollbot/platforms/sim"
	"rollbot/state"
	"rollbot/testkit/slackemu"
	"rollbot/testkit/wait"
)

// countAction is how many buttons with action id a message has.
func countAction(m slackemu.Message, id string) int {
	n := 0
	for _, a := range m.ActionIDs() {
		if a == id {
			n++
		}
	}
	return n
}

// answerChecksByHand answers the n checks by hand of a verification as
// user, clicking "Checked: OK" once the checklist shows each one, and
// returns the checklist once no check is left to answer.
func answerChecksByHand(t testing.TB, emu *slackemu.Server, user string, n int, within time.Duration) slackemu.Message {
	t.Helper()
	var m slackemu.Message
	for left := n; left >= 0; left-- {
		ctx, cancel := context.WithTimeout(context.Background(), within)
		var err error
		m, err = emu.WaitForMessage(ctx, func(m slackemu.Message) bool {
			return strings.Contains(m.PlainText(), "Check by hand") == (left > 0) && countAction(m, handlers.ActCheckOK) == left &&
				strings.Contains(m.PlainText(), "held ")
		})
		if err != nil {
			cancel()
			t.Fatalf("waiting for the checklist with %d checks by hand left: %v\nmessages:\n%s", left, err, dumpMessages(emu))
		}
		if left > 0 {
			err = emu.ClickButton(ctx, user, slackemu.ChannelIncident, m.TS, handlers.ActCheckOK)
		}
		cancel()
		if err != nil {
			t.Fatalf("answer a check by hand as %s: %v", user, err)
		}
	}
	return m
}

// manualService is a simulated service without a metrics source: its
// error rate and latency items are checks by hand; the platform, health
// and smoke items are checked by rollbot.
func manualService(t *testing.T) *handlers.Service {
	svc, _ := simService(t, "myapp", 20*time.Millisecond)
	svc.Metrics = nil
	return svc
}

// TestManualChecksVerifiedWhenAnApproverAnswers: without a metrics source,
// the error rate and latency items are checks by hand. The automatic items
// hold for their soak, but the rollback is not verified until an approver
// answers both; a viewer's answer is refused (ephemeral, recorded, nothing
// changed). Who answered and when is on the incident and the timeline, and
// the verdict says which items rollbot verified and which people confirmed.
func TestManualChecksVerifiedWhenAnApproverAnswers(t *testing.T) {
	light(t)
	h := newHarness(t, []*handlers.Service{manualService(t)}, fastEngine())
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)

	// The automatic items held for the 1s soak; both manual ones wait.
	v := h.waitFor("automatic items held, checks by hand waiting", func(m slackemu.Message) bool {
		return countAction(m, handlers.ActCheckOK) == 2 && strings.Contains(checklistLine(m, "All pods healthy"), "verified by rollbot") &&
			strings.Contains(checklistLine(m, "Critical user flows working"), "verified by rollbot")
	})
	wantAll(t, "checklist", v.PlainText(), "Check by hand: Error rate < baseline", "Check by hand: Latency p95 normal",
		"no metrics source configured", "Answer as one of <!subteam^"+slackemu.GroupOnCall+">")
	if strings.Contains(v.PlainText(), "did not recover") || strings.Contains(v.PlainText(), "Rollback verified") {
		t.Errorf("verdict before the checks by hand were answered:\n%s", v.PlainText())
	}
	time.Sleep(time.Second) // several rounds later, still waiting for a person
	if in := h.waitStatus("RB-1", state.Verifying); in.Checks["errors"].Answered() || in.Checks["latency"].Answered() {
		t.Fatalf("checks answered without a click: %+v", in.Checks)
	}

	// Eve is in no approver group: refused, told so, nothing recorded.
	h.click(slackemu.UserEve, v.TS, handlers.ActCheckOK)
	h.waitFor("refusal", ephemeralFor(slackemu.UserEve, "You are not allowed to answer checks by hand for *myapp*"))
	if in := h.waitStatus("RB-1", state.Verifying); in.Checks["errors"].Answered() {
		t.Fatalf("a viewer's answer was recorded: %+v", in.Checks)
	}

	final := answerChecksByHand(t, h.emu, slackemu.UserAlice, 2, 20*time.Second)
	in := h.waitStatus("RB-1", state.Completed)
	verdict := h.waitFor("verified", func(m slackemu.Message) bool {
		return m.TS == final.TS && strings.Contains(m.PlainText(), "Rollback verified")
	})
	t.Logf("verdict:\n%s", verdict.PlainText())
	wantAll(t, "verdict", verdict.PlainText(),
		"Verified by rollbot, each held for the 1s soak: All pods healthy, Health checks passing, Critical user flows working.",
		"Confirmed by hand: Error rate < baseline by <@"+slackemu.UserAlice+"> at ", "Latency p95 normal by <@"+slackemu.UserAlice+"> at ",
		"confirmed OK by <@"+slackemu.UserAlice+">")
	for _, key := range []string{"errors", "latency"} {
		c := in.Checks[key]
		if c.Answer != state.CheckOK || c.By != slackemu.UserAlice || c.At.IsZero() {
			t.Errorf("check %s on the incident: %+v, want OK by alice with the time", key, c)
		}
	}
	evs := h.wantSteps("RB-1", "request", "assess", "confirm", "stop", "rollback", "verify", "postactions")
	var answered, refused int
	for _, ev := range evs {
		switch {
		case ev.Step == "verify" && ev.Actor == slackemu.UserAlice && strings.HasPrefix(ev.Detail, "checked by hand: ") && strings.HasSuffix(ev.Detail, ": OK"):
			answered++
		case ev.Step == "verify" && ev.Actor == slackemu.UserEve && strings.HasPrefix(ev.Detail, "refused: "):
			refused++
		}
	}
	if answered != 2 || refused != 1 {
		t.Errorf("timeline: %d answers by alice (want 2), %d refusals of eve (want 1):\n%+v", answered, refused, evs)
	}
}

// TestManualCheckNotOKEndsInTheFailurePath: "Not OK" on a check by hand
// fails the verification at once, with who said so, and offers the
// fallbacks; it never says the service "did not recover" on its own.
func TestManualCheckNotOKEndsInTheFailurePath(t *testing.T) {
	light(t)
	h := newHarness(t, []*handlers.Service{manualService(t)}, fastEngine())
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	v := h.waitFor("checks by hand", func(m slackemu.Message) bool { return countAction(m, handlers.ActCheckNotOK) == 2 })
	h.click(slackemu.UserBob, v.TS, handlers.ActCheckNotOK)

	f := h.waitFor("verification failure", hasAction(handlers.ActRetryVerify))
	t.Logf("failure:\n%s", f.PlainText())
	wantAll(t, "failure", f.PlainText(), "Verification failed:", "<@"+slackemu.UserBob+"> checked *Error rate < baseline* by hand at ", "*not OK*")
	if strings.Contains(f.PlainText(), "did not recover") {
		t.Errorf("the failure blames the service although no automatic check failed:\n%s", f.PlainText())
	}
	for _, id := range []string{handlers.ActFallbackImage, handlers.ActFallbackZero, handlers.ActEnd} {
		if !slices.Contains(f.ActionIDs(), id) {
			t.Errorf("failure lacks the %s button: %v", id, f.ActionIDs())
		}
	}
	in := h.waitStatus("RB-1", state.VerifyFailed)
	if c := in.Checks["errors"]; c.Answer != state.CheckNotOK || c.By != slackemu.UserBob {
		t.Errorf("the answer on the incident: %+v", c)
	}
	if in.HeldUntil.IsZero() {
		t.Errorf("the service is not held for the fallbacks")
	}
	if m, _ := h.emu.Message(slackemu.ChannelIncident, v.TS); countAction(m, handlers.ActCheckOK) != 0 {
		t.Errorf("the checklist still asks for answers after the verdict:\n%s", m.PlainText())
	}

	// Re-running the verification asks again.
	h.click(slackemu.UserAlice, f.TS, handlers.ActRetryVerify)
	answerChecksByHand(t, h.emu, slackemu.UserAlice, 2, 20*time.Second)
	h.waitStatus("RB-1", state.Completed)
}

// TestManualChecksSurviveATakeover: the answers live in Redis, so a check
// answered before the replica that owns the verification stops is kept by
// the replica that takes it over, and the next answer, served by the new
// replica, completes the rollback.
func TestManualChecksSurviveATakeover(t *testing.T) {
	light(t)
	eng := fastEngine()
	eng.Lease = 3 * time.Second
	h := newHarness(t, []*handlers.Service{manualService(t)}, eng)
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	v := h.waitFor("checks by hand", func(m slackemu.Message) bool { return countAction(m, handlers.ActCheckOK) == 2 })
	h.click(slackemu.UserBob, v.TS, handlers.ActCheckOK)
	h.waitFor("one answered", func(m slackemu.Message) bool { return m.TS == v.TS && countAction(m, handlers.ActCheckOK) == 1 })
	before := h.waitStatus("RB-1", state.Verifying)

	h.stop() // the owner stops; a new replica takes the verification over
	h.start()
	h.waitFor("takeover report", textHas("RB-1 resumed by"))
	wait.For(t, 20*time.Second, "the takeover", func() (bool, error) {
		in, err := h.store.Get(context.Background(), "RB-1")
		if err != nil {
			return false, err
		}
		return len(in.TakenOver) == 1 && in.Owner != before.Owner, fmt.Errorf("owner %s, takeovers %d", in.Owner, len(in.TakenOver))
	})
	m := h.waitFor("resumed checklist keeps the answer", func(m slackemu.Message) bool {
		return m.TS == v.TS && countAction(m, handlers.ActCheckOK) == 1 && strings.Contains(m.PlainText(), "confirmed OK by <@"+slackemu.UserBob+">") &&
			strings.Contains(m.PlainText(), "held ")
	})
	h.click(slackemu.UserAlice, m.TS, handlers.ActCheckOK)
	in := h.waitStatus("RB-1", state.Completed)
	if in.Checks["errors"].By != slackemu.UserBob || in.Checks["latency"].By != slackemu.UserAlice {
		t.Errorf("answers after the takeover: %+v", in.Checks)
	}
	wantAll(t, "verdict", h.waitFor("verified", textHas("Rollback verified")).PlainText(),
		"Error rate < baseline by <@"+slackemu.UserBob+">", "Latency p95 normal by <@"+slackemu.UserAlice+">")
}

// TestVerificationWithoutTrafficIsNotVerified: the service converged but
// gets too little traffic for the request metrics (fewer than 10 requests
// in the window): the verification ends "not verified" with what was seen,
// and never says the service did not recover.
func TestVerificationWithoutTrafficIsNotVerified(t *testing.T) {
	light(t)
	s, err := sim.New("myapp", sim.Config{
		Versions:  []sim.Version{{Artifact: "app:v1"}, {Artifact: "app:v2"}, {Artifact: "app:v3", Bad: true}},
		StepDelay: 20 * time.Millisecond,
		RPS:       0.1,
	})
	if err != nil {
		t.Fatal(err)
	}
	svc := &handlers.Service{Name: "myapp", Platform: s, Metrics: s, Health: s, HasHealth: true, HasSmoke: true,
		Approvers: handlers.Access{Groups: []string{slackemu.GroupOnCall}}}
	eng := fastEngine()
	eng.VerifyTimeout = time.Second
	h := newHarness(t, []*handlers.Service{svc}, eng)
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	f := h.waitFor("verification failure", hasAction(handlers.ActRetryVerify))
	t.Logf("failure:\n%s", f.PlainText())
	wantAll(t, "failure", f.PlainText(), "Verification failed:* not verified by ", "(each check must hold for 1s)",
		"Error rate < baseline: never held (waiting for data since the rollback: too little traffic", "Observed: All pods healthy: ")
	if strings.Contains(f.PlainText(), "did not recover") {
		t.Errorf("the failure says the service did not recover, but no check failed:\n%s", f.PlainText())
	}
	h.waitStatus("RB-1", state.VerifyFailed)
}

// TestVerificationOutOfBudgetSaysWhatWasSeen: the verification's budget
// ends before the soak could: the failure path says so, with what was
// observed until then.
func TestVerificationOutOfBudgetSaysWhatWasSeen(t *testing.T) {
	light(t)
	svc, _ := simService(t, "myapp", 20*time.Millisecond)
	eng := fastEngine()
	eng.VerifySoak = time.Minute
	eng.Budgets.Verify = 2 * time.Second
	h := newHarness(t, []*handlers.Service{svc}, eng)
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	f := h.waitFor("verification failure", hasAction(handlers.ActRetryVerify))
	t.Logf("failure:\n%s", f.PlainText())
	wantAll(t, "failure", f.PlainText(), "the verification did not finish within its budget of 2s: not verified: All pods healthy: ",
		"Error rate < baseline: 0.", "requests), worst seen ", "s of 1m (")
	if strings.Contains(f.PlainText(), "did not recover") {
		t.Errorf("the failure says the service did not recover, but no check failed:\n%s", f.PlainText())
	}
	h.waitStatus("RB-1", state.VerifyFailed)
}

// tickChecksByHand answers, as user, every check by hand of the
// verification in thread (the assessment's ts; "" for any) until the rollback is
// verified, and returns the verified checklist: for tests whose service
// leaves items rollbot cannot check itself (no health URL, no smoke test,
// no metrics source).
func (h *harness) tickChecksByHand(user, thread string) slackemu.Message {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	verified := func(m slackemu.Message) bool { return strings.Contains(m.PlainText(), "Rollback verified") }
	for {
		m, err := h.emu.WaitForMessage(ctx, func(m slackemu.Message) bool {
			return (thread == "" || m.ThreadTS == thread) && (verified(m) || countAction(m, handlers.ActCheckOK) > 0)
		})
		if err != nil {
			h.t.Fatalf("waiting for checks by hand or the verdict: %v\n%s", err, h.dump())
		}
		if verified(m) {
			return m
		}
		n := countAction(m, handlers.ActCheckOK)
		if err := h.emu.ClickButton(ctx, user, m.Channel, m.TS, handlers.ActCheckOK); err != nil {
			h.t.Fatalf("answer a check by hand as %s: %v", user, err)
		}
		// The answer is taken once the checklist shows one check fewer.
		if _, err := h.emu.WaitForMessage(ctx, func(x slackemu.Message) bool {
			return x.TS == m.TS && (verified(x) || countAction(x, handlers.ActCheckOK) < n)
		}); err != nil {
			h.t.Fatalf("the answer by hand was not taken: %v\n%s", err, h.dump())
		}
	}
}
