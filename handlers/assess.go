package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"rollbot/platforms"
	"rollbot/state"
)

// Verdict of one check.
type Verdict string

const (
	Pass         Verdict = "pass"
	Fail         Verdict = "fail"
	Inconclusive Verdict = "inconclusive"
)

// Check is one row of the assessment table (runbook §1).
type Check struct {
	Name      string
	Measured  string
	Threshold string
	Verdict   Verdict
	Source    string // where the number came from: source, window, query
	// Notes say when a number covers a shorter span than its window (a
	// scrape history that starts after the window does); they are shown
	// above the table.
	Notes []string `json:",omitempty"`
	// limit is the number the verdict compares with (the error ratio
	// threshold, factor × baseline p95); 0 when not judged.
	limit float64
}

// Assessment is what step 1 found.
type Assessment struct {
	Service     string
	Target      string // platform target
	Snapshot    *platforms.Snapshot
	SnapshotErr string
	Checks      []Check
	Bad         platforms.Revision
	Good        platforms.Revision
	HasGood     bool
	GoodWhy     string // why no target, or how it was chosen
	AlreadyAt   bool   // the target is what runs now
	Migrations  *platforms.MigrationReport
	MigErr      string
	MigLog      string // init-migrate log tail, when the platform has one
	// MigLogApplied are the lines of MigLog that show migrations being
	// applied: evidence for the decision gate.
	MigLogApplied []string `json:",omitempty"`
	Gate          bool     // migrations ran: DB step first
	// Related is the "Deployment-related?" row: onset, neighbours, nodes.
	Related *Relatedness `json:",omitempty"`
	Took    time.Duration
}

// Notes are the checks' notes, in table order.
func (a *Assessment) Notes() []string {
	var out []string
	for _, c := range a.Checks {
		out = append(out, c.Notes...)
	}
	return out
}

// Failing lists the names of failed checks.
func (a *Assessment) Failing() []string {
	var out []string
	for _, c := range a.Checks {
		if c.Verdict == Fail {
			out = append(out, c.Name)
		}
	}
	return out
}

// Recommendation is the runbook's "action if exceeded", following the
// "Deployment-related?" verdict: rolling back stays possible whatever it
// says.
func (a *Assessment) Recommendation() string {
	f := a.Failing()
	over := strings.Join(f, ", ") + " over threshold"
	if r := a.Related; r != nil && r.Verdict == Unlikely {
		still := "rolling back stays possible"
		if len(f) > 0 {
			still += " (" + over + ")"
		}
		return "Likely not this deploy: " + lowerFirst(r.Summary) + ". Check infrastructure first (runbook: do not roll back a non-deployment issue); " + still + "."
	}
	if len(f) > 0 {
		switch r := a.Related; {
		case r == nil:
		case r.Verdict == Likely:
			return "Proceed to rollback: " + over + "; " + lowerFirst(r.Summary) + " → likely this deploy."
		default:
			return "Proceed to rollback: " + over + ". Whether it is deployment-related is unknown (" + r.Summary + ")."
		}
		return "Proceed to rollback: " + over + "."
	}
	for _, c := range a.Checks {
		if c.Verdict == Inconclusive {
			return "Inconclusive: some checks have no data. Confirm the failure is deployment-related before rolling back."
		}
	}
	return "Every check passes: this may not be a deployment problem (runbook prerequisite: confirm the failure is deployment-related). You can still roll back."
}

