package handlers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"rollbot/platforms"
	"rollbot/state"
)

// DowntimeWarning is the runbook §4 warning, shown verbatim.
const DowntimeWarning = "WARNING: Database rollbacks cause downtime. Coordinate with stakeholders before proceeding."

const dbStep = "database"

// requiredApprovals is how many distinct DB approvers the step needs.
func requiredApprovals(in *state.Incident, svc *Service) int {
	if in.DBDestructive {
		return svc.DestructiveApprovals
	}
	return 1
}

// requestDBApproval posts the decision-gate message (runbook §1: if
// migrations ran, the database step comes before the app rollback).
func (e *Engine) requestDBApproval(ctx context.Context, in *state.Incident, svc *Service) {
	plan := "no database is configured for " + svc.Name + ": roll the migrations back by hand, then press Approve to continue with the app"
	if in.DBManual {
		why := "see the assessment"
		if a := e.assessmentOf(in); a.MigErr != "" {
			why = a.MigErr
		}
		plan = "rollbot could not tell whether migrations ran, or whether its down command can undo them (" + why + "): check the migration table, roll back by hand whatever the bad release migrated, then approve to continue with the app"
	} else if svc.Database != nil {
		if in.DBDestructive {
			plan = svc.Database.RestorePlan(ctx, in.ID, in.DeployedAt)
		} else if rep := e.assessmentOf(in).Migrations; rep != nil {
			// The assessment's report: the down command re-checks the table
			// itself when it runs.
			plan = svc.Database.DownPlan(*rep)
		}
	}
	e.store.Update(ctx, in.ID, state.Claim{}, func(i *state.Incident) { i.DBPlan = plan })
	in.DBPlan = plan
	e.record(ctx, in.ID, "rollbot", dbStep, fmt.Sprintf("waiting for %d DB approval(s): %s", requiredApprovals(in, svc), plan))
	ts := e.post(ctx, in.Channel, in.ThreadTS, dbApprovalMsg(in, svc.dbApprovers(), requiredApprovals(in, svc), nil, e.opt.ApprovalTTL))
	e.setMessage(ctx, &owned{in: in}, "db", ts)
}

// dbApproveClicked checks who clicked, then opens the confirm modal where
// the approver types the service name.
func (e *Engine) dbApproveClicked(ctx context.Context, a Action) {
	in, svc, ok := e.incidentFor(ctx, a)
	if !ok {
		return
	}
	if msg := e.dbApproverProblem(ctx, in, svc, a.UserID); msg != "" {
		e.record(ctx, in.ID, a.UserID, dbStep, "approval refused: "+msg)
		e.ephemeral(ctx, a.ChannelID, a.UserID, errorMsg(msg))
		return
	}
	if in.Status != state.AwaitingDBApprove {
		e.ephemeral(ctx, a.ChannelID, a.UserID, alreadyDecidedMsg(in))
		return
	}
	if err := e.chat.OpenModal(ctx, a.TriggerID, dbApproveModalView(in, a.MessageTS)); err != nil {
		e.ephemeral(ctx, a.ChannelID, a.UserID, errorMsg(e.userText(err, "open the approval dialog")))
	}
}

// dbApproverProblem says why user may not approve, or "".
func (e *Engine) dbApproverProblem(ctx context.Context, in *state.Incident, svc *Service, user string) string {
	if !e.allowed(ctx, svc.dbApprovers(), user) {
		return "only " + svc.Name + "'s DB approvers may approve the database step: " + who(svc.dbApprovers())
	}
	if user == in.RequestedBy {
		return "you requested this rollback; another DB approver must approve the database step (requester ≠ approver)"
	}
	return ""
}

