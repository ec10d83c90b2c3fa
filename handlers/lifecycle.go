package handlers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"rollbot/platforms"
	"rollbot/state"
)

// Budgets bound each step of the runbook. A step that runs out of its
// budget ends in the failure path, reported in the thread, never silently.
// A working step's budget counts from when it started, across takeovers.
type Budgets struct {
	Assess  time.Duration `yaml:"assess"`  // 2m: the assessment (§1)
	Confirm time.Duration `yaml:"confirm"` // 30m: waiting for "Roll back" or the DB approvals
	DBDown  time.Duration `yaml:"db_down"` // 20m: a reversible down migration (§4)
	Restore time.Duration `yaml:"restore"` // 3h: a snapshot / point-in-time restore (§4)
	Switch  time.Duration `yaml:"switch"`  // 2h30m: pointing the app at the restored data (§4); the rename swap waits up to restore.wait_timeout (2h)
	Rollout time.Duration `yaml:"rollout"` // 15m: stop the rollout and roll back, until converged (§2, §3)
	Verify  time.Duration `yaml:"verify"`  // verify_timeout + verify_soak + 2m: the verification checklist (§5)
	// Hold is how long a failed rollback keeps the service lock while it
	// offers its fallbacks; then it is closed and the service released.
	Hold time.Duration `yaml:"hold"` // 30m
	// Capture is the evidence capture's own budget inside the first write
	// step's: the platform reads, the record and the upload (20s).
	Capture time.Duration `yaml:"capture"`
}

// Resolve fills the defaults: verifyTimeout is how long the service has to
// recover (default 5m), soak how long every check must then hold (the
// longest of the services', default 3m), rollout the older step_timeout
// when budgets.rollout is not set.
func (b Budgets) Resolve(verifyTimeout, soak, rollout time.Duration) Budgets {
	if verifyTimeout <= 0 {
		verifyTimeout = 5 * time.Minute
	}
	if soak <= 0 {
		soak = DefaultVerifySoak
	}
	if b.Rollout <= 0 {
		b.Rollout = rollout
	}
	b.defaults(verifyTimeout, soak)
	return b
}

func (b *Budgets) defaults(verifyTimeout, soak time.Duration) {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&b.Assess, 2*time.Minute)
	def(&b.Confirm, 30*time.Minute)
	def(&b.DBDown, 20*time.Minute)
	def(&b.Restore, 3*time.Hour)
	def(&b.Switch, 2*time.Hour+30*time.Minute)
	def(&b.Rollout, 15*time.Minute)
	def(&b.Verify, verifyTimeout+soak+2*time.Minute)
	def(&b.Hold, 30*time.Minute)
	def(&b.Capture, 20*time.Second)
}

// Validate checks the budgets against each other, the verification
// timeout and the longest soak; errors name the config field.
func (b Budgets) Validate(verifyTimeout, soak, lease time.Duration) error {
	var errs []error
	if b.Verify > 0 && verifyTimeout > 0 && b.Verify < verifyTimeout+soak+time.Minute {
		errs = append(errs, fmt.Errorf("budgets.verify (%s) must be at least verify_timeout (%s) + verify_soak (%s) + 1m: the service gets verify_timeout to recover, then every check must hold for verify_soak, then rollbot reports", b.Verify, verifyTimeout, soak))
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"capture", b.Capture}, {"assess", b.Assess}, {"confirm", b.Confirm}, {"db_down", b.DBDown}, {"restore", b.Restore}, {"switch", b.Switch}, {"rollout", b.Rollout}, {"verify", b.Verify}, {"hold", b.Hold}} {
		if f.d < 0 {
			errs = append(errs, fmt.Errorf("budgets.%s: must not be negative", f.name))
		}
		if f.name != "capture" && f.d > 0 && lease > 0 && f.d < 2*lease {
			errs = append(errs, fmt.Errorf("budgets.%s (%s) must be at least twice the lease (%s)", f.name, f.d, lease))
		}
	}
	if b.Capture > 5*time.Minute {
		errs = append(errs, fmt.Errorf("budgets.capture (%s): at most 5m, the capture must not hold the rollback up", b.Capture))
	}
	return errors.Join(errs...)
}

