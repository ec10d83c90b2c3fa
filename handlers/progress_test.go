package handlers

import (
	"context"
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
