package handlers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"rollbot/platforms"
	"rollbot/state"
)

// Step values of Steps["owner"]: pausing the workload's GitOps owner.
const (
	ownerStarted    = "started"
	ownerDone       = "done"
	ownerRefused    = "refused"    // it could not be paused: nothing was rolled back
	ownerOverridden = "overridden" // an approver chose to roll back anyway
)

// pauseOwner pauses the workload's GitOps owner (Argo CD auto-sync, Flux
// suspend) before the first write of the rollback, so that the owner does
// not put the bad version back. It is a platform write like the others:
// on the timeline first, guarded by the lease and the service lock, and
// made once across a takeover (the adapter finds a pause this incident
// already made). When the owner cannot be paused nothing is rolled back:
// the failure offers "Roll back anyway" to the approvers.
func (e *Engine) pauseOwner(ctx context.Context, o *owned) error {
	in, svc := o.in, o.svc
	op, ok := svc.Platform.(platforms.OwnerPauser)
	if !ok || in.Steps["owner"] == ownerDone || in.Steps["owner"] == ownerOverridden {
		return nil
	}
	owner, err := op.OwnerOf(ctx)
	if err != nil {
		return failf("rollbot could not read who owns %s, so it changed nothing: %s", svc.Platform.Target(), e.userText(err, "read owner", "incident", in.ID))
	}
	if owner != nil && owner.Kind == platforms.OwnerHelm && owner.Problem != "" {
		// The rollback goes through the release: without it there is
		// nothing to roll back through, and nothing is written.
		msg := "rollbot rolls " + svc.Platform.Target() + " back through " + owner.Label() + ", but " + owner.Problem + ". Nothing was changed"
		e.recordOwned(ctx, o, "owner", msg)
		return failf("%s", msg)
	}
	if owner == nil || !owner.GitOps() {
		return nil
	}
	if err := e.recordOwned(ctx, o, "owner", "pausing "+owner.Label()+" before the rollback"); err != nil {
		return failf("could not write the timeline, so nothing was changed")
	}
	if err := e.setStep(ctx, o, "owner", ownerStarted); err != nil {
		return err
	}
	if err := e.guard(ctx, o); err != nil {
		return err
	}
	res, pause, err := op.PauseOwner(ctx, in.ID, false)
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		msg := e.userText(err, "pause owner", "incident", in.ID, "service", svc.Name)
		e.recordOwned(ctx, o, "owner", "could not pause "+owner.Label()+", so nothing was rolled back: "+msg)
		if err := e.setStep(ctx, o, "owner", ownerRefused); err != nil {
			return err
		}
		return failf("%s could not be paused, so rollbot did not roll back (it would put the bad version back): %s", owner.Label(), msg)
	}
	if err := e.recordOwned(ctx, o, "owner", string(res.Outcome)+": "+res.Detail); err != nil {
		return err
	}
	if err := e.updateOwned(ctx, o, func(in *state.Incident) {
		in.OwnerPause = pause
		if in.Steps == nil {
			in.Steps = map[string]string{}
		}
		in.Steps["owner"] = ownerDone
	}); err != nil {
		return err
	}
	e.post(ctx, in.Channel, in.ThreadTS, ownerPausedMsg(o.in, res))
	return nil
}

// overrideOwner is "Roll back anyway": an approver chooses to roll back
// although the owner could not be paused. The rollback starts without the
// pause (and without stopping the rollout first); the timeline says who
// chose it.
func (e *Engine) overrideOwner(ctx context.Context, a Action) {
	in, svc, ok := e.incidentFor(ctx, a)
	if !ok {
		return
	}
	if !e.allowed(ctx, svc.Approvers, a.UserID) {
		e.record(ctx, in.ID, a.UserID, "owner", "refused: not allowed to roll back anyway")
		e.ephemeral(ctx, a.ChannelID, a.UserID, notAllowedMsg(svc.Name, "roll back without pausing the owner", who(svc.Approvers)))
		return
	}
	if in.Steps["owner"] != ownerRefused {
		e.ephemeral(ctx, a.ChannelID, a.UserID, alreadyDecidedMsg(in))
		return
	}
	if holder, err := e.store.LockHolder(ctx, in.Service); err != nil || holder == nil || holder.Token != in.Lock {
		e.record(ctx, in.ID, a.UserID, "owner", "refused: the service lock is no longer this rollback's")
		e.ephemeral(ctx, a.ChannelID, a.UserID, errorMsg(lockLostText(in, holder)))
		return
	}
	in, ok = e.decideWork(ctx, a, in.ID, []state.Status{state.RollbackFailed}, state.RollingBack, func(in *state.Incident) {
		in.DecidedBy, in.HeldUntil = a.UserID, time.Time{}
		in.Steps["owner"] = ownerOverridden
		in.StopLine = "skipped: rolling back anyway, without pausing the owner"
	}, "record the decision")
	if !ok {
		return
	}
	e.record(ctx, in.ID, a.UserID, "owner", "chose to roll back anyway, without pausing the owner")
	e.update(ctx, in.Channel, a.MessageTS, ownerOverriddenMsg(in, a.UserID))
	e.work(in, svc, "")
}