// Assess runs runbook §1 for a service. Every source runs concurrently
// under its own timeout, so one slow source never holds up the table: the
// current error rate and p95 start at once, beside the platform snapshot;
// the baseline p95 and the migration check wait for the snapshot, which
// says when the bad deploy started.
func (e *Engine) Assess(ctx context.Context, svc *Service, to string, marks map[string]state.Mark) *Assessment {
	start := e.now()
	a := &Assessment{Service: svc.Name, Target: svc.Platform.Target(), Checks: make([]Check, 4)}
	var (
		snap      *platforms.Snapshot
		snapReady = make(chan struct{})
		wg        sync.WaitGroup
	)
	wg.Go(func() {
		defer close(snapReady)
		sctx, cancel := context.WithTimeout(ctx, 2*e.opt.QueryTimeout)
		defer cancel()
		s, err := svc.Platform.Snapshot(sctx)
		if err != nil {
			a.SnapshotErr = e.userText(err, "read "+svc.Platform.Kind()+" state", "service", svc.Name)
			return
		}
		snap = s
		a.Snapshot, a.Bad, a.MigLog = s, s.Current, s.MigrationLog
		e.chooseTarget(a, s, to, marks)
	})
	deployedAt := func() time.Time {
		<-snapReady
		if snap == nil {
			return time.Time{}
		}
		return snap.DeployedAt
	}
	wg.Go(func() {
		qctx, cancel := context.WithTimeout(ctx, e.opt.QueryTimeout)
		defer cancel()
		a.Checks[0] = e.errorRateCheck(qctx, svc, start)
	})
	wg.Go(func() { a.Checks[1] = e.latencyCheck(ctx, svc, start, deployedAt) })
	var reads *verdictReads
	wg.Go(func() {
		reads = e.readVerdict(ctx, svc, start, func() *platforms.Snapshot { <-snapReady; return snap })
	})
	if svc.Database != nil {
		wg.Go(func() {
			since := deployedAt()
			if snap == nil {
				return
			}
			qctx, cancel := context.WithTimeout(ctx, 2*e.opt.QueryTimeout)
			defer cancel()
			rep, err := svc.Database.Detect(qctx, since)
			if err != nil {
				a.MigErr = e.userText(err, "check database migrations", "service", svc.Name)
				// Runbook §1: migrations may have run; the DB step (by hand) comes first.
				a.Gate = true
				return
			}
			a.Migrations = &rep
			a.Gate = len(rep.Ran) > 0
		})
	}
	wg.Wait()
	e.gateFromMigrationLog(svc, a)
	a.Checks[2] = restartsCheck(svc, snap, a.SnapshotErr)
	a.Checks[3] = readinessCheck(svc, snap, a.SnapshotErr)
	a.Related = judge(svc, reads, a.Checks)
	a.Took = e.now().Sub(start)
	return a
}

// chooseTarget names the last known good revision, or the --to one.
func (e *Engine) chooseTarget(a *Assessment, snap *platforms.Snapshot, to string, marks map[string]state.Mark) {
	marked := func(r platforms.Revision) bool { _, ok := marks[r.Artifact]; return ok }
	if to == "" {
		good, ok := platforms.LastKnownGood(snap.History, snap.Current, marked)
		if !ok {
			a.GoodWhy = "no earlier revision that is not marked DO_NOT_DEPLOY; name one with `--to`"
			return
		}
		a.Good, a.HasGood = good, true
		a.GoodWhy = "newest earlier revision not marked DO_NOT_DEPLOY"
		if snap.Owner != nil && snap.Owner.Kind == platforms.OwnerHelm {
			a.GoodWhy = "newest earlier Helm revision that deployed successfully and is not marked DO_NOT_DEPLOY"
		}
		return
	}
	for _, r := range snap.History {
		if r.ID == to || r.Artifact == to || strings.HasSuffix(r.Artifact, ":"+to) {
			if m, ok := marks[r.Artifact]; ok {
				a.GoodWhy = fmt.Sprintf("%s is marked DO_NOT_DEPLOY (by <@%s> in %s); rollbot will not roll back to it", r.Label(), m.By, m.Incident)
				return
			}
			if r.DoNotDeploy {
				a.GoodWhy = fmt.Sprintf("%s is marked DO_NOT_DEPLOY on the platform; rollbot will not roll back to it", r.Label())
				return
			}
			if r.Unusable != "" {
				a.GoodWhy = fmt.Sprintf("%s cannot be rolled back to: %s", r.Label(), r.Unusable)
				return
			}
			a.Good, a.HasGood = r, true
			a.AlreadyAt = r.ID == snap.Current.ID || r.Artifact == snap.Current.Artifact
			a.GoodWhy = "requested with --to"
			return
		}
	}
	var ids []string
	for _, r := range snap.History {
		ids = append(ids, r.ID)
	}
	a.GoodWhy = fmt.Sprintf("revision %q is not in the history of %s (known: %s)", to, a.Target, strings.Join(ids, ", "))
}