// dbApproveSubmitted records an approval from the modal; when enough
// distinct approvers agree within the approval window, the step runs.
func (e *Engine) dbApproveSubmitted(ctx context.Context, v ViewSubmission) map[string]string {
	// The metadata is "<incident>|<ts of the approval message>".
	id, msgTS, _ := strings.Cut(v.PrivateMetadata, "|")
	in, err := e.store.Get(ctx, id)
	if err != nil {
		return map[string]string{"confirm": "this rollback no longer exists"}
	}
	svc := e.services[in.Service]
	if svc == nil {
		return map[string]string{"confirm": "service " + in.Service + " is no longer configured"}
	}
	typed := strings.TrimSpace(v.Values["confirm"]["service"])
	if typed != in.Service {
		return map[string]string{"confirm": fmt.Sprintf("type the service name exactly (%s) to approve", in.Service)}
	}
	if msg := e.dbApproverProblem(ctx, in, svc, v.UserID); msg != "" {
		e.record(ctx, in.ID, v.UserID, dbStep, "approval refused: "+msg)
		return map[string]string{"confirm": msg}
	}
	if in.Status != state.AwaitingDBApprove {
		return map[string]string{"confirm": "this step is no longer waiting for approval (status: " + string(in.Status) + ")"}
	}
	if err := e.record(ctx, in.ID, v.UserID, dbStep, "approved the database step: "+in.DBPlan); err != nil {
		return map[string]string{"confirm": "could not write the timeline; nothing was recorded, try again"}
	}
	approvers, err := e.store.Approve(ctx, in.ID, dbStep, v.UserID, e.opt.ApprovalTTL)
	if err != nil {
		return map[string]string{"confirm": e.userText(err, "record approval")}
	}
	need := requiredApprovals(in, svc)
	if len(approvers) < need {
		e.update(ctx, in.Channel, msgTS, dbApprovalMsg(in, svc.dbApprovers(), need, approvers, e.opt.ApprovalTTL))
		return nil
	}
	in, err = e.store.Advance(ctx, in.ID, state.Move{From: []state.Status{state.AwaitingDBApprove}, To: state.RollingBackDB,
		Owner: e.opt.Replica, Lease: e.opt.Lease, Mutate: func(in *state.Incident) {
			in.DBApprovedBy, in.StepStarted = approvers, e.now()
		}})
	if err != nil {
		if errors.Is(err, state.ErrStale) {
			return nil // another approval got there first
		}
		return map[string]string{"confirm": e.userText(err, "start the database step")}
	}
	e.update(ctx, in.Channel, msgTS, dbApprovedMsg(in, approvers))
	e.work(in, svc, "")
	return nil
}

// dbSkip is a DB approver's choice to roll back the app only, offered
// when every migration since the deploy only expanded the schema (the old
// release runs on it). The database is left as it is.
func (e *Engine) dbSkip(ctx context.Context, a Action) {
	in, svc, ok := e.incidentFor(ctx, a)
	if !ok {
		return
	}
	if msg := e.dbApproverProblem(ctx, in, svc, a.UserID); msg != "" {
		e.record(ctx, in.ID, a.UserID, dbStep, "app-only rollback refused: "+msg)
		e.ephemeral(ctx, a.ChannelID, a.UserID, errorMsg(msg))
		return
	}
	if !in.DBOptional {
		e.record(ctx, in.ID, a.UserID, dbStep, "app-only rollback refused: the migrations are not expand-only")
		e.ephemeral(ctx, a.ChannelID, a.UserID, errorMsg("the database step is required here: not every migration since the deploy is expand-only (see the assessment)"))
		return
	}
	if in.Status != state.AwaitingDBApprove {
		e.ephemeral(ctx, a.ChannelID, a.UserID, alreadyDecidedMsg(in))
		return
	}
	if err := e.record(ctx, in.ID, a.UserID, dbStep, "chose to roll back the app only: every migration since the deploy is expand-only, the old version runs on the new schema; the database is left as it is"); err != nil {
		e.ephemeral(ctx, a.ChannelID, a.UserID, errorMsg("could not write the timeline; nothing was recorded, try again"))
		return
	}
	cur, ok := e.decideWork(ctx, a, in.ID, []state.Status{state.AwaitingDBApprove}, state.Stopping, func(in *state.Incident) {
		in.DBApprovedBy = []string{a.UserID}
	}, "roll back the app only")
	if !ok {
		return
	}
	e.store.ClearApprovals(ctx, cur.ID, dbStep)
	e.update(ctx, cur.Channel, a.MessageTS, dbClosedMsg(cur, "<@"+a.UserID+"> chose to roll back the app only: the migrations since the deploy are expand-only, so the old version runs on the new schema. The database was not touched."))
	e.work(cur, svc, "")
}

