package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"rollbot/state"
)

// confirm is runbook step 2: an allowed user presses "Roll back". The
// platform is read again first: if it no longer runs the assessed bad
// version (someone fixed it by hand, or deployed since), the click is
// refused with what changed. Then the assessment message shows who
// decided, and either the database step (decision gate) or the app
// rollback starts, owned by this replica.
func (e *Engine) confirm(ctx context.Context, a Action) {
	in, svc, ok := e.incidentFor(ctx, a)
	if !ok {
		return
	}
	if !e.allowed(ctx, svc.Approvers, a.UserID) {
		e.record(ctx, in.ID, a.UserID, "confirm", "refused: not allowed to roll back "+svc.Name)
		e.ephemeral(ctx, a.ChannelID, a.UserID, notAllowedMsg(svc.Name, "roll back", who(svc.Approvers)))
		return
	}
	if in.Status != state.AwaitingConfirm {
		e.ephemeral(ctx, a.ChannelID, a.UserID, alreadyDecidedMsg(in))
		return
	}
	// The lock may have expired while the buttons waited; then another
	// rollback may be running and this assessment is stale.
	if err := e.store.RefreshLock(ctx, svc.Name, in.Lock, e.opt.LockTTL); err != nil {
		e.ephemeral(ctx, a.ChannelID, a.UserID, errorMsg("this assessment expired (the rollback lock was released). Run `/rollback "+svc.Name+"` again."))
		return
	}
	if changed := e.changedSince(ctx, in, svc); changed != "" {
		cur, ok := e.decideMove(ctx, a, in.ID, e.endMove(in, []state.Status{state.AwaitingConfirm}, func(in *state.Incident) {
			in.DecidedBy = a.UserID
		}), "cancel a stale assessment")
		if !ok {
			return
		}
		e.record(ctx, in.ID, a.UserID, "confirm", "refused: "+changed+"; nothing was changed")
		e.update(ctx, cur.Channel, cur.Messages["assessment"], decidedMsg(cur, e.assessmentOf(cur)))
		if cur.Status == state.DrillRestoring {
			e.post(ctx, cur.Channel, cur.ThreadTS, errorMsg(fmt.Sprintf("%s was not rolled back: %s (changed since the assessment at %s). %s", cur.ID, changed, clock(cur.CreatedAt), restoringText(cur))))
			e.work(cur, svc, "")
			return
		}
		e.store.ReleaseLock(ctx, cur.Service, cur.Lock)
		e.post(ctx, cur.Channel, cur.ThreadTS, errorMsg(staleText(cur, changed)))
		return
	}
	next := state.Stopping
	if in.MigrationsRan {
		next = state.AwaitingDBApprove
	}
	// The decision and its timeline event are one transaction: a replica
	// killed right after the click cannot leave a confirmed incident
	// without its "confirmed" record.
	m := state.Move{From: []state.Status{state.AwaitingConfirm}, To: next, Mutate: func(in *state.Incident) {
		in.DecidedBy = a.UserID
	}, Record: func(in *state.Incident) []state.Event {
		return []state.Event{{Actor: a.UserID, Step: "confirm", Detail: "confirmed rollback to " + in.Target.Label(), Time: e.now()}}
	}}
	m.Owner, m.Lease = e.opt.Replica, e.opt.Lease
	if next.Working() {
		mutate := m.Mutate
		m.Mutate = func(in *state.Incident) { in.StepStarted = e.now(); mutate(in) }
	} else {
		// The DB approval request is owed with the move: should this
		// replica die before it is posted, another one posts it.
		m.Show = showDBRequest
	}
	cur, ok := e.decideMove(ctx, a, in.ID, m, "record the decision")
	if !ok {
		return
	}
	if cur.Show != "" {
		e.showWait(ctx, cur, svc)
		return
	}
	e.update(ctx, cur.Channel, cur.Messages["assessment"], decidedMsg(cur, e.assessmentOf(cur)))
	e.work(cur, svc, "")
}

// changedSince reads the platform again and says what changed since the
// assessment, or "" when it still runs the assessed bad version. A read
// that fails does not block the rollback: the write steps are
// compare-and-set on every adapter.
func (e *Engine) changedSince(ctx context.Context, in *state.Incident, svc *Service) string {
	qctx, cancel := context.WithTimeout(ctx, 2*e.opt.QueryTimeout)
	defer cancel()
	snap, err := svc.Platform.Snapshot(qctx)
	if err != nil {
		e.log.Warn("re-read the platform before acting", "incident", in.ID, "err", err)
		return ""
	}
	if in.Bad.Artifact == "" || snap.Current.Artifact == in.Bad.Artifact {
		return ""
	}
	return fmt.Sprintf("%s now runs %s, not the assessed bad version %s", svc.Platform.Target(), snap.Current.Label(), in.Bad.Label())
}

func staleText(in *state.Incident, changed string) string {
	return fmt.Sprintf("%s was not rolled back: %s (changed since the assessment at %s). Nothing was changed and the service is released. Run `/rollback %s` again to assess what runs now.",
		in.ID, changed, clock(in.CreatedAt), in.Service)
}

