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

// The post-rollback writes that keep the bad version out of later deploys
// (runbook §6, "Tag the bad deployment DO_NOT_DEPLOY" and "Remove bad image
// from registry or mark as deprecated"): the mark in the image's OCI
// registry and the service's deploy lock, which the deploy gate
// (`rollbot deployable`, GET /v1/deployable) answers from.

// registryTimeout bounds the registry mark: a registry that hangs must
// not hold up the rest of the post-rollback actions for long.
const registryTimeout = 30 * time.Second

// postPlan is what the post-rollback actions will write besides rollbot's
// own state, for the confirmation ("" when nothing).
func postPlan(svc *Service, bad platforms.Revision) string {
	var parts []string
	if svc.Registry != nil && bad.Artifact != "" {
		parts = append(parts, svc.Registry.Plan(bad.Artifact))
	}
	if svc.Admission != nil && bad.Artifact != "" {
		parts = append(parts, "refuse the image in "+svc.Admission.Where())
	}
	if svc.DeployLock {
		parts = append(parts, "lock deploys of "+svc.Name+" until `/rollback unlock "+svc.Name+"`")
	}
	return strings.Join(parts, "; ")
}

// gateActions makes the registry mark and sets the deploy lock, each once:
// Steps "registry" and "deploy_lock" record "started" before and "done"
// after. Both are re-entrant (the registry mark of this incident is found
// if it exists; the lock is a plain set), so a replica that takes over
// after they started makes them again safely. done receives checklist
// details by item key; notes receives why an item stays open.
func (e *Engine) gateActions(ctx context.Context, o *owned, done, notes map[string]string) {
	in, svc := o.in, o.svc
	if svc.Registry != nil && in.Bad.Artifact != "" && o.in.Steps["registry"] != "done" {
		if d, n := e.registryMark(ctx, o); d != "" {
			done["registry"] = d
		} else if n != "" {
			notes["registry"] = n
		}
	}
	if svc.Admission != nil && in.Bad.Artifact != "" && o.in.Steps["admission"] != "done" {
		line := e.forbidImage(ctx, o)
		prev := done["dnd"]
		if prev == "" {
			prev = o.in.Done["dnd"]
		}
		done["dnd"] = strings.TrimPrefix(prev+"; "+line, "; ")
	}
	if svc.DeployLock && o.in.Steps["deploy_lock"] != "done" {
		line := "deploys of " + svc.Name + " locked until an approver runs `/rollback unlock " + svc.Name + "`"
		if err := e.lockDeploys(ctx, o); err != nil {
			line = ":warning: the deploy lock was not set: " + e.userText(err, "lock deploys", "incident", in.ID) + "; pipelines are not held back"
			e.recordOwned(ctx, o, "postactions", line)
		}
		// The lock belongs to the DO_NOT_DEPLOY item.
		prev := done["dnd"]
		if prev == "" {
			prev = o.in.Done["dnd"]
		}
		done["dnd"] = strings.TrimPrefix(prev+"; "+line, "; ")
	}
}

// registryMark marks the bad image in the registry. It returns the
// checklist detail when the mark is there, else the note saying why not.
func (e *Engine) registryMark(ctx context.Context, o *owned) (detail, note string) {
	in, svc := o.in, o.svc
	fail := func(err error) (string, string) {
		msg := e.userText(err, "mark the image in the registry", "incident", in.ID, "service", svc.Name)
		line := "registry mark of `" + in.Bad.Artifact + "` not made: " + msg + "; mark or remove the image by hand, then tick this item"
		e.recordOwned(ctx, o, "postactions", line)
		return "", line
	}
	if err := e.recordOwned(ctx, o, "postactions", "marking "+in.Bad.Artifact+" DO_NOT_DEPLOY in "+svc.Registry.Target()); err != nil {
		return fail(err)
	}
	if err := e.setStep(ctx, o, "registry", "started"); err != nil {
		return fail(err)
	}
	if err := e.guard(ctx, o); err != nil {
		return fail(err)
	}
	rctx, cancel := context.WithTimeout(ctx, registryTimeout)
	res, err := svc.Registry.MarkImage(rctx, in.Bad.Artifact, platforms.ImageMark{Service: svc.Name, Incident: in.ID,
		By: in.DecidedBy, Reason: in.Reason, At: e.now()})
	cancel()
	if err != nil {
		return fail(err)
	}
	if err := e.store.SetRegistryMark(ctx, svc.Name, in.Bad.Artifact, state.RegistryMark{Repository: res.Repository, Digest: res.Digest,
		Referrer: res.Referrer, Via: res.Via, TagDeleted: res.TagDeleted, At: e.now()}); err != nil {
		e.log.Warn("record the registry mark", "incident", in.ID, "err", err)
	}
	detail = registryDetail(res)
	e.recordOwned(ctx, o, "postactions", "registry: "+detail)
	if err := e.setStep(ctx, o, "registry", "done"); err != nil {
		e.log.Warn("record registry step done", "incident", in.ID, "err", err)
	}
	return detail, ""
}

