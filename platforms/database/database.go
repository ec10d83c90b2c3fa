// Package database is a service's database as the runbook needs it
// (platforms.Database): it joins the migration check and down runner
// (platforms/migrations) with the optional RDS restore (platforms/rds),
// and keeps rollbot's record of the applied versions (state) for the
// migration tools that store no applied time.
package database

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"rollbot/platforms"
	"rollbot/platforms/migrations"
	"rollbot/platforms/rds"
	"rollbot/state"
)

// Parts are what a service's database is built from. The bot constructs
// each part from the service's config.
type Parts struct {
	// Service is the service's name, the key of rollbot's records.
	Service string
	// RunScope keeps this installation's down command run directories
	// apart from another's on the same host (two rollbots with different
	// Redis prefixes both have an RB-1): rollbot's Redis prefix.
	RunScope string
	// Platform is the service's platform: its history says which release
	// ran when, and which image a down Job runs with.
	Platform platforms.Platform
	// Migrations reads the migration table and runs a kind: command down
	// command; nil only where no method that reads the table is called.
	Migrations *migrations.Adapter
	// Down is database.down of the config.
	Down migrations.DownConfig
	// Jobs runs the down command as a Kubernetes Job (down.kind
	// kubernetes_job) on the service's cluster; nil for other kinds.
	Jobs *migrations.JobRunner
	// Restore is the destructive path; nil: no restore configured, the
	// approvers restore by hand.
	Restore *rds.Adapter
	// History is rollbot's record of the applied versions, for the tools
	// that store no applied time (golang-migrate, Rails); nil: no record.
	History *state.Store
	// Switch is how the app is pointed at the restored instance after a
	// restore: platforms.SwitchRename, SwitchSecret or SwitchManual
	// (default manual). Only with Restore.
	Switch string
	// Secret writes the restored endpoint into a Kubernetes Secret and
	// restarts the workload (Switch secret).
	Secret SecretSwitcher
}

// SecretSwitcher points the app at a new database endpoint through a
// Kubernetes Secret (package kube implements it).
type SecretSwitcher interface {
	// Describe says what Switch writes and restarts.
	Describe() string
	// Switch writes endpoint into the Secret and restarts the workload,
	// re-entrant per incident (a write or restart already made is not
	// made again).
	Switch(ctx context.Context, incident, endpoint string, steps platforms.SwitchSteps) (string, error)
}

// DB is one service's database.
type DB struct {
	mig     *migrations.Adapter
	down    migrations.DownConfig
	jobs    *migrations.JobRunner // down.kind kubernetes_job: on the service's cluster
	restore *rds.Adapter          // nil: no restore configured
	swMode  string                // the endpoint switch after a restore
	secret  SecretSwitcher        // switch secret
	log     *slog.Logger

	service  string
	platform platforms.Platform
	history  *state.Store // nil: no record
	runScope string       // Parts.RunScope
}

var (
	_ platforms.Database         = (*DB)(nil)
	_ platforms.AccessChecker    = (*DB)(nil)
	_ platforms.SchemaRecorder   = (*DB)(nil)
	_ platforms.EndpointSwitcher = (*DB)(nil)
)

// New joins the parts into a service's database. log may be nil when
// nothing that logs is called (a permission check).
func New(p Parts, log *slog.Logger) *DB {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mode := p.Switch
	if mode == "" {
		mode = platforms.SwitchManual
	}
	return &DB{mig: p.Migrations, down: p.Down, jobs: p.Jobs, restore: p.Restore, swMode: mode, secret: p.Secret, log: log,
		service: p.Service, platform: p.Platform, history: p.History, runScope: p.RunScope}
}

// RecordSchema stores the versions applied now, with the revision running
// now (platforms.SchemaRecorder). The bot calls it periodically.
func (d *DB) RecordSchema(ctx context.Context) error {
	if d.history == nil {
		return nil
	}
	snap, err := d.platform.Snapshot(ctx)
	if err != nil {
		return fmt.Errorf("record schema %s: %w", d.service, err)
	}
	tool, versions, err := d.mig.AppliedVersions(ctx)
	if err != nil {
		return fmt.Errorf("record schema %s: %w", d.service, err)
	}
	return d.history.RecordSchema(ctx, d.service, state.SchemaRecord{Artifact: snap.Current.Artifact, Tool: tool, Versions: versions})
}