// dbRefuse stops the incident: the app rollback waits for the DB step.
func (e *Engine) dbRefuse(ctx context.Context, a Action) {
	in, svc, ok := e.incidentFor(ctx, a)
	if !ok {
		return
	}
	if !e.allowed(ctx, svc.dbApprovers(), a.UserID) {
		e.record(ctx, in.ID, a.UserID, dbStep, "refusal refused: not a DB approver")
		e.ephemeral(ctx, a.ChannelID, a.UserID, notAllowedMsg(svc.Name, "refuse the database step", who(svc.dbApprovers())))
		return
	}
	e.record(ctx, in.ID, a.UserID, dbStep, "refused the database step; the app rollback does not run without it")
	in, ok = e.decideMove(ctx, a, in.ID, e.endMove(in, []state.Status{state.AwaitingDBApprove}, nil), "refuse the database step")
	if !ok {
		return
	}
	e.store.ClearApprovals(ctx, in.ID, dbStep)
	if in.Status == state.DrillRestoring {
		e.update(ctx, in.Channel, a.MessageTS, dbClosedMsg(in, "Refused by <@"+a.UserID+">: neither the database nor the app was rolled back. "+restoringText(in)))
		e.work(in, svc, "")
		return
	}
	e.store.ReleaseLock(ctx, in.Service, in.Lock)
	e.update(ctx, in.Channel, a.MessageTS, dbClosedMsg(in, "Refused by <@"+a.UserID+">: neither the database nor the app was rolled back (the app rollback waits for the database step). Run `/rollback "+in.Service+"` again when decided."))
}

// dbStep is runbook §4, then (only on success) the app rollback. A
// replica that takes the incident over while the database step was
// running never starts it a second time: it calls RollBack / Restore
// again as a resumed run, and they attach to the down Job or restore the
// stopped replica started (platforms.Database: re-entrant per incident),
// or report a local down command they cannot follow.
func (e *Engine) dbStep(ctx context.Context, o *owned) error {
	if err := e.captureFirst(ctx, o); err != nil {
		return err
	}
	in, svc := o.in, o.svc
	approvers := in.DBApprovedBy
	title := "Database rollback"
	resumed := in.Steps[dbStep] == "started"
	if resumed {
		if err := e.recordOwned(ctx, o, dbStep, "resuming the database step: attaching to what the stopped replica started (never a second one)"); err != nil {
			return failf("could not write the timeline, so the database step was not resumed")
		}
	}
	e.store.ClearApprovals(ctx, in.ID, dbStep)
	ts := e.post(ctx, in.Channel, in.ThreadTS, dbOutputMsg(in, title, "starting…", ""))
	live := newLiveMessage(ctx, e.chat, in.Channel, ts, e.opt.UpdateInterval, nil)
	out := &tailWriter{max: 30, onLine: func(tail string) { live.Set(dbOutputMsg(in, title, "running…", tail)) }}

	var (
		result string
		err    error
	)
	switch {
	case svc.Database == nil || in.DBManual:
		result = "approved as done by hand by " + mentions(approvers)
	default:
		what := "running the down migration: " + in.DBPlan
		if in.DBDestructive {
			what = "restoring the database: " + in.DBPlan
		}
		if !resumed {
			if err := e.recordOwned(ctx, o, dbStep, what); err != nil {
				return failf("could not write the timeline, so the database step did not start")
			}
			if err := e.setStep(ctx, o, dbStep, "started"); err != nil {
				return err
			}
		}
		if err := e.guard(ctx, o); err != nil {
			return err
		}
		run := platforms.DBRun{Incident: in.ID, Resumed: resumed}
		if in.DBDestructive {
			result, err = svc.Database.Restore(ctx, run, in.DeployedAt, func(s string) { out.Write([]byte(s + "\n")) })
		} else {
			result, err = svc.Database.RollBack(ctx, run, in.DeployedAt, in.Bad, out)
		}
	}
	if err != nil {
		msg := e.userText(err, "database rollback", "incident", in.ID)
		live.Close(dbOutputMsg(in, title, "failed: "+msg+"\nThe app was *not* rolled back: the app rollback runs only after the database step succeeds.", out.Tail()))
		if ctx.Err() != nil {
			return err
		}
		return failf("the database rollback failed: %s; the app was not rolled back", msg)
	}
	e.recordOwned(ctx, o, dbStep, "done: "+result)
	live.Close(dbOutputMsg(in, title, "done: "+result, out.Tail()))
	if err := e.setStep(ctx, o, dbStep, "done"); err != nil {
		return err
	}
	return e.afterDB(ctx, o)
}

