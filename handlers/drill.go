package handlers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"rollbot/platforms"
	"rollbot/state"
)

// Drill configures practice rollbacks of a service in a non-production
// environment (runbook best practice 5: practise rollbacks monthly on
// staging with the same procedures).
type Drill struct {
	// Bad is the artifact the drill deploys as its "bad" version (an
	// image with a failing health check, a known bad tag).
	Bad string
}

// drillEvery is how often the runbook asks for a drill.
const drillEvery = 30 * 24 * time.Hour

// startDrill answers `/rollback drill <service>`: it deploys the drill's
// bad version and then runs the runbook as for a real incident (the same
// assessment, buttons, adapters and lifecycle); at the end it checks the
// target is as it found it and reports each step against its budget.
func (e *Engine) startDrill(ctx context.Context, sc SlashCommand, cmd Command) {
	svc := e.services[cmd.Service]
	if svc.Drill == nil {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, drillRefusedMsg(svc, "its environment is not marked for drills"))
		return
	}
	if _, ok := svc.Platform.(platforms.Deployer); !ok {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, drillRefusedMsg(svc, "platform "+svc.Platform.Kind()+" cannot deploy a drill's bad version"))
		return
	}
	if holder, err := e.store.LockHolder(ctx, svc.Name); err == nil && holder != nil {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, drillBusyMsg(svc.Name, holder))
		return
	}
	if !e.allowed(ctx, svc.Approvers, sc.UserID) {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, notAllowedMsg(svc.Name, "start a drill of", who(svc.Approvers)))
		return
	}
	qctx, cancel := context.WithTimeout(ctx, 2*e.opt.QueryTimeout)
	snap, err := svc.Platform.Snapshot(qctx)
	cancel()
	if err != nil {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg("no drill: "+e.userText(err, "read platform state", "service", svc.Name)))
		return
	}
	if snap.Current.Artifact == svc.Drill.Bad {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg(fmt.Sprintf("no drill: %s already runs the drill's bad version %s. Roll it back first (`/rollback %s`).", svc.Name, svc.Drill.Bad, svc.Name)))
		return
	}
	if snap.RolloutInProgress || snap.Paused {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg(fmt.Sprintf("no drill: %s is in the middle of a rollout (or paused); start the drill once it is settled (`/rollback status %s`).", svc.Name, svc.Name)))
		return
	}
	id, err := e.store.NextID(ctx)
	if err != nil {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg(e.userText(err, "open incident")))
		return
	}
	in := &state.Incident{
		ID: id, Service: svc.Name, Channel: sc.ChannelID, RequestedBy: sc.UserID, Reason: "rollback drill",
		Status: state.Assessing, Platform: svc.Platform.Kind(), PlatformTgt: svc.Platform.Target(), Messages: map[string]string{},
		Owner: e.opt.Replica, Fence: 1, StepStarted: e.now(),
		Drill: &state.DrillRun{Bad: svc.Drill.Bad, Original: snap.Current, Replicas: snap.Health.Desired},
	}
	lock, err := e.store.AcquireLock(ctx, svc.Name, id, sc.UserID, e.opt.LockTTL)
	if errors.Is(err, state.ErrLocked) {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, drillBusyMsg(svc.Name, lock))
		return
	}
	if err != nil {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg(e.userText(err, "take the rollback lock", "service", svc.Name)))
		return
	}
	in.Lock = lock.Token
	req := state.Event{Actor: sc.UserID, Step: "request", Time: e.now(), Detail: fmt.Sprintf("requested a drill of %s: deploy the bad version %s, then the runbook; it runs %s (%d units)",
		svc.Name, svc.Drill.Bad, snap.Current.Label(), snap.Health.Desired)}
	if err := e.store.Create(ctx, in, req); err != nil {
		e.store.ReleaseLock(ctx, svc.Name, in.Lock)
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg(e.userText(err, "save incident")))
		return
	}
	e.work(in, svc, "")
}

