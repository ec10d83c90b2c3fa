package state_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"rollbot/state"
	"rollbot/testkit/wait"
)

// Every move the engine makes is in the table, and nothing leaves a final
// status.
func TestLifecycleTable(t *testing.T) {
	allowed := [][2]state.Status{
		{state.Assessing, state.AwaitingConfirm}, {state.AwaitingConfirm, state.Stopping},
		{state.AwaitingConfirm, state.AwaitingDBApprove}, {state.AwaitingDBApprove, state.RollingBackDB},
		{state.RollingBackDB, state.Stopping}, {state.Stopping, state.RollingBack}, {state.RollingBack, state.Verifying},
		{state.Verifying, state.Completed}, {state.Verifying, state.VerifyFailed}, {state.VerifyFailed, state.Verifying},
		{state.RollbackFailed, state.RollingBack}, {state.RollbackFailed, state.Closed},
		{state.RollingBackDB, state.SwitchingEndpoint}, {state.RollingBackDB, state.AwaitingSwitch},
		{state.SwitchingEndpoint, state.Stopping}, {state.SwitchingEndpoint, state.RollbackFailed},
		{state.AwaitingSwitch, state.Stopping}, {state.AwaitingSwitch, state.Closed},
		// A drill ending before its rollback restores what it found first.
		{state.Assessing, state.DrillRestoring}, {state.AwaitingConfirm, state.DrillRestoring},
		{state.AwaitingDBApprove, state.DrillRestoring}, {state.DrillRestoring, state.Cancelled},
	}
	for _, m := range allowed {
		if !state.Allowed(m[0], m[1]) {
			t.Errorf("%s → %s refused", m[0], m[1])
		}
	}
	refused := [][2]state.Status{
		{state.Completed, state.RollingBack}, {state.Cancelled, state.Stopping}, {state.AwaitingConfirm, state.Completed},
		{state.RollingBackDB, state.Completed}, {state.Closed, state.RollingBack}, {state.Assessing, state.RollingBack},
		// The app rollback never skips the endpoint switch once it is needed.
		{state.SwitchingEndpoint, state.RollingBack}, {state.AwaitingSwitch, state.RollingBack},
		{state.AwaitingDBApprove, state.SwitchingEndpoint}, {state.AwaitingConfirm, state.AwaitingSwitch},
		// Once the rollback started, a drill is put back by the rollback.
		{state.Stopping, state.DrillRestoring}, {state.RollingBack, state.DrillRestoring}, {state.DrillRestoring, state.Stopping},
	}
	for _, m := range refused {
		if state.Allowed(m[0], m[1]) {
			t.Errorf("%s → %s allowed", m[0], m[1])
		}
	}
}