// registryDetail is the checklist line of a registry mark, with a link to
// the mark's manifest.
func registryDetail(res platforms.ImageMarkResult) string {
	ref := "`" + shortDigest(res.Referrer) + "`"
	if res.Link != "" {
		ref = "<" + res.Link + "|" + shortDigest(res.Referrer) + ">"
	}
	d := fmt.Sprintf("marked by rollbot in `%s`: DO_NOT_DEPLOY artifact %s refers to `%s` (%s)", res.Repository, ref, shortDigest(res.Digest), res.Via)
	if res.Existing {
		d += ", already made before a takeover"
	}
	if res.TagDeleted != "" {
		d += "; tag `" + res.TagDeleted + "` deleted"
	}
	return d
}

func shortDigest(d string) string {
	algo, hex, ok := strings.Cut(d, ":")
	if !ok || len(hex) <= 12 {
		return d
	}
	return algo + ":" + hex[:12]
}

// forbidImage makes the cluster refuse the bad image (by tag, and by
// digest once the registry mark resolved it), timeline first; it returns
// the line for the checklist.
func (e *Engine) forbidImage(ctx context.Context, o *owned) string {
	in, svc := o.in, o.svc
	fail := func(err error) string {
		line := ":warning: " + svc.Admission.Where() + " does not refuse `" + in.Bad.Artifact + "`: " + e.userText(err, "admission policy", "incident", in.ID)
		e.recordOwned(ctx, o, "postactions", line)
		return line
	}
	if err := e.recordOwned(ctx, o, "postactions", "making "+svc.Admission.Where()+" refuse "+in.Bad.Artifact); err != nil {
		return fail(err)
	}
	if err := e.setStep(ctx, o, "admission", "started"); err != nil {
		return fail(err)
	}
	if err := e.guard(ctx, o); err != nil {
		return fail(err)
	}
	digest := ""
	if marks, err := e.store.Marks(ctx, svc.Name); err == nil {
		digest = marks[in.Bad.Artifact].Digest
	}
	res, err := svc.Admission.Forbid(ctx, in.Bad.Artifact, digest, platforms.ImageMark{Service: svc.Name, Incident: in.ID, By: in.DecidedBy, Reason: in.Reason, At: e.now()})
	if err != nil {
		return fail(err)
	}
	e.recordOwned(ctx, o, "postactions", "admission: "+res.Detail)
	if err := e.setStep(ctx, o, "admission", "done"); err != nil {
		e.log.Warn("record admission step done", "incident", in.ID, "err", err)
	}
	return res.Detail + " (lift: `/rollback allow " + svc.Name + " " + in.Bad.ID + "`)"
}