// budgetFor is the budget of a working status.
func (e *Engine) budgetFor(in *state.Incident) (time.Duration, string) {
	b := e.opt.Budgets
	switch in.Status {
	case state.Assessing:
		return b.Assess, "the assessment"
	case state.RollingBackDB:
		if in.DBDestructive {
			return b.Restore, "the database restore"
		}
		return b.DBDown, "the database rollback"
	case state.SwitchingEndpoint:
		return b.Switch, "the endpoint switch"
	case state.Stopping, state.RollingBack:
		if in.Fallback != "" {
			return b.Rollout, "the fallback"
		}
		return b.Rollout, "the rollback"
	case state.Verifying:
		return b.Verify, "the verification"
	case state.DrillRestoring:
		return b.Rollout, "putting back the version the drill found"
	}
	return b.Rollout, string(in.Status)
}

// owned is a working incident this replica owns: every write it makes
// carries claim, and is refused once another replica took the incident
// over.
type owned struct {
	// mu guards in and claim against the heartbeat, which reads them from
	// its own goroutine; the owner's goroutine is the only writer (set).
	mu    sync.Mutex
	in    *state.Incident
	svc   *Service
	claim state.Claim
	// resumedFrom is the replica this one took the incident over from,
	// until the takeover is said in the thread (which may not exist yet
	// when the assessment was interrupted).
	resumedFrom string
}

// set replaces the owner's record and claim (the owner's goroutine only).
func (o *owned) set(in *state.Incident, c state.Claim) {
	o.mu.Lock()
	o.in, o.claim = in, c
	o.mu.Unlock()
}

// current is the record and claim as the owner last set them, for the
// heartbeat's goroutine.
func (o *owned) current() (*state.Incident, state.Claim) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.in, o.claim
}

// Why a working step's context ended early.
var (
	errTakenOver = errors.New("taken over by another replica")
	errStoreDown = errors.New("the state store (Redis) did not answer for longer than the lease")
)

// lostLock is the cause when the service lock is gone or someone else's.
type lostLock struct{ holder *state.Lock }

func (l lostLock) Error() string { return "lost the service lock" }

// work runs an incident this replica owns from its working status until
// it waits for a person or ends, in the background. A heartbeat keeps the
// lease and the service lock, and cancels the work when either is lost.
func (e *Engine) work(in *state.Incident, svc *Service, resumed string) {
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		ctx, cancel := context.WithCancelCause(e.base)
		defer cancel(nil)
		o := &owned{in: in, svc: svc, claim: state.ClaimOf(in)}
		stop := e.heartbeat(ctx, cancel, o)
		defer stop()
		defer func() {
			if r := recover(); r != nil {
				ref := platforms.NewRef()
				e.log.Error("panic in working step", "incident", o.in.ID, "op", string(o.in.Status), "ref", ref, "panic", r)
				e.failed(o, "an internal error stopped rollbot during "+string(o.in.Status)+" (see the bot log, ref "+ref+")")
			}
		}()
		o.resumedFrom = resumed
		e.sayResumed(o)
		e.drive(ctx, o)
	}()
}

