package handlers

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"rollbot/platforms"
	"rollbot/state"
)

// ItemState is where one verification item stands.
type ItemState string

const (
	ItemPending ItemState = "pending"
	ItemPass    ItemState = "pass"
	ItemFail    ItemState = "fail"
)

// Keys of the runbook §5 items; a manual check's button carries its key.
const (
	checkPods    = "pods"
	checkHealth  = "health"
	checkErrors  = "errors"
	checkLatency = "latency"
	checkFlows   = "flows"
)

// Buttons of a check by hand; the value is the incident id + "|" + the
// item's key.
const (
	ActCheckOK    = "verify_check_ok"
	ActCheckNotOK = "verify_check_not_ok"
)

// DefaultVerifySoak is how long every automatic item must hold before the
// rollback counts as verified: the runbook gives verification 3 minutes.
const DefaultVerifySoak = 3 * time.Minute

// DefaultVerifyRecent is the shortest recent window on which every round
// also judges the request metrics (verify_recent). A relapse late in the
// soak hardly moves the soak window's average, so each round looks at the
// span since the round before, but at least this long: a rate needs two
// scrapes in its window, so it must be at least twice the scrape interval
// of the metrics source (30s suits Prometheus scraping every 15s).
const DefaultVerifyRecent = 30 * time.Second

// A recent window is judged only when it holds at least
// recentMinRequests requests (and the source's min_requests, which every
// window must have): its p95 is then set by five or more slow requests,
// not by one. Fewer is no verdict on the recent window: the soak window's
// still stands. Its error rate breaches only when its failed requests are
// more than the limit explains by chance: the lower end of the error
// rate's one-sided 99.9% Wilson score interval (z = 3.09) is above the
// limit. A short window of a healthy service right at its limit would
// otherwise breach by chance in about every other round.
const (
	recentMinRequests = 100
	recentZ           = 3.09
)

// VerifyItem is one row of the runbook §5 checklist. An automatic item
// passes once its observations have been good for the whole soak window
// without a break; a manual item (nothing can check it automatically)
// passes when one of the service's approvers answers "Checked: OK".
type VerifyItem struct {
	Key    string
	Name   string
	State  ItemState
	Detail string    // the last observation, or what to check by hand
	At     time.Time // when it had held for the soak, or was answered
	// Manual items are answered by a person (By, At); Hint says what to check.
	Manual bool
	By     string
	Hint   string
	// Since starts the current run of good observations (zero: not
	// holding); Bad is set when the last conclusive observation failed.
	Since time.Time
	Bad   bool
	// Regressed says when the item last went back to pending, and by how
	// much; LastBad is when an observation last failed.
	Regressed string
	LastBad   time.Time
	Checks    int       // observations made
	Last      time.Time // the last observation
	// Metric items: the last measured soak window and its traffic, and
	// the worst value seen during the verification, over a soak window or
	// a recent one; RecentChecks counts the rounds whose recent window
	// had the traffic to be judged.
	From, To     time.Time
	Requests     float64
	Worst        float64
	WorstText    string
	RecentChecks int
	// RecentBad: the last observation failed on the recent window alone
	// (Detail says so, with the soak window's value).
	RecentBad bool
}

// Verification is the checklist and its verdict.
type Verification struct {
	Items []VerifyItem
	Soak  time.Duration
	// Recent is the shortest recent window the request metrics are also
	// judged on each round (verify_recent); 0 or at least Soak: none but
	// the soak window. lastTo is where the previous round's windows ended.
	Recent   time.Duration
	lastTo   time.Time
	Started  time.Time
	Deadline time.Time
	Finished time.Time
	Done     bool
	// Failure is the verdict's reason when it did not pass.
	Failure string
}

// Passed reports whether every item passed: the automatic ones held for
// the soak, the manual ones were confirmed.
func (v *Verification) Passed() bool {
	for _, it := range v.Items {
		if it.State != ItemPass {
			return false
		}
	}
	return true
}