// drillDeploy is the drill's own first step, owned like every write: the
// bad version goes out, and the assessment starts once the platform runs it.
func (e *Engine) drillDeploy(ctx context.Context, o *owned) error {
	in, svc := o.in, o.svc
	dep, ok := svc.Platform.(platforms.Deployer)
	if !ok {
		return failf("platform %s cannot deploy a drill's bad version", svc.Platform.Kind())
	}
	if in.Steps["drill_deploy"] == "" {
		if err := e.recordOwned(ctx, o, "drill", "deploying the drill's bad version "+in.Drill.Bad+" to "+svc.Platform.Target()); err != nil {
			return failf("could not write the timeline, so the drill did not start")
		}
		if err := e.setStep(ctx, o, "drill_deploy", "started"); err != nil {
			return err
		}
	}
	if err := e.guard(ctx, o); err != nil {
		return err
	}
	// Only over the version the drill found: a target someone changed
	// since is not the drill's to overwrite.
	res, err := dep.Deploy(ctx, in.Drill.Bad, in.Drill.Original.Artifact, false)
	if err != nil {
		return failf("the drill could not deploy its bad version: %s", e.userText(err, "drill deploy", "incident", in.ID))
	}
	e.recordOwned(ctx, o, "drill", string(res.Outcome)+": "+res.Detail)
	// The assessment must see the bad version: wait until the platform
	// reports it as current.
	for {
		qctx, cancel := context.WithTimeout(ctx, 2*e.opt.QueryTimeout)
		snap, err := svc.Platform.Snapshot(qctx)
		cancel()
		if err == nil && snap.Current.Artifact == in.Drill.Bad {
			break
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
	return e.updateOwned(ctx, o, func(in *state.Incident) {
		in.Steps["drill_deploy"] = "done"
		in.StepStarted = e.now() // the assessment is measured from here
	})
}

// drillFinish ends a verified drill instead of the post-rollback actions:
// the target is compared with how the drill found it (and its image put
// back if the rollback chose another), the report posted with each step
// against its budget and the trend of earlier drills, and the next
// monthly drill reminded.
func (e *Engine) drillFinish(ctx context.Context, o *owned) {
	in, svc := o.in, o.svc
	d := *in.Drill
	left := e.drillCompare(ctx, o.in, o.svc)
	if left != "" && !strings.HasPrefix(left, "could not") {
		if dep, ok := svc.Platform.(platforms.Deployer); ok && e.guard(ctx, o) == nil {
			e.recordOwned(ctx, o, "drill", "restoring "+d.Original.Artifact+": "+left)
			// Over what the rollback put there only, never over a change
			// someone made since.
			if _, err := dep.Deploy(ctx, d.Original.Artifact, in.Target.Artifact, false); err != nil {
				left += "; restoring it failed: " + e.userText(err, "drill restore", "incident", in.ID)
			} else {
				// The platform reports the restored version once its
				// controller took the write: wait for that, up to a minute.
				wctx, cancel := context.WithTimeout(ctx, time.Minute)
				t := time.NewTicker(500 * time.Millisecond)
				for left = e.drillCompare(ctx, o.in, o.svc); left != ""; left = e.drillCompare(ctx, o.in, o.svc) {
					select {
					case <-t.C:
						continue
					case <-wctx.Done():
					}
					break
				}
				t.Stop()
				cancel()
			}
		}
	}
	if left == "" {
		e.recordOwned(ctx, o, "drill", fmt.Sprintf("restored: %s runs %s with %d units, as before the drill", svc.Platform.Target(), d.Original.Artifact, d.Replicas))
	} else {
		e.recordOwned(ctx, o, "drill", "left: "+left)
	}
	e.updateOwned(ctx, o, func(in *state.Incident) { in.Drill.Left = left })
	in = o.in
	now := e.now()
	steps := StepTimes(in, now)
	rec := state.DrillRecord{Incident: in.ID, At: now, Passed: true, Steps: map[string]time.Duration{}, Restored: left == ""}
	for _, st := range steps {
		rec.Steps[st.Step] = st.Took
		rec.Total += st.Took
		if st.State != "pass" {
			rec.Passed = false
		}
	}
	earlier, err := e.store.Drills(ctx, svc.Name, 5)
	if err != nil {
		e.log.Warn("read earlier drills", "service", svc.Name, "err", err)
	}
	if err := e.store.RecordDrill(ctx, svc.Name, rec); err != nil {
		e.log.Warn("record drill", "service", svc.Name, "err", err)
	}
	next := now.Add(drillEvery)
	e.store.Once(ctx, "drill-reminder:"+svc.Name, drillEvery) // a restart does not schedule another
	reminded := true
	if err := e.chat.Schedule(ctx, in.Channel, next, drillReminderMsg(svc.Name, next)); err != nil {
		reminded = false
		e.recordOwned(ctx, o, "drill", "next drill reminder not scheduled: "+e.userText(err, "schedule reminder"))
	} else {
		e.recordOwned(ctx, o, "drill", "next drill reminder scheduled for "+next.UTC().Format(time.RFC3339))
	}
	e.post(ctx, in.Channel, in.ThreadTS, drillReportMsg(in, steps, rec, earlier, left, reminded, next))
}

// drillDeployed reports whether a drill deployed (or began to deploy) its
// bad version: one that ends before its rollback puts back what it found.
func drillDeployed(in *state.Incident) bool {
	return in.Drill != nil && in.Steps["drill_deploy"] != ""
}

// endMove is the move that ends an incident waiting for a person before
// its rollback (cancelled, expired, refused, stale): to cancelled, or, for
// a drill that deployed its bad version, to drill_restoring, owned by
// this replica, which puts back what the drill found and then cancels
// (drillRestoreStep). The caller starts that work (e.work).
func (e *Engine) endMove(in *state.Incident, from []state.Status, mutate func(*state.Incident)) state.Move {
	m := state.Move{From: from, To: state.Cancelled, Mutate: mutate}
	if drillDeployed(in) {
		m.To, m.Owner, m.Lease = state.DrillRestoring, e.opt.Replica, e.opt.Lease
	}
	return m
}

// restoringText says, as a drill ends before its rollback, what comes next.
func restoringText(in *state.Incident) string {
	return fmt.Sprintf("rollbot now puts back %s, the version the drill found (only if %s still runs the drill's bad version); the result follows in this thread.",
		in.Drill.Original.Label(), in.PlatformTgt)
}

// drillRestoreStep ends a drill that stopped before its rollback: it puts
// back the version the drill found through the Deployer that deployed the
// bad one, only while the target still runs that bad version (a change
// someone made meanwhile is left as it is, and said), and waits until the
// platform reports it. It holds the service lock throughout (a working
// step, within its budget), writes the timeline before the platform, and
// ends the drill cancelled with "restored to …" or exactly what is left,
// in the thread and on the timeline. Resumed after a takeover, it reads
// the target again and goes on from what it finds.
func (e *Engine) drillRestoreStep(ctx context.Context, o *owned) error {
	in, svc := o.in, o.svc
	d := in.Drill
	tgt := svc.Platform.Target()
	dep, ok := svc.Platform.(platforms.Deployer)
	if !ok {
		return failf("platform %s cannot deploy, so the drill cannot put %s back", svc.Platform.Kind(), d.Original.Artifact)
	}
	snap, err := e.readTarget(ctx, svc)
	if err != nil {
		return failf("the drill could not read %s to put it back: %s", tgt, e.userText(err, "read platform state", "incident", in.ID))
	}
	cur := snap.Current
	if cur.Artifact != d.Original.Artifact && cur.Artifact != d.Bad {
		return e.drillRestoreEnd(ctx, o, "it "+changedText(cur.Label(), d), "not restored: "+tgt+" "+changedText(cur.Label(), d))
	}
	// Running the original, the target may still have the bad version
	// written but not yet reported (a deploy that ran out of time), so
	// the adapter decides on what it reads: skipped when it runs the
	// original, written only over the drill's bad version.
	if err := e.recordOwned(ctx, o, "drill", fmt.Sprintf("restoring %s: deploying %s where it still has the drill's bad version %s", tgt, d.Original.Label(), d.Bad)); err != nil {
		return failf("could not write the timeline, so the drill did not put %s back", d.Original.Artifact)
	}
	resumed := in.Steps["drill_restore"] != ""
	if err := e.setStep(ctx, o, "drill_restore", "started"); err != nil {
		return err
	}
	if err := e.guard(ctx, o); err != nil {
		return err
	}
	res, err := dep.Deploy(ctx, d.Original.Artifact, d.Bad, false)
	if errors.Is(err, platforms.ErrConflict) {
		// Changed between the read and the write: what runs now is
		// someone's, not the drill's.
		now := "another version"
		if snap, rerr := e.readTarget(ctx, svc); rerr == nil {
			now = snap.Current.Label()
		}
		return e.drillRestoreEnd(ctx, o, "it "+changedText(now, d), "not restored: "+tgt+" "+changedText(now, d))
	}
	if err != nil {
		return failf("the drill could not put %s back: %s", d.Original.Artifact, e.userText(err, "drill restore", "incident", in.ID))
	}
	if res.Outcome == platforms.Skipped && cur.Artifact == d.Original.Artifact && !resumed {
		// The bad version never went out.
		if left := e.drillCompare(ctx, in, svc); left != "" {
			return e.drillRestoreEnd(ctx, o, left, "not as before the drill: "+left)
		}
		return e.drillRestoreEnd(ctx, o, "", fmt.Sprintf("nothing to put back: %s runs %s with %d units, as before the drill", tgt, d.Original.Label(), d.Replicas))
	}
	e.recordOwned(ctx, o, "drill", string(res.Outcome)+": "+res.Detail)
	// The platform reports the original once its controller took the
	// write; the step's budget bounds the wait.
	for {
		snap, err := e.readTarget(ctx, svc)
		if err == nil && snap.Current.Artifact == d.Original.Artifact {
			break
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return failf("%s did not report %s as running yet", tgt, d.Original.Label())
		case <-t.C:
		}
	}
	if left := e.drillCompare(ctx, in, svc); left != "" {
		return e.drillRestoreEnd(ctx, o, left, fmt.Sprintf("%s deployed back, but not as before the drill: %s", d.Original.Label(), left))
	}
	return e.drillRestoreEnd(ctx, o, "", restoredText(tgt, d))
}

func restoredText(tgt string, d *state.DrillRun) string {
	return fmt.Sprintf("restored to %s: %s runs it with %d units, as before the drill", d.Original.Label(), tgt, d.Replicas)
}

// changedText says that someone else changed a drill's target.
func changedText(now string, d *state.DrillRun) string {
	return fmt.Sprintf("runs %s, not the drill's bad version %s: someone changed it during the drill, so rollbot did not overwrite it (before the drill it ran %s with %d units)",
		now, d.Bad, d.Original.Label(), d.Replicas)
}

// drillRestoreEnd records how a drill that ended before its rollback left
// its target (left: what differs from before, "" when nothing), ends it
// cancelled (which releases the service), and says so in the thread.
func (e *Engine) drillRestoreEnd(ctx context.Context, o *owned, left, text string) error {
	if err := e.recordOwned(ctx, o, "drill", text); err != nil {
		return failf("could not write the timeline, so the drill's end was not recorded")
	}
	if err := e.advance(ctx, o, state.Cancelled, func(in *state.Incident) { in.Drill.Left = left }); err != nil {
		return err
	}
	in := o.in
	if len(in.Assessment) > 0 {
		e.update(ctx, in.Channel, in.Messages["assessment"], decidedMsg(in, e.assessmentOf(in)))
	}
	e.post(ctx, in.Channel, in.ThreadTS, drillRestoredMsg(in, text))
	return nil
}

// readTarget reads the platform within the query timeout.
func (e *Engine) readTarget(ctx context.Context, svc *Service) (*platforms.Snapshot, error) {
	qctx, cancel := context.WithTimeout(ctx, 2*e.opt.QueryTimeout)
	defer cancel()
	return svc.Platform.Snapshot(qctx)
}

// scheduleDrillReminders makes sure every service marked for drills has
// its monthly reminder in its channel, even before its first drill: once
// per month across replicas and restarts (a drill schedules the next one
// itself, a month after it).
func (e *Engine) scheduleDrillReminders(ctx context.Context) {
	for _, svc := range e.services {
		chans := e.channelsOf(svc)
		if svc.Drill == nil || len(chans) == 0 {
			continue
		}
		first, err := e.store.Once(ctx, "drill-reminder:"+svc.Name, drillEvery)
		if err != nil || !first {
			continue
		}
		at := e.now().Add(drillEvery)
		if err := e.chat.Schedule(ctx, strings.TrimPrefix(chans[0], "#"), at, drillReminderMsg(svc.Name, at)); err != nil {
			e.log.Warn("schedule the monthly drill reminder", "service", svc.Name, "err", err)
		}
	}
}

// drillCompare says how the target differs from how the drill found it,
// or "" when it is the same (image and units).
func (e *Engine) drillCompare(ctx context.Context, in *state.Incident, svc *Service) string {
	d := in.Drill
	qctx, cancel := context.WithTimeout(ctx, 2*e.opt.QueryTimeout)
	snap, err := svc.Platform.Snapshot(qctx)
	cancel()
	if err != nil {
		return "could not read " + svc.Platform.Target() + " to compare: " + e.userText(err, "read platform state", "incident", in.ID)
	}
	var diffs []string
	if snap.Current.Artifact != d.Original.Artifact {
		diffs = append(diffs, fmt.Sprintf("it runs %s, not %s", snap.Current.Artifact, d.Original.Artifact))
	}
	if snap.Health.Desired != d.Replicas {
		diffs = append(diffs, fmt.Sprintf("it wants %d units, not %d", snap.Health.Desired, d.Replicas))
	}
	return strings.Join(diffs, "; ")
}

// drillLeftNote says, after a drill failed, what it left on the target
// and how to put it back: by deploying the original version, and by
// `/rollback` unless canRollBack is false (the assessment found no
// version to roll back to, so that advice would fail the same way).
func (e *Engine) drillLeftNote(ctx context.Context, in *state.Incident, svc *Service, canRollBack bool) string {
	if in.Drill == nil || in.Steps["drill_deploy"] == "" {
		return ""
	}
	left := e.drillCompare(ctx, in, svc)
	if left == "" {
		return fmt.Sprintf(" The drill left %s as it found it (%s).", svc.Platform.Target(), in.Drill.Original.Label())
	}
	how := fmt.Sprintf("Put it back with `/rollback %s`, or deploy %s.", in.Service, in.Drill.Original.Artifact)
	if !canRollBack {
		how = fmt.Sprintf("Put it back by deploying %s (a rollback cannot: see the assessment).", in.Drill.Original.Artifact)
	}
	return fmt.Sprintf(" The drill is NOT restored: %s (it started on %s with %d units). %s",
		left, in.Drill.Original.Label(), in.Drill.Replicas, how)
}

// drills answers `/rollback drills <service>`.
func (e *Engine) drills(ctx context.Context, sc SlashCommand, cmd Command) {
	svc := e.services[cmd.Service]
	recs, err := e.store.Drills(ctx, svc.Name, 10)
	if err != nil {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg(e.userText(err, "read drills")))
		return
	}
	e.ephemeral(ctx, sc.ChannelID, sc.UserID, drillsMsg(svc, recs))
}

func drillRefusedMsg(svc *Service, why string) Msg {
	t := fmt.Sprintf("No drill of `%s`: %s. Drills run only on environments with `drills: true` and a `drill.bad` version in rollbot's config (for example staging)", svc.Name, why)
	if svc.Env == "" {
		t += "; define the service per environment (`services.<name>.environments`) and mark the non-production one"
	} else {
		t += "; try another environment: `/rollback drill " + svc.BaseName() + " --env <environment>`"
	}
	return errorMsg(t + ". Nothing was done.")
}

func drillBusyMsg(service string, l *state.Lock) Msg {
	return errorMsg(fmt.Sprintf("No drill of `%s`: rollback %s (started by <@%s> at %s) holds it, and a drill never runs beside an incident. Wait until it ends (`/rollback status %s`), then start the drill. Nothing was done.",
		service, l.Incident, l.Holder, clock(l.Since), service))
}

// drillRestoredMsg ends a drill that stopped before its rollback: how it
// left its target.
func drillRestoredMsg(in *state.Incident, text string) Msg {
	icon := ":leftwards_arrow_with_hook:"
	if in.Drill.Left != "" {
		icon = ":warning:"
	}
	return simple(fmt.Sprintf("%s Drill %s: %s. %s is released.", icon, in.ID, text, in.Service))
}

func drillReminderMsg(service string, at time.Time) Msg {
	return simple(fmt.Sprintf(":calendar: Monthly rollback drill of *%s* is due (runbook: practise rollbacks monthly on staging with the same procedures): `/rollback drill %s`. Earlier drills: `/rollback drills %s`.", service, service, service))
}

// trend renders a step's earlier durations, oldest first, then this one.
func trend(step string, now time.Duration, earlier []state.DrillRecord) string {
	var parts []string
	for i := len(earlier) - 1; i >= 0; i-- {
		if d, ok := earlier[i].Steps[step]; ok {
			parts = append(parts, short(d))
		}
	}
	if len(parts) == 0 {
		return "first drill"
	}
	return strings.Join(append(parts, "*"+short(now)+"*"), " → ")
}

func drillReportMsg(in *state.Incident, steps []StepTime, rec state.DrillRecord, earlier []state.DrillRecord, left string, reminded bool, next time.Time) Msg {
	var b strings.Builder
	for _, st := range steps {
		fmt.Fprintf(&b, "%s *%s* %s of %s · %s · trend: %s\n", stateIcons[st.State], st.Label, short(st.Took), st.Range, st.State, trend(st.Step, st.Took, earlier))
	}
	verdict := ":white_check_mark: every step within the runbook's time"
	if !rec.Passed {
		verdict = ":turtle: some steps were slower than the runbook's time: practise them"
	}
	restored := fmt.Sprintf(":white_check_mark: %s is back as the drill found it: %s, %d units.", in.PlatformTgt, in.Drill.Original.Label(), in.Drill.Replicas)
	if left != "" {
		restored = ":warning: not restored: " + left + "."
	}
	blocks := []slack.Block{
		section("title", fmt.Sprintf(":stopwatch: *Drill report %s: %s* (total %s)", in.ID, in.Service, short(rec.Total))),
		section("steps", b.String()),
		section("verdict", verdict),
		section("restored", restored),
	}
	if reminded {
		blocks = append(blocks, contextBlock("next", "Next drill reminder: "+next.UTC().Format("2006-01-02")+" in this channel. Earlier drills: `/rollback drills "+in.Service+"`."))
	}
	return Msg{Text: "Drill report " + in.ID, Blocks: blocks}
}

func drillsMsg(svc *Service, recs []state.DrillRecord) Msg {
	if len(recs) == 0 {
		return simple(fmt.Sprintf("No drills of `%s` yet. Start one with `/rollback drill %s`.", svc.Name, svc.Name))
	}
	var b strings.Builder
	for _, r := range recs {
		icon := ":white_check_mark:"
		if !r.Passed {
			icon = ":turtle:"
		}
		var parts []string
		for _, s := range []string{"assess", "stop", "rollback", "verify"} {
			if d, ok := r.Steps[s]; ok {
				parts = append(parts, stepLabels[s]+" "+short(d))
			}
		}
		restored := "restored"
		if !r.Restored {
			restored = "NOT restored"
		}
		fmt.Fprintf(&b, "%s %s %s · %s · total %s · %s\n", icon, r.At.UTC().Format("2006-01-02 15:04"), r.Incident, strings.Join(parts, ", "), short(r.Total), restored)
	}
	return Msg{Text: "Drills of " + svc.Name, Blocks: []slack.Block{
		section("title", fmt.Sprintf("*Drills of %s*, newest first:", svc.Name)),
		section("drills", b.String()),
	}}
}