// drive advances an owned incident step by step.
func (e *Engine) drive(ctx context.Context, o *owned) {
	for o.in.Status.Working() {
		if cause := context.Cause(ctx); cause != nil {
			e.interrupted(o, cause)
			return
		}
		budget, what := e.budgetFor(o.in)
		started := o.in.StepStarted
		if started.IsZero() {
			started = e.now()
		}
		sctx, cancel := context.WithDeadline(ctx, started.Add(budget))
		// Platform writes act for the person who decided (the requester
		// for the assessment's dry run), and the Slack user groups of
		// theirs that the platform maps: adapters that impersonate use it.
		sctx = e.actingFor(sctx, o.svc, firstNonEmpty(o.in.DecidedBy, o.in.RequestedBy))
		before := o.in.Status
		var err error
		switch o.in.Status {
		case state.Assessing:
			err = e.assessStep(sctx, o)
		case state.RollingBackDB:
			err = e.dbStep(sctx, o)
		case state.SwitchingEndpoint:
			err = e.switchStep(sctx, o)
		case state.Stopping:
			err = e.stopStep(sctx, o)
		case state.RollingBack:
			if o.in.Fallback != "" {
				err = e.fallbackStep(sctx, o)
			} else {
				err = e.rollbackStep(sctx, o)
			}
		case state.Verifying:
			err = e.verifyStep(sctx, o)
		case state.DrillRestoring:
			err = e.drillRestoreStep(sctx, o)
		}
		overBudget := errors.Is(sctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
		cancel()
		e.metrics.StepDone(string(before), e.now().Sub(started))
		if cause := context.Cause(ctx); cause != nil {
			e.interrupted(o, cause)
			return
		}
		// A guard right before a write found the lock lost or the incident
		// taken over (before the heartbeat did): the same report.
		if errors.As(err, new(lostLock)) || errors.Is(err, errTakenOver) {
			e.interrupted(o, err)
			return
		}
		var failure string
		var se stepError
		switch {
		case overBudget:
			failure = fmt.Sprintf("%s did not finish within its budget of %s", what, window(budget))
			switch {
			case errors.As(err, &se):
				failure += ": " + se.msg
			case err != nil:
				failure += ": " + e.userText(err, string(before), "incident", o.in.ID)
			}
		case errors.As(err, &se):
			failure = se.msg
		case err != nil:
			failure = e.userText(err, string(before), "incident", o.in.ID)
		case o.in.Status == before:
			ref := platforms.NewRef()
			e.log.Error("step did not move the incident on", "incident", o.in.ID, "status", string(before), "ref", ref)
			failure = "rollbot stopped at " + string(before) + " (internal error, see the bot log, ref " + ref + ")"
		}
		if failure != "" {
			was := o.in.Status
			e.failed(o, failure)
			if was == state.DrillRestoring || o.in.Status != state.DrillRestoring {
				return
			}
			// A drill that failed before its rollback goes on to put
			// back what it found, as its own step with its own budget.
		}
	}
}

// stepError is a failure whose text is already written for users.
type stepError struct{ msg string }

func (s stepError) Error() string { return s.msg }

func failf(format string, args ...any) error { return stepError{fmt.Sprintf(format, args...)} }

// heartbeat refreshes the lease and the service lock every third of the
// lease (at most 2s), and cancels ctx with the reason once either is lost,
// or once the state store has not answered for 5s (or most of the lease):
// the step stops and says so in the thread within seconds, and another
// replica may take over once Redis is back.
func (e *Engine) heartbeat(ctx context.Context, cancel context.CancelCauseFunc, o *owned) func() {
	hctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		every := min(e.opt.Lease/3, 2*time.Second)
		t := time.NewTicker(every)
		defer t.Stop()
		last := e.now()
		for {
			select {
			case <-hctx.Done():
				return
			case <-t.C:
			}
			in, claim := o.current()
			if !in.Status.Working() {
				// The owner itself moved the incident to a wait or an
				// end, and the lease went with that move: there is
				// nothing left to keep. What the step still does after
				// the move (show the decision buttons, post the wait,
				// release the lock) must not be cancelled as if another
				// replica had taken over.
				return
			}
			gctx, gcancel := context.WithTimeout(hctx, every)
			holder, err := e.store.Guard(gctx, in, claim, e.opt.Lease, e.opt.LockTTL)
			gcancel()
			switch {
			case err == nil:
				last = e.now()
			case errors.Is(err, state.ErrFenced):
				if ownMove(hctx, o, claim, 2*every) {
					// The owner moved to its next step (a new fence)
					// while this check was in flight: not a takeover.
					continue
				}
				if e.handedOff(hctx, in.ID, claim) {
					// The owner's move out of its working status
					// committed while this check was in flight, before
					// the owner saw it: not a takeover either.
					return
				}
				cancel(errTakenOver)
				return
			case errors.Is(err, state.ErrLocked):
				cancel(lostLock{holder})
				return
			case hctx.Err() != nil:
				return
			default:
				e.log.Warn("heartbeat", "incident", o.in.ID, "err", err)
				if e.now().Sub(last) >= min(e.opt.Lease-every, 5*time.Second) {
					cancel(errStoreDown)
					return
				}
			}
		}
	}()
	return func() { stop(); <-done }
}

