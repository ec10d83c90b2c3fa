package bot

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"rollbot/handlers"
	"rollbot/state"
	"rollbot/testkit/slackemu"
)

// Ten services rolled back at once, each with its live progress and
// verification, on a local Slack server that enforces Slack's per-method
// tiers (chat.postMessage about one a second per channel, chat.update
// Tier 3, ...): rollbot paces itself, so Slack answers no 429 and every
// message ends in its final state. How long that takes is
// BenchmarkTenIncidents' figure, not this test's.
func TestTenIncidentsWithinSlackRateLimits(t *testing.T) {
	lightLong(t)
	took, waits := tenIncidents(t)
	t.Logf("10 incidents: last message in its final state %s after the commands; longest waits for a turn: %v", took.Round(100*time.Millisecond), waits)
}

// BenchmarkTenIncidents reports the time from ten /rollback commands at
// once to the last of their messages in its final state, under Slack's
// tiers on the local Slack server (go test ./bot/ -run '^$' -bench
// BenchmarkTenIncidents -benchtime 3x). The outcome is checked as in the
// test: no 429, every message final.
func BenchmarkTenIncidents(b *testing.B) {
	var total, worst, update, post time.Duration
	for b.Loop() {
		took, waits := tenIncidents(b)
		total += took
		worst = max(worst, took)
		update, post = max(update, waits["chat.update"]), max(post, waits["chat.postMessage"])
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s-to-last-final")
	b.ReportMetric(worst.Seconds(), "s-worst")
	b.ReportMetric(update.Seconds(), "s-longest-update-wait")
	b.ReportMetric(post.Seconds(), "s-longest-post-wait")
}

// tenIncidents runs the ten rollbacks and checks their outcome; it returns
// the time from the commands to the moment every incident was complete
// with every message final, and the longest wait of a call for its turn
// under Slack's tiers, by method (from the bot's debug log, which names
// waits of a second or more).
func tenIncidents(tb testing.TB) (time.Duration, map[string]time.Duration) {
	tb.Helper()
	var services []*handlers.Service
	for i := range 10 {
		svc, _ := simService(tb, fmt.Sprintf("svc%d", i), 200*time.Millisecond)
		services = append(services, svc)
	}
	eng := fastEngine()
	eng.UpdateInterval = time.Second
	// Generous for a loaded machine: the test asserts outcomes only.
	eng.VerifyTimeout = 5 * time.Minute
	h := newHarnessOn(tb, slackemu.Options{SlackRateLimits: true}, services, eng)

	start := time.Now()
	var wg sync.WaitGroup
	for i := range services {
		wg.Go(func() { h.slash(slackemu.UserAlice, services[i].Name) })
	}
	wg.Wait()
	for _, svc := range services {
		a := h.waitLong("assessment of "+svc.Name, func(m slackemu.Message) bool {
			return hasAction(handlers.ActConfirm)(m) && strings.Contains(m.PlainText(), svc.Name)
		})
		h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	}
	recent, err := h.store.Recent(h.ctx(), "", 50)
	if err != nil || len(recent) != 10 {
		tb.Fatalf("%d incidents, %v; want 10", len(recent), err)
	}
	final := map[string]string{"assessment": "", "progress": "Rolled back", "verify": "Rollback verified", "postactions": "Post-rollback actions"}
	for _, rec := range recent {
		in := h.waitStatusWithin(rec.ID, state.Completed, 6*time.Minute)
		for key, want := range final {
			ts := in.Messages[key]
			m, ok := h.emu.Message(slackemu.ChannelIncident, ts)
			if !ok {
				tb.Fatalf("%s: no %s message (ts %q)", in.ID, key, ts)
			}
			if !strings.Contains(m.PlainText(), want) || (key == "assessment" && hasAction(handlers.ActConfirm)(m)) {
				tb.Errorf("%s: the %s message is not in its final state:\n%s", in.ID, key, m.PlainText())
			}
		}
	}
	took := time.Since(start)
	if got := h.emu.RateLimited(); len(got) != 0 {
		tb.Errorf("Slack answered 429 to rollbot: %v", got)
	}
	if strings.Contains(h.logs.String(), "incident taken over") {
		tb.Errorf("a step was stopped as taken over with a single replica:\n%s", h.logs.String())
	}
	return took, longestPaceWaits(tb, h.logs.String())
}

// longestPaceWaits reads the bot's JSON log for "slack call paced" lines
// and returns the longest wait by method.
func longestPaceWaits(tb testing.TB, log string) map[string]time.Duration {
	tb.Helper()
	out := map[string]time.Duration{}
	for line := range strings.SplitSeq(log, "\n") {
		if !strings.Contains(line, `"slack call paced"`) {
			continue
		}
		var l struct {
			Op     string        `json:"op"`
			Waited time.Duration `json:"waited"` // slog writes a duration in nanoseconds
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			tb.Fatalf("log line %q: %v", line, err)
		}
		out[l.Op] = max(out[l.Op], l.Waited)
	}
	return out
}

// The decision buttons reach the assessment even when its update takes
// longer than the heartbeat's period (Slack slow to answer, or the update
// queued behind other incidents' under Slack's tiers): the step moved the
// incident to awaiting confirmation itself, which ends the lease, and that
// is not a takeover that cancels the update. (The update used to be
// cancelled, its fallback too, leaving an incident nobody could confirm
// until its budget ran out.)
func TestDecisionShownWhenTheUpdateOutlastsTheHeartbeat(t *testing.T) {
	light(t)
	svc, s := simService(t, "myapp", 20*time.Millisecond)
	h := newHarness(t, []*handlers.Service{svc}, lifecycleEngine(func(*handlers.Options) {})) // heartbeat every 200ms
	h.emu.DelayMethod("chat.update", time.Second)
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("the assessment with its buttons", hasAction(handlers.ActConfirm))
	if in := h.waitStatus("RB-1", state.AwaitingConfirm); in.Messages["assessment"] != a.TS {
		t.Errorf("the buttons are on %s, the incident's assessment is %s", a.TS, in.Messages["assessment"])
	}
	if logs := h.logs.String(); strings.Contains(logs, "taken over") || strings.Contains(logs, "update the assessment with its buttons") {
		t.Errorf("the update of the assessment was cut short:\n%s", logs)
	}
	// The incident goes on as usual.
	h.emu.DelayMethod("chat.update", 0)
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	h.waitStatus("RB-1", state.Completed)
	if got := current(t, s); got != "app:v2" {
		t.Errorf("running %s after the rollback, want app:v2", got)
	}
}