// newVerification lists the five items; each one rollbot has no source for
// becomes a check by hand.
func newVerification(svc *Service, soak time.Duration, now time.Time) *Verification {
	v := &Verification{Soak: soak, Started: now, Items: []VerifyItem{
		{Key: checkPods, Name: "All pods healthy"},
		{Key: checkHealth, Name: "Health checks passing"},
		{Key: checkErrors, Name: "Error rate < baseline"},
		{Key: checkLatency, Name: "Latency p95 normal"},
		{Key: checkFlows, Name: "Critical user flows working"},
	}}
	manual := map[string]string{}
	if !svc.HasHealth || svc.Health == nil {
		manual[checkHealth] = "no health_urls configured: check the service's health endpoint by hand"
	}
	if svc.Metrics == nil {
		manual[checkErrors] = fmt.Sprintf("no metrics source configured: check in your dashboards that the error rate is back under %s (or the pre-deploy baseline)", pct(svc.Thresholds.ErrorRate))
		manual[checkLatency] = fmt.Sprintf("no metrics source configured: check in your dashboards that p95 latency is back under %g× the pre-deploy baseline", svc.Thresholds.LatencyFactor)
	}
	if !svc.HasSmoke || svc.Health == nil {
		manual[checkFlows] = "no smoke_test configured: try the critical user flows by hand"
	}
	for i := range v.Items {
		v.Items[i].State = ItemPending
		if h, ok := manual[v.Items[i].Key]; ok {
			v.Items[i].Manual, v.Items[i].Hint = true, h
		}
	}
	return v
}

// applyAnswers copies the answers people gave (from the incident record)
// into the manual items.
func (v *Verification) applyAnswers(checks map[string]state.ManualCheck) bool {
	changed := false
	for i := range v.Items {
		it := &v.Items[i]
		c, ok := checks[it.Key]
		if !it.Manual || !ok || !c.Answered() || it.By != "" {
			continue
		}
		it.By, it.At, changed = c.By, c.At, true
		it.State = ItemPass
		if c.Answer == state.CheckNotOK {
			it.State = ItemFail
		}
	}
	return changed
}

// soakOf is the service's soak window.
func (e *Engine) soakOf(svc *Service) time.Duration {
	if svc.VerifySoak > 0 {
		return svc.VerifySoak
	}
	return e.opt.VerifySoak
}

// recentOf is the service's shortest recent window.
func (e *Engine) recentOf(svc *Service) time.Duration {
	if svc.VerifyRecent > 0 {
		return svc.VerifyRecent
	}
	return e.opt.VerifyRecent
}

// recentFrom is where this round's recent window starts: the previous
// round's end, but at least v.Recent before now, so that the recent
// windows of successive rounds leave no gap. The zero time means no
// recent window: it would reach back to the soak window's start
// (soakFrom), and so be the soak window itself.
func (v *Verification) recentFrom(soakFrom, now time.Time) time.Time {
	if v.Recent <= 0 {
		return time.Time{}
	}
	f := now.Add(-v.Recent)
	if !v.lastTo.IsZero() && v.lastTo.Before(f) {
		f = v.lastTo
	}
	if !f.After(soakFrom) {
		return time.Time{}
	}
	return f
}

// judgesRecent reports whether the rounds judge a request metric on a
// recent window as well as on the soak window.
func (v *Verification) judgesRecent() bool {
	if v.Recent <= 0 || v.Recent >= v.Soak {
		return false
	}
	for _, it := range v.Items {
		if (it.Key == checkErrors || it.Key == checkLatency) && !it.Manual {
			return true
		}
	}
	return false
}