// watchBadVersion is part of each verification round of a rollback whose
// owner was paused (or may reconcile): when the platform runs the bad
// version again (someone resumed the sync, or applied the old manifest),
// it says so in the thread at once, once, and the pods item waits again.
func (e *Engine) watchBadVersion(ctx context.Context, o *owned, v *Verification, said *bool) {
	in, svc := o.in, o.svc
	if in.Bad.Artifact == "" || in.Bad.Artifact == in.Target.Artifact {
		return
	}
	qctx, cancel := context.WithTimeout(ctx, e.opt.QueryTimeout)
	snap, err := svc.Platform.Snapshot(qctx)
	cancel()
	if err != nil || snap.Current.Artifact != in.Bad.Artifact {
		return
	}
	// The pods item starts over: it cannot hold its soak while the bad
	// version runs.
	it := &v.Items[0]
	it.State, it.At = ItemPending, time.Time{}
	it.Since, it.Bad, it.LastBad = time.Time{}, true, e.now()
	it.Detail = "the bad version " + in.Bad.Artifact + " is back"
	if *said {
		return
	}
	*said = true
	e.recordOwned(ctx, o, "verify", "the bad version "+in.Bad.Artifact+" is back on "+svc.Platform.Target())
	e.post(ctx, in.Channel, in.ThreadTS, badVersionBackMsg(in, svc.Platform.Target(), snap.Owner))
}

// gitChange reads, after a verified rollback of a GitOps-owned workload,
// what must change in Git, and posts it.
func (e *Engine) gitChange(ctx context.Context, o *owned) {
	in, svc := o.in, o.svc
	op, ok := svc.Platform.(platforms.OwnerPauser)
	if !ok || in.OwnerPause == nil {
		return
	}
	g, err := op.GitChange(ctx, *in.OwnerPause, in.Bad, in.Target)
	if err != nil {
		g.Note = e.userText(err, "read the owner's source", "incident", in.ID)
	}
	e.recordOwned(ctx, o, "postactions", "git: "+gitChangeLine(g))
	if err := e.updateOwned(ctx, o, func(in *state.Incident) { in.GitChange = &g }); err != nil {
		e.log.Warn("save the git change", "incident", in.ID, "err", err)
	}
	e.post(ctx, in.Channel, in.ThreadTS, gitChangeMsg(o.in, g))
}

// resumeSync is `/rollback resume-sync <service>`: it restores exactly
// what the newest rollback of the service paused on its GitOps owner.
func (e *Engine) resumeSync(ctx context.Context, sc SlashCommand, cmd Command) {
	svc := e.services[cmd.Service]
	op, ok := svc.Platform.(platforms.OwnerPauser)
	if !ok {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg(svc.Platform.Kind()+" services have no GitOps owner for rollbot to resume"))
		return
	}
	if !e.allowed(ctx, svc.Approvers, sc.UserID) {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, notAllowedMsg(svc.Name, "resume the sync", who(svc.Approvers)))
		return
	}
	recent, err := e.store.Recent(ctx, svc.Name, 20)
	if err != nil {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg(e.userText(err, "read incidents")))
		return
	}
	var in *state.Incident
	for _, r := range recent {
		if r.OwnerPause != nil && r.OwnerPause.Changed && !r.OwnerPause.Resumed {
			in = r
			break
		}
	}
	if in == nil {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg("no rollback of "+svc.Name+" left its owner paused: nothing to resume"))
		return
	}
	if in.Status.Working() {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg(fmt.Sprintf("%s is still %s: resume the sync after it ends (the owner would put the bad version back)", in.ID, strings.ReplaceAll(string(in.Status), "_", " "))))
		return
	}
	// The resume writes to the cluster: it holds the service lock, so it
	// never runs beside another rollback of the service.
	lockToken := ""
	if holder, _ := e.store.LockHolder(ctx, svc.Name); holder == nil || holder.Token != in.Lock {
		lock, err := e.store.AcquireLock(ctx, svc.Name, in.ID, sc.UserID, e.opt.LockTTL)
		if errors.Is(err, state.ErrLocked) {
			holderIn, _ := e.store.Get(ctx, lock.Incident)
			e.ephemeral(ctx, sc.ChannelID, sc.UserID, lockedMsg(svc.Name, lock, holderIn))
			return
		}
		if err != nil {
			e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg(e.userText(err, "take the rollback lock", "service", svc.Name)))
			return
		}
		lockToken = lock.Token
		defer e.store.ReleaseLock(ctx, svc.Name, lockToken)
	}
	if err := e.record(ctx, in.ID, sc.UserID, "resume-sync", "resuming "+in.OwnerPause.Owner.Label()); err != nil {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg("could not write the timeline, so nothing was changed; try again"))
		return
	}
	res, err := op.ResumeOwner(e.actingFor(ctx, svc, sc.UserID), *in.OwnerPause)
	if err != nil {
		msg := e.userText(err, "resume owner", "incident", in.ID)
		e.record(ctx, in.ID, sc.UserID, "resume-sync", "failed: "+msg)
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg("resuming "+in.OwnerPause.Owner.Label()+" failed: "+msg))
		return
	}
	e.record(ctx, in.ID, sc.UserID, "resume-sync", string(res.Outcome)+": "+res.Detail)
	cur, err := e.store.Update(ctx, in.ID, state.Claim{}, func(i *state.Incident) {
		if i.OwnerPause != nil {
			i.OwnerPause.Resumed, i.OwnerPause.ResumedBy = true, sc.UserID
		}
	})
	if err != nil {
		e.log.Warn("record the resume", "incident", in.ID, "err", err)
		cur = in
	}
	e.post(ctx, cur.Channel, cur.ThreadTS, ownerResumedMsg(cur, sc.UserID, res))
}