// lastOwner is the replica that owned the incident before the last takeover.
func lastOwner(in *state.Incident) string {
	if n := len(in.TakenOver); n > 0 {
		return in.TakenOver[n-1].From
	}
	return ""
}

func mentions(users []string) string {
	var parts []string
	for _, u := range users {
		parts = append(parts, "<@"+u+">")
	}
	return strings.Join(parts, ", ")
}

// tailWriter keeps the last lines written, for streaming command output
// into a Slack message. Memory stays bounded whatever is written: at most
// max lines, each cut to tailLineMax bytes (with a marker saying how much
// was dropped), and a line still being written (a progress bar without
// newlines) is cut the same way.
type tailWriter struct {
	mu      sync.Mutex
	max     int
	lines   []string
	partial []byte // the line being written, at most tailLineMax bytes
	cut     int    // bytes of that line dropped
	onLine  func(tail string)
}

// tailLineMax caps one kept line.
const tailLineMax = 4 << 10

func (t *tailWriter) Write(p []byte) (int, error) {
	n := len(p)
	t.mu.Lock()
	newLine := false
	for {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		take := min(max(tailLineMax-len(t.partial), 0), len(chunk))
		t.partial = append(t.partial, chunk[:take]...)
		t.cut += len(chunk) - take
		if i < 0 {
			break
		}
		t.lines = append(t.lines, t.current())
		t.partial, t.cut = t.partial[:0], 0
		newLine = true
		p = p[i+1:]
	}
	if len(t.lines) > t.max {
		// In place, so the backing array does not grow with the output.
		k := copy(t.lines, t.lines[len(t.lines)-t.max:])
		clear(t.lines[k:])
		t.lines = t.lines[:k]
	}
	tail := strings.Join(t.lines, "\n")
	t.mu.Unlock()
	if t.onLine != nil && newLine {
		t.onLine(tail)
	}
	return n, nil
}

// current is the line being written as it will be kept: valid UTF-8, and
// marked when cut.
func (t *tailWriter) current() string {
	if t.cut == 0 {
		return string(t.partial)
	}
	return strings.ToValidUTF8(string(t.partial), "") + fmt.Sprintf(" …[line cut: %d more bytes]", t.cut)
}

// Tail returns the kept lines.
func (t *tailWriter) Tail() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.lines
	if len(t.partial) > 0 || t.cut > 0 {
		l = append(append([]string{}, l...), t.current())
	}
	return strings.Join(l, "\n")
}

// dbApprovers may approve the database step: the DB approvers, or, for a
// service with none (no database configured, and the migration log showed
// migrations applied), its approvers.
func (s *Service) dbApprovers() Access {
	if s.DBApprovers.Empty() {
		return s.Approvers
	}
	return s.DBApprovers
}