// verifyStep is runbook §5: post the checklist, observe every automatic
// item until each has held for the soak window without a break, and ask
// the service's approvers to answer the items rollbot cannot check. An
// item that regresses goes back to pending (said in the thread and on the
// timeline). The verdict says what was observed. A pass runs the
// post-rollback actions (§6) while the incident is still owned, then
// completes it; a failure goes to the failure path.
func (e *Engine) verifyStep(ctx context.Context, o *owned) error {
	in, svc := o.in, o.svc
	if in.Steps["verify"] == "passed" { // taken over after the verdict
		return e.complete(ctx, o)
	}
	soak := e.soakOf(svc)
	v := newVerification(svc, soak, e.now())
	v.Recent = e.recentOf(svc)
	started := firstTime(in.StepStarted, v.Started)
	v.Deadline = started.Add(e.opt.VerifyTimeout + soak)
	if d := v.Started.Add(soak); d.After(v.Deadline) { // resumed late: the soak starts again
		v.Deadline = d
	}
	resumed := in.Steps["verify"] == "started"
	detail := fmt.Sprintf("verifying until %s: up to %s to recover, then every automatic check must hold for %s (verify_soak)", clock(v.Deadline), window(e.opt.VerifyTimeout), window(soak))
	if names := v.manualNames(); names != "" {
		detail += "; checks by hand: " + names
	}
	if resumed {
		detail = "resuming: " + detail + " (the soak starts again; answers given by hand are kept)"
	}
	if err := e.recordOwned(ctx, o, "verify", detail); err != nil {
		return err
	}
	err := e.updateOwned(ctx, o, func(in *state.Incident) {
		if in.Steps == nil {
			in.Steps = map[string]string{}
		}
		if in.Steps["verify"] != "started" {
			in.Checks = map[string]state.ManualCheck{}
			for _, it := range v.Items {
				if it.Manual {
					in.Checks[it.Key] = state.ManualCheck{Name: it.Name}
				}
			}
		}
		in.Steps["verify"] = "started"
	})
	if err != nil {
		return err
	}
	v.applyAnswers(o.in.Checks)
	in = o.in
	render := func(in *state.Incident) Msg { return withBudgets(verifyMsg(in, v, svc.Approvers), in, e.now()) }

	ts := in.Messages["verify"]
	if resumed && ts != "" {
		e.update(ctx, in.Channel, ts, render(in))
	} else {
		ts = e.post(ctx, in.Channel, in.ThreadTS, render(in))
		e.setMessage(ctx, o, "verify", ts)
	}
	live := newLiveMessage(ctx, e.chat, in.Channel, ts, e.opt.UpdateInterval, nil)
	nudge := e.nudges.add(in.ID)
	defer e.nudges.remove(in.ID, nudge)

	base := &baselines{errRatio: math.NaN(), p95: math.NaN()}
	// A rollback of a GitOps-owned workload is watched for the bad
	// version coming back (someone resumed the sync) all through.
	watch, said := in.OwnerPause != nil || in.Steps["owner"] == ownerOverridden, false
	for {
		e.verifyRound(ctx, o, v, base)
		if watch {
			e.watchBadVersion(ctx, o, v, &said)
		}
		if e.decideVerification(v) || ctx.Err() != nil {
			break
		}
		live.Set(render(in))
		if e.awaitRound(ctx, o, v, nudge, func() { live.Set(render(in)) }) {
			break
		}
	}
	if ctx.Err() != nil { // over budget or interrupted
		live.Close(render(in))
		if errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
			// Over budget: the checklist shows where it stood, and the
			// failure path says what was seen. An interrupted owner (taken
			// over, shutting down) writes nothing more.
			fctx, cancel := e.fresh()
			defer cancel()
			e.update(fctx, in.Channel, ts, render(in))
		}
		return failf("%s", "not verified: "+v.observed())
	}
	v.Done, v.Finished = true, e.now()
	if v.Passed() {
		// The verification ends here; the post-rollback actions that
		// follow are not part of its time.
		if err := e.updateOwned(ctx, o, func(in *state.Incident) {
			setTiming(in, "verify", state.StepTiming{Start: in.StepStarted, End: v.Finished})
		}); err != nil {
			live.Close(render(in))
			return err
		}
		in = o.in
		m := render(in)
		m.Blocks = append(m.Blocks, contextBlock("recovery", fmt.Sprintf("Time to recovery: %s from the rollback request (%s).", short(v.Finished.Sub(in.CreatedAt)), clock(in.CreatedAt))))
		live.Close(m)
	} else {
		live.Close(render(in))
	}

	if !v.Passed() {
		return failf("%s", v.Failure)
	}
	if err := e.recordOwned(ctx, o, "verify", "verified: "+v.verdictText()+" Observed: "+v.observed()); err != nil {
		return err
	}
	if err := e.setStep(ctx, o, "verify", "passed"); err != nil {
		return err
	}
	return e.complete(ctx, o)
}

// awaitRound waits for the next round, re-reading the answers given by
// hand every second (at once when a click lands on this replica). It
// reports true when the answers decided the verification.
func (e *Engine) awaitRound(ctx context.Context, o *owned, v *Verification, nudge chan struct{}, show func()) bool {
	poll := min(time.Second, e.opt.VerifyInterval)
	for waited := time.Duration(0); waited < e.opt.VerifyInterval && ctx.Err() == nil; {
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
		case <-nudge:
		case <-t.C:
			waited += poll
		}
		t.Stop()
		if !v.hasManualPending() {
			continue
		}
		cur, err := e.store.Get(ctx, o.in.ID)
		if err != nil {
			continue // the heartbeat reports a store that is gone
		}
		if v.applyAnswers(cur.Checks) {
			if e.decideVerification(v) {
				return true
			}
			show()
		}
	}
	return false
}

func (v *Verification) hasManualPending() bool {
	for _, it := range v.Items {
		if it.Manual && it.By == "" {
			return true
		}
	}
	return false
}

func (v *Verification) manualNames() string {
	var out []string
	for _, it := range v.Items {
		if it.Manual {
			out = append(out, it.Name)
		}
	}
	return strings.Join(out, ", ")
}