// ownMove reports whether the owner's claim changed from claim within
// wait: a guard refused as fenced may have met the owner's own move to its
// next step, committed in Redis (a new fence and lease) but not yet set
// on o, which happens only once the store's call returns (after its
// round trips, which a loaded machine stretches). Taken for a takeover,
// that stopped a healthy step, and with it the lease it had just set went
// unrenewed until the supervisor took the incident over from its own
// replica a lease later (TestTenIncidentsWithinSlackRateLimits on a
// loaded CI machine, 2026-12-05). A real takeover fences every write of
// the old owner, so its claim never changes and this waits the whole
// wait, two heartbeat periods, before the step stops.
func ownMove(ctx context.Context, o *owned, claim state.Claim, wait time.Duration) bool {
	give := time.Now().Add(wait)
	for {
		if _, now := o.current(); now != claim {
			return true
		}
		if !time.Now().Before(give) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// handedOff reports whether the incident's own owner (claim) moved it out
// of its working status: same owner and fence, a waiting or final status.
// A replica that took it over would have raised the fence.
func (e *Engine) handedOff(ctx context.Context, id string, claim state.Claim) bool {
	cur, err := e.store.Get(ctx, id)
	return err == nil && !cur.Status.Working() && state.ClaimOf(cur) == claim
}

// guard is checked right before every write to a system: the incident is
// still this replica's and still holds the service lock.
func (e *Engine) guard(ctx context.Context, o *owned) error {
	holder, err := e.store.Guard(ctx, o.in, o.claim, e.opt.Lease, e.opt.LockTTL)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, state.ErrLocked):
		return lostLock{holder}
	case errors.Is(err, state.ErrFenced):
		return errTakenOver
	}
	return fmt.Errorf("check the incident still holds its lock: %w", err)
}

// record appends an owner's timeline event; it fails once the incident
// was taken over.
func (e *Engine) recordOwned(ctx context.Context, o *owned, step, detail string) error {
	err := e.store.AppendOwned(ctx, o.in.ID, o.claim, state.Event{Actor: "rollbot", Step: step, Detail: detail, Time: e.now()})
	if err != nil {
		e.log.Error("timeline append failed", "incident", o.in.ID, "op", step, "err", err)
	}
	return err
}

// advance moves an owned incident on; into a working status it keeps the
// owner (a new fence, the lease renewed) and starts that step's budget.
func (e *Engine) advance(ctx context.Context, o *owned, to state.Status, mutate func(*state.Incident)) error {
	return e.advanceShowing(ctx, o, to, "", mutate)
}

// advanceShowing is advance into a wait that still owes the thread its
// message show (see state.Move.Show): this replica keeps a lease for
// showing it, so that another replica shows it should this one stop first.
func (e *Engine) advanceShowing(ctx context.Context, o *owned, to state.Status, show string, mutate func(*state.Incident)) error {
	step, started, now := timingStep(o.in.Status, o.in.Fallback), o.in.StepStarted, e.now()
	m := state.Move{From: []state.Status{o.in.Status}, To: to, Claim: o.claim, Mutate: func(in *state.Incident) {
		// The step that ends here is measured (one that recorded its own
		// end, like the verification before the post-rollback actions,
		// keeps it).
		if step != "" && !started.IsZero() {
			if cur, ok := in.Timings[step]; !ok || !cur.Start.Equal(started) || cur.End.IsZero() {
				setTiming(in, step, state.StepTiming{Start: started, End: now})
			}
		}
		if to.Working() {
			in.StepStarted = e.now()
		}
		if mutate != nil {
			mutate(in)
		}
	}}
	if to.Working() || show != "" {
		m.Owner, m.Lease, m.Show = e.opt.Replica, e.opt.Lease, show
	}
	in, err := e.store.Advance(ctx, o.in.ID, m)
	if err != nil {
		return err
	}
	o.set(in, state.ClaimOf(in))
	return nil
}

