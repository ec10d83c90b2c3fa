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

// File is a file rollbot uploads into a thread.
type File struct {
	Name    string // "RB-7-evidence.txt"
	Title   string
	Content []byte
	Comment string // the message that comes with it
}

const captureStepName = "capture"

// captureFirst keeps the evidence of the bad version (logs, events, task
// errors: platforms.Capturer) right before the first write of the
// rollback, the database step's or the rollout stop's: the rollback
// removes the bad units and their logs go with them (runbook: roll back
// and keep the evidence).
//
// It has its own short budget (Budgets.Capture) inside the step's, and it
// never stops or fails the rollback: whatever was read within the budget
// is kept, and what could not be is said. Like every step it is on the
// timeline first; the evidence is redacted, kept with the incident in
// Redis (size-capped) and uploaded into the thread as a file. It runs
// once per incident; a replica that takes over an interrupted capture
// reads again (it only reads).
func (e *Engine) captureFirst(ctx context.Context, o *owned) error {
	in, svc := o.in, o.svc
	if in.Steps[captureStepName] == "done" {
		return nil
	}
	c, ok := svc.Platform.(platforms.Capturer)
	if !ok {
		return nil
	}
	budget := e.opt.Budgets.Capture
	lim := svc.Capture.WithDefaults()
	if err := e.recordOwned(ctx, o, captureStepName, fmt.Sprintf("keeping the logs and events of %s before the first write (budget %s; at most %d units, %d lines and %s per source)",
		svc.Platform.Target(), window(budget), lim.Units, lim.Lines, sizeText(lim.SourceBytes))); err != nil {
		return failf("could not write the timeline, so nothing was changed")
	}
	if err := e.setStep(ctx, o, captureStepName, "started"); err != nil {
		return err
	}
	started := e.now()
	deadline := time.Now().Add(budget)
	// The platform reads get two thirds of the budget, the record and the
	// upload what is left.
	cctx, cancel := context.WithDeadline(ctx, time.Now().Add(budget*2/3))
	ev, err := c.Capture(cctx, lim)
	timedOut := errors.Is(cctx.Err(), context.DeadlineExceeded)
	cancel()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		ev.Missed("the capture could not start: %s", e.userText(err, "capture", "incident", in.ID, "service", svc.Name))
	}
	if timedOut {
		ev.Missed("the capture stopped at its budget of %s; sources after that point were not read", window(budget*2/3))
	}
	e.redactEvidence(&ev)
	ev.Cap(lim.TotalBytes)

	saved := "kept with the incident"
	if err := e.store.SaveEvidence(ctx, in.ID, o.claim, &ev); err != nil {
		if errors.Is(err, state.ErrFenced) {
			return errTakenOver
		}
		saved = "NOT kept in rollbot's store (" + platforms.SeeLog(ctx, e.log, "save evidence", err, "incident", in.ID) + ")"
	}
	file := File{
		Name:    in.ID + "-evidence.txt",
		Title:   in.ID + ": evidence of " + in.Bad.Label() + " before the rollback",
		Content: []byte(ev.Text(fmt.Sprintf("%s: %s, %s, captured %s before the rollback to %s", in.ID, svc.Name, svc.Platform.Target(), started.UTC().Format(time.RFC3339), in.Target.Label()))),
		Comment: evidenceComment(in, ev),
	}
	uctx, ucancel := context.WithDeadline(ctx, deadline)
	err = e.chat.Upload(uctx, in.Channel, in.ThreadTS, file)
	ucancel()
	uploaded := "uploaded to the thread as " + file.Name
	if err != nil {
		e.log.Warn("upload evidence", "incident", in.ID, "err", err)
		uploaded = "the upload to the thread failed"
		e.post(ctx, in.Channel, in.ThreadTS, errorMsg(fmt.Sprintf("%s: the evidence file could not be uploaded to this thread (%s); it is %s and in `/rollback timeline %s --markdown`. The rollback goes on.",
			in.ID, e.userText(err, "upload evidence", "incident", in.ID), saved, in.ID)))
	}
	detail := fmt.Sprintf("kept %d sources (%s) in %s; %s; %s", len(ev.Sources), sizeText(ev.Size()), e.now().Sub(started).Round(100*time.Millisecond), saved, uploaded)
	if len(ev.Missing) > 0 {
		detail += "; not captured: " + strings.Join(ev.Missing, "; ")
	}
	if err := e.recordOwned(ctx, o, captureStepName, detail); err != nil {
		return failf("could not write the timeline, so nothing was changed")
	}
	return e.setStep(ctx, o, captureStepName, "done")
}

// redactEvidence replaces known secrets in everything captured.
func (e *Engine) redactEvidence(ev *platforms.Evidence) {
	if e.opt.Redact == nil {
		return
	}
	for i := range ev.Sources {
		ev.Sources[i].Name = e.opt.Redact(ev.Sources[i].Name)
		ev.Sources[i].Text = e.opt.Redact(ev.Sources[i].Text)
	}
	for i := range ev.Missing {
		ev.Missing[i] = e.opt.Redact(ev.Missing[i])
	}
}

func evidenceComment(in *state.Incident, ev platforms.Evidence) string {
	s := fmt.Sprintf(":file_folder: *%s: evidence kept before the rollback* — %d sources (%s) of %s.", in.ID, len(ev.Sources), sizeText(ev.Size()), in.Bad.Label())
	if len(ev.Missing) > 0 {
		s += fmt.Sprintf(" Not captured: %s.", clip(strings.Join(ev.Missing, "; "), 1500))
	}
	return s
}

func sizeText(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
