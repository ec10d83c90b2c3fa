package handlers

import (
	"context"
	"strconv"
	"strings"
	"time"

	"rollbot/platforms"
	"rollbot/state"
)

// PostItem is one line of the runbook §6 checklist.
type PostItem struct {
	Key    string
	Text   string
	Done   bool
	Detail string // who/when, or what rollbot did
}

// postItems are runbook §6, in its order. The ones rollbot does itself
// are ticked as it does them; the rest get a "Done" button.
var postItems = []PostItem{
	{Key: "dnd", Text: "Tag the bad deployment DO_NOT_DEPLOY"},
	{Key: "timeline", Text: "Create incident timeline with deployment and rollback times"},
	{Key: "rootcause", Text: "Document root cause in incident channel"},
	{Key: "postmortem", Text: "Schedule postmortem within 24 hours"},
	{Key: "checklist", Text: "Update deployment checklist to prevent recurrence"},
	{Key: "registry", Text: "Remove bad image from registry or mark as deprecated"},
}

// complete ends a verified rollback: the post-rollback actions (§6, each
// done once even across a takeover), then the final status and the
// service released.
func (e *Engine) complete(ctx context.Context, o *owned) error {
	if o.in.Steps["postactions"] == "started" {
		note := "the post-rollback actions were running on a replica that stopped; rollbot does not repeat them (a second postmortem reminder or mark would be noise): check the DO_NOT_DEPLOY mark (`/rollback history " + o.in.Service + "`) and the reminder"
		e.recordOwned(ctx, o, "postactions", note)
		e.post(ctx, o.in.Channel, o.in.ThreadTS, simple(":information_source: "+note+"."))
		// The registry mark and the deploy lock are re-entrant: those the
		// stopped replica had not finished are made here.
		done, notes := map[string]string{}, map[string]string{}
		e.gateActions(ctx, o, done, notes)
		if len(done)+len(notes) > 0 {
			e.saveChecklist(ctx, o, done, notes)
			if ts := o.in.Messages["postactions"]; ts != "" {
				e.update(ctx, o.in.Channel, ts, postActionsMsg(o.in))
			} else {
				e.setMessage(ctx, o, "postactions", e.post(ctx, o.in.Channel, o.in.ThreadTS, postActionsMsg(o.in)))
			}
		}
	}
	if o.in.Steps["postactions"] == "" {
		if err := e.setStep(ctx, o, "postactions", "started"); err != nil {
			return err
		}
		if o.in.Drill != nil {
			e.drillFinish(ctx, o) // a drill's bad version is not marked, no postmortem
		} else {
			e.postActions(ctx, o)
		}
		if err := e.setStep(ctx, o, "postactions", "done"); err != nil {
			return err
		}
	}
	if err := e.advance(ctx, o, state.Completed, nil); err != nil {
		return err
	}
	e.store.ReleaseLock(ctx, o.in.Service, o.in.Lock)
	e.metrics.RollbackFinished(string(state.Completed))
	return nil
}

// postActions is runbook §6.
// A replica that takes over after they started does not repeat them: it
// says which may be missing.
func (e *Engine) postActions(ctx context.Context, o *owned) {
	in, svc := o.in, o.svc
	done := map[string]string{}
	// Mark the bad version, in rollbot's state and on the platform.
	if in.Bad.Artifact != "" {
		e.recordOwned(ctx, o, "postactions", "marking "+in.Bad.Label()+" DO_NOT_DEPLOY")
		err := e.store.MarkDoNotDeploy(ctx, svc.Name, state.Mark{Artifact: in.Bad.Artifact, Revision: in.Bad.ID, By: in.DecidedBy, Incident: in.ID, Reason: in.Reason})
		detail := "marked by rollbot for <@" + in.DecidedBy + ">; rollbot refuses rollbacks to it"
		if err != nil {
			detail = "could not record the mark: " + e.userText(err, "mark DO_NOT_DEPLOY")
		} else if res, err := svc.Platform.MarkDoNotDeploy(ctx, in.Bad, in.DecidedBy); err != nil {
			detail += "; on the platform it failed: " + e.userText(err, "mark DO_NOT_DEPLOY on the platform", "incident", in.ID)
		} else {
			detail += "; platform: " + res.Detail
		}
		e.recordOwned(ctx, o, "postactions", detail)
		done["dnd"] = detail
	}
	notes := map[string]string{}
	e.gateActions(ctx, o, done, notes)
	done["timeline"] = "`/rollback timeline " + in.ID + "` (export: `--markdown`)"

	at := e.now().Add(e.opt.PostmortemAfter)
	e.recordOwned(ctx, o, "postactions", "scheduling the postmortem reminder for "+at.UTC().Format(time.RFC3339))
	if err := e.chat.Schedule(ctx, in.Channel, at, postmortemReminderMsg(in, at)); err != nil {
		done["postmortem"] = "" // left for a person
		e.recordOwned(ctx, o, "postactions", "postmortem reminder not scheduled: "+e.userText(err, "schedule reminder"))
	} else {
		done["postmortem"] = "reminder scheduled for <!date^" + itoa(at.Unix()) + "^{date_short_pretty} {time}|" + at.UTC().Format("2006-01-02 15:04 UTC") + ">"
	}
	e.saveChecklist(ctx, o, done, notes)
	in = o.in
	if in.OwnerPause != nil {
		e.gitChange(ctx, o)
		in = o.in
	}
	ts := e.post(ctx, in.Channel, in.ThreadTS, postActionsMsg(in))
	e.setMessage(ctx, o, "postactions", ts)
}

