package state_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"rollbot/state"
	"rollbot/testkit/redistest"
)

// BenchmarkTimelineExport10k: a 10 000-event incident read from a real
// redis-server and rendered as Markdown (the `--markdown` export). Goal
// (README): at most 50 ms per export.
func BenchmarkTimelineExport10k(b *testing.B) {
	rdb, prefix := redistest.Client(b)
	s := state.New(rdb, prefix)
	ctx := context.Background()
	t0 := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	for i := range 10000 {
		ev := state.Event{Actor: "rollbot", Step: "verify", Time: t0.Add(time.Duration(i) * time.Second),
			Detail: fmt.Sprintf("event %d: error rate 0.4%% over the last 30s, p95 120 ms | checked", i)}
		if err := s.Append(ctx, "RB-1", ev); err != nil {
			b.Fatal(err)
		}
	}
	in := &state.Incident{ID: "RB-1", Service: "myapp", RequestedBy: "U1", Status: state.Completed}
	name := func(a string) string { return a }
	for b.Loop() {
		evs, err := s.Timeline(ctx, "RB-1")
		if err != nil || len(evs) != 10000 {
			b.Fatalf("timeline: %d events, %v", len(evs), err)
		}
		state.Markdown(in, evs, name)
	}
}

// BenchmarkMarkdown10k is the rendering alone.
func BenchmarkMarkdown10k(b *testing.B) {
	t0 := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	evs := make([]state.Event, 10000)
	for i := range evs {
		evs[i] = state.Event{Actor: "U0ALICE", Step: "verify", Time: t0.Add(time.Duration(i) * time.Second),
			Detail: fmt.Sprintf("event %d: error rate 0.4%% over the last 30s, p95 120 ms | checked", i)}
	}
	in := &state.Incident{ID: "RB-1", Service: "myapp", RequestedBy: "U1", Status: state.Completed}
	for b.Loop() {
		state.Markdown(in, evs, func(a string) string { return "<@" + a + ">" })
	}
}