// decideVerification sets the verdict once it is known: a check answered
// "Not OK" fails at once; every item passed is verified; an automatic item
// that can no longer hold for the soak before the deadline (or the
// deadline itself) fails with what was seen. It reports whether the
// verification is decided.
func (e *Engine) decideVerification(v *Verification) bool {
	now := e.now()
	for _, it := range v.Items {
		if it.Manual && it.State == ItemFail {
			v.Failure = fmt.Sprintf("<@%s> checked *%s* by hand at %s: *not OK*. Observed: %s", it.By, it.Name, clock(it.At), v.observed())
			return true
		}
	}
	if v.Passed() {
		return true
	}
	late := !now.Before(v.Deadline)
	for _, it := range v.Items {
		if it.Manual || it.State == ItemPass {
			continue
		}
		earliest := now.Add(v.Soak)
		if !it.Since.IsZero() {
			earliest = it.Since.Add(v.Soak)
		}
		if earliest.After(v.Deadline) {
			late = true
		}
	}
	if !late {
		return false
	}
	v.Failure = v.failureText()
	return true
}

// failureText says why the verification failed: "did not recover" only
// when an automatic item's last observation failed.
func (v *Verification) failureText() string {
	var bad, short, unanswered []string
	for _, it := range v.Items {
		switch {
		case it.State == ItemPass:
		case it.Manual:
			unanswered = append(unanswered, it.Name)
		case it.Bad:
			s := it.Name + ": " + it.Detail
			if it.Regressed != "" {
				s += " (" + it.Regressed + ")"
			}
			bad = append(bad, s)
		default:
			held := "never held"
			if !it.Since.IsZero() {
				held = "held only " + dur(it.Last.Sub(it.Since)) + " of " + window(v.Soak)
			}
			if it.Detail != "" {
				held += " (" + it.Detail + ")"
			}
			short = append(short, it.Name+": "+held)
		}
	}
	// What failed comes first; what merely had not held long enough yet
	// is in the observations then.
	var parts []string
	if len(bad) > 0 {
		parts = append(parts, "the service did not recover after the rollback: "+strings.Join(bad, "; "))
	} else if len(short) > 0 {
		parts = append(parts, fmt.Sprintf("not verified by %s (each check must hold for %s): %s", clock(v.Deadline), window(v.Soak), strings.Join(short, "; ")))
	}
	if len(unanswered) > 0 {
		parts = append(parts, "nobody answered the checks by hand: "+strings.Join(unanswered, ", "))
	}
	return strings.Join(parts, ". ") + ". Observed: " + v.observed()
}

// verdictText is the verified verdict: which items rollbot verified and
// which people confirmed.
func (v *Verification) verdictText() string {
	var auto, manual []string
	for _, it := range v.Items {
		if it.Manual {
			manual = append(manual, fmt.Sprintf("%s by <@%s> at %s", it.Name, it.By, clock(it.At)))
		} else {
			auto = append(auto, it.Name)
		}
	}
	s := fmt.Sprintf("Verified at %s (%s after verification started).", clock(v.Finished), dur(v.Finished.Sub(v.Started)))
	if len(auto) > 0 {
		s += fmt.Sprintf(" Verified by rollbot, each held for the %s soak: %s.", window(v.Soak), strings.Join(auto, ", "))
	}
	if len(manual) > 0 {
		s += " Confirmed by hand: " + strings.Join(manual, "; ") + "."
	}
	return s
}

// observed is what rollbot saw, item by item: the window, the request
// count and the worst value for the request metrics; how long the others
// held; who answered the checks by hand.
func (v *Verification) observed() string {
	var parts []string
	for _, it := range v.Items {
		parts = append(parts, it.Name+": "+v.observedItem(it))
	}
	return strings.Join(parts, "; ")
}