func pct(v float64) string {
	if v != 0 && math.Abs(v) < 0.001 {
		return fmt.Sprintf("%.3f%%", v*100)
	}
	return fmt.Sprintf("%.2f%%", v*100)
}

func ms(seconds float64) string {
	return fmt.Sprintf("%.0f ms", seconds*1000)
}

// window renders a duration the short way: 5m, 1h, 1h30m, 30s.
func window(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func sourceOf(m platforms.Measurement, w time.Duration) string {
	s := m.Source + ", last " + window(w)
	if m.Query != "" {
		s += ": `" + m.Query + "`"
	}
	return s
}

func (e *Engine) errorRateCheck(ctx context.Context, svc *Service, now time.Time) (c Check) {
	c = Check{Name: "Error rate", Threshold: "> " + pct(svc.Thresholds.ErrorRate), Verdict: Inconclusive}
	if svc.Metrics == nil {
		c.Measured, c.Source = "no data", "no metrics source configured"
		return c
	}
	m, err := svc.Metrics.ErrorRatio(ctx, now.Add(-svc.AssessWindow), now)
	defer markSpan(&c, m, now.Add(-svc.AssessWindow), svc.AssessWindow)
	if !e.usable(&c, svc, m, err, "query error rate") {
		return c
	}
	c.Measured = pct(m.Value)
	c.Verdict, c.limit = Pass, svc.Thresholds.ErrorRate
	if m.Value > svc.Thresholds.ErrorRate {
		c.Verdict = Fail
	}
	return c
}

// baselineP95 is the p95 over the window that ends when the bad deploy
// started; the configured baseline_p95 is the fallback when that window
// has no usable measurement.
//
// note, when set, says the baseline covers less than its window.
func (e *Engine) baselineP95(ctx context.Context, svc *Service, deployedAt time.Time) (v float64, src, note string, err error) {
	fixed := svc.Thresholds.BaselineP95
	fallback := func(why string) (float64, string, string, error) {
		return fixed.Seconds(), fmt.Sprintf("configured baseline_p95 %s (no measured baseline: %s)", ms(fixed.Seconds()), why), "", nil
	}
	if deployedAt.IsZero() {
		if fixed > 0 {
			return fallback("the platform did not say when the deploy started")
		}
		return 0, "", "", platforms.Userf(nil, "the platform did not say when the deploy started, and no baseline_p95 is configured")
	}
	m, err := svc.Metrics.LatencyP95(ctx, deployedAt.Add(-svc.BaselineWindow), deployedAt)
	if err != nil {
		if fixed > 0 {
			return fallback(e.userText(err, "query baseline latency", "service", svc.Name))
		}
		return 0, "", "", err
	}
	if m.NoData || math.IsNaN(m.Value) || m.Value <= 0 {
		why := m.Reason
		if why == "" {
			why = "no samples"
		}
		if fixed > 0 {
			return fallback(fmt.Sprintf("%s in the %s before the deploy", why, window(svc.BaselineWindow)))
		}
		return 0, "", "", platforms.Userf(nil, "no baseline: %s in the %s before the deploy", why, window(svc.BaselineWindow))
	}
	at := deployedAt.UTC().Format("15:04")
	if got, ok := shortSpan(m, deployedAt.Add(-svc.BaselineWindow), svc.BaselineWindow); ok {
		return m.Value, fmt.Sprintf("baseline = p95 over %s before the deploy at %s UTC (history shorter than %s)", window(got), at, window(svc.BaselineWindow)),
			fmt.Sprintf("Baseline p95 measured over %s only (%s–%s UTC, before the deploy), not the %s window: the metrics history is shorter.",
				window(got), m.From.UTC().Format(time.TimeOnly), m.To.UTC().Format(time.TimeOnly), window(svc.BaselineWindow)), nil
	}
	return m.Value, fmt.Sprintf("baseline = p95 over the %s before the deploy at %s UTC", window(svc.BaselineWindow), at), "", nil
}

// shortSpan reports the span m covers when it starts well after the
// window [from, from+w] asked for (by more than a tenth of it): the
// source's history is shorter. A span that ends a little early (the
// newest sample is a few seconds old) is not short.
func shortSpan(m platforms.Measurement, from time.Time, w time.Duration) (time.Duration, bool) {
	if m.From.IsZero() || m.To.IsZero() || w <= 0 {
		return 0, false
	}
	return m.To.Sub(m.From).Round(time.Second), m.From.Sub(from) > w/10
}

// markSpan says, in the measured cell and in a note above the table,
// that a check measured a shorter span than its window.
func markSpan(c *Check, m platforms.Measurement, from time.Time, w time.Duration) {
	got, ok := shortSpan(m, from, w)
	if !ok {
		return
	}
	c.Measured += " (over " + window(got) + ")"
	c.Notes = append(c.Notes, fmt.Sprintf("%s measured over the last %s only (%s–%s UTC), not the %s window: the metrics history is shorter (rollbot started scraping recently).",
		c.Name, window(got), m.From.UTC().Format(time.TimeOnly), m.To.UTC().Format(time.TimeOnly), window(w)))
}

func (e *Engine) latencyCheck(ctx context.Context, svc *Service, now time.Time, deployedAt func() time.Time) (c Check) {
	c = Check{Name: "Latency p95", Threshold: fmt.Sprintf("> %g× baseline", svc.Thresholds.LatencyFactor), Verdict: Inconclusive}
	if svc.Metrics == nil {
		c.Measured, c.Source = "no data", "no metrics source configured"
		return c
	}
	var (
		base     float64
		baseSrc  string
		baseNote string
		baseErr  error
		wg       sync.WaitGroup
	)
	wg.Go(func() {
		since := deployedAt() // the baseline window ends where the bad deploy began
		bctx, cancel := context.WithTimeout(ctx, e.opt.QueryTimeout)
		defer cancel()
		base, baseSrc, baseNote, baseErr = e.baselineP95(bctx, svc, since)
	})
	qctx, cancel := context.WithTimeout(ctx, e.opt.QueryTimeout)
	m, err := svc.Metrics.LatencyP95(qctx, now.Add(-svc.AssessWindow), now)
	cancel()
	wg.Wait()
	defer markSpan(&c, m, now.Add(-svc.AssessWindow), svc.AssessWindow)
	if !e.usable(&c, svc, m, err, "query latency") {
		return c
	}
	c.Measured = ms(m.Value)
	if baseErr != nil {
		c.Measured += " (no baseline)"
		c.Source += "; " + e.userText(baseErr, "query baseline latency", "service", svc.Name)
		return c
	}
	c.Threshold = fmt.Sprintf("> %g× baseline (%s)", svc.Thresholds.LatencyFactor, ms(base*svc.Thresholds.LatencyFactor))
	c.Measured = fmt.Sprintf("%s (%.1f× baseline %s)", ms(m.Value), m.Value/base, ms(base))
	c.Source += "; " + baseSrc
	if baseNote != "" {
		c.Notes = append(c.Notes, baseNote)
	}
	c.Verdict, c.limit = Pass, svc.Thresholds.LatencyFactor*base
	if m.Value > svc.Thresholds.LatencyFactor*base {
		c.Verdict = Fail
	}
	return c
}

// usable fills c for a measurement without a value (an error, no data,
// NaN) and reports whether m can be judged. No data is inconclusive,
// never healthy; the reason goes where users look for the source.
func (e *Engine) usable(c *Check, svc *Service, m platforms.Measurement, err error, op string) bool {
	if err != nil {
		c.Measured, c.Source = "no data", e.userText(err, op, "service", svc.Name)
		return false
	}
	c.Source = sourceOf(m, svc.AssessWindow)
	if m.NoData || math.IsNaN(m.Value) {
		c.Measured = "no data"
		if m.Reason != "" {
			c.Source = m.Reason + " (" + c.Source + ")"
		}
		return false
	}
	return true
}

func restartsCheck(svc *Service, snap *platforms.Snapshot, snapErr string) Check {
	c := Check{Name: "Pod restarts", Threshold: fmt.Sprintf("> %d in 5 min", svc.Thresholds.Restarts), Verdict: Inconclusive, Measured: "no data"}
	if snap == nil {
		c.Source = snapErr
		return c
	}
	h := snap.Health
	c.Source = svc.Platform.Kind() + " " + svc.Platform.Target()
	if h.RestartWindow > 0 {
		c.Threshold = fmt.Sprintf("> %d in %s", svc.Thresholds.Restarts, window(h.RestartWindow))
	}
	if !h.Known {
		if h.Detail != "" {
			c.Source = h.Detail + " (" + c.Source + ")"
		}
		return c
	}
	c.Measured = fmt.Sprintf("%d", h.Restarts)
	c.Verdict = Pass
	if h.Restarts > svc.Thresholds.Restarts {
		c.Verdict = Fail
	}
	return c
}

func readinessCheck(svc *Service, snap *platforms.Snapshot, snapErr string) Check {
	c := Check{Name: "Failed readiness", Threshold: "> " + pct(svc.Thresholds.UnreadyRatio) + " of pods", Verdict: Inconclusive, Measured: "no data"}
	if snap == nil {
		c.Source = snapErr
		return c
	}
	h := snap.Health
	c.Source = svc.Platform.Kind() + " " + svc.Platform.Target()
	if h.Detail != "" {
		c.Source = h.Detail + " (" + c.Source + ")"
	}
	if !h.Known || h.Desired == 0 {
		return c
	}
	c.Measured = fmt.Sprintf("%s (%d of %d not ready)", pct(h.UnreadyRatio()), h.Desired-h.Ready, h.Desired)
	c.Verdict = Pass
	if h.UnreadyRatio() > svc.Thresholds.UnreadyRatio {
		c.Verdict = Fail
	}
	return c
}

// startRollback is runbook §1 driven by `/rollback <service>`: take the
// service lock, open the incident (owned by this replica), and assess in
// the background.
func (e *Engine) startRollback(ctx context.Context, sc SlashCommand, cmd Command) {
	if _, msg := e.openIncident(ctx, e.services[cmd.Service], sc.ChannelID, sc.UserID, cmd, nil); msg != nil {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, *msg)
	}
}

