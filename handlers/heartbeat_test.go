package handlers

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"rollbot/state"
	"rollbot/testkit/redistest"
	"rollbot/testkit/wait"
)

// The heartbeat against a real redis-server: a guard refused because the
// owner's own move to its next step committed before the owner recorded
// its new claim is not a takeover; a real takeover stops the step.
func TestHeartbeatTellsOwnMoveFromTakeover(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	s := state.New(rdb, prefix)
	const lease = 600 * time.Millisecond // heartbeat every 200 ms
	e := &Engine{store: s, opt: Options{Lease: lease, LockTTL: time.Minute}, log: slog.New(slog.NewTextHandler(io.Discard, nil)), now: time.Now}
	ctx := context.Background()
	if err := s.Create(ctx, &state.Incident{ID: "RB-1", Service: "svc", Channel: "C1", Status: state.AwaitingConfirm}); err != nil {
		t.Fatal(err)
	}
	in, err := s.Advance(ctx, "RB-1", state.Move{From: []state.Status{state.AwaitingConfirm}, To: state.Stopping, Owner: "r1", Lease: lease})
	if err != nil {
		t.Fatal(err)
	}
	o := &owned{in: in, claim: state.ClaimOf(in)}
	step, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := e.heartbeat(step, cancel, o)

	// The owner's move commits; the owner records it 250 ms later, more
	// than a heartbeat period, so at least one guard meets the old claim.
	next, err := s.Advance(ctx, "RB-1", state.Move{From: []state.Status{state.Stopping}, To: state.RollingBack, Claim: o.claim, Owner: "r1", Lease: lease})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(250 * time.Millisecond)
	o.set(next, state.ClaimOf(next))
	// Longer than the lease: the heartbeat must be renewing the new one.
	time.Sleep(2 * lease)
	if cause := context.Cause(step); cause != nil {
		t.Fatalf("the step was stopped (%v) by its own move to its next step", cause)
	}
	if h, err := s.LeaseHolder(ctx, "RB-1"); err != nil || h != "r1" {
		t.Fatalf("lease holder %q, %v after the move; want r1 renewing it", h, err)
	}
	stop()

	// The owner stops heartbeating (a stall), its lease lapses and r2
	// takes the incident over; the owner's heartbeat resumes and stops the
	// step as taken over.
	if err := wait.Until(ctx, 10*time.Second, "r2 to take the incident over", func() (bool, error) {
		_, _, err := s.Takeover(ctx, "RB-1", "r2", time.Minute)
		return err == nil, err
	}); err != nil {
		t.Fatal(err)
	}
	step2, cancel2 := context.WithCancelCause(ctx)
	defer cancel2(nil)
	stop2 := e.heartbeat(step2, cancel2, o)
	defer stop2()
	select {
	case <-step2.Done():
		if cause := context.Cause(step2); !errors.Is(cause, errTakenOver) {
			t.Fatalf("step stopped with %v; want taken over", cause)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the step went on after another replica took its incident over")
	}
}