func (v *Verification) observedItem(it VerifyItem) string {
	switch {
	case it.Manual && it.By != "":
		answer := "confirmed OK"
		if it.State == ItemFail {
			answer = "NOT OK"
		}
		return fmt.Sprintf("%s by <@%s> at %s", answer, it.By, clock(it.At))
	case it.Manual:
		return "not answered by hand yet"
	case it.Checks == 0:
		return "not observed yet"
	}
	var b strings.Builder
	b.WriteString(firstNonEmpty(it.Detail, "no result"))
	switch {
	case it.From.IsZero():
	case it.RecentBad: // the detail ends with the soak window's value
		fmt.Fprintf(&b, " (%s–%s", clockShort(it.From), clock(it.To))
	default:
		fmt.Fprintf(&b, " over %s–%s (%s", clockShort(it.From), clock(it.To), dur(it.To.Sub(it.From)))
	}
	if !it.From.IsZero() {
		if it.Requests > 0 {
			fmt.Fprintf(&b, ", %.0f requests", it.Requests)
		}
		b.WriteString(")")
	}
	if it.WorstText != "" {
		b.WriteString(", worst seen " + it.WorstText)
	}
	held := "not holding"
	if !it.Since.IsZero() {
		held = "held " + dur(it.Last.Sub(it.Since)) + " of " + window(v.Soak)
	}
	fmt.Fprintf(&b, ", %s (%d checks", held, it.Checks)
	if v.judgesRecent() && !it.From.IsZero() {
		fmt.Fprintf(&b, ", %d of them also judged on the last %s alone", it.RecentChecks, window(v.Recent))
	}
	b.WriteString(")")
	if it.Regressed != "" {
		b.WriteString(", " + it.Regressed)
	}
	return b.String()
}

func clockShort(t time.Time) string { return t.UTC().Format("15:04:05") }

// dur renders an elapsed time to the second: 1m20s, 45s.
func dur(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	return window(d.Round(time.Second))
}

func firstTime(ts ...time.Time) time.Time {
	for _, t := range ts {
		if !t.IsZero() {
			return t
		}
	}
	return time.Time{}
}

// baselines are the numbers from before the bad deploy that verification
// compares against. A query that fails is tried again next round, so one
// blip of the metrics source does not fail the verification.
type baselines struct {
	errRatio float64 // NaN until known
	p95      float64 // NaN until known
	p95Err   error
}

// refresh fetches whichever baseline is not known yet, each query under
// its own timeout.
func (e *Engine) refreshBaselines(ctx context.Context, svc *Service, deployedAt time.Time, b *baselines) {
	if math.IsNaN(b.errRatio) && !deployedAt.IsZero() {
		qctx, cancel := context.WithTimeout(ctx, e.opt.QueryTimeout)
		m, err := svc.Metrics.ErrorRatio(qctx, deployedAt.Add(-svc.BaselineWindow), deployedAt)
		cancel()
		if err == nil && !m.NoData {
			b.errRatio = m.Value
		}
	}
	if math.IsNaN(b.p95) {
		qctx, cancel := context.WithTimeout(ctx, e.opt.QueryTimeout)
		v, _, _, err := e.baselineP95(qctx, svc, deployedAt)
		cancel()
		if b.p95Err = err; err == nil {
			b.p95 = v
		}
	}
}

// observation is one look at an automatic item.
type observation struct {
	verdict  Verdict // Pass, Fail, or Inconclusive (no data, a failed query)
	detail   string
	value    float64 // metric items: the soak window's measure
	hasValue bool
	valText  string
	from, to time.Time
	requests float64
	// recent is the recent window's measure, when it had the traffic to
	// be judged; recentBad: it failed on that alone.
	recent    *reading
	recentBad bool
}

// reading is one measure of a request metric over [from, to].
type reading struct {
	value    float64
	valText  string
	from, to time.Time
	requests float64
}

// metricJudge is how a request metric is measured and judged.
type metricJudge struct {
	measure func(ctx context.Context, from, to time.Time) (platforms.Measurement, error)
	op      string // for errors: "query error rate"
	limit   float64
	ref     string // what the limit is: "1.00% threshold"
	text    func(float64) string
	// breach reports whether a recent window's value, over n requests,
	// breaks the limit.
	breach func(v, n float64) bool
}