// openIncident opens an incident (the service lock, the record, the
// timeline's first event) and starts its assessment; on failure it
// returns what to tell the requester.
func (e *Engine) openIncident(ctx context.Context, svc *Service, channel, user string, cmd Command, alert *state.AlertRef) (*state.Incident, *Msg) {
	fail := func(m Msg) (*state.Incident, *Msg) { return nil, &m }
	id, err := e.store.NextID(ctx)
	if err != nil {
		return fail(errorMsg(e.userText(err, "open incident")))
	}
	in := &state.Incident{
		ID: id, Service: svc.Name, Channel: channel, RequestedBy: user, Reason: cmd.Reason,
		DryRun: cmd.DryRun, To: cmd.To, Status: state.Assessing, Platform: svc.Platform.Kind(),
		PlatformTgt: svc.Platform.Target(), Messages: map[string]string{},
		Owner: e.opt.Replica, Fence: 1, StepStarted: e.now(), Alert: alert,
	}
	if !cmd.DryRun { // a dry run changes nothing, so it needs no lock
		lock, err := e.store.AcquireLock(ctx, svc.Name, id, user, e.opt.LockTTL)
		if errors.Is(err, state.ErrLocked) {
			holder, _ := e.store.Get(ctx, lock.Incident)
			return fail(lockedMsg(svc.Name, lock, holder))
		}
		if err != nil {
			return fail(errorMsg(e.userText(err, "take the rollback lock", "service", svc.Name)))
		}
		in.Lock = lock.Token
	}
	detail := "requested rollback of " + svc.Name
	if cmd.DryRun {
		detail = "requested a dry run of a rollback of " + svc.Name
	}
	if cmd.To != "" {
		detail += " to " + cmd.To
	}
	if cmd.Reason != "" {
		detail += ": " + cmd.Reason
	}
	if err := e.store.Create(ctx, in, state.Event{Actor: user, Step: "request", Detail: detail, Time: e.now()}); err != nil {
		e.store.ReleaseLock(ctx, svc.Name, in.Lock)
		return fail(errorMsg(e.userText(err, "save incident")))
	}
	e.work(in, svc, "")
	return in, nil
}