// saveChecklist records ticked checklist items and notes on open ones.
func (e *Engine) saveChecklist(ctx context.Context, o *owned, done, notes map[string]string) {
	err := e.updateOwned(ctx, o, func(in *state.Incident) {
		if in.Done == nil {
			in.Done = map[string]string{}
		}
		for k, v := range done {
			if v != "" {
				in.Done[k] = v
			}
		}
		if len(notes) > 0 && in.Notes == nil {
			in.Notes = map[string]string{}
		}
		for k, v := range notes {
			if _, ticked := in.Done[k]; !ticked {
				in.Notes[k] = v
			}
		}
	})
	if err != nil {
		e.log.Warn("record the checklist", "incident", o.in.ID, "err", err)
	}
}

// postActionDone ticks a §6 item a person did: one of the service's
// approvers or the requester.
func (e *Engine) postActionDone(ctx context.Context, a Action) {
	_, key, _ := strings.Cut(a.Value, "|")
	in, svc, ok := e.incidentFor(ctx, a)
	if !ok {
		return
	}
	valid := false
	for _, it := range postItemsFor(in) {
		valid = valid || it.Key == key
	}
	if !valid {
		return
	}
	if a.UserID != in.RequestedBy && !e.allowed(ctx, svc.Approvers, a.UserID) {
		e.record(ctx, in.ID, a.UserID, "postactions", "refused: not allowed to tick "+itemText(key))
		e.ephemeral(ctx, a.ChannelID, a.UserID, notAllowedMsg(svc.Name, "tick post-rollback items", who(svc.Approvers)+" or the requester"))
		return
	}
	detail := "done by <@" + a.UserID + "> at " + e.now().UTC().Format("15:04 UTC")
	in, err := e.store.Update(ctx, in.ID, state.Claim{}, func(in *state.Incident) {
		if in.Done == nil {
			in.Done = map[string]string{}
		}
		if _, ok := in.Done[key]; !ok {
			in.Done[key] = detail
		}
	})
	if err != nil {
		e.ephemeral(ctx, a.ChannelID, a.UserID, errorMsg(e.userText(err, "record checklist item")))
		return
	}
	e.record(ctx, in.ID, a.UserID, "postactions", itemText(key)+": "+in.Done[key])
	ts := in.Messages["postactions"]
	if ts == "" {
		ts = a.MessageTS
	}
	e.update(ctx, in.Channel, ts, postActionsMsg(in))
}

// gitItem is the §6 item of a rollback whose GitOps owner was paused:
// the rollback sticks only once Git says the same.
var gitItem = PostItem{Key: "git", Text: "Revert the image in Git so the rollback sticks, then resume the sync"}

// postItemsFor is the checklist of one incident.
func postItemsFor(in *state.Incident) []PostItem {
	if in.OwnerPause == nil {
		return postItems
	}
	return append(append([]PostItem(nil), postItems...), gitItem)
}

func itemText(key string) string {
	for _, it := range append(postItems, gitItem) {
		if it.Key == key {
			return it.Text
		}
	}
	return key
}

func (e *Engine) hasFallbacks(svc *Service) bool {
	_, ok := svc.Platform.(platforms.Fallbacks)
	return ok
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
