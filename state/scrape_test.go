package state_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"rollbot/state"
)

// TestScrapeHistory: the scrape lease goes to one replica; only its pushes
// append (and renew it); the list keeps the last Max samples; a released
// lease is free for another replica, which reads the history as it was.
func TestScrapeHistory(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	got, err := s.ClaimScrapes(ctx, "r1", []string{"a", "b"}, time.Minute)
	if err != nil || !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("r1 claims = %v, %v", got, err)
	}
	if got, err := s.ClaimScrapes(ctx, "r2", []string{"a", "b"}, time.Minute); err != nil || len(got) != 0 {
		t.Fatalf("r2 claims leases held by r1: %v, %v", got, err)
	}
	push := func(owner, svc string, n, from int) []string {
		t.Helper()
		var smp [][]byte
		for i := range n {
			smp = append(smp, fmt.Appendf(nil, "s%d", from+i))
		}
		lost, err := s.PushScrapes(ctx, owner, time.Minute, []state.ScrapePush{
			{Service: svc, Samples: smp, Max: 5, Keep: time.Hour, Layouts: map[string][]byte{"7": []byte("bounds")}},
		})
		if err != nil {
			t.Fatal(err)
		}
		return lost
	}
	if lost := push("r1", "a", 3, 0); len(lost) != 0 {
		t.Fatalf("r1's push lost %v", lost)
	}
	if lost := push("r1", "a", 4, 3); len(lost) != 0 {
		t.Fatalf("r1's push lost %v", lost)
	}
	if lost := push("r2", "a", 1, 100); !slices.Equal(lost, []string{"a"}) {
		t.Fatalf("r2's push to r1's service: lost = %v, want [a]", lost)
	}
	h, err := s.ScrapeHistory(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, b := range h.Samples {
		names = append(names, string(b))
	}
	if h.Owner != "r1" || !slices.Equal(names, []string{"s2", "s3", "s4", "s5", "s6"}) || string(h.Layouts["7"]) != "bounds" {
		t.Fatalf("history = owner %q, samples %v, layouts %q; want r1's last 5", h.Owner, names, h.Layouts)
	}
	if err := s.ReleaseScrape(ctx, "r2", "a"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ClaimScrapes(ctx, "r2", []string{"a"}, time.Minute); len(got) != 0 {
		t.Fatal("r2 released r1's lease")
	}
	if err := s.ReleaseScrape(ctx, "r1", "a"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ClaimScrapes(ctx, "r2", []string{"a"}, time.Minute); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("r2 could not claim the released lease: %v", got)
	}
	if lost := push("r2", "a", 1, 7); len(lost) != 0 {
		t.Fatalf("r2's push after the takeover lost %v", lost)
	}
	h, _ = s.ScrapeHistory(ctx, "a")
	if h.Owner != "r2" || len(h.Samples) != 5 || string(h.Samples[0]) != "s3" || string(h.Samples[4]) != "s7" {
		t.Fatalf("after the takeover: owner %q, %d samples", h.Owner, len(h.Samples))
	}
	// A push without samples renews the lease only.
	if lost, err := s.PushScrapes(ctx, "r1", time.Minute, []state.ScrapePush{{Service: "b", Max: 5, Keep: time.Hour}}); err != nil || len(lost) != 0 {
		t.Fatalf("renewal = %v, %v", lost, err)
	}
}