// assessStep posts the placeholder, assesses, and posts the table with
// the decision buttons (or the plan, for --dry-run).
func (e *Engine) assessStep(ctx context.Context, o *owned) error {
	in, svc := o.in, o.svc
	if err := e.recordOwned(ctx, o, "assess", "assessing "+svc.Platform.Target()); err != nil {
		return err
	}
	ts := in.ThreadTS
	if ts == "" {
		var err error
		ts, err = e.chat.Post(ctx, in.Channel, "", assessingMsg(in))
		if err != nil {
			e.log.Error("post assessment placeholder", "incident", in.ID, "err", err)
			return failf("could not post to the channel")
		}
		if err := e.updateOwned(ctx, o, func(i *state.Incident) {
			i.ThreadTS = ts
			if i.Messages == nil {
				i.Messages = map[string]string{}
			}
			i.Messages["assessment"] = ts
		}); err != nil {
			return err
		}
		e.sayResumed(o)
	}
	if in.Drill != nil && in.Steps["drill_deploy"] != "done" {
		if err := e.drillDeploy(ctx, o); err != nil {
			return err
		}
		in = o.in
	}

	marks, err := e.store.Marks(ctx, svc.Name)
	if err != nil {
		e.log.Warn("read DO_NOT_DEPLOY marks", "service", svc.Name, "err", err)
	}
	a := e.Assess(ctx, svc, in.To, marks)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if a.Snapshot != nil {
		cur := a.Snapshot.Current
		cur.CreatedAt = a.Snapshot.DeployedAt
		if err := e.store.RecordDeployed(ctx, svc.Name, cur); err != nil {
			e.log.Warn("record deployed version", "service", svc.Name, "err", err)
		}
	}
	var plan []string
	if in.DryRun {
		plan = e.dryRun(ctx, svc, in, a)
	}
	b, _ := json.Marshal(a)
	if err := e.updateOwned(ctx, o, func(in *state.Incident) {
		in.Bad, in.Target = a.Bad, a.Good
		if a.Snapshot != nil {
			in.DeployedAt = a.Snapshot.DeployedAt
		}
		in.MigrationsRan = a.Gate
		in.DBManual = a.Gate && a.Migrations == nil
		if a.Migrations != nil {
			in.DBDestructive = a.Migrations.Destructive()
			in.DBOptional = a.Gate && a.Migrations.ExpandOnly()
		}
		in.Assessment = b
		in.PostPlan = postPlan(svc, a.Bad)
	}); err != nil {
		return err
	}
	if err := e.recordOwned(ctx, o, "assess", assessmentSummary(a)); err != nil {
		return err
	}

	switch {
	case in.DryRun:
		if err := e.advance(ctx, o, state.Planned, nil); err != nil {
			return err
		}
		e.update(ctx, o.in.Channel, ts, assessmentMsg(o.in, a, plan))
	case a.SnapshotErr != "" || !a.HasGood:
		e.recordOwned(ctx, o, "assess", "no rollback possible: "+firstNonEmpty(a.SnapshotErr, a.GoodWhy))
		if drillDeployed(o.in) {
			// The drill's bad version does not stay: the next step puts
			// back what the drill found, holding the service until then.
			if err := e.advance(ctx, o, state.DrillRestoring, nil); err != nil {
				return err
			}
			e.update(ctx, o.in.Channel, ts, assessmentMsg(o.in, a, nil))
			e.post(ctx, o.in.Channel, ts, errorMsg("Drill "+o.in.ID+" stopped: no rollback possible. "+restoringText(o.in)))
			return nil
		}
		if err := e.advance(ctx, o, state.Cancelled, nil); err != nil {
			return err
		}
		e.store.ReleaseLock(ctx, svc.Name, o.in.Lock)
		e.update(ctx, o.in.Channel, ts, assessmentMsg(o.in, a, nil))
	default:
		// The move and the debt of the buttons are one write: should this
		// replica die before the buttons are on the message, another one
		// shows them (showWait), rather than leave a wait with nothing
		// to click that no replica would resume.
		if err := e.advanceShowing(ctx, o, state.AwaitingConfirm, showDecisionButtons, nil); err != nil {
			return err
		}
		e.showWait(ctx, o.in, o.svc)
	}
	return nil
}

