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
	Gate        bool   // migrations ran: DB step first
	Took        time.Duration
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

// Recommendation is the runbook's "action if exceeded".
func (a *Assessment) Recommendation() string {
	if f := a.Failing(); len(f) > 0 {
		return "Proceed to rollback: " + strings.Join(f, ", ") + " over threshold."
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
	a.Checks[2] = restartsCheck(svc, snap, a.SnapshotErr)
	a.Checks[3] = readinessCheck(svc, snap, a.SnapshotErr)
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

func (e *Engine) errorRateCheck(ctx context.Context, svc *Service, now time.Time) Check {
	c := Check{Name: "Error rate", Threshold: "> " + pct(svc.Thresholds.ErrorRate), Verdict: Inconclusive}
	if svc.Metrics == nil {
		c.Measured, c.Source = "no data", "no metrics source configured"
		return c
	}
	m, err := svc.Metrics.ErrorRatio(ctx, now.Add(-svc.AssessWindow), now)
	if !e.usable(&c, svc, m, err, "query error rate") {
		return c
	}
	c.Measured = pct(m.Value)
	c.Verdict = Pass
	if m.Value > svc.Thresholds.ErrorRate {
		c.Verdict = Fail
	}
	return c
}

// baselineP95 is the p95 over the window that ends when the bad deploy
// started, or the configured fixed baseline.
func (e *Engine) baselineP95(ctx context.Context, svc *Service, deployedAt time.Time) (float64, string, error) {
	if svc.Thresholds.BaselineP95 > 0 {
		return svc.Thresholds.BaselineP95.Seconds(), "configured baseline", nil
	}
	if deployedAt.IsZero() {
		return 0, "", platforms.Userf(nil, "the platform did not say when the deploy started, and no baseline_p95 is configured")
	}
	m, err := svc.Metrics.LatencyP95(ctx, deployedAt.Add(-svc.BaselineWindow), deployedAt)
	if err != nil {
		return 0, "", err
	}
	if m.NoData || math.IsNaN(m.Value) || m.Value <= 0 {
		why := m.Reason
		if why == "" {
			why = "no samples"
		}
		return 0, "", platforms.Userf(nil, "no baseline: %s in the %s before the deploy", why, window(svc.BaselineWindow))
	}
	return m.Value, fmt.Sprintf("baseline = p95 over the %s before the deploy at %s UTC", window(svc.BaselineWindow), deployedAt.UTC().Format("15:04")), nil
}

func (e *Engine) latencyCheck(ctx context.Context, svc *Service, now time.Time, deployedAt func() time.Time) Check {
	c := Check{Name: "Latency p95", Threshold: fmt.Sprintf("> %g× baseline", svc.Thresholds.LatencyFactor), Verdict: Inconclusive}
	if svc.Metrics == nil {
		c.Measured, c.Source = "no data", "no metrics source configured"
		return c
	}
	var (
		base    float64
		baseSrc string
		baseErr error
		wg      sync.WaitGroup
	)
	wg.Go(func() {
		since := deployedAt() // the baseline window ends where the bad deploy began
		bctx, cancel := context.WithTimeout(ctx, e.opt.QueryTimeout)
		defer cancel()
		base, baseSrc, baseErr = e.baselineP95(bctx, svc, since)
	})
	qctx, cancel := context.WithTimeout(ctx, e.opt.QueryTimeout)
	m, err := svc.Metrics.LatencyP95(qctx, now.Add(-svc.AssessWindow), now)
	cancel()
	wg.Wait()
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
	c.Verdict = Pass
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
	svc := e.services[cmd.Service]
	id, err := e.store.NextID(ctx)
	if err != nil {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg(e.userText(err, "open incident")))
		return
	}
	in := &state.Incident{
		ID: id, Service: svc.Name, Channel: sc.ChannelID, RequestedBy: sc.UserID, Reason: cmd.Reason,
		DryRun: cmd.DryRun, To: cmd.To, Status: state.Assessing, Platform: svc.Platform.Kind(),
		PlatformTgt: svc.Platform.Target(), Messages: map[string]string{},
		Owner: e.opt.Replica, Fence: 1, StepStarted: e.now(),
	}
	if !cmd.DryRun { // a dry run changes nothing, so it needs no lock
		lock, err := e.store.AcquireLock(ctx, svc.Name, id, sc.UserID, e.opt.LockTTL)
		if errors.Is(err, state.ErrLocked) {
			holder, _ := e.store.Get(ctx, lock.Incident)
			e.ephemeral(ctx, sc.ChannelID, sc.UserID, lockedMsg(svc.Name, lock, holder))
			return
		}
		if err != nil {
			e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg(e.userText(err, "take the rollback lock", "service", svc.Name)))
			return
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
	if err := e.store.Create(ctx, in); err != nil {
		e.store.ReleaseLock(ctx, svc.Name, in.Lock)
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg(e.userText(err, "save incident")))
		return
	}
	if err := e.record(ctx, id, sc.UserID, "request", detail); err != nil {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg("could not write the timeline, so nothing was done; try again"))
		e.store.Advance(ctx, id, state.Move{To: state.Cancelled, Claim: state.ClaimOf(in)})
		e.store.ReleaseLock(ctx, svc.Name, in.Lock)
		return
	}
	e.work(in, svc, "")
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
		if err := e.advance(ctx, o, state.Cancelled, nil); err != nil {
			return err
		}
		e.store.ReleaseLock(ctx, svc.Name, o.in.Lock)
		e.update(ctx, o.in.Channel, ts, assessmentMsg(o.in, a, nil))
	default:
		if err := e.advance(ctx, o, state.AwaitingConfirm, nil); err != nil {
			return err
		}
		e.store.HoldLock(ctx, o.in, e.opt.Budgets.Confirm+time.Minute)
		e.showDecision(ctx, o.in, a)
	}
	return nil
}