func newWorking(t *testing.T, s *state.Store, id string) *state.Incident {
	t.Helper()
	ctx := context.Background()
	in := &state.Incident{ID: id, Service: "svc-" + id, Channel: "C1", Status: state.AwaitingConfirm}
	if err := s.Create(ctx, in); err != nil {
		t.Fatal(err)
	}
	cur, err := s.Advance(ctx, id, state.Move{From: []state.Status{state.AwaitingConfirm}, To: state.Stopping, Owner: "r1", Lease: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return cur
}

func TestAdvanceIsTheOnlyWayAndRefusesWhatTheTableDoesNot(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	in := newWorking(t, s, "RB-1")
	if in.Owner != "r1" || in.Fence != 1 {
		t.Fatalf("a click into a working status gives it an owner: %+v", in)
	}
	if h, _ := s.LeaseHolder(ctx, "RB-1"); h != "r1" {
		t.Fatalf("lease holder %q, want r1", h)
	}
	// A click cannot move a working incident; only its owner can.
	if _, err := s.Advance(ctx, "RB-1", state.Move{To: state.RollbackFailed}); !errors.Is(err, state.ErrNotAllowed) {
		t.Fatalf("click moved a working incident: %v", err)
	}
	// A move the table does not list is refused and changes nothing.
	if _, err := s.Advance(ctx, "RB-1", state.Move{From: []state.Status{state.Stopping}, To: state.Completed, Claim: state.ClaimOf(in)}); !errors.Is(err, state.ErrNotAllowed) {
		t.Fatalf("stopping → completed: %v", err)
	}
	// Update never changes the status.
	got, err := s.Update(ctx, "RB-1", state.ClaimOf(in), func(i *state.Incident) { i.Status = state.Completed; i.Reason = "x" })
	if err != nil || got.Status != state.Stopping || got.Reason != "x" {
		t.Fatalf("Update = %+v, %v", got, err)
	}
	// Leaving the working status drops the lease.
	if _, err := s.Advance(ctx, "RB-1", state.Move{To: state.RollbackFailed, Claim: state.ClaimOf(in)}); err != nil {
		t.Fatal(err)
	}
	if h, _ := s.LeaseHolder(ctx, "RB-1"); h != "" {
		t.Fatalf("lease kept after leaving the working status: %q", h)
	}
}

// A takeover is only possible once the owner's lease expired, and it fences
// the old owner: its state writes, timeline appends, guard and heartbeat
// all fail afterwards.
func TestTakeoverFencesTheOldOwner(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	in := newWorking(t, s, "RB-2")
	old := state.ClaimOf(in)
	if _, _, err := s.Takeover(ctx, "RB-2", "r2", time.Minute); !errors.Is(err, state.ErrStale) {
		t.Fatalf("took over a live lease: %v", err)
	}
	// The owner stopped heartbeating: once its 300ms lease expires, r2
	// takes over.
	cur, c2 := takeoverOnceExpired(t, s, "RB-2", "r2")
	if c2.Fence != old.Fence+1 || cur.Owner != "r2" || len(cur.TakenOver) != 1 || cur.TakenOver[0].From != "r1" {
		t.Fatalf("takeover: %+v %+v", cur, c2)
	}
	if _, _, err := s.Takeover(ctx, "RB-2", "r3", time.Minute); !errors.Is(err, state.ErrStale) {
		t.Fatalf("second takeover of a live lease: %v", err)
	}
	if _, err := s.Update(ctx, "RB-2", old, func(i *state.Incident) { i.Reason = "stale" }); !errors.Is(err, state.ErrFenced) {
		t.Fatalf("old owner's update: %v", err)
	}
	if _, err := s.Advance(ctx, "RB-2", state.Move{To: state.RollingBack, Claim: old, Owner: "r1", Lease: time.Minute}); !errors.Is(err, state.ErrFenced) {
		t.Fatalf("old owner's advance: %v", err)
	}
	if err := s.AppendOwned(ctx, "RB-2", old, state.Event{Actor: "rollbot", Step: "rollback", Detail: "stale"}); !errors.Is(err, state.ErrFenced) {
		t.Fatalf("old owner's timeline append: %v", err)
	}
	if err := s.Heartbeat(ctx, "RB-2", old, time.Minute); !errors.Is(err, state.ErrFenced) {
		t.Fatalf("old owner's heartbeat: %v", err)
	}
	if _, err := s.Guard(ctx, cur, old, time.Minute, time.Minute); !errors.Is(err, state.ErrFenced) {
		t.Fatalf("old owner's guard: %v", err)
	}
	if err := s.AppendOwned(ctx, "RB-2", c2, state.Event{Actor: "rollbot", Step: "rollback", Detail: "new owner"}); err != nil {
		t.Fatal(err)
	}
	evs, _ := s.Timeline(ctx, "RB-2")
	if len(evs) != 1 || evs[0].Detail != "new owner" {
		t.Fatalf("timeline: %+v", evs)
	}
	if r, _ := s.Get(ctx, "RB-2"); r.Reason == "stale" {
		t.Fatal("the fenced write landed")
	}
}

// Guard refuses a write when the service lock is gone or someone else's.
func TestGuardChecksTheServiceLock(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	lock, err := s.AcquireLock(ctx, "svc-RB-3", "RB-3", "U1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	in := &state.Incident{ID: "RB-3", Service: "svc-RB-3", Status: state.AwaitingConfirm, Lock: lock.Token}
	if err := s.Create(ctx, in); err != nil {
		t.Fatal(err)
	}
	in, err = s.Advance(ctx, "RB-3", state.Move{To: state.Stopping, Owner: "r1", Lease: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Guard(ctx, in, state.ClaimOf(in), time.Minute, time.Minute); err != nil {
		t.Fatalf("guard with the lock held: %v", err)
	}
	s.ReleaseLock(ctx, "svc-RB-3", lock.Token)
	other, err := s.AcquireLock(ctx, "svc-RB-3", "RB-9", "U2", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	holder, err := s.Guard(ctx, in, state.ClaimOf(in), time.Minute, time.Minute)
	if !errors.Is(err, state.ErrLocked) || holder == nil || holder.Token != other.Token || holder.Incident != "RB-9" {
		t.Fatalf("guard after the lock changed hands: %+v, %v", holder, err)
	}
}

// The final move gives the service back in the same transaction: the
// lock is gone when Advance returns, without a separate release (a
// replica killed right after the move cannot leave it locked), and a lock
// another incident took meanwhile is left alone.
func TestFinalMoveReleasesTheLockAtomically(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	for _, tc := range []struct {
		name  string
		to    state.Status
		path  []state.Status
		other bool // the lock now belongs to another incident
	}{
		{"completed", state.Completed, []state.Status{state.RollingBack, state.Verifying}, false},
		{"cancelled from a wait", state.Cancelled, nil, false},
		{"someone else's lock", state.Completed, []state.Status{state.RollingBack, state.Verifying}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "RB-" + map[string]string{"completed": "10", "cancelled from a wait": "11", "someone else's lock": "12"}[tc.name]
			svc := "svc-" + id
			l, err := s.AcquireLock(ctx, svc, id, "U1", time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			in := &state.Incident{ID: id, Service: svc, Channel: "C1", Status: state.AwaitingConfirm, Lock: l.Token}
			if err := s.Create(ctx, in); err != nil {
				t.Fatal(err)
			}
			cur := in
			if tc.to != state.Cancelled {
				if cur, err = s.Advance(ctx, id, state.Move{To: state.Stopping, Owner: "r1", Lease: time.Minute}); err != nil {
					t.Fatal(err)
				}
				for _, st := range tc.path {
					if cur, err = s.Advance(ctx, id, state.Move{To: st, Claim: state.ClaimOf(cur), Owner: "r1", Lease: time.Minute}); err != nil {
						t.Fatal(err)
					}
				}
			}
			var otherToken string
			if tc.other {
				s.ReleaseLock(ctx, svc, l.Token)
				ol, err := s.AcquireLock(ctx, svc, "RB-99", "U2", time.Minute)
				if err != nil {
					t.Fatal(err)
				}
				otherToken = ol.Token
			}
			if _, err := s.Advance(ctx, id, state.Move{To: tc.to, Claim: state.ClaimOf(cur)}); err != nil {
				t.Fatal(err)
			}
			holder, err := s.LockHolder(ctx, svc)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.other && (holder == nil || holder.Token != otherToken):
				t.Errorf("the other incident's lock was touched: %+v", holder)
			case !tc.other && holder != nil:
				t.Errorf("lock still held after the move to %s: %+v", tc.to, holder)
			}
		})
	}
}

// A move's Record events are appended in the move's transaction: a move
// that wins has its event, a move that loses its race has none.
func TestAdvanceRecordsInTheSameTransaction(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	in := &state.Incident{ID: "RB-30", Service: "svc-30", Channel: "C1", Status: state.AwaitingConfirm}
	if err := s.Create(ctx, in); err != nil {
		t.Fatal(err)
	}
	record := func(who string) func(*state.Incident) []state.Event {
		return func(*state.Incident) []state.Event {
			return []state.Event{{Actor: who, Step: "confirm", Detail: "confirmed by " + who}}
		}
	}
	if _, err := s.Advance(ctx, "RB-30", state.Move{From: []state.Status{state.AwaitingConfirm}, To: state.Stopping,
		Owner: "r1", Lease: time.Minute, Record: record("U1")}); err != nil {
		t.Fatal(err)
	}
	_, err := s.Advance(ctx, "RB-30", state.Move{From: []state.Status{state.AwaitingConfirm}, To: state.Cancelled, Record: record("U2")})
	if !errors.Is(err, state.ErrStale) {
		t.Fatalf("the second decision: %v, want ErrStale", err)
	}
	evs, err := s.Timeline(ctx, "RB-30")
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Actor != "U1" || evs[0].Detail != "confirmed by U1" || evs[0].Time.IsZero() {
		t.Fatalf("timeline = %+v, want only the winning decision's event", evs)
	}
}

// A move into a wait that still owes its message (the decision buttons)
// keeps a lease for showing it: while it lives nobody else shows it; once
// it expired (the mover died before the buttons were up) one replica takes
// the showing over, the dead mover can no longer record it shown, and a
// click that decides ends the debt and the lease.
func TestShowingAWaitIsTakenOverOnlyAfterItsLease(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	in := &state.Incident{ID: "RB-5", Service: "svc-RB-5", Channel: "C1", Status: state.Assessing, Owner: "r1", Fence: 1}
	if err := s.Create(ctx, in); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Advance(ctx, "RB-5", state.Move{To: state.AwaitingConfirm, Show: "decision"}); !errors.Is(err, state.ErrNotAllowed) {
		t.Fatalf("a message owed without anyone to show it: %v", err)
	}
	mover := state.Claim{Owner: "r1", Fence: in.Fence}
	cur, err := s.Advance(ctx, "RB-5", state.Move{From: []state.Status{state.Assessing}, To: state.AwaitingConfirm, Claim: mover, Owner: "r1", Lease: 300 * time.Millisecond, Show: "decision"})
	if err != nil {
		t.Fatal(err)
	}
	if cur.Show != "decision" || state.ClaimOf(cur) != mover {
		t.Fatalf("after the move: show %q, claim %+v, want decision and the mover's %+v", cur.Show, state.ClaimOf(cur), mover)
	}
	if _, _, err := s.Takeover(ctx, "RB-5", "r2", time.Minute); !errors.Is(err, state.ErrStale) {
		t.Fatalf("took the showing over while the mover's lease lives: %v", err)
	}
	// The owner's heartbeat may still be checking its working step: the
	// lease for showing is not that step's, nor does the check shorten
	// the service lock the wait holds.
	if _, err := s.Guard(ctx, cur, mover, time.Minute, time.Minute); !errors.Is(err, state.ErrFenced) {
		t.Fatalf("guard of a wait owing its message: %v, want ErrFenced", err)
	}
	// The mover died before the buttons were up.
	cur, c2 := takeoverOnceExpired(t, s, "RB-5", "r2")
	if cur.Status != state.AwaitingConfirm || cur.Show != "decision" || c2.Fence != mover.Fence+1 || len(cur.TakenOver) != 1 {
		t.Fatalf("takeover of the showing: %+v %+v", cur, c2)
	}
	if _, _, err := s.Takeover(ctx, "RB-5", "r3", time.Minute); !errors.Is(err, state.ErrStale) {
		t.Fatalf("a second replica took the showing over: %v", err)
	}
	if err := s.Shown(ctx, "RB-5", mover, "decision"); !errors.Is(err, state.ErrFenced) {
		t.Fatalf("the dead mover recorded it shown: %v", err)
	}
	if err := s.Shown(ctx, "RB-5", c2, "decision"); err != nil {
		t.Fatal(err)
	}
	if h, _ := s.LeaseHolder(ctx, "RB-5"); h != "" {
		t.Fatalf("lease for showing still held by %q after it was shown", h)
	}
	if _, _, err := s.Takeover(ctx, "RB-5", "r3", time.Minute); !errors.Is(err, state.ErrStale) {
		t.Fatalf("took over a wait whose message is shown: %v", err)
	}

	// A click that decides before the message is recorded shown ends the
	// debt and its lease in the same move.
	in = &state.Incident{ID: "RB-6", Service: "svc-RB-6", Channel: "C1", Status: state.AwaitingConfirm}
	if err := s.Create(ctx, in); err != nil {
		t.Fatal(err)
	}
	cur, err = s.Advance(ctx, "RB-6", state.Move{To: state.AwaitingDBApprove, Owner: "r1", Lease: time.Minute, Show: "db_request"})
	if err != nil {
		t.Fatal(err)
	}
	shower := state.ClaimOf(cur)
	if cur.Owner != "r1" || shower.Fence != in.Fence+1 {
		t.Fatalf("a click's move owing a message: owner %q fence %d, want r1 and a new fence", cur.Owner, shower.Fence)
	}
	if cur, err = s.Advance(ctx, "RB-6", state.Move{From: []state.Status{state.AwaitingDBApprove}, To: state.Cancelled}); err != nil {
		t.Fatal(err)
	}
	if cur.Show != "" {
		t.Fatalf("cancelled incident still owes %q", cur.Show)
	}
	if h, _ := s.LeaseHolder(ctx, "RB-6"); h != "" {
		t.Fatalf("lease for showing held by %q after the click decided", h)
	}
	if err := s.Shown(ctx, "RB-6", shower, "db_request"); !errors.Is(err, state.ErrStale) {
		t.Fatalf("recorded shown after the click decided: %v", err)
	}

	// A click that confirms before the message is recorded shown moves the
	// incident into a working status, which raises the fence: the shower
	// finds the incident moved on, not taken over.
	in = &state.Incident{ID: "RB-7", Service: "svc-RB-7", Channel: "C1", Status: state.Assessing, Owner: "r1", Fence: 1}
	if err := s.Create(ctx, in); err != nil {
		t.Fatal(err)
	}
	cur, err = s.Advance(ctx, "RB-7", state.Move{From: []state.Status{state.Assessing}, To: state.AwaitingConfirm, Claim: state.ClaimOf(in), Owner: "r1", Lease: time.Minute, Show: "decision"})
	if err != nil {
		t.Fatal(err)
	}
	shower = state.ClaimOf(cur)
	if cur, err = s.Advance(ctx, "RB-7", state.Move{From: []state.Status{state.AwaitingConfirm}, To: state.Stopping, Owner: "r1", Lease: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if cur.Fence == shower.Fence {
		t.Fatalf("the move into %s kept fence %d", cur.Status, cur.Fence)
	}
	if err := s.Shown(ctx, "RB-7", shower, "decision"); !errors.Is(err, state.ErrStale) {
		t.Fatalf("recorded shown after the click confirmed: %v, want ErrStale", err)
	}
}

// takeoverOnceExpired waits until replica can take id over (its owner's
// short test lease has expired) and returns what Takeover returned.
func takeoverOnceExpired(t *testing.T, s *state.Store, id, replica string) (*state.Incident, state.Claim) {
	t.Helper()
	var (
		cur *state.Incident
		c   state.Claim
	)
	wait.For(t, 5*time.Second, "the lease of "+id+" to expire", func() (bool, error) {
		var err error
		cur, c, err = s.Takeover(context.Background(), id, replica, time.Minute)
		if errors.Is(err, state.ErrStale) {
			return false, err
		}
		if err != nil {
			t.Fatalf("takeover of %s: %v", id, err)
		}
		return true, nil
	})
	return cur, c
}
