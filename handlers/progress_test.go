package handlers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/slack-go/slack"
)

// countingChat records chat.update calls.
type countingChat struct {
	Chat
	mu      sync.Mutex
	updates []string
}

func (c *countingChat) Update(ctx context.Context, channel, ts string, m Msg) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.updates = append(c.updates, m.Text)
	return nil
}

func (c *countingChat) OpenModal(context.Context, string, slack.ModalViewRequest) error { return nil }

func TestLiveMessageCoalescesUpdates(t *testing.T) {
	c := &countingChat{}
	l := newLiveMessage(context.Background(), c, "C1", "1.1", 200*time.Millisecond, nil)
	start := time.Now()
	for i := range 100 { // a change every 5ms for half a second
		l.Set(Msg{Text: fmt.Sprint(i)})
		time.Sleep(5 * time.Millisecond) // the pace of changes is the subject
	}
	l.Close(Msg{Text: "final"})
	elapsed := time.Since(start)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.updates) == 0 || c.updates[len(c.updates)-1] != "final" {
		t.Fatalf("updates = %v; the final content must be sent last", c.updates)
	}
	// At most one update per interval, plus the first and the final one.
	if len(c.updates) < 2 {
		t.Fatalf("updates = %v; progress must show while it changes, not only at the end", c.updates)
	}
	if max := int(elapsed/(200*time.Millisecond)) + 2; len(c.updates) > max {
		t.Fatalf("%d updates in %s for 101 changes; at most %d allowed at one per 200ms", len(c.updates), elapsed, max)
	}
}

// pacedChat refuses intermediate live updates with ErrPaced while paced
// is set, as the bot's Slack pacer does when the rate limit leaves no
// room; the final update is never refused.
type pacedChat struct {
	countingChat
	paced   bool
	refused int
	live    []bool
}

func (c *pacedChat) Update(ctx context.Context, channel, ts string, m Msg) error {
	c.mu.Lock()
	c.live = append(c.live, IsLiveUpdate(ctx))
	if c.paced && IsLiveUpdate(ctx) {
		c.refused++
		c.mu.Unlock()
		return ErrPaced
	}
	c.mu.Unlock()
	return c.countingChat.Update(ctx, channel, ts, m)
}

// A paced live update is kept and sent later (the latest content wins),
// and Close's final content goes out even while live updates are paced.
func TestLiveMessagePacedUpdatesAreRetried(t *testing.T) {
	c := &pacedChat{paced: true}
	l := newLiveMessage(context.Background(), c, "C1", "1.1", 20*time.Millisecond, nil)
	l.Set(Msg{Text: "step 1"})
	time.Sleep(100 * time.Millisecond) // several intervals: retried, refused each time
	c.mu.Lock()
	refused := c.refused
	c.paced = false
	c.mu.Unlock()
	if refused < 2 {
		t.Fatalf("a paced update was tried %d times in 5 intervals; it must be retried", refused)
	}
	time.Sleep(60 * time.Millisecond) // room again: the kept content goes out
	c.mu.Lock()
	got := append([]string(nil), c.updates...)
	c.paced = true
	c.mu.Unlock()
	if len(got) != 1 || got[0] != "step 1" {
		t.Fatalf("updates after the pacing ended = %v, want the kept [step 1]", got)
	}
	l.Set(Msg{Text: "step 2"})
	l.Close(Msg{Text: "final"})
	c.mu.Lock()
	defer c.mu.Unlock()
	if last := c.updates[len(c.updates)-1]; last != "final" || c.live[len(c.live)-1] {
		t.Fatalf("updates = %v (live %v); the final content must go out, not marked live", c.updates, c.live)
	}
}

// hungChat paces every live update and never answers the final one until
// its context ends.
type hungChat struct{ countingChat }

func (c *hungChat) Update(ctx context.Context, channel, ts string, m Msg) error {
	if IsLiveUpdate(ctx) {
		return ErrPaced
	}
	<-ctx.Done()
	return ctx.Err()
}

// The final update has a budget of its own: a Slack that never answers
// cannot hold Close (and so the step's end) forever, and the failure is
// reported.
func TestLiveMessageFinalUpdateIsBounded(t *testing.T) {
	errs := make(chan error, 1)
	l := newLiveMessage(context.Background(), &hungChat{}, "C1", "1.1", time.Millisecond, func(err error) { errs <- err })
	l.finalBudget = 50 * time.Millisecond
	closed := make(chan struct{})
	go func() { l.Close(Msg{Text: "final"}); close(closed) }()
	select {
	case err := <-errs:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("final update failed with %v, want its own deadline", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the final update against a hung Slack never ended")
	}
	<-closed
}