// observeMetric measures a request metric over the soak window [from,
// now] and, when recentFrom is set, over the recent window [recentFrom,
// now] too. It fails when the soak window is over the limit, or when the
// soak window is not but the recent window, with the traffic to be
// judged (recentMinRequests), breaches; too little traffic in the recent
// window, or no answer for it, leaves the soak window's verdict.
func (e *Engine) observeMetric(ctx context.Context, incident string, j metricJudge, from, recentFrom, now time.Time) observation {
	var rec platforms.Measurement
	var recErr error
	var wg sync.WaitGroup
	if !recentFrom.IsZero() {
		wg.Go(func() { rec, recErr = j.measure(ctx, recentFrom, now) })
	}
	m, err := j.measure(ctx, from, now)
	wg.Wait()
	if err != nil {
		return observation{verdict: Inconclusive, detail: e.userText(err, j.op, "incident", incident)}
	}
	if m.NoData || math.IsNaN(m.Value) {
		return observation{verdict: Inconclusive, detail: "waiting for data since the rollback: " + firstNonEmpty(m.Reason, "no samples yet")}
	}
	ob := observation{verdict: Pass, detail: j.text(m.Value) + " (limit " + j.ref + ")",
		value: m.Value, hasValue: true, valText: j.text(m.Value), from: from, to: now, requests: m.Requests}
	if !recentFrom.IsZero() && recErr == nil && !rec.NoData && !math.IsNaN(rec.Value) && rec.Requests >= recentMinRequests {
		ob.recent = &reading{value: rec.Value, valText: j.text(rec.Value), from: recentFrom, to: now, requests: rec.Requests}
	}
	switch {
	case m.Value > j.limit:
		ob.verdict = Fail
	case ob.recent != nil && j.breach(rec.Value, rec.Requests):
		ob.verdict, ob.recentBad = Fail, true
		ob.detail = fmt.Sprintf("%s over the last %s alone (limit %s; %.0f requests); %s over the whole %s window",
			j.text(rec.Value), dur(now.Sub(recentFrom)), j.ref, rec.Requests, j.text(m.Value), dur(now.Sub(from)))
	}
	return ob
}

// wilsonLower is the lower end of the one-sided Wilson score interval at
// z of a ratio p measured on n requests: the smallest true ratio that
// explains p without more than the chance z stands for.
func wilsonLower(p, n, z float64) float64 {
	if n <= 0 {
		return 0
	}
	p = min(max(p, 0), 1)
	z2 := z * z
	centre := p + z2/(2*n)
	margin := z * math.Sqrt(p*(1-p)/n+z2/(4*n*n))
	return (centre - margin) / (1 + z2/n)
}

// verifyRound observes every automatic item (observeRound) and applies
// the observations: a good one extends the item's run (it passes once the
// run is as long as the soak), a failed one ends it; a regression is said
// in the thread and on the timeline.
func (e *Engine) verifyRound(ctx context.Context, o *owned, v *Verification, base *baselines) {
	in := o.in
	obs, now := e.observeRound(ctx, in, o.svc, v, base)
	if obs == nil {
		return // a round cut short by the budget observed nothing reliable
	}
	for i, ob := range obs {
		if ob == nil {
			continue
		}
		held, regressed := v.observe(i, *ob, now)
		it := v.Items[i]
		switch {
		case regressed:
			e.recordOwned(ctx, o, "verify", it.Name+" "+it.Regressed+"; pending again")
			e.post(ctx, in.Channel, in.ThreadTS, regressedMsg(in, it, v.Soak))
		case held:
			e.recordOwned(ctx, o, "verify", fmt.Sprintf("%s held for the %s soak: %s", it.Name, window(v.Soak), v.observedItem(it)))
		}
	}
}