// knownAtLastGood is rollbot's newest record from before since, taken
// while the revision deployed just before since was running (a record
// from an older release would make its migrations look like the bad
// one's). nil when there is none: Detect then says it cannot tell.
func (d *DB) knownAtLastGood(ctx context.Context, since time.Time) ([]string, error) {
	if d.history == nil || since.IsZero() {
		return nil, nil
	}
	rec, ok, err := d.history.SchemaBefore(ctx, d.service, since)
	if err != nil || !ok {
		return nil, err
	}
	snap, err := d.platform.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	var prev platforms.Revision // the newest revision deployed before since
	for _, r := range snap.History {
		if r.CreatedAt.Before(since) && r.CreatedAt.After(prev.CreatedAt) {
			prev = r
		}
	}
	if prev.Artifact == "" || rec.Artifact != prev.Artifact {
		return nil, nil
	}
	return rec.Versions, nil
}

func (d *DB) detect(ctx context.Context, since time.Time) (migrations.Report, error) {
	known, err := d.knownAtLastGood(ctx, since)
	if err != nil {
		return migrations.Report{}, err
	}
	return d.mig.Detect(ctx, since, known)
}

// contract is the part of migrations' report that the runbook steps show
// and decide on. Why is what makes a migration destructive, or else why it
// cannot be reversed.
func contract(rep migrations.Report) platforms.MigrationReport {
	out := platforms.MigrationReport{Tool: rep.Tool, Source: rep.Table, Notes: rep.Notes}
	for _, m := range rep.Ran {
		why := m.DestructiveWhy
		if !m.Reversible && why == "" {
			why = m.ReversibleWhy
		}
		c, cwhy := m.Compat, m.CompatWhy
		switch {
		case c != "":
		case rep.Tool == migrations.ToolDjango || rep.Tool == "rails":
			c, cwhy = platforms.CompatUnknown, rep.Tool+" migrations are code: their SQL is generated at run time, so rollbot cannot read it"
		case !m.SourceRead:
			c, cwhy = platforms.CompatUnknown, "its SQL was not read (is migrations_dir set and readable?)"
		default:
			c, cwhy = platforms.CompatUnknown, "its SQL could not be classified"
		}
		out.Ran = append(out.Ran, platforms.Migration{ID: m.ID, Description: m.Description, AppliedAt: m.AppliedAt,
			Reversible: m.Reversible, Destructive: m.Destructive, Why: why, Compat: c, CompatWhy: cwhy})
	}
	return out
}

func (d *DB) Detect(ctx context.Context, since time.Time) (platforms.MigrationReport, error) {
	rep, err := d.detect(ctx, since)
	if err != nil {
		return platforms.MigrationReport{}, err
	}
	if dec := rep.Decide(); dec.Action == migrations.ActionManual {
		// A dirty table or an uncertain answer: never guess.
		return platforms.MigrationReport{}, platforms.Userf(nil, "%s", dec.Reason)
	}
	return contract(rep), nil
}

func (d *DB) DownPlan(r platforms.MigrationReport) string {
	if len(d.down.Command) == 0 {
		return fmt.Sprintf("no down command is configured for this service: roll %s back by hand to before %s, then approve", d.mig.Target(), ids(r))
	}
	how := ""
	if d.down.Kind == migrations.DownKubernetesJob {
		how = fmt.Sprintf(" as a Kubernetes Job in namespace %s with %s", d.down.Namespace, jobImageText(d.down))
	}
	return fmt.Sprintf("run `%s`%s against %s, then check that the migration table is back before %s", strings.Join(d.down.Command, " "), how, d.mig.Target(), ids(r))
}

