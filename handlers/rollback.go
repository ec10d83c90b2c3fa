package handlers

import (
	"context"
	"fmt"
	"time"

	"rollbot/platforms"
	"rollbot/state"
)

// rollBackApp is runbook §2 and §3: stop the rollout, then roll back,
// with live progress in the thread; then verification (§5).
func (e *Engine) rollBackApp(ctx context.Context, in *state.Incident, svc *Service) {
	stopKeepAlive := e.keepLock(ctx, in)
	defer stopKeepAlive()

	progTS := e.post(ctx, in.Channel, in.ThreadTS, progressMsg(in, "Stopping the rollout…", nil, ""))
	e.setMessage(ctx, in, "progress", progTS)

	// §2 stop: written to the timeline before it acts.
	if err := e.record(ctx, in.ID, "rollbot", "stop", "stopping the rollout of "+svc.Platform.Target()); err != nil {
		e.failRollback(ctx, in, svc, progTS, "could not write the timeline, so nothing was changed")
		return
	}
	res, err := svc.Platform.Stop(ctx, false)
	if err != nil {
		msg := e.userText(err, "stop rollout", "incident", in.ID, "service", svc.Name)
		e.record(ctx, in.ID, "rollbot", "stop", "failed: "+msg)
		e.failRollback(ctx, in, svc, progTS, "stopping the rollout failed: "+msg)
		return
	}
	e.record(ctx, in.ID, "rollbot", "stop", string(res.Outcome)+": "+res.Detail)

	// §3 roll back.
	if _, err := e.store.Transition(ctx, in.ID, []state.Status{state.Stopping}, state.RollingBack, nil); err != nil {
		e.log.Error("transition to rolling back", "incident", in.ID, "err", err)
	}
	in.Status = state.RollingBack
	if err := e.record(ctx, in.ID, "rollbot", "rollback", fmt.Sprintf("rolling back %s from %s to %s", svc.Platform.Target(), in.Bad.Label(), in.Target.Label())); err != nil {
		e.failRollback(ctx, in, svc, progTS, "could not write the timeline, so the rollback did not start")
		return
	}
	live := newLiveMessage(ctx, e.chat, in.Channel, progTS, e.opt.UpdateInterval, func(err error) { e.log.Warn("progress update", "err", err) })
	started := e.now()
	stopLine := string(res.Outcome) + ": " + res.Detail
	var lines []string
	res, err = svc.Platform.Rollback(ctx, in.Target, false, func(p platforms.Progress) {
		lines = appendProgress(lines, p.Message)
		live.Set(progressMsg(in, "Rolling back…", lines, stopLine))
	})
	took := e.now().Sub(started).Round(100 * time.Millisecond)
	if err != nil {
		msg := e.userText(err, "roll back", "incident", in.ID, "service", svc.Name)
		e.record(ctx, in.ID, "rollbot", "rollback", "failed after "+took.String()+": "+msg)
		live.Close(progressMsg(in, "Rolling back…", lines, stopLine))
		e.failRollback(ctx, in, svc, progTS, msg)
		return
	}
	e.record(ctx, in.ID, "rollbot", "rollback", fmt.Sprintf("%s in %s: %s", res.Outcome, took, res.Detail))
	target := in.Target
	target.CreatedAt = e.now()
	if err := e.store.RecordDeployed(ctx, svc.Name, target); err != nil {
		e.log.Warn("record deployed version", "service", svc.Name, "err", err)
	}
	live.Close(rolledBackMsg(in, res, took, lines, stopLine))

	e.verify(ctx, in, svc)
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

// failRollback records the failure and offers the runbook FAQ's fallbacks.
func (e *Engine) failRollback(ctx context.Context, in *state.Incident, svc *Service, ts, msg string) {
	if cur, err := e.store.Transition(ctx, in.ID, []state.Status{state.Stopping, state.RollingBack, state.RollingBackDB, state.Verifying}, state.RollbackFailed, nil); err != nil {
		e.log.Error("transition to failed", "incident", in.ID, "err", err)
	} else {
		in = cur
	}
	fallbacks := e.hasFallbacks(svc)
	if !fallbacks {
		// Nothing more rollbot can do here: free the service, so the team
		// can fix the cause and run /rollback again.
		e.store.ReleaseLock(ctx, in.Service, in.Lock)
	}
	m := rollbackFailedMsg(in, msg, svc.Platform.Kind(), fallbacks)
	if ts == "" {
		e.setMessage(ctx, in, "progress", e.post(ctx, in.Channel, in.ThreadTS, m))
	} else {
		e.update(ctx, in.Channel, ts, m)
	}
	// With fallbacks on offer the lock stays held until one runs, someone
	// ends the rollback, or the lock expires.
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
	fb, ok := svc.Platform.(platforms.Fallbacks)
	if !ok {
		e.ephemeral(ctx, a.ChannelID, a.UserID, errorMsg(svc.Platform.Kind()+" has no fallback steps"))
		return
	}
	if !e.allowed(ctx, svc.Approvers, a.UserID) {
		e.record(ctx, in.ID, a.UserID, "fallback", "refused: not allowed")
		e.ephemeral(ctx, a.ChannelID, a.UserID, notAllowedMsg(svc.Name, "run a fallback", who(svc.Approvers)))
		return
	}
	what := "set the image explicitly to " + in.Target.Artifact
	if a.ActionID == ActFallbackZero {
		what = "scale " + svc.Platform.Target() + " to zero"
	}
	if err := e.record(ctx, in.ID, a.UserID, "fallback", what); err != nil {
		e.ephemeral(ctx, a.ChannelID, a.UserID, errorMsg("could not write the timeline, so nothing was done; try again"))
		return
	}
	in, ok = e.decide(ctx, a, in.ID, []state.Status{state.RollbackFailed, state.VerifyFailed}, state.RollingBack, func(in *state.Incident) {
		in.DecidedBy = a.UserID
	}, "record the decision")
	if !ok {
		return
	}
	e.update(ctx, in.Channel, a.MessageTS, fallbackChosenMsg(in, a.UserID, what))
	e.spawn("fallback", e.opt.StepTimeout, func(ctx context.Context) {
		stop := e.keepLock(ctx, in)
		defer stop()
		ts := e.post(ctx, in.Channel, in.ThreadTS, progressMsg(in, "Fallback: "+what+"…", nil, ""))
		live := newLiveMessage(ctx, e.chat, in.Channel, ts, e.opt.UpdateInterval, nil)
		var lines []string
		var res platforms.Result
		var err error
		if a.ActionID == ActFallbackZero {
			res, err = fb.ScaleToZero(ctx, false)
		} else {
			res, err = fb.SetArtifact(ctx, in.Target.Artifact, false, func(p platforms.Progress) {
				lines = appendProgress(lines, p.Message)
				live.Set(progressMsg(in, "Fallback: "+what+"…", lines, ""))
			})
		}
		if err != nil {
			msg := e.userText(err, "fallback", "incident", in.ID)
			e.record(ctx, in.ID, "rollbot", "fallback", "failed: "+msg)
			live.Close(progressMsg(in, "Fallback: "+what+"…", lines, ""))
			e.failRollback(ctx, in, svc, "", "the fallback failed too: "+msg+". Investigate; you may need to rebuild the previous version from source (runbook FAQ).")
			return
		}
		e.record(ctx, in.ID, "rollbot", "fallback", string(res.Outcome)+": "+res.Detail)
		live.Close(rolledBackMsg(in, res, 0, lines, ""))
		if a.ActionID == ActFallbackZero {
			e.finish(ctx, in, svc, state.VerifyFailed, "scaled to zero: the service is down on purpose; investigate before bringing it back")
			return
		}
		e.verify(ctx, in, svc)
	})
}

// keepLock refreshes the service lock while a long step runs.
func (e *Engine) keepLock(ctx context.Context, in *state.Incident) func() {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		t := time.NewTicker(e.opt.LockTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := e.store.RefreshLock(ctx, in.Service, in.Lock, e.opt.LockTTL); err != nil {
					e.log.Warn("refresh lock", "incident", in.ID, "err", err)
				}
			}
		}
	}()
	return cancel
}

// setMessage remembers which message shows a role of the incident.
func (e *Engine) setMessage(ctx context.Context, in *state.Incident, role, ts string) {
	if ts == "" {
		return
	}
	set := func(in *state.Incident) {
		if in.Messages == nil {
			in.Messages = map[string]string{}
		}
		in.Messages[role] = ts
	}
	set(in)
	if _, err := e.store.Update(ctx, in.ID, set); err != nil {
		e.log.Warn("save message ts", "incident", in.ID, "err", err)
	}
}
