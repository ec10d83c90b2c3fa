package handlers

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	"rollbot/platforms"
	"rollbot/state"
)

// stopStep is runbook §2: stop the rollout, written to the timeline
// before it acts. On a resumed incident the adapter answers "skipped"
// when the rollout is already stopped.
func (e *Engine) stopStep(ctx context.Context, o *owned) error {
	// The evidence is kept before any write (pausing the owner is one).
	if err := e.captureFirst(ctx, o); err != nil {
		return err
	}
	if err := e.pauseOwner(ctx, o); err != nil {
		return err
	}
	in, svc := o.in, o.svc
	progTS := in.Messages["progress"]
	if progTS == "" {
		progTS = e.post(ctx, in.Channel, in.ThreadTS, withBudgets(progressMsg(in, "Stopping the rollout…", nil, ""), in, e.now()))
		e.setMessage(ctx, o, "progress", progTS)
	}
	if err := e.recordOwned(ctx, o, "stop", "stopping the rollout of "+svc.Platform.Target()); err != nil {
		return failf("could not write the timeline, so nothing was changed")
	}
	if err := e.guard(ctx, o); err != nil {
		return err
	}
	res, err := svc.Platform.Stop(ctx, false)
	if err != nil {
		return failf("stopping the rollout failed: %s", e.userText(err, "stop rollout", "incident", in.ID, "service", svc.Name))
	}
	line := string(res.Outcome) + ": " + res.Detail
	if err := e.recordOwned(ctx, o, "stop", line); err != nil {
		return err
	}
	return e.advance(ctx, o, state.RollingBack, func(in *state.Incident) { in.StopLine = line })
}

// rollbackStep is runbook §3: roll back to the target with live progress.
// Rollback is idempotent on every adapter (already at the target is
// "skipped"), so a replica that takes over after the owner stopped calls it
// again: a write not made yet is made, one already made is not repeated.
func (e *Engine) rollbackStep(ctx context.Context, o *owned) error {
	in, svc := o.in, o.svc
	progTS := in.Messages["progress"]
	detail := fmt.Sprintf("rolling back %s from %s to %s", svc.Platform.Target(), in.Bad.Label(), in.Target.Label())
	if in.Steps["rollback"] == "started" {
		detail = "resuming: " + detail + " (the write is made only if it was not made before)"
	}
	if err := e.recordOwned(ctx, o, "rollback", detail); err != nil {
		return failf("could not write the timeline, so the rollback did not start")
	}
	if err := e.setStep(ctx, o, "rollback", "started"); err != nil {
		return err
	}
	if err := e.guard(ctx, o); err != nil {
		return err
	}
	render := func(lines []string) Msg {
		return withBudgets(progressMsg(in, "Rolling back…", lines, in.StopLine), in, e.now())
	}
	if progTS == "" {
		progTS = e.post(ctx, in.Channel, in.ThreadTS, render(nil))
		e.setMessage(ctx, o, "progress", progTS)
	}
	live := newLiveMessage(ctx, e.chat, in.Channel, progTS, e.opt.UpdateInterval, func(err error) { e.log.Warn("progress update", "err", err) })
	started := e.now()
	var (
		mu    sync.Mutex
		lines []string
	)
	// The elapsed time against the runbook's budget moves on between
	// progress lines too.
	stopTick := e.tick(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		live.Set(render(lines))
	})
	res, err := svc.Platform.Rollback(ctx, in.Target, false, func(p platforms.Progress) {
		mu.Lock()
		defer mu.Unlock()
		lines = appendProgress(lines, p.Message)
		live.Set(render(lines))
	})
	stopTick()
	took := e.now().Sub(started).Round(100 * time.Millisecond)
	if err != nil {
		msg := e.userText(err, "roll back", "incident", in.ID, "service", svc.Name)
		fctx, cancel := e.fresh()
		defer cancel()
		live.Close(render(lines))
		if ctx.Err() != nil {
			return err // over budget or interrupted: drive reports it
		}
		e.recordOwned(fctx, o, "rollback", "failed after "+took.String()+": "+msg)
		return failf("%s", msg)
	}
	e.recordOwned(ctx, o, "rollback", fmt.Sprintf("%s in %s: %s", res.Outcome, took, res.Detail))
	target := in.Target
	target.CreatedAt = e.now()
	if err := e.store.RecordDeployed(ctx, svc.Name, target); err != nil {
		e.log.Warn("record deployed version", "service", svc.Name, "err", err)
	}
	done := *in
	done.Timings = maps.Clone(in.Timings)
	setTiming(&done, "rollback", state.StepTiming{Start: in.StepStarted, End: e.now()})
	live.Close(withBudgets(rolledBackMsg(in, res, took, lines, in.StopLine), &done, e.now()))
	if err := e.setStep(ctx, o, "rollback", "done"); err != nil {
		return err
	}
	return e.advance(ctx, o, state.Verifying, nil)
}

