package bot

import (
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
// message ends in its final state. The time until the last incident is
// complete (its last message final) is logged (go test -v): Slack's tiers
// bound it, not rollbot.
func TestTenIncidentsWithinSlackRateLimits(t *testing.T) {
	var services []*handlers.Service
	for i := range 10 {
		svc, _ := simService(t, fmt.Sprintf("svc%d", i), 200*time.Millisecond)
		services = append(services, svc)
	}
	eng := fastEngine()
	eng.UpdateInterval = time.Second
	eng.VerifyTimeout = 3 * time.Minute
	h := newHarnessOn(t, slackemu.Options{SlackRateLimits: true}, services, eng)

	start := time.Now()
	var wg sync.WaitGroup
	for i := range services {
		wg.Go(func() { h.slash(slackemu.UserAlice, services[i].Name) })
	}
	wg.Wait()
	ids := map[string]string{} // service -> incident
	for _, svc := range services {
		a := h.waitLong("assessment of "+svc.Name, func(m slackemu.Message) bool {
			return hasAction(handlers.ActConfirm)(m) && strings.Contains(m.PlainText(), svc.Name)
		})
		h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	}
	recent, err := h.store.Recent(h.ctx(), "", 50)
	if err != nil || len(recent) != 10 {
		t.Fatalf("%d incidents, %v; want 10", len(recent), err)
	}
	for _, in := range recent {
		ids[in.Service] = in.ID
	}
	for _, svc := range services {
		in := h.waitStatusWithin(ids[svc.Name], state.Completed, 3*time.Minute)
		for _, key := range []string{"assessment", "progress", "verify", "postactions"} {
			ts := in.Messages[key]
			m, ok := h.emu.Message(slackemu.ChannelIncident, ts)
			if !ok {
				t.Fatalf("%s: no %s message (ts %q)", in.ID, key, ts)
			}
			final := map[string]string{"assessment": "", "progress": "Rolled back", "verify": "Rollback verified", "postactions": "Post-rollback actions"}[key]
			if !strings.Contains(m.PlainText(), final) || (key == "assessment" && hasAction(handlers.ActConfirm)(m)) {
				t.Errorf("%s: the %s message is not in its final state:\n%s", in.ID, key, m.PlainText())
			}
		}
	}
	took := time.Since(start)
	if got := h.emu.RateLimited(); len(got) != 0 {
		t.Errorf("Slack answered 429 to rollbot: %v", got)
	}
	t.Logf("10 incidents: last message in its final state %s after the commands", took.Round(100*time.Millisecond))
}