// The messages a move into a wait owes the thread (state.Incident.Show).
const (
	showDecisionButtons = "decision" // the assessment with Roll back / Cancel
	showDBRequest       = "db_request"
)

// showWait puts on Slack the message a wait owes (in.Show) and records it
// shown, for the replica that holds the lease for showing it: the one
// that moved the incident into the wait, or one that took the showing
// over after that one stopped. The lease is kept alive meanwhile (a
// rate-limited update may take longer than the lease). A message shown
// twice across a takeover is the same buttons on the same incident; a
// click acts once (every decision is a compare-and-set move).
func (e *Engine) showWait(ctx context.Context, in *state.Incident, svc *Service) {
	claim, show := state.ClaimOf(in), in.Show
	stop := e.keepShowLease(ctx, in.ID, claim)
	defer stop()
	// Someone may have decided already (buttons another replica showed):
	// then the buttons must not come back.
	if cur, err := e.store.Get(ctx, in.ID); err != nil || cur.Show != show || cur.Fence != claim.Fence {
		return
	}
	e.store.HoldLock(ctx, in, e.opt.Budgets.Confirm+time.Minute)
	switch show {
	case showDecisionButtons:
		e.showDecision(ctx, in, e.assessmentOf(in))
	case showDBRequest:
		e.update(ctx, in.Channel, in.Messages["assessment"], decidedMsg(in, e.assessmentOf(in)))
		e.requestDBApproval(ctx, in, svc)
	default:
		e.log.Error("unknown message owed by a wait", "incident", in.ID, "show", show)
	}
	if err := e.store.Shown(ctx, in.ID, claim, show); err != nil && !errors.Is(err, state.ErrStale) {
		e.log.Warn("record the wait's message shown", "incident", in.ID, "err", err)
	}
}