// appendProgress keeps the last few distinct progress lines.
func appendProgress(lines []string, l string) []string {
	if l == "" || (len(lines) > 0 && lines[len(lines)-1] == l) {
		return lines
	}
	lines = append(lines, l)
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return lines
}

// failed is the failure path of a working step, on a fresh context: the
// failure on the timeline, the incident moved to a failed status, the
// service lock kept (for the fallbacks, at most Budgets.Hold) or released,
// and a message in the thread that says what happened and what now.
func (e *Engine) failed(o *owned, msg string) {
	ctx, cancel := e.fresh()
	defer cancel()
	was := o.in.Status
	to := state.RollbackFailed
	switch was {
	case state.Assessing, state.DrillRestoring:
		to = state.Cancelled
	case state.Verifying:
		to = state.VerifyFailed
	}
	// A drill that deployed its bad version and failed before its
	// rollback puts back what it found next, if it still holds the
	// service (drive goes on with drill_restoring).
	restore := was == state.Assessing && drillDeployed(o.in) && e.guard(ctx, o) == nil
	if restore {
		to = state.DrillRestoring
	}
	if was == state.RollingBack && o.in.Fallback == fallbackScaleZero && o.in.Steps["fallback"] == "done" {
		was, to = state.Verifying, state.VerifyFailed // down on purpose: what is left is the verification's
	}
	fallbacks := e.hasFallbacks(o.svc) && (was == state.Stopping || was == state.RollingBack || was == state.Verifying)
	// The database step keeps the service until someone ends the rollback:
	// the team must see what the database is left in before anyone retries.
	hold := fallbacks || was == state.RollingBackDB || was == state.SwitchingEndpoint || was == state.Verifying
	until := e.now().Add(e.opt.Budgets.Hold)
	if err := e.recordOwned(ctx, o, stepOf(was), "failed: "+msg); errors.Is(err, state.ErrFenced) {
		return
	}
	failedStep := timingStep(o.in.Status, o.in.Fallback)
	left := ""
	if to == state.Cancelled && drillDeployed(o.in) {
		left = e.drillCompare(ctx, o.in, o.svc) // what the drill leaves, kept with it
	}
	err := e.advance(ctx, o, to, func(in *state.Incident) {
		if hold {
			in.HeldUntil = until
		}
		if left != "" {
			in.Drill.Left = left
		}
		if t, ok := in.Timings[failedStep]; ok {
			t.Failed = true
			in.Timings[failedStep] = t
		}
	})
	if errors.Is(err, state.ErrFenced) || errors.Is(err, state.ErrStale) {
		e.log.Warn("failure not reported: the incident moved on", "incident", o.in.ID, "err", err)
		return
	}
	if err != nil {
		e.log.Error("record the failure", "incident", o.in.ID, "err", err)
		e.post(ctx, o.in.Channel, o.in.ThreadTS, storeDownMsg(o.in, e.now().Add(e.opt.LockTTL)))
		return
	}
	in := o.in
	if restore {
		e.metrics.RollbackFinished(string(state.Cancelled))
		e.post(ctx, in.Channel, in.ThreadTS, errorMsg(in.ID+" (drill): "+msg+". "+restoringText(in)))
		return
	}
	// A failed restore says what it left; so does a drill whose rollback
	// failed (then `/rollback` may put it back, unless the assessment
	// found nothing to roll back to).
	note := e.drillLeftNote(ctx, in, o.svc, in.Target.ID != "")
	if was == state.DrillRestoring && note != "" {
		e.record(ctx, in.ID, "rollbot", "drill", strings.TrimSpace(note))
		if len(in.Assessment) > 0 {
			e.update(ctx, in.Channel, in.Messages["assessment"], decidedMsg(in, e.assessmentOf(in)))
		}
	}
	msg += note
	if hold {
		if err := e.store.HoldLock(ctx, in, e.opt.Budgets.Hold); err != nil {
			e.log.Warn("hold the service lock", "incident", in.ID, "err", err)
			if errors.Is(err, state.ErrLocked) {
				// The lock expired or is another rollback's: there is no
				// hold to promise (msg says who holds the service).
				hold = false
			}
		}
	} else {
		e.store.ReleaseLock(ctx, in.Service, in.Lock)
	}
	if was != state.DrillRestoring { // counted as cancelled when the restore began
		e.metrics.RollbackFinished(string(to))
	}
	var m Msg
	switch {
	case was == state.DrillRestoring, was == state.Assessing && in.Drill != nil:
		m = errorMsg(in.ID + " (drill): " + msg)
	case was == state.Assessing:
		m = errorMsg(in.ID + ": " + msg + ". Nothing was changed; the service is released. Run `/rollback " + in.Service + "` again.")
	case was == state.RollingBackDB:
		m = dbFailedMsg(in, msg, until)
	case was == state.SwitchingEndpoint:
		m = switchFailedMsg(in, msg)
	case was == state.Verifying:
		m = verifyFailedMsg(in, msg, fallbacks)
	case in.Steps["owner"] == ownerRefused && was == state.Stopping:
		m = ownerRefusedMsg(in, msg)
	default:
		m = rollbackFailedMsg(in, msg, o.svc.Platform.Kind(), fallbacks)
	}
	if hold {
		m = withHoldNote(m, in, until)
	}
	ts := in.Messages["progress"]
	if was == state.RollingBackDB || was == state.SwitchingEndpoint || was == state.Verifying || ts == "" {
		e.post(ctx, in.Channel, in.ThreadTS, m)
	} else {
		e.update(ctx, in.Channel, ts, m)
	}
}

