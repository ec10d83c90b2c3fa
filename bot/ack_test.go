package bot

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"rollbot/handlers"
	"rollbot/testkit/redistest"
	"rollbot/testkit/slackemu"
	"rollbot/testkit/wait"
)

// Every envelope is acknowledged before any Redis work: with the state
// store hung (a redis-server stopped with SIGSTOP, its connections open),
// a burst of slash commands is still acknowledged within Slack's 3 s; once
// the store answers again, the work follows and exactly one rollback
// proceeds.
func TestAckBeforeStoreWork(t *testing.T) {
	light(t)
	svc, _ := simService(t, "myapp", 50*time.Millisecond)
	rs := redistest.Server(t)
	h := newHarness(t, []*handlers.Service{svc}, lifecycleEngine(func(*handlers.Options) {}))
	h.restartOn(rs.URL)

	rs.Freeze()
	t.Cleanup(rs.Thaw)
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			errs[i] = h.emu.SlashCommand(ctx, slackemu.UserAlice, slackemu.ChannelIncident, "/rollback", "myapp")
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("commands not acknowledged while the store hangs: %v", err)
	}
	rs.Thaw()
	h.waitFor("assessment once the store answers", hasAction(handlers.ActConfirm))
	wait.For(t, 20*time.Second, "19 refusals", func() (bool, error) {
		n := 0
		for _, m := range h.emu.Messages(slackemu.ChannelIncident) {
			if m.Ephemeral && strings.Contains(m.PlainText(), "is already running") {
				n++
			}
		}
		return n == 19, fmt.Errorf("%d refusals", n)
	})
	if ins, err := h.store.Recent(context.Background(), "", 50); err != nil || len(ins) != 1 {
		t.Errorf("incidents after the burst: %d, %v; want exactly one", len(ins), err)
	}
}