// cancel ends the incident before anything changed; a drill's, before
// its rollback, puts back the version the drill found first.
func (e *Engine) cancel(ctx context.Context, a Action) {
	in, svc, ok := e.incidentFor(ctx, a)
	if !ok {
		return
	}
	if a.UserID != in.RequestedBy && !e.allowed(ctx, svc.Approvers, a.UserID) {
		e.record(ctx, in.ID, a.UserID, "cancel", "refused: not allowed")
		e.ephemeral(ctx, a.ChannelID, a.UserID, notAllowedMsg(svc.Name, "cancel this rollback", who(svc.Approvers)+" or the requester"))
		return
	}
	in, ok = e.decideMove(ctx, a, in.ID, e.endMove(in, []state.Status{state.AwaitingConfirm, state.AwaitingDBApprove}, func(in *state.Incident) {
		in.DecidedBy = a.UserID
	}), "cancel")
	if !ok {
		return
	}
	if in.Status == state.DrillRestoring {
		e.record(ctx, in.ID, a.UserID, "cancel", "cancelled the drill before its rollback; rollbot puts back "+in.Drill.Original.Label())
	} else {
		e.record(ctx, in.ID, a.UserID, "cancel", "cancelled before any change")
		e.store.ReleaseLock(ctx, in.Service, in.Lock)
	}
	e.update(ctx, in.Channel, in.Messages["assessment"], decidedMsg(in, e.assessmentOf(in)))
	if ts := in.Messages["db"]; ts != "" {
		e.update(ctx, in.Channel, ts, dbClosedMsg(in, "Cancelled by <@"+a.UserID+">: the database was not touched."))
	}
	if in.Status == state.DrillRestoring {
		// The service stays locked until the drill's original is back.
		e.post(ctx, in.Channel, in.ThreadTS, simple(":information_source: Drill "+in.ID+" cancelled before its rollback: "+restoringText(in)))
		e.work(in, svc, "")
	}
}

// decide applies a click's state change. A click that lost the race (a
// double click, a second approver) is told who decided; a failure is
// reported; both report false and change nothing.
func (e *Engine) decide(ctx context.Context, a Action, id string, from []state.Status, to state.Status, mutate func(*state.Incident), op string) (*state.Incident, bool) {
	return e.decideMove(ctx, a, id, state.Move{From: from, To: to, Mutate: mutate}, op)
}

// decideWork is decide for a click that starts a working step: this
// replica becomes its owner (a new claim and the lease, in the same
// transaction), and the step's budget starts.
func (e *Engine) decideWork(ctx context.Context, a Action, id string, from []state.Status, to state.Status, mutate func(*state.Incident), op string) (*state.Incident, bool) {
	return e.decideMove(ctx, a, id, state.Move{From: from, To: to, Owner: e.opt.Replica, Lease: e.opt.Lease, Mutate: func(in *state.Incident) {
		in.StepStarted = e.now()
		if mutate != nil {
			mutate(in)
		}
	}}, op)
}

func (e *Engine) decideMove(ctx context.Context, a Action, id string, m state.Move, op string) (*state.Incident, bool) {
	in, err := e.store.Advance(ctx, id, m)
	switch {
	case errors.Is(err, state.ErrStale):
		e.ephemeral(ctx, a.ChannelID, a.UserID, alreadyDecidedMsg(in))
		return nil, false
	case err != nil:
		e.ephemeral(ctx, a.ChannelID, a.UserID, errorMsg(e.userText(err, op, "incident", id)))
		return nil, false
	}
	return in, true
}

// incidentFor loads the incident a button belongs to. Every button goes
// through it, so it is also where a click is bound to the incident: one
// from another channel than the incident's (a copied or forwarded message,
// a crafted payload) is refused, recorded on the timeline, and changes
// nothing.
func (e *Engine) incidentFor(ctx context.Context, a Action) (*state.Incident, *Service, bool) {
	id := a.Value
	if i := indexByte(id, '|'); i >= 0 {
		id = id[:i]
	}
	in, err := e.store.Get(ctx, id)
	if err != nil {
		e.ephemeral(ctx, a.ChannelID, a.UserID, errorMsg(e.userText(err, "load incident "+id)))
		return nil, nil, false
	}
	if a.ChannelID != in.Channel {
		e.record(ctx, in.ID, a.UserID, "interaction", "refused: "+a.ActionID+" clicked in channel "+a.ChannelID+", not in the incident's channel")
		e.ephemeral(ctx, a.ChannelID, a.UserID, errorMsg("this button belongs to rollback "+in.ID+" in <#"+in.Channel+">; act on it there. Nothing was done."))
		return nil, nil, false
	}
	svc := e.services[in.Service]
	if svc == nil {
		e.ephemeral(ctx, a.ChannelID, a.UserID, errorMsg("service "+in.Service+" is no longer in rollbot's config"))
		return nil, nil, false
	}
	return in, svc, true
}

// assessmentOf decodes the stored assessment of an incident.
func (e *Engine) assessmentOf(in *state.Incident) *Assessment {
	a := &Assessment{Service: in.Service, Target: in.PlatformTgt, Bad: in.Bad, Good: in.Target, HasGood: in.Target.ID != ""}
	if len(in.Assessment) > 0 {
		if err := json.Unmarshal(in.Assessment, a); err != nil {
			e.log.Warn("decode stored assessment", "incident", in.ID, "err", err)
		}
	}
	return a
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}