func jobImageText(down migrations.DownConfig) string {
	switch down.ImageFrom {
	case migrations.ImageFromFixed:
		return "image " + down.Image
	case migrations.ImageFromLastGood:
		return "the last good release's image"
	default:
		return "the bad release's image (its down migrations ship with it)"
	}
}

func ids(r platforms.MigrationReport) string {
	var s []string
	for _, m := range r.Ran {
		s = append(s, m.ID)
	}
	return strings.Join(s, ", ")
}

// RollBack runs the down command for run.Incident, re-entrant per
// incident (platforms.Database):
//   - kind kubernetes_job: when the incident's down Job exists (an earlier
//     attempt started it), it is followed to its end, whatever the table
//     shows meanwhile (a running golang-migrate marks it dirty); once it
//     has completed, the table must show no migration since the deploy.
//   - kind command, resumed: the command ran as a process of the replica
//     that stopped and is never run again. On the same host its run
//     directory is found and the command followed to its end
//     (migrations.OpenDownRun); then, or when it ran on another host, the
//     table back (no migration since the deploy) is success, anything
//     else a user error saying what to check.
//   - otherwise the table is checked again (it may have changed since the
//     approval) and the down command runs only when it still says "down".
func (d *DB) RollBack(ctx context.Context, run platforms.DBRun, since time.Time, bad platforms.Revision, out io.Writer) (string, error) {
	if len(d.down.Command) == 0 {
		// The plan asked the approvers to roll back by hand before approving.
		return "rolled back by hand before the approval (no down command is configured for this service)", nil
	}
	rep, err := d.detect(ctx, since)
	if err != nil {
		return "", err
	}
	dec := rep.Decide()
	var earlierJob string
	switch {
	case d.down.Kind == migrations.DownKubernetesJob:
		if d.jobs == nil {
			return "", fmt.Errorf("run down job for %s: no Kubernetes client (down.kind kubernetes_job needs platform kubernetes)", d.service)
		}
		if earlierJob, err = d.jobs.Find(ctx, d.down.Namespace, run.Incident); err != nil {
			return "", err
		}
	case run.Resumed:
		return d.afterInterruptedCommand(ctx, run, since, rep, dec, out)
	}
	// Re-checked at run time: the table may have changed since approval.
	if dec.Action != migrations.ActionDown && earlierJob == "" {
		return "", platforms.Userf(nil, "the down migration was not run: %s", dec.Reason)
	}
	if d.down.Kind != migrations.DownKubernetesJob {
		if err := d.mig.RunDown(ctx, d.runKey(run.Incident), rep, out); err != nil {
			return "", err
		}
		return d.verified(ctx, rep, "")
	}
	job, err := d.runJob(ctx, run, rep, bad, out)
	if err != nil {
		return "", err
	}
	ran := fmt.Sprintf("; the down Job %s/%s ran %s", d.down.Namespace, job.Name, job.Image)
	if !job.Attached {
		return d.verified(ctx, rep, ran)
	}
	// The report read before the Job ended may show it half-way: read
	// the table again now that it has completed.
	ran = fmt.Sprintf("; attached to the down Job %s/%s (%s) started by an earlier attempt", d.down.Namespace, job.Name, job.Image)
	if rep, err = d.detect(ctx, since); err != nil {
		return "", err
	}
	if dec := rep.Decide(); dec.Action != migrations.ActionNone {
		return "", platforms.Userf(nil, "the down Job %s/%s started by an earlier attempt completed, but the migration table is not back: %s. Check the migration table before anything else", d.down.Namespace, job.Name, dec.Reason)
	}
	return d.verified(ctx, rep, ran)
}

// verified checks that the table is at rep.Target and says so.
func (d *DB) verified(ctx context.Context, rep migrations.Report, ran string) (string, error) {
	if err := d.mig.Verify(ctx, rep.Target); err != nil {
		return "", err
	}
	at := rep.Target
	if at == "" && len(rep.Ran) == 0 {
		at = rep.Current // nothing ran since the deploy (Django names no single target then)
	}
	return fmt.Sprintf("%s is back at %s (checked in %s)%s", d.mig.Target(), at, rep.Table, ran), nil
}

