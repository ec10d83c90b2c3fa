package bot

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"rollbot/handlers"
	"rollbot/platforms"
	"rollbot/state"
	"rollbot/testkit/redistest"
	"rollbot/testkit/slackemu"

	"github.com/redis/go-redis/v9"
)

func lifecycleEngine(mut func(*handlers.Options)) handlers.Options {
	o := fastEngine()
	o.Lease = 600 * time.Millisecond
	mut(&o)
	return o
}

func (h *harness) events(id string) []state.Event {
	h.t.Helper()
	evs, err := h.store.Timeline(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	return evs
}

func hasEvent(evs []state.Event, step, detail string) bool {
	for _, ev := range evs {
		if ev.Step == step && strings.Contains(ev.Detail, detail) {
			return true
		}
	}
	return false
}

// A rollback that outlives its budget ends in the failure path: a message
// in the thread with the fallbacks, the timeline, the lock kept for the
// fallbacks with the time it lapses, never a silent stop.
func TestLifecycleStepOverBudgetIsReported(t *testing.T) {
	light(t)
	svc, _ := simService(t, "myapp", 2*time.Second) // 3 pods: 6s, over the 2s budget
	h := newHarness(t, []*handlers.Service{svc}, lifecycleEngine(func(o *handlers.Options) { o.Budgets.Rollout = 2 * time.Second }))
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	m := h.waitFor("failure report", textHas("did not finish within its budget of 2s"))
	if m.ThreadTS != a.TS || !strings.Contains(m.PlainText(), "stays locked for this rollback until") {
		t.Errorf("failure report outside the thread or without the hold note:\n%s", m.PlainText())
	}
	for _, id := range []string{handlers.ActFallbackImage, handlers.ActFallbackZero, handlers.ActEnd} {
		if !hasAction(id)(m) {
			t.Errorf("failure report lacks %s:\n%s", id, m.PlainText())
		}
	}
	in := h.waitStatus("RB-1", state.RollbackFailed)
	if l, _ := h.store.LockHolder(context.Background(), "myapp"); l == nil || l.Token != in.Lock {
		t.Errorf("lock not kept for the fallbacks: %+v", l)
	}
	if in.HeldUntil.IsZero() {
		t.Error("no hold deadline recorded")
	}
	if !hasEvent(h.events("RB-1"), "rollback", "failed: the rollback did not finish within its budget") {
		t.Errorf("timeline lacks the budget failure:\n%v", h.events("RB-1"))
	}
	// End releases the service.
	h.click(slackemu.UserBob, m.TS, handlers.ActEnd)
	h.waitStatus("RB-1", state.Closed)
	if l, _ := h.store.LockHolder(context.Background(), "myapp"); l != nil {
		t.Errorf("lock held after End: %+v", l)
	}
}

// A fallback offered by RB-1 cannot run once the service lock belongs to
// another rollback: the click is refused naming the holder, and nothing
// touches the platform.
func TestLifecycleFallbackNeedsTheLock(t *testing.T) {
	light(t)
	svc, s := simService(t, "myapp", time.Millisecond)
	h := newHarness(t, []*handlers.Service{svc}, lifecycleEngine(func(*handlers.Options) {}))
	s.FailNextRollback(platforms.Userf(errors.New("ImagePullBackOff"), "image app:v2 cannot be pulled"))
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	f := h.waitFor("failure", hasAction(handlers.ActFallbackZero))
	in := h.waitStatus("RB-1", state.RollbackFailed)
	// The lock lapses and another rollback takes the service.
	ctx := context.Background()
	h.store.ReleaseLock(ctx, "myapp", in.Lock)
	if _, err := h.store.AcquireLock(ctx, "myapp", "RB-7", slackemu.UserDana, time.Minute); err != nil {
		t.Fatal(err)
	}
	h.click(slackemu.UserBob, f.TS, handlers.ActFallbackZero)
	h.waitFor("refusal", ephemeralFor(slackemu.UserBob, "RB-7 holds it"))
	if got := current(t, s); got != "app:v3" {
		t.Errorf("the platform changed: runs %s", got)
	}
	snap, _ := s.Snapshot(ctx)
	if snap.Health.Desired == 0 {
		t.Error("scaled to zero although the lock was another rollback's")
	}
	if st := h.waitStatus("RB-1", state.RollbackFailed); st.Fallback != "" {
		t.Errorf("fallback recorded: %+v", st)
	}
}

// A confirmation re-reads the platform: when it no longer runs the
// assessed bad version, the click is refused with what changed, and the
// service is released.
func TestLifecycleStaleAssessmentIsRefused(t *testing.T) {
	light(t)
	svc, s := simService(t, "myapp", time.Millisecond)
	cp := &countingPlatform{Sim: s}
	svc.Platform = cp
	h := newHarness(t, []*handlers.Service{svc}, lifecycleEngine(func(*handlers.Options) {}))
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	// Someone fixes it by hand before anyone clicks.
	if _, err := s.Rollback(context.Background(), platforms.Revision{ID: "2"}, false, nil); err != nil {
		t.Fatal(err)
	}
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	m := h.waitFor("refusal", textHas("now runs 2 (app:v2), not the assessed bad version 3 (app:v3)"))
	if m.ThreadTS != a.TS {
		t.Errorf("refusal outside the thread: %+v", m)
	}
	h.waitStatus("RB-1", state.Cancelled)
	if l, _ := h.store.LockHolder(context.Background(), "myapp"); l != nil {
		t.Errorf("lock held: %+v", l)
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.rollbacks != 0 {
		t.Errorf("%d rollbacks ran on a stale assessment", cp.rollbacks)
	}
	if !hasEvent(h.events("RB-1"), "confirm", "refused: deployment myapp (simulated) now runs") {
		t.Errorf("timeline lacks the refusal:\n%v", h.events("RB-1"))
	}
}

// Nobody clicks: the wait ends after its budget, the buttons go, the
// service is released.
func TestLifecycleConfirmationWaitExpires(t *testing.T) {
	light(t)
	svc, _ := simService(t, "myapp", time.Millisecond)
	h := newHarness(t, []*handlers.Service{svc}, lifecycleEngine(func(o *handlers.Options) { o.Budgets.Confirm = 1500 * time.Millisecond }))
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.waitFor("expiry", textHas("RB-1 expired: nobody decided within"))
	h.waitStatus("RB-1", state.Cancelled)
	if l, _ := h.store.LockHolder(context.Background(), "myapp"); l != nil {
		t.Errorf("lock held after expiry: %+v", l)
	}
	m, _ := h.emu.Message(slackemu.ChannelIncident, a.TS)
	if len(m.ActionIDs()) != 0 {
		t.Errorf("buttons still on the expired assessment: %v", m.ActionIDs())
	}
	if !hasEvent(h.events("RB-1"), "expire", "nobody decided") {
		t.Errorf("timeline lacks the expiry:\n%v", h.events("RB-1"))
	}
}

// A failed rollback keeps the service for its fallbacks only until its
// hold lapses; then it is closed and the service released.
func TestLifecycleFailedHoldLapses(t *testing.T) {
	light(t)
	svc, s := simService(t, "myapp", time.Millisecond)
	h := newHarness(t, []*handlers.Service{svc}, lifecycleEngine(func(o *handlers.Options) { o.Budgets.Hold = 1500 * time.Millisecond }))
	s.FailNextRollback(platforms.Userf(nil, "image app:v2 cannot be pulled"))
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	h.waitFor("failure", hasAction(handlers.ActFallbackZero))
	h.waitFor("closed", textHas("RB-1 closed: nobody ran a fallback or ended the rollback"))
	h.waitStatus("RB-1", state.Closed)
	if l, _ := h.store.LockHolder(context.Background(), "myapp"); l != nil {
		t.Errorf("lock held after the hold lapsed: %+v", l)
	}
}

// A decision that lost the race is not on the timeline: a Cancel after
// the confirmation won records nothing.
func TestLifecycleLosingDecisionIsNotRecorded(t *testing.T) {
	light(t)
	svc, _ := simService(t, "myapp", 200*time.Millisecond)
	h := newHarness(t, []*handlers.Service{svc}, lifecycleEngine(func(*handlers.Options) {}))
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	h.waitFor("rollback in progress", textHas("Rolling back"))
	if err := h.emu.ClickButton(h.ctx(), slackemu.UserAlice, slackemu.ChannelIncident, a.TS, handlers.ActCancel); err == nil {
		t.Log("the cancel button was still clickable")
	}
	h.waitStatus("RB-1", state.Completed)
	if hasEvent(h.events("RB-1"), "cancel", "") {
		t.Errorf("a cancel that lost to the confirmation is on the timeline:\n%v", h.events("RB-1"))
	}
}

// A failed database step keeps the service (the team must see what the
// database is left in) with an End button, and says until when; End
// releases it. Before, the lock stayed held with nothing to click.
func TestLifecycleFailedDBStepCanBeEnded(t *testing.T) {
	light(t)
	h, db, m := dbHarness(t, false, lifecycleEngine(func(*handlers.Options) {}))
	db.mu.Lock()
	db.fail = platforms.Userf(errors.New("exit status 1"), "migrate down failed: Dirty database version 20261125090000")
	db.mu.Unlock()
	h.approve(slackemu.UserDana, m, "payments")
	f := h.waitFor("failure", textHas("The database step failed"))
	wantAll(t, "failure", f.PlainText(), "Dirty database version", "the app was not rolled back", "stays locked for this rollback until")
	if !hasAction(handlers.ActEnd)(f) || hasAction(handlers.ActFallbackImage)(f) {
		t.Errorf("want only End on a failed database step: %v", f.ActionIDs())
	}
	in := h.waitStatus("RB-1", state.RollbackFailed)
	if l, _ := h.store.LockHolder(context.Background(), "payments"); l == nil || l.Token != in.Lock {
		t.Fatalf("lock not kept: %+v", l)
	}
	h.click(slackemu.UserBob, f.TS, handlers.ActEnd)
	h.waitStatus("RB-1", state.Closed)
	if l, _ := h.store.LockHolder(context.Background(), "payments"); l != nil {
		t.Errorf("lock held after End: %+v", l)
	}
}

// The database step runs out of its own budget (budgets.db_down, here
// 2s): the thread says so with "End this rollback", the service stays
// locked for the team to see what the database is left in, the timeline
// records it, and the app is not rolled back. End releases the service.
func TestLifecycleDBStepOverBudgetIsReported(t *testing.T) {
	light(t)
	h, db, m := dbHarness(t, false, lifecycleEngine(func(o *handlers.Options) { o.Budgets.DBDown = 2 * time.Second }))
	db.mu.Lock()
	db.block = true
	db.mu.Unlock()
	h.approve(slackemu.UserDana, m, "payments")
	f := h.waitFor("failure report", textHas("The database step failed"))
	wantAll(t, "failure report", f.PlainText(), "the database rollback did not finish within its budget of 2s", "stays locked for this rollback until")
	if f.ThreadTS != m.ThreadTS {
		t.Errorf("failure report outside the incident's thread")
	}
	if !hasAction(handlers.ActEnd)(f) {
		t.Errorf("failure report lacks End: %v", f.ActionIDs())
	}
	in := h.waitStatus("RB-1", state.RollbackFailed)
	if l, _ := h.store.LockHolder(context.Background(), "payments"); l == nil || l.Token != in.Lock {
		t.Errorf("lock not kept for the team to look at the database: %+v", l)
	}
	if in.HeldUntil.IsZero() {
		t.Error("no hold deadline recorded")
	}
	evs := h.events("RB-1")
	if !hasEvent(evs, "database", "failed: the database rollback did not finish within its budget of 2s") {
		t.Errorf("timeline lacks the budget failure:\n%v", evs)
	}
	if hasEvent(evs, "rollback", "") || hasEvent(evs, "stop", "") {
		t.Errorf("the app rollback ran after the database step ran out of budget:\n%v", evs)
	}
	if got := current(t, h.opts.Services[0].Platform); got != "app:v3" {
		t.Errorf("the app was rolled back to %s although the database step failed", got)
	}
	h.click(slackemu.UserBob, f.TS, handlers.ActEnd)
	h.waitStatus("RB-1", state.Closed)
	if l, _ := h.store.LockHolder(context.Background(), "payments"); l != nil {
		t.Errorf("lock held after End: %+v", l)
	}
}

// The service lock is lost while the database step waits for its
// approval (it expired and another rollback took the service): the
// approval starts the step, whose guard refuses before the down migration
// runs. Nothing is written to the database or the platform, the thread
// names the holder and does not promise a lock this rollback no longer
// has, and the timeline says why.
func TestLifecycleDBApprovalAfterTheLockWasLost(t *testing.T) {
	light(t)
	h, db, m := dbHarness(t, false, lifecycleEngine(func(*handlers.Options) {}))
	ctx := context.Background()
	in, err := h.store.Get(ctx, "RB-1")
	if err != nil {
		t.Fatal(err)
	}
	h.store.ReleaseLock(ctx, "payments", in.Lock)
	if _, err := h.store.AcquireLock(ctx, "payments", "RB-9", slackemu.UserErin, time.Minute); err != nil {
		t.Fatal(err)
	}
	h.approve(slackemu.UserDana, m, "payments")
	f := h.waitFor("lost lock report", textHas("RB-9 holds it"))
	wantAll(t, "lost lock report", f.PlainText(), "The database step failed", "no longer this rollback's", "stopped before changing anything more")
	if strings.Contains(f.PlainText(), "stays locked for this rollback") {
		t.Errorf("the report promises a lock that RB-9 holds:\n%s", f.PlainText())
	}
	if f.ThreadTS != m.ThreadTS {
		t.Errorf("report outside the incident's thread")
	}
	h.waitStatus("RB-1", state.RollbackFailed)
	db.mu.Lock()
	downs := db.downs
	db.mu.Unlock()
	if downs != 0 {
		t.Errorf("the down migration ran %d time(s) without the service lock", downs)
	}
	if got := current(t, h.opts.Services[0].Platform); got != "app:v3" {
		t.Errorf("the platform changed: runs %s", got)
	}
	if !hasEvent(h.events("RB-1"), "database", "failed: the service lock of payments is no longer this rollback's: RB-9 holds it") {
		t.Errorf("timeline lacks the refusal:\n%v", h.events("RB-1"))
	}
	if l, _ := h.store.LockHolder(ctx, "payments"); l == nil || l.Incident != "RB-9" {
		t.Errorf("RB-9's lock was touched: %+v", l)
	}
}

// The service lock taken by someone else during the rollback (it expired
// and another rollback took it) stops the step at the next heartbeat, and
// the thread names the holder.
func TestLifecycleLostLockStopsTheStep(t *testing.T) {
	light(t)
	svc, _ := simService(t, "myapp", 2*time.Second)
	h := newHarness(t, []*handlers.Service{svc}, lifecycleEngine(func(*handlers.Options) {}))
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	h.waitFor("rollback in progress", textHas("Rolling back"))
	in, err := h.store.Get(context.Background(), "RB-1")
	if err != nil {
		t.Fatal(err)
	}
	h.store.ReleaseLock(context.Background(), "myapp", in.Lock)
	if _, err := h.store.AcquireLock(context.Background(), "myapp", "RB-9", slackemu.UserDana, time.Minute); err != nil {
		t.Fatal(err)
	}
	m := h.waitFor("lost lock report", textHas("RB-9 holds it"))
	if m.ThreadTS != a.TS {
		t.Errorf("report outside the thread")
	}
	h.waitStatus("RB-1", state.RollbackFailed)
	if !hasEvent(h.events("RB-1"), "rollback", "failed: the service lock of myapp is no longer this rollback's") {
		t.Errorf("timeline lacks the lost lock:\n%v", h.events("RB-1"))
	}
}

// Slack refuses the update that puts the buttons on the assessment: the
// table is posted again with them, so there is something to click.
func TestLifecycleAssessmentUpdateFailureRepostsTheButtons(t *testing.T) {
	light(t)
	svc, _ := simService(t, "myapp", time.Millisecond)
	h := newHarness(t, []*handlers.Service{svc}, lifecycleEngine(func(*handlers.Options) {}))
	h.emu.FailMethod("chat.update", "internal_error", 1)
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment posted again", hasAction(handlers.ActConfirm))
	if a.ThreadTS == "" {
		t.Errorf("the re-posted assessment is not in the incident's thread")
	}
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	h.waitStatus("RB-1", state.Completed)
}

// Redis goes away mid-rollback: the thread says so within seconds, and no
// further write runs (the step stops at the next heartbeat).
func TestLifecycleRedisDownMidFlowIsReported(t *testing.T) {
	light(t)
	svc, s := simService(t, "myapp", 2*time.Second)
	rs := redistest.Server(t)
	h := newHarness(t, []*handlers.Service{svc}, lifecycleEngine(func(*handlers.Options) {}))
	h.restartOn(rs.URL)
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	h.waitFor("rollback in progress", textHas("Rolling back"))
	rs.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := h.emu.WaitForMessage(ctx, textHas("rollbot lost its state store (Redis)"))
	if err != nil {
		t.Fatalf("no report in the thread within 10s of Redis going away:\n%s", h.dump())
	}
	if m.ThreadTS != a.TS {
		t.Errorf("report outside the thread")
	}
	// The rollback stopped where it was: no pod replaced after the report.
	snap, _ := s.Snapshot(context.Background())
	before := snap.Health.Ready
	time.Sleep(3 * time.Second) // longer than a pod's replacement (2s)
	snap, _ = s.Snapshot(context.Background())
	if snap.Health.Ready != before {
		t.Errorf("the platform kept changing after the step stopped: ready %d → %d", before, snap.Health.Ready)
	}
}

// restartOn restarts the harness's bot on the Redis at url (a server the
// test can kill or freeze).
func (h *harness) restartOn(url string) {
	h.t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		h.t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	h.t.Cleanup(func() { rdb.Close() })
	h.stop()
	h.opts.Redis, h.store = rdb, state.New(rdb, h.opts.Prefix)
	h.start()
}