// allow answers `/rollback allow <service> <version>`: an approver lets the
// cluster run an image it refuses after a rollback. It is recorded on the
// timeline of the rollback that marked it (else of the newest one of the
// service) before the policy changes, and said in the channel. The
// DO_NOT_DEPLOY mark itself stays (the deploy gate still names it).
func (e *Engine) allow(ctx context.Context, sc SlashCommand, cmd Command) {
	svc := e.services[cmd.Service]
	if svc.Admission == nil {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg(svc.Name+" has no admission policy (set `kubernetes.admission: true`); nothing to allow"))
		return
	}
	incident, version := "", cmd.To
	if marks, err := e.store.Marks(ctx, svc.Name); err == nil {
		for _, m := range marks {
			if state.MarkMatches(m, cmd.To) {
				incident, version = m.Incident, m.Artifact
			}
		}
	}
	if incident == "" {
		if recent, err := e.store.Recent(ctx, svc.Name, 1); err == nil && len(recent) > 0 {
			incident = recent[0].ID
		}
	}
	if !e.allowed(ctx, svc.Approvers, sc.UserID) {
		if incident != "" {
			e.record(ctx, incident, sc.UserID, "allow", "refused: not allowed to lift the admission refusal of "+cmd.To)
		}
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, notAllowedMsg(svc.Name, "lift the admission refusal", who(svc.Approvers)))
		return
	}
	if incident != "" {
		if err := e.record(ctx, incident, sc.UserID, "allow", "lifting the admission refusal of "+version+" in "+svc.Admission.Where()); err != nil {
			e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg("nothing was changed: "+e.userText(err, "record allow")+"; try again"))
			return
		}
	}
	qctx, cancel := context.WithTimeout(ctx, 2*e.opt.QueryTimeout)
	res, err := svc.Admission.Allow(qctx, version)
	cancel()
	if err != nil {
		text := e.userText(err, "lift the admission refusal", "service", svc.Name)
		if incident != "" {
			e.record(ctx, incident, sc.UserID, "allow", "failed: "+text)
		}
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg(text))
		return
	}
	if incident != "" {
		e.record(ctx, incident, sc.UserID, "allow", res.Detail)
	}
	if res.Outcome == platforms.Skipped {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, simple(":information_source: "+res.Detail+"; nothing to do."))
		return
	}
	e.post(ctx, sc.ChannelID, "", allowedMsg(svc.Name, res.Detail, sc.UserID))
}

// lockDeploys sets the service's deploy lock, timeline first.
func (e *Engine) lockDeploys(ctx context.Context, o *owned) error {
	in, svc := o.in, o.svc
	if err := e.recordOwned(ctx, o, "postactions", "locking deploys of "+svc.Name+" until an approver runs /rollback unlock "+svc.Name); err != nil {
		return err
	}
	if err := e.setStep(ctx, o, "deploy_lock", "started"); err != nil {
		return err
	}
	if err := e.guard(ctx, o); err != nil {
		return err
	}
	if err := e.store.LockDeploys(ctx, state.DeployLock{Service: svc.Name, Incident: in.ID, By: in.DecidedBy, Reason: in.Reason, At: e.now()}); err != nil {
		return err
	}
	return e.setStep(ctx, o, "deploy_lock", "done")
}

// unlock answers `/rollback unlock <service>`: an approver lifts the
// deploy lock a rollback left. It is recorded on that rollback's
// timeline before the lock is lifted, and said in the channel.
func (e *Engine) unlock(ctx context.Context, sc SlashCommand, cmd Command) {
	svc := e.services[cmd.Service]
	l, err := e.store.DeployLockOf(ctx, svc.Name)
	if err != nil {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg(e.userText(err, "read the deploy lock", "service", svc.Name)))
		return
	}
	if l == nil {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, simple(":information_source: Deploys of "+svc.Name+" are not locked; nothing to do."))
		return
	}
	if !e.allowed(ctx, svc.Approvers, sc.UserID) {
		e.record(ctx, l.Incident, sc.UserID, "unlock", "refused: not allowed to lift the deploy lock of "+svc.Name)
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, notAllowedMsg(svc.Name, "lift the deploy lock", who(svc.Approvers)))
		return
	}
	if err := e.record(ctx, l.Incident, sc.UserID, "unlock", "deploy lock of "+svc.Name+" lifted"); err != nil {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg("the deploy lock was not lifted: "+e.userText(err, "record unlock")+"; try again"))
		return
	}
	if err := e.store.UnlockDeploys(ctx, svc.Name, l.Incident); err != nil {
		if errors.Is(err, state.ErrLockChanged) {
			e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg("a newer rollback locked deploys of "+svc.Name+" in the meantime; see `/rollback status "+svc.Name+"` and run the command again"))
			return
		}
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg("the deploy lock was not lifted: "+e.userText(err, "unlock deploys")))
		return
	}
	e.post(ctx, sc.ChannelID, "", unlockedMsg(svc.Name, l, sc.UserID))
}
