package bot

import (
	"strings"
	"testing"
	"time"

	"rollbot/handlers"
	"rollbot/state"
	"rollbot/testkit/slackemu"
)

// A real incident through the local Slack server shows each step's
// elapsed time against the runbook's budget while it runs, the measured
// steps when they are done, and the timeline export lists them with the
// time to recovery.
func TestFlowRunbookBudgets(t *testing.T) {
	light(t)
	// 400ms a pod: the rollback runs over a second, so its elapsed time
	// is seen live (the budget line ticks every second).
	svc, _ := simService(t, "myapp", 400*time.Millisecond)
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	wantAll(t, "assessment", a.PlainText(), "Runbook budgets: ✅ Assess", "/ 2 min", "▫️ Stop – / 30 s", "▫️ Roll back – / 1–3 min")
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)

	live := h.waitFor("live budget line while rolling back", textHas("⏳ Roll back"))
	wantAll(t, "live progress", live.PlainText(), "Runbook budgets:", "✅ Assess", "/ 2 min", "✅ Stop", "/ 30 s", "/ 1–3 min", "▫️ Verify – / 3 min")
	done := h.waitFor("rolled back with its time", textHas("Rolled back:"))
	h.waitFor("budget line after the rollback", func(m slackemu.Message) bool {
		return m.TS == done.TS && strings.Contains(m.PlainText(), "✅ Roll back")
	})
	v := h.waitFor("verified with the time to recovery", textHas("Time to recovery:"))
	wantAll(t, "verification", v.PlainText(), "Rollback verified", "✅ Verify", "/ 3 min")
	in := h.waitStatus("RB-1", state.Completed)
	for _, step := range []string{"assess", "stop", "rollback", "verify"} {
		tm, ok := in.Timings[step]
		if !ok || tm.Start.IsZero() || tm.End.Before(tm.Start) || tm.Failed {
			t.Errorf("timing of %s = %+v", step, tm)
		}
	}
	if in.Timings["rollback"].End.Sub(in.Timings["rollback"].Start) < time.Second {
		t.Errorf("the rollback of 3 pods at 400ms each measured %s", in.Timings["rollback"].End.Sub(in.Timings["rollback"].Start))
	}
	if !in.Timings["verify"].End.After(in.Timings["rollback"].End) || in.Timings["stop"].End.After(in.Timings["rollback"].Start.Add(time.Millisecond)) {
		t.Errorf("steps out of order: %+v", in.Timings)
	}

	h.slash(slackemu.UserAlice, "timeline RB-1 --markdown")
	md := h.waitFor("markdown export", textHas("# Incident timeline RB-1"))
	wantAll(t, "markdown export", md.PlainText(), "## Runbook step times", "| Step | Took | Runbook | Result |",
		"| Assess |", "| 2 min | pass |", "| Stop |", "| 30 s | pass |", "| Roll back |", "| 1–3 min | pass |", "| Verify |", "| 3 min | pass |",
		"Time to recovery:", "from the rollback request to the verified rollback", "## Events")
	if i, j := strings.Index(md.PlainText(), "## Runbook step times"), strings.Index(md.PlainText(), "| Time (UTC) |"); i < 0 || j < i {
		t.Errorf("step times are not before the event table:\n%s", md.PlainText())
	}
}
