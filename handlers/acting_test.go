package handlers

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"rollbot/platforms"
	"rollbot/platforms/sim"
)

// groupChat answers usergroups.users.list from members, or fails for the
// groups in failing; it counts the calls. Nothing else of Chat is used.
type groupChat struct {
	Chat
	mu      sync.Mutex
	members map[string][]string
	failing map[string]bool
	calls   []string
}

func (c *groupChat) GroupMembers(_ context.Context, g string) ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, g)
	if c.failing[g] {
		return nil, errors.New("slack: internal_error")
	}
	return c.members[g], nil
}

// groupMapped is a platform whose impersonation maps the Slack groups gs.
type groupMapped struct {
	platforms.Platform
	gs []string
}

func (p groupMapped) SlackGroups() []string { return p.gs }

// actingFor puts the clicker and those of the platform's mapped groups
// they are in into ctx; it asks Slack only about mapped groups and only
// when there are any (cached); a group Slack cannot list is recorded as
// a lookup failure, beside the groups that were found.
func TestActingFor(t *testing.T) {
	s, err := sim.New("shop", sim.Config{Versions: []sim.Version{{Artifact: "app:v1"}}})
	if err != nil {
		t.Fatal(err)
	}
	chat := &groupChat{members: map[string][]string{
		"S0ONCALL": {"U0ALICE", "U0BOB"}, "S0DBA": {"U0DANA"}, "S0WEB": {"U0ALICE"}, "S0UNMAPPED": {"U0ALICE"},
	}, failing: map[string]bool{}}
	plain := &Service{Name: "plain", Platform: s}
	mapped := &Service{Name: "mapped", Platform: groupMapped{s, []string{"S0DBA", "S0ONCALL", "S0WEB"}}}
	e := New(context.Background(), chat, nil, []*Service{plain, mapped}, Options{}, slog.New(slog.DiscardHandler))
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	e.SetClock(func() time.Time { return now })
	ctx := context.Background()

	got := e.actingFor(ctx, plain, "U0ALICE")
	if platforms.ActorFrom(got) != "U0ALICE" || len(platforms.ActorGroupsFrom(got)) != 0 || platforms.ActorGroupsError(got) != nil || len(chat.calls) != 0 {
		t.Fatalf("no groups mapped: actor %q groups %v err %v, Slack asked %v", platforms.ActorFrom(got), platforms.ActorGroupsFrom(got), platforms.ActorGroupsError(got), chat.calls)
	}

	got = e.actingFor(ctx, mapped, "U0ALICE")
	if g := platforms.ActorGroupsFrom(got); !slices.Equal(g, []string{"S0ONCALL", "S0WEB"}) || platforms.ActorGroupsError(got) != nil {
		t.Fatalf("alice's mapped groups %v, %v", g, platforms.ActorGroupsError(got))
	}
	if !slices.Equal(chat.calls, []string{"S0DBA", "S0ONCALL", "S0WEB"}) {
		t.Fatalf("Slack asked about %v, want exactly the mapped groups", chat.calls)
	}
	got = e.actingFor(ctx, mapped, "U0EVE")
	if g := platforms.ActorGroupsFrom(got); len(g) != 0 || platforms.ActorFrom(got) != "U0EVE" || len(chat.calls) != 3 {
		t.Fatalf("eve: groups %v, Slack asked %v (want the cache)", g, chat.calls)
	}

	// After the cache's minute, a failing group: recorded, the others kept.
	now = now.Add(groupTTL + time.Second)
	chat.failing["S0DBA"] = true
	got = e.actingFor(ctx, mapped, "U0ALICE")
	if g := platforms.ActorGroupsFrom(got); !slices.Equal(g, []string{"S0ONCALL", "S0WEB"}) {
		t.Fatalf("groups beside a failed one: %v", g)
	}
	if err := platforms.ActorGroupsError(got); err == nil || !containsAll(err.Error(), "S0DBA", "internal_error") {
		t.Fatalf("lookup error %v, want it naming S0DBA", err)
	}
	// A failure is never served from a stale cache for impersonation.
	chat.failing["S0DBA"] = false
	if got := e.actingFor(ctx, mapped, "U0DANA"); platforms.ActorGroupsError(got) != nil || !slices.Equal(platforms.ActorGroupsFrom(got), []string{"S0DBA"}) {
		t.Fatalf("dana after the failure: %v %v", platforms.ActorGroupsFrom(got), platforms.ActorGroupsError(got))
	}
	// An outer actor is replaced, groups and error included.
	inner := e.actingFor(platforms.WithActorGroupsError(platforms.WithActor(ctx, "U0BOB", "S0X"), errors.New("old")), plain, "U0EVE")
	if platforms.ActorFrom(inner) != "U0EVE" || platforms.ActorGroupsFrom(inner) != nil || platforms.ActorGroupsError(inner) != nil {
		t.Fatalf("outer actor leaked: %q %v %v", platforms.ActorFrom(inner), platforms.ActorGroupsFrom(inner), platforms.ActorGroupsError(inner))
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