// observeRound observes every automatic item, concurrently, and returns
// the observations (nil for a manual item) and when they were made; nil
// when ctx ended meanwhile.
func (e *Engine) observeRound(ctx context.Context, in *state.Incident, svc *Service, v *Verification, base *baselines) ([]*observation, time.Time) {
	now := e.now()
	// The request metrics are measured over the soak window (or since
	// verification started, when that is shorter): a pass means the whole
	// window was good, with at least min_requests requests in it.
	from := v.Started
	if f := now.Add(-v.Soak); f.After(from) {
		from = f
	}
	// Each round also judges them on a recent window alone (see
	// DefaultVerifyRecent): a mild relapse late in the soak barely moves
	// the soak window's average.
	recentFrom := v.recentFrom(from, now)
	if svc.Metrics != nil {
		e.refreshBaselines(ctx, svc, in.DeployedAt, base)
	}
	obs := make([]*observation, len(v.Items))
	var wg sync.WaitGroup
	run := func(i int, f func(context.Context) observation) {
		if v.Items[i].Manual {
			return
		}
		// Each read gets query_timeout; the smoke test its own timeout
		// (cut at query_timeout it could never pass when it takes longer).
		limit := e.opt.QueryTimeout
		if v.Items[i].Key == checkFlows {
			limit = max(limit, svc.SmokeTimeout)
		}
		wg.Go(func() {
			qctx, cancel := context.WithTimeout(ctx, limit)
			defer cancel()
			ob := f(qctx)
			obs[i] = &ob
		})
	}
	bad := func(d string) observation { return observation{verdict: Fail, detail: d} }
	unknown := func(d string) observation { return observation{verdict: Inconclusive, detail: d} }
	judge := func(ok bool, d string) observation {
		if ok {
			return observation{verdict: Pass, detail: d}
		}
		return bad(d)
	}
	run(0, func(ctx context.Context) observation {
		snap, err := svc.Platform.Snapshot(ctx)
		if err != nil {
			return unknown(e.userText(err, "read platform state", "incident", in.ID))
		}
		h := snap.Health
		if snap.Current.Artifact != in.Target.Artifact && snap.Current.ID != in.Target.ID {
			return bad("running " + snap.Current.Label() + ", expected " + in.Target.Label())
		}
		detail := fmt.Sprintf("%d/%d ready, %d restarts", h.Ready, h.Desired, h.Restarts)
		if h.Detail != "" {
			detail = h.Detail
		}
		if !h.Known {
			return unknown(detail)
		}
		return judge(h.Desired > 0 && h.Ready >= h.Desired && !snap.RolloutInProgress, detail)
	})
	run(1, func(ctx context.Context) observation {
		ok, d, err := svc.Health.Health(ctx)
		if err != nil {
			return unknown(e.userText(err, "health check", "incident", in.ID))
		}
		return judge(ok, d)
	})
	run(2, func(ctx context.Context) observation {
		limit := svc.Thresholds.ErrorRate
		ref := pct(limit) + " threshold"
		if !math.IsNaN(base.errRatio) && base.errRatio > limit {
			limit, ref = base.errRatio, pct(base.errRatio)+" baseline"
		}
		return e.observeMetric(ctx, in.ID, metricJudge{measure: svc.Metrics.ErrorRatio, op: "query error rate", limit: limit, ref: ref, text: pct,
			breach: func(v, n float64) bool { return wilsonLower(v, n, recentZ) > limit }}, from, recentFrom, now)
	})
	run(3, func(ctx context.Context) observation {
		if math.IsNaN(base.p95) {
			return unknown("no baseline p95 yet: " + e.userText(base.p95Err, "query baseline latency", "incident", in.ID))
		}
		limit := svc.Thresholds.LatencyFactor * base.p95
		ref := fmt.Sprintf("%s = %g× baseline", ms(limit), svc.Thresholds.LatencyFactor)
		return e.observeMetric(ctx, in.ID, metricJudge{measure: svc.Metrics.LatencyP95, op: "query latency", limit: limit, ref: ref, text: ms,
			breach: func(v, _ float64) bool { return v > limit }}, from, recentFrom, now)
	})
	run(4, func(ctx context.Context) observation {
		ok, d, err := svc.Health.Smoke(ctx)
		if err != nil {
			return unknown(e.userText(err, "smoke test", "incident", in.ID))
		}
		return judge(ok, d)
	})
	wg.Wait()
	if ctx.Err() != nil {
		return nil, now
	}
	v.lastTo = now
	return obs, e.now()
}

// observe applies one observation to item i at now. It reports whether the
// item just reached the soak (held) or just went back to pending after
// holding (regressed).
func (v *Verification) observe(i int, ob observation, now time.Time) (held, regressed bool) {
	it := &v.Items[i]
	it.Checks++
	it.Detail, it.Last, it.RecentBad = ob.detail, now, ob.recentBad
	if ob.hasValue {
		it.From, it.To, it.Requests = ob.from, ob.to, ob.requests
		if it.WorstText == "" || ob.value > it.Worst {
			it.Worst, it.WorstText = ob.value, ob.valText
		}
	}
	if r := ob.recent; r != nil {
		it.RecentChecks++
		if it.WorstText == "" || r.value > it.Worst {
			it.Worst = r.value
			it.WorstText = fmt.Sprintf("%s (the last %s to %s, %.0f requests)", r.valText, dur(r.to.Sub(r.from)), clock(r.to), r.requests)
		}
	}
	switch ob.verdict {
	case Pass:
		it.Bad = false
		if it.Since.IsZero() {
			// A good measurement of the request metrics covers its whole
			// window, back to the last failed one at most; the other
			// items are good as of now.
			it.Since = now
			if ob.hasValue && ob.from.Before(now) {
				it.Since = ob.from
				if it.LastBad.After(it.Since) {
					it.Since = it.LastBad
				}
			}
		}
		if now.Sub(it.Since) >= v.Soak {
			first := it.At.IsZero()
			if first {
				it.At = now
			}
			it.State = ItemPass
			return first, false
		}
	case Fail:
		wasHolding := !it.Since.IsZero()
		if wasHolding {
			it.Regressed = fmt.Sprintf("regressed at %s after holding %s of %s: %s", clock(now), dur(now.Sub(it.Since)), window(v.Soak), ob.detail)
		}
		it.Since, it.State, it.Bad, it.At, it.LastBad = time.Time{}, ItemPending, true, time.Time{}, now
		return false, wasHolding
	default:
		// Not observed this round: the run goes on (the next measurement
		// of the request metrics covers the gap), but an item cannot pass
		// on an observation it does not have.
		if it.State == ItemPass {
			it.State = ItemPending
		}
	}
	return false, false
}