// keepShowLease renews the lease for showing a wait's message until the
// returned stop is called, or the lease is someone else's.
func (e *Engine) keepShowLease(ctx context.Context, id string, claim state.Claim) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(min(e.opt.Lease/3, 2*time.Second))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := e.store.Heartbeat(ctx, id, claim, e.opt.Lease); errors.Is(err, state.ErrFenced) {
				return
			}
		}
	}()
	return func() { cancel(); <-done }
}

// showDecision puts the buttons on the assessment message. If Slack does
// not take the update, the table is posted again as a new message; if that
// fails too, nobody could click, so the incident is closed and the service
// released rather than left locked with nothing to click.
func (e *Engine) showDecision(ctx context.Context, in *state.Incident, a *Assessment) {
	m := withBudgets(assessmentMsg(in, a, nil), in, e.now())
	if err := e.chat.Update(ctx, in.Channel, in.ThreadTS, m); err == nil {
		return
	} else {
		e.log.Warn("update the assessment with its buttons", "incident", in.ID, "err", err, "cause", context.Cause(ctx))
	}
	if errors.Is(context.Cause(ctx), errTakenOver) {
		// Another replica took the showing over and shows them.
		return
	}
	// The step's context may be what ended (its budget ran out while the
	// update waited its turn): the fallback has a context of its own, so
	// the incident is never left waiting for a click nobody can make.
	ctx, cancel := e.fresh()
	defer cancel()
	if ts, err := e.chat.Post(ctx, in.Channel, in.ThreadTS, m); err == nil {
		e.store.Update(ctx, in.ID, state.Claim{}, func(i *state.Incident) { i.Messages["assessment"] = ts })
		return
	}
	why := "Slack did not take the message with the decision buttons, so nobody could confirm"
	cur, err := e.store.Advance(ctx, in.ID, e.endMove(in, []state.Status{state.AwaitingConfirm}, nil))
	if err != nil {
		e.log.Error("close an incident nobody can confirm", "incident", in.ID, "err", err)
		return
	}
	if cur.Status == state.DrillRestoring {
		e.record(ctx, in.ID, "rollbot", "assess", why+"; rollbot puts back "+cur.Drill.Original.Label()+", then releases the service")
		e.work(cur, e.services[cur.Service], "")
		return
	}
	e.record(ctx, in.ID, "rollbot", "assess", why+"; closed and the service released")
	e.store.ReleaseLock(ctx, cur.Service, cur.Lock)
}