// stepOf names a working status's step on the timeline.
func stepOf(s state.Status) string {
	switch s {
	case state.Assessing:
		return "assess"
	case state.RollingBackDB:
		return dbStep
	case state.SwitchingEndpoint:
		return endpointStep
	case state.Stopping:
		return "stop"
	case state.Verifying:
		return "verify"
	}
	return "rollback"
}

// end closes a failed rollback on a person's decision and frees the service.
func (e *Engine) end(ctx context.Context, a Action) {
	in, svc, ok := e.incidentFor(ctx, a)
	if !ok {
		return
	}
	if a.UserID != in.RequestedBy && !e.allowed(ctx, svc.Approvers, a.UserID) {
		e.ephemeral(ctx, a.ChannelID, a.UserID, notAllowedMsg(svc.Name, "end this rollback", who(svc.Approvers)+" or the requester"))
		return
	}
	e.record(ctx, in.ID, a.UserID, "end", "ended the rollback after "+string(in.Status)+"; service lock released")
	cur, ok := e.decide(ctx, a, in.ID, []state.Status{state.RollbackFailed, state.VerifyFailed}, state.Closed, nil, "end the rollback")
	if !ok {
		return
	}
	e.store.ReleaseLock(ctx, cur.Service, cur.Lock)
	e.update(ctx, cur.Channel, a.MessageTS, endedMsg(cur, a.UserID, e.now()))
}