// showDecision puts the buttons on the assessment message. If Slack does
// not take the update, the table is posted again as a new message; if that
// fails too, nobody could click, so the incident is closed and the service
// released rather than left locked with nothing to click.
func (e *Engine) showDecision(ctx context.Context, in *state.Incident, a *Assessment) {
	m := assessmentMsg(in, a, nil)
	if err := e.chat.Update(ctx, in.Channel, in.ThreadTS, m); err == nil {
		return
	} else {
		e.log.Warn("update the assessment with its buttons", "incident", in.ID, "err", err)
	}
	if ts, err := e.chat.Post(ctx, in.Channel, in.ThreadTS, m); err == nil {
		e.store.Update(ctx, in.ID, state.Claim{}, func(i *state.Incident) { i.Messages["assessment"] = ts })
		return
	}
	why := "Slack did not take the message with the decision buttons, so nobody could confirm"
	cur, err := e.store.Advance(ctx, in.ID, state.Move{From: []state.Status{state.AwaitingConfirm}, To: state.Cancelled})
	if err != nil {
		e.log.Error("close an incident nobody can confirm", "incident", in.ID, "err", err)
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
	res, err := svc.Platform.Stop(ctx, true)
	plan = append(plan, planLines("stop", res, err, e)...)
	res, err = svc.Platform.Rollback(ctx, a.Good, true, nil)
	plan = append(plan, planLines("rollback", res, err, e)...)
	plan = append(plan, "mark "+a.Bad.Label()+" DO_NOT_DEPLOY; schedule the postmortem reminder")
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
	if a.Bad.ID != "" {
		s += "; bad " + a.Bad.Label()
	}
	if a.HasGood {
		s += "; last known good " + a.Good.Label()
	}
	if a.Gate && a.Migrations == nil {
		s += "; could not check migrations: database step (by hand) first"
	} else if a.Gate {
		s += fmt.Sprintf("; %d migration(s) ran: database step first", len(a.Migrations.Ran))
	}
	return s
}