// dryRun asks every write for its plan without changing anything.
func (e *Engine) dryRun(ctx context.Context, svc *Service, in *state.Incident, a *Assessment) []string {
	if a.SnapshotErr != "" {
		return []string{"nothing: the platform could not be read (" + a.SnapshotErr + ")"}
	}
	if !a.HasGood {
		return []string{"nothing: " + a.GoodWhy}
	}
	var plan []string
	if a.Gate && a.Migrations == nil {
		plan = append(plan, "database (after approval): a DB approver checks the migration table by hand first (rollbot could not)")
	} else if a.Gate && svc.Database != nil {
		if a.Migrations.Destructive() {
			plan = append(plan, "database (after approval by "+fmt.Sprint(svc.DestructiveApprovals)+" DB approvers): "+svc.Database.RestorePlan(ctx, in.ID, in.DeployedAt))
		} else {
			plan = append(plan, "database (after approval): "+svc.Database.DownPlan(*a.Migrations))
		}
	}
	if op, ok := svc.Platform.(platforms.OwnerPauser); ok && a.Snapshot != nil && a.Snapshot.Owner != nil && a.Snapshot.Owner.GitOps() {
		res, _, err := op.PauseOwner(ctx, in.ID, true)
		plan = append(plan, planLines("pause owner", res, err, e)...)
	}
	res, err := svc.Platform.Stop(ctx, true)
	plan = append(plan, planLines("stop", res, err, e)...)
	res, err = svc.Platform.Rollback(ctx, a.Good, true, nil)
	plan = append(plan, planLines("rollback", res, err, e)...)
	plan = append(plan, "mark "+a.Bad.Label()+" DO_NOT_DEPLOY; schedule the postmortem reminder")
	if p := postPlan(svc, a.Bad); p != "" {
		plan = append(plan, p)
	}
	e.record(ctx, in.ID, "rollbot", "dry-run", strings.Join(plan, "; "))
	return plan
}

func planLines(step string, res platforms.Result, err error, e *Engine) []string {
	if err != nil {
		return []string{step + ": would fail: " + e.userText(err, step+" dry run")}
	}
	if len(res.Plan) == 0 {
		return []string{step + ": " + res.Detail}
	}
	out := make([]string, len(res.Plan))
	for i, p := range res.Plan {
		out[i] = step + ": " + p
	}
	return out
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func assessmentSummary(a *Assessment) string {
	var parts []string
	for _, c := range a.Checks {
		parts = append(parts, fmt.Sprintf("%s %s (%s)", c.Name, c.Measured, c.Verdict))
	}
	s := strings.Join(parts, "; ")
	if a.Related != nil {
		s += "; deployment-related: " + a.Related.Text()
	}
	if a.Bad.ID != "" {
		s += "; bad " + a.Bad.Label()
	}
	if a.HasGood {
		s += "; last known good " + a.Good.Label()
	}
	if a.Gate && a.Migrations == nil {
		why := ""
		if a.MigErr != "" {
			why = " (" + a.MigErr + ")"
		}
		s += "; could not check migrations" + why + ": database step (by hand) first"
	} else if a.Gate {
		s += fmt.Sprintf("; %d migration(s) ran: database step first", len(a.Migrations.Ran))
	}
	return s
}

// gateFromMigrationLog feeds the migration container's log into the
// decision gate (runbook §1): when it shows migrations being applied and
// rollbot has no database to ask, or the database's migration table shows
// none since the deploy, the database step comes first, checked by hand.
func (e *Engine) gateFromMigrationLog(svc *Service, a *Assessment) {
	applied := platforms.AppliedInLog(a.MigLog)
	if len(applied) == 0 {
		return
	}
	a.MigLogApplied = applied
	switch {
	case svc.Database == nil:
		a.Gate = true
	case a.Migrations != nil && len(a.Migrations.Ran) == 0:
		a.MigErr = fmt.Sprintf("the migration container's log shows migrations applied, but %s's migration table shows none since the deploy", a.Migrations.Tool)
		a.Migrations = nil
		a.Gate = true
	}
}