// afterInterruptedCommand is a resumed kind command down step: rep is the
// table now. The command was started by a replica that stopped; it runs
// in a process group of its own, so it may well still be running (or
// about to finish). rollbot never starts it a second time. When it ran on
// this host, its run directory is here: rollbot relays its output and
// waits for it to end (followCommand). Else it watches the migration
// table for up to the command's timeout (within ctx) and goes on once the
// table is back at the target; otherwise it stops with what the table
// says.
func (d *DB) afterInterruptedCommand(ctx context.Context, run platforms.DBRun, since time.Time, rep migrations.Report, dec migrations.Decision, out io.Writer) (string, error) {
	dr, err := migrations.OpenDownRun(d.runKey(run.Incident))
	switch {
	case err == nil:
		return d.followCommand(ctx, run, since, dr, out)
	case !errors.Is(err, migrations.ErrNoDownRun):
		return "", fmt.Errorf("resume down command %s for %s: %w", d.down.Command[0], d.service, err)
	}
	const finished = "; the down command run by the replica that stopped had finished"
	if dec.Action == migrations.ActionNone {
		return d.verified(ctx, rep, finished)
	}
	limit := d.down.Timeout
	if limit <= 0 {
		limit = migrations.DefaultDownTimeout
	}
	fmt.Fprintf(out, "The down command `%s` was started by a replica that stopped, on another replica's host (rollbot finds no run of it on this one), and may still be running there; rollbot does not start it again. Watching %s for up to %s…\n", d.down.Command[0], rep.Table, limit)
	wctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
			return "", platforms.Userf(fmt.Errorf("resume down command %s for %s: %s", d.down.Command[0], d.service, dec.Action),
				"the down command `%s` was interrupted: it ran on another replica's host, and that replica stopped; rollbot cannot follow it there or know how far it got, so it does not run it a second time. After waiting %s, %s: %s. Check the migration table (and the database's own logs for the command), finish the rollback by hand",
				d.down.Command[0], limit, rep.Table, dec.Reason)
		case <-tick.C:
		}
		next, err := d.detect(wctx, since)
		if err != nil {
			continue // the table may be locked by the running command
		}
		rep, dec = next, next.Decide()
		if dec.Action == migrations.ActionNone {
			return d.verified(ctx, rep, finished)
		}
	}
}

// followCommand follows the down command that the replica that stopped
// started on this host, to its end (migrations.DownRun.Follow: at most
// the command's timeout from now, then it is stopped), relaying its
// output from the beginning; then the table decides, since the command's
// exit status was lost with that replica.
func (d *DB) followCommand(ctx context.Context, run platforms.DBRun, since time.Time, dr *migrations.DownRun, out io.Writer) (string, error) {
	name := d.down.Command[0]
	d.log.InfoContext(ctx, "following the down command a stopped replica started on this host", "op", "db-down", "incident", run.Incident, "command", name)
	fmt.Fprintf(out, "Following the down command `%s` that the replica that stopped started on this host (rollbot does not start it again); its output from the beginning:\n", name)
	if err := dr.Follow(ctx, d.down, out); err != nil {
		return "", err
	}
	rep, err := d.detect(ctx, since)
	if err != nil {
		return "", err
	}
	if dec := rep.Decide(); dec.Action != migrations.ActionNone {
		return "", platforms.Userf(fmt.Errorf("resume down command %s for %s: ended, table %s", name, d.service, dec.Action),
			"the down command `%s` started by the replica that stopped has ended, but %s is not back: %s. Its exit status was lost with that replica (its output is above). Check the migration table before anything else, and finish the rollback by hand",
			name, rep.Table, dec.Reason)
	}
	return d.verified(ctx, rep, "; the down command started by the replica that stopped finished (rollbot followed it on this host)")
}