// update changes an owned incident's record (not its status).
func (e *Engine) updateOwned(ctx context.Context, o *owned, mutate func(*state.Incident)) error {
	in, err := e.store.Update(ctx, o.in.ID, o.claim, mutate)
	if err != nil {
		return err
	}
	o.set(in, o.claim)
	return nil
}

// setStep records a write step's progress ("started", "done").
func (e *Engine) setStep(ctx context.Context, o *owned, step, val string) error {
	return e.updateOwned(ctx, o, func(in *state.Incident) {
		if in.Steps == nil {
			in.Steps = map[string]string{}
		}
		in.Steps[step] = val
	})
}

// tick calls f every second (or every UpdateInterval, if longer) until
// the returned stop is called or ctx ends.
func (e *Engine) tick(ctx context.Context, f func()) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(max(e.opt.UpdateInterval, time.Second))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				f()
			}
		}
	}()
	return func() { cancel(); <-done }
}

// fresh is a context for reporting an outcome after the step's own
// context ended: the report must not die with the step.
func (e *Engine) fresh() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(e.base), 30*time.Second)
}

// interrupted reports why a working step stopped before its end.
func (e *Engine) interrupted(o *owned, cause error) {
	ctx, cancel := e.fresh()
	defer cancel()
	var ll lostLock
	switch {
	case errors.Is(cause, errTakenOver):
		// Another replica owns the incident now and reports it; a stale
		// owner writes nothing.
		e.log.Warn("incident taken over; this replica stops", "incident", o.in.ID, "status", string(o.in.Status))
	case errors.As(cause, &ll):
		e.failed(o, lockLostText(o.in, ll.holder))
	case errors.Is(cause, errStoreDown):
		e.log.Error("state store unreachable; stopping the step", "incident", o.in.ID, "status", string(o.in.Status))
		e.postOwned(o, storeDownMsg(o.in, e.now().Add(e.opt.LockTTL)))
	default: // the bot is shutting down: the lease runs out, another replica resumes
		e.log.Info("stopping; another replica resumes the incident", "incident", o.in.ID, "status", string(o.in.Status), "cause", cause)
		if err := e.store.ReleaseLease(ctx, o.in.ID, o.claim); err != nil {
			e.log.Warn("release the lease", "incident", o.in.ID, "err", err)
		}
	}
}

func lockLostText(in *state.Incident, holder *state.Lock) string {
	if holder != nil && holder.Incident != in.ID {
		return fmt.Sprintf("the service lock of %s is no longer this rollback's: %s holds it (started by <@%s>), so rollbot stopped before changing anything more", in.Service, holder.Incident, holder.Holder)
	}
	return "the service lock of " + in.Service + " expired, so rollbot stopped before changing anything more; run `/rollback " + in.Service + "` again"
}

// postOwned posts into the incident's thread on a fresh context.
func (e *Engine) postOwned(o *owned, m Msg) string {
	ctx, cancel := e.fresh()
	defer cancel()
	return e.post(ctx, o.in.Channel, o.in.ThreadTS, m)
}

// sayResumed posts the takeover into the incident's thread, once there is one.
func (e *Engine) sayResumed(o *owned) {
	if o.resumedFrom == "" || o.in.ThreadTS == "" {
		return
	}
	e.postOwned(o, resumedMsg(o.in, e.opt.Replica, o.resumedFrom))
	o.resumedFrom = ""
}