// nudges wake a verification waiting on the answers given by hand when a
// click lands on the replica that owns it.
type nudges struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

func (n *nudges) add(id string) chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m == nil {
		n.m = map[string]chan struct{}{}
	}
	c := make(chan struct{}, 1)
	n.m[id] = c
	return c
}

func (n *nudges) remove(id string, c chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m[id] == c {
		delete(n.m, id)
	}
}

func (n *nudges) poke(id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if c := n.m[id]; c != nil {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

// manualCheck records an approver's answer to a check by hand. Like every
// click it is bound to the incident's channel (incidentFor), allowed only
// to the service's approvers, written to the timeline first, and applied
// with a compare-and-set: only while the incident is verifying and the
// check is unanswered. It works on any replica: the answer lives in Redis,
// and the replica that owns the verification reads it from there.
func (e *Engine) manualCheck(ctx context.Context, a Action) {
	_, key, _ := strings.Cut(a.Value, "|")
	in, svc, ok := e.incidentFor(ctx, a)
	if !ok {
		return
	}
	c, ok := in.Checks[key]
	if !ok {
		e.ephemeral(ctx, a.ChannelID, a.UserID, errorMsg("this check is not part of "+in.ID+"'s verification; nothing was recorded"))
		return
	}
	answer, word := state.CheckOK, "OK"
	if a.ActionID == ActCheckNotOK {
		answer, word = state.CheckNotOK, "NOT OK"
	}
	if !e.allowed(ctx, svc.Approvers, a.UserID) {
		e.record(ctx, in.ID, a.UserID, "verify", "refused: not allowed to answer the check by hand "+c.Name)
		e.ephemeral(ctx, a.ChannelID, a.UserID, notAllowedMsg(svc.Name, "answer checks by hand", who(svc.Approvers)))
		return
	}
	if in.Status != state.Verifying || c.Answered() {
		e.ephemeral(ctx, a.ChannelID, a.UserID, checkClosedMsg(in, c))
		return
	}
	now := e.now()
	if err := e.record(ctx, in.ID, a.UserID, "verify", "checked by hand: "+c.Name+": "+word); err != nil {
		e.ephemeral(ctx, a.ChannelID, a.UserID, errorMsg("could not write the timeline, so the answer was not recorded; try again"))
		return
	}
	cur, err := e.store.AnswerCheck(ctx, in.ID, key, state.ManualCheck{Answer: answer, By: a.UserID, At: now})
	switch {
	case errors.Is(err, state.ErrStale):
		e.record(ctx, in.ID, a.UserID, "verify", "not recorded: "+c.Name+" was answered already or the verification ended")
		if cur != nil {
			c = cur.Checks[key]
			in = cur
		}
		e.ephemeral(ctx, a.ChannelID, a.UserID, checkClosedMsg(in, c))
		return
	case err != nil:
		e.ephemeral(ctx, a.ChannelID, a.UserID, errorMsg(e.userText(err, "record the answer", "incident", in.ID)))
		return
	}
	e.nudges.poke(in.ID)
	e.ephemeral(ctx, a.ChannelID, a.UserID, checkRecordedMsg(cur, cur.Checks[key]))
}

// retryVerify re-runs the verification after a failed one: the soak starts
// again and the checks by hand are asked again.
func (e *Engine) retryVerify(ctx context.Context, a Action) {
	in, svc, ok := e.incidentFor(ctx, a)
	if !ok {
		return
	}
	if !e.allowed(ctx, svc.Approvers, a.UserID) {
		e.ephemeral(ctx, a.ChannelID, a.UserID, notAllowedMsg(svc.Name, "re-run verification", who(svc.Approvers)))
		return
	}
	in, ok = e.decideWork(ctx, a, in.ID, []state.Status{state.VerifyFailed}, state.Verifying, func(in *state.Incident) {
		delete(in.Steps, "verify")
		in.Checks = nil
		in.HeldUntil = time.Time{}
	}, "re-run verification")
	if !ok {
		return
	}
	e.record(ctx, in.ID, a.UserID, "verify", "re-running verification")
	e.work(in, svc, "")
}