// CheckAccess reports, for down.kind kubernetes_job, whether rollbot's
// credentials hold every permission the down Job needs in down.namespace
// (migrations.JobRole), so that a missing one is found at start-up rather
// than during an incident (platforms.AccessChecker). Nil for other kinds.
func (d *DB) CheckAccess(ctx context.Context) error {
	if d.jobs == nil {
		return nil
	}
	return d.jobs.CheckAccess(ctx, d.down.Namespace)
}

// runJob runs the down command as a Kubernetes Job on the service's
// cluster with the image down.image_from picks (the bad release's by
// default), or attaches to the incident's Job an earlier attempt started.
func (d *DB) runJob(ctx context.Context, run platforms.DBRun, rep migrations.Report, bad platforms.Revision, out io.Writer) (migrations.JobRun, error) {
	var lastGood string
	if d.down.ImageFrom == migrations.ImageFromLastGood {
		snap, err := d.platform.Snapshot(ctx)
		if err != nil {
			return migrations.JobRun{}, fmt.Errorf("run down job for %s: %w", d.service, err)
		}
		if r, ok := platforms.LastKnownGood(snap.History, bad, nil); ok {
			lastGood = r.Artifact
		}
	}
	image := d.down.ImageFor(bad.Artifact, lastGood)
	if image == "" {
		// An existing Job needs no image: JobRunner.Run attaches to it.
		if name, err := d.jobs.Find(ctx, d.down.Namespace, run.Incident); err != nil || name == "" {
			return migrations.JobRun{}, platforms.Userf(fmt.Errorf("run down job for %s: no image (image_from %q, bad %q)", d.service, d.down.ImageFrom, bad.Artifact),
				"the down Job was not started: rollbot cannot tell which image to run it with (%s); roll the database back by hand", jobImageText(d.down))
		}
	}
	d.log.InfoContext(ctx, "running the down migration as a Kubernetes Job", "incident", run.Incident, "namespace", d.down.Namespace, "image", image, "steps", rep.Steps, "target", rep.Target)
	return d.jobs.Run(ctx, d.down, run.Incident, image, rep.DownVars(), out)
}

func (d *DB) RestorePlan(ctx context.Context, incident string, before time.Time) string {
	if d.restore == nil {
		return "no RDS restore is configured for this service: restore the pre-deploy snapshot by hand (runbook §4), then approve"
	}
	plan, err := d.restore.Plan(ctx, rds.Request{Before: before, Incident: incident})
	if err != nil {
		msg, ok := platforms.UserMessage(err)
		if ok {
			d.log.Warn("plan database restore", "incident", incident, "err", err)
		} else {
			msg = platforms.SeeLog(ctx, d.log, "plan database restore", err, "incident", incident)
		}
		return fmt.Sprintf("restore %s to its state before %s into a new instance; rollbot could not prepare the exact plan yet (%s)", d.restore.Target(), before.UTC().Format("2006-01-02 15:04 UTC"), msg)
	}
	return strings.Join(plan.Lines(), "; ") + fmt.Sprintf(". Everything written after %s is not in the new instance (data-loss window). Then, before the app rollback: %s", plan.DataAsOf.UTC().Format("2006-01-02 15:04:05 UTC"), d.switchSummary(plan.Source, plan.Target))
}

// switchSummary says how the app will be pointed at the restored
// instance, for the approvers.
func (d *DB) switchSummary(source, target string) string {
	switch d.swMode {
	case platforms.SwitchRename:
		return fmt.Sprintf("rollbot renames %s to %s-pre-rollback-<time> and %s to %s (the endpoint keeps its DNS name)", source, source, target, source)
	case platforms.SwitchSecret:
		return "rollbot will " + d.secret.Describe()
	}
	return fmt.Sprintf("a DB approver switches the app to %s by hand and presses Endpoint switched", target)
}

