package handlers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"rollbot/platforms"
	"rollbot/state"
)

// endpointStep is the endpoint switch after a restore (runbook §4: point
// the app at the restored data, then roll back the app), on the timeline.
const endpointStep = "endpoint"

// afterDB moves on from a finished database step. After a restore the app
// is first pointed at the restored data: by rollbot (switching_endpoint),
// or by a DB approver who says so with a button (awaiting_endpoint_switch).
// The app rollback starts only after that.
func (e *Engine) afterDB(ctx context.Context, o *owned) error {
	in, svc := o.in, o.svc
	sw, ok := svc.Database.(platforms.EndpointSwitcher)
	if !in.DBDestructive || in.DBManual || !ok || sw.SwitchMode() == "" {
		return e.advance(ctx, o, state.Stopping, nil)
	}
	mode, at := sw.SwitchMode(), e.now()
	if mode != platforms.SwitchManual {
		return e.advance(ctx, o, state.SwitchingEndpoint, func(in *state.Incident) { in.Switch, in.SwitchAt = mode, at })
	}
	plan := sw.SwitchPlan(ctx, in.ID, at)
	if err := e.recordOwned(ctx, o, endpointStep, "waiting for a DB approver to switch the app's database endpoint by hand: "+plan); err != nil {
		return failf("could not write the timeline, so the endpoint switch was not requested; the app was not rolled back")
	}
	if err := e.advance(ctx, o, state.AwaitingSwitch, func(in *state.Incident) { in.Switch, in.SwitchAt = mode, at }); err != nil {
		return err
	}
	if err := e.store.HoldLock(ctx, o.in, e.opt.Budgets.Hold+time.Minute); err != nil {
		e.log.Warn("hold the service lock", "incident", o.in.ID, "err", err)
	}
	ts := e.post(ctx, o.in.Channel, o.in.ThreadTS, switchWaitMsg(o.in, plan, svc.DBApprovers, e.now().Add(e.opt.Budgets.Hold)))
	e.setMessage(ctx, &owned{in: o.in}, endpointStep, ts)
	return nil
}

// switchStep points the app at the restored data (rename or secret).
// Every write is announced on the timeline first and guarded; a replica
// that takes the step over calls the switch again, which reads the
// instance names (or the Secret) first and does only what is left.
func (e *Engine) switchStep(ctx context.Context, o *owned) error {
	in, svc := o.in, o.svc
	sw, ok := svc.Database.(platforms.EndpointSwitcher)
	if !ok {
		return failf("the database of %s can no longer switch endpoints (config changed?); switch the app to the restored instance by hand", in.Service)
	}
	title := "Endpoint switch (" + in.Switch + ")"
	plan := sw.SwitchPlan(ctx, in.ID, in.SwitchAt)
	resumed := in.Steps[endpointStep] == "started"
	what := "switching the app's database endpoint: " + plan
	if resumed {
		what = "resuming the endpoint switch: reading the current state first, nothing is done twice: " + plan
	}
	if err := e.recordOwned(ctx, o, endpointStep, what); err != nil {
		return failf("could not write the timeline, so the endpoint switch did not start; the app was not rolled back")
	}
	if !resumed {
		if err := e.setStep(ctx, o, endpointStep, "started"); err != nil {
			return err
		}
	}
	ts := e.post(ctx, in.Channel, in.ThreadTS, dbOutputMsg(in, title, "starting…", ""))
	live := newLiveMessage(ctx, e.chat, in.Channel, ts, e.opt.UpdateInterval, nil)
	out := &tailWriter{max: 30, onLine: func(tail string) { live.Set(dbOutputMsg(in, title, "running…", tail)) }}
	steps := platforms.SwitchSteps{
		Before: func(ctx context.Context, what string) error {
			fmt.Fprintln(out, what)
			if err := e.recordOwned(ctx, o, endpointStep, what); err != nil {
				return failf("could not write the timeline before %s, so it was not done", what)
			}
			return e.guard(ctx, o)
		},
		Note: func(line string) {
			fmt.Fprintln(out, line)
			e.recordOwned(ctx, o, endpointStep, line)
		},
	}
	result, err := sw.SwitchEndpoint(ctx, platforms.DBRun{Incident: in.ID, Resumed: resumed}, in.SwitchAt, steps)
	if err != nil {
		var se stepError
		msg := ""
		if errors.As(err, &se) {
			msg = se.msg
		} else {
			msg = e.userText(err, "endpoint switch", "incident", in.ID)
		}
		live.Close(dbOutputMsg(in, title, "failed: "+msg+"\nThe app was *not* rolled back: it waits for the endpoint switch.", out.Tail()))
		if ctx.Err() != nil {
			return err
		}
		return failf("%s; the app was not rolled back", msg)
	}
	e.recordOwned(ctx, o, endpointStep, "done: "+result)
	live.Close(dbOutputMsg(in, title, "done: "+result, out.Tail()))
	if err := e.setStep(ctx, o, endpointStep, "done"); err != nil {
		return err
	}
	return e.advance(ctx, o, state.Stopping, nil)
}

// switchedClicked is a DB approver's "Endpoint switched": the app was
// pointed at the restored data by hand, so the app rollback may start.
func (e *Engine) switchedClicked(ctx context.Context, a Action) {
	in, svc, ok := e.incidentFor(ctx, a)
	if !ok {
		return
	}
	if !e.allowed(ctx, svc.DBApprovers, a.UserID) {
		e.record(ctx, in.ID, a.UserID, endpointStep, "refused: not a DB approver")
		e.ephemeral(ctx, a.ChannelID, a.UserID, notAllowedMsg(svc.Name, "confirm the endpoint switch", who(svc.DBApprovers)))
		return
	}
	if in.Status != state.AwaitingSwitch {
		e.ephemeral(ctx, a.ChannelID, a.UserID, alreadyDecidedMsg(in))
		return
	}
	if holder, err := e.store.LockHolder(ctx, in.Service); err != nil || holder == nil || holder.Token != in.Lock {
		e.record(ctx, in.ID, a.UserID, endpointStep, "refused: the service lock is no longer this rollback's")
		e.ephemeral(ctx, a.ChannelID, a.UserID, errorMsg(lockLostText(in, holder)))
		return
	}
	if err := e.record(ctx, in.ID, a.UserID, endpointStep, "switched the app's database endpoint to the restored instance by hand"); err != nil {
		e.ephemeral(ctx, a.ChannelID, a.UserID, errorMsg("could not write the timeline; nothing was recorded, press the button again"))
		return
	}
	cur, ok := e.decideWork(ctx, a, in.ID, []state.Status{state.AwaitingSwitch}, state.Stopping, func(in *state.Incident) {
		if in.Steps == nil {
			in.Steps = map[string]string{}
		}
		in.Steps[endpointStep] = "done"
	}, "record the endpoint switch")
	if !ok {
		return
	}
	e.update(ctx, cur.Channel, a.MessageTS, switchConfirmedMsg(cur, a.UserID, e.now()))
	e.work(cur, svc, "")
}