// fallback runs one of the FAQ's "what if the rollback also fails" steps.
func (e *Engine) fallback(ctx context.Context, a Action) {
	in, svc, ok := e.incidentFor(ctx, a)
	if !ok {
		return
	}
	if _, ok := svc.Platform.(platforms.Fallbacks); !ok {
		e.ephemeral(ctx, a.ChannelID, a.UserID, errorMsg(svc.Platform.Kind()+" has no fallback steps"))
		return
	}
	if !e.allowed(ctx, svc.Approvers, a.UserID) {
		e.record(ctx, in.ID, a.UserID, "fallback", "refused: not allowed")
		e.ephemeral(ctx, a.ChannelID, a.UserID, notAllowedMsg(svc.Name, "run a fallback", who(svc.Approvers)))
		return
	}
	kind, what := fallbackSetImage, "set the image explicitly to "+in.Target.Artifact
	if a.ActionID == ActFallbackZero {
		kind, what = fallbackScaleZero, "scale "+svc.Platform.Target()+" to zero"
	}
	// The service lock must still be this incident's: after it expired,
	// another rollback may be running.
	if holder, err := e.store.LockHolder(ctx, in.Service); err != nil || holder == nil || holder.Token != in.Lock {
		e.record(ctx, in.ID, a.UserID, "fallback", "refused: the service lock is no longer this rollback's")
		e.ephemeral(ctx, a.ChannelID, a.UserID, errorMsg(lockLostText(in, holder)))
		return
	}
	in, ok = e.decideWork(ctx, a, in.ID, []state.Status{state.RollbackFailed, state.VerifyFailed}, state.RollingBack, func(in *state.Incident) {
		in.DecidedBy, in.Fallback, in.HeldUntil = a.UserID, kind, time.Time{}
		delete(in.Steps, "fallback")
	}, "record the decision")
	if !ok {
		return
	}
	e.record(ctx, in.ID, a.UserID, "fallback", what)
	e.update(ctx, in.Channel, a.MessageTS, fallbackChosenMsg(in, a.UserID, what))
	e.work(in, svc, "")
}

const (
	fallbackSetImage  = "set_image"
	fallbackScaleZero = "scale_zero"
)

// fallbackStep runs the chosen fallback as an owned write step.
func (e *Engine) fallbackStep(ctx context.Context, o *owned) error {
	in, svc := o.in, o.svc
	fb, ok := svc.Platform.(platforms.Fallbacks)
	if !ok {
		return failf("%s has no fallback steps", svc.Platform.Kind())
	}
	what := "set the image explicitly to " + in.Target.Artifact
	if in.Fallback == fallbackScaleZero {
		what = "scale " + svc.Platform.Target() + " to zero"
	}
	if in.Steps["fallback"] == "started" && in.Fallback == fallbackScaleZero {
		// Scaling to zero twice is harmless, but say that it is a resume.
		what += " (resumed)"
	}
	if err := e.recordOwned(ctx, o, "fallback", "running: "+what); err != nil {
		return failf("could not write the timeline, so the fallback did not start")
	}
	if err := e.setStep(ctx, o, "fallback", "started"); err != nil {
		return err
	}
	if err := e.guard(ctx, o); err != nil {
		return err
	}
	ts := e.post(ctx, in.Channel, in.ThreadTS, progressMsg(in, "Fallback: "+what+"…", nil, ""))
	live := newLiveMessage(ctx, e.chat, in.Channel, ts, e.opt.UpdateInterval, nil)
	var lines []string
	var res platforms.Result
	var err error
	if in.Fallback == fallbackScaleZero {
		res, err = fb.ScaleToZero(ctx, false)
	} else {
		res, err = fb.SetArtifact(ctx, in.Target.Artifact, false, func(p platforms.Progress) {
			lines = appendProgress(lines, p.Message)
			live.Set(progressMsg(in, "Fallback: "+what+"…", lines, ""))
		})
	}
	if err != nil {
		live.Close(progressMsg(in, "Fallback: "+what+"…", lines, ""))
		if ctx.Err() != nil {
			return err
		}
		return failf("the fallback failed too: %s. Investigate; you may need to rebuild the previous version from source (runbook FAQ).", e.userText(err, "fallback", "incident", in.ID))
	}
	e.recordOwned(ctx, o, "fallback", string(res.Outcome)+": "+res.Detail)
	live.Close(rolledBackMsg(in, res, 0, lines, ""))
	if err := e.setStep(ctx, o, "fallback", "done"); err != nil {
		return err
	}
	if in.Fallback == fallbackScaleZero {
		return failf("scaled to zero: the service is down on purpose; investigate before bringing it back")
	}
	return e.advance(ctx, o, state.Verifying, func(in *state.Incident) { delete(in.Steps, "verify") })
}

// setMessage remembers which message shows a role of the incident.
func (e *Engine) setMessage(ctx context.Context, o *owned, role, ts string) {
	if ts == "" {
		return
	}
	set := func(in *state.Incident) {
		if in.Messages == nil {
			in.Messages = map[string]string{}
		}
		in.Messages[role] = ts
	}
	set(o.in)
	if err := e.updateOwned(ctx, o, set); err != nil {
		e.log.Warn("save message ts", "incident", o.in.ID, "err", err)
	}
}