// Restore restores into a new instance named after run.Incident
// (rds.IncidentTarget). When that instance exists and carries the
// incident's tags — a restore an earlier attempt started — it attaches:
// no second restore call, it waits for that instance (platforms.Database).
func (d *DB) Restore(ctx context.Context, run platforms.DBRun, before time.Time, progress func(string)) (string, error) {
	if d.restore == nil {
		// The plan asked the approvers to restore by hand before approving.
		return "restored by hand before the approvals (no RDS restore is configured for this service)", nil
	}
	plan, err := d.restore.Plan(ctx, rds.Request{Before: before, Incident: run.Incident})
	if err != nil {
		return "", err
	}
	if !plan.Attach {
		for _, l := range plan.Lines() {
			progress(l)
		}
	}
	res, err := d.restore.Restore(ctx, plan, false)
	if err != nil {
		return "", err
	}
	if res.Outcome == platforms.Skipped {
		progress(res.Detail) // attached to the earlier attempt's restore
	}
	r, err := d.restore.Wait(ctx, plan, func(p platforms.Progress) { progress(p.Message) })
	if err != nil {
		return "", err
	}
	var next string
	switch d.swMode {
	case platforms.SwitchRename:
		next = fmt.Sprintf("Next: rollbot renames %s aside and %s to %s, so the app's endpoint %s reaches the restored data; then it rolls back the app.", r.Source, r.Target, r.Source, r.SourceEndpoint)
	case platforms.SwitchSecret:
		next = fmt.Sprintf("Next: rollbot points the app at %s (%s); then it rolls back the app.", r.Endpoint, d.secret.Describe())
	default:
		next = fmt.Sprintf("Next: switch the app's database endpoint from %s to %s by hand, then a DB approver presses *Endpoint switched*; the app rollback waits for it.", firstNonEmpty(r.SourceEndpoint, r.Source), r.Endpoint)
	}
	return r.SummaryThen(next), nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// SwitchMode is the endpoint switch after a restore, "" without an RDS
// restore (the approvers restored by hand).
func (d *DB) SwitchMode() string {
	if d.restore == nil {
		return ""
	}
	return d.swMode
}

// SwitchPlan says what the endpoint switch does, or what to do by hand.
func (d *DB) SwitchPlan(ctx context.Context, incident string, at time.Time) string {
	if d.restore == nil {
		return ""
	}
	restored := rds.IncidentTarget(d.restore.Instance(), incident)
	switch d.swMode {
	case platforms.SwitchRename:
		return strings.Join(d.restore.SwapFor(incident, at).Lines(), "; ")
	case platforms.SwitchSecret:
		return fmt.Sprintf("point the app at %s: %s", restored, d.secret.Describe())
	}
	return fmt.Sprintf("point the app at the restored instance %s by hand (its endpoint is in the database step above), then press *Endpoint switched*. The app rollback waits for it", restored)
}

// SwitchEndpoint points the app at the incident's restored instance
// (platforms.EndpointSwitcher), re-entrant: rename reads the instance
// names before each rename, secret the Secret and the workload.
func (d *DB) SwitchEndpoint(ctx context.Context, run platforms.DBRun, at time.Time, steps platforms.SwitchSteps) (string, error) {
	if d.restore == nil {
		return "", fmt.Errorf("switch endpoint %s: no restore configured", d.service)
	}
	switch d.swMode {
	case platforms.SwitchRename:
		return d.restore.Run(ctx, d.restore.SwapFor(run.Incident, at), rds.SwapSteps{Before: steps.Before, Note: steps.Note})
	case platforms.SwitchSecret:
		ep, err := d.restore.RestoredEndpoint(ctx, run.Incident)
		if err != nil {
			return "", err
		}
		return d.secret.Switch(ctx, run.Incident, ep, steps)
	}
	return "", fmt.Errorf("switch endpoint %s: mode %q is switched by hand", d.service, d.swMode)
}

// runKey names incident's down command run directory on this host: the
// incident id, and a digest of the installation's scope when it has one.
func (d *DB) runKey(incident string) string {
	if d.runScope == "" {
		return incident
	}
	sum := sha256.Sum256([]byte(d.runScope))
	return incident + "." + hex.EncodeToString(sum[:4])
}
