package handlers

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"rollbot/platforms"
)

// The "Deployment-related?" row of the assessment (runbook prerequisite:
// confirm the failure is deployment-related; common mistake 5: rolling
// back for an infrastructure problem). Its evidence:
//
//   - onset: from range queries (platforms.RangeMetrics), when the error
//     rate or the p95 that fails now first crossed its threshold in the
//     run of breaches that lasts until now, relative to the deploy;
//   - neighbours: the same range queries for the other services the
//     service's verdict config names (VerdictConfig.Neighbours), judged
//     against their own thresholds and their own p95 before the deploy;
//   - nodes: on Kubernetes, the conditions of the nodes the pods run on,
//     and of the cluster (platforms.NodeChecker).
//
// What could not be measured is said; with no onset and no sign of an
// infrastructure problem the verdict is "unknown" with the reason, never a
// guess. The reads start as soon as the snapshot says when the deploy
// started, run concurrently and are time-boxed (VerdictConfig.Budget), so
// the verdict never holds up the assessment beyond its other sources.

// Relation is the verdict of the "Deployment-related?" row.
type Relation string

const (
	Likely   Relation = "likely"   // likely this deploy
	Unlikely Relation = "unlikely" // likely not this deploy: check infrastructure first
	Unknown  Relation = "unknown"  // rollbot cannot tell; Relatedness.Summary says why
)

// VerdictConfig tunes the "Deployment-related?" row of a service.
type VerdictConfig struct {
	// Step is the time between two points of the range queries; default:
	// the range / 120, at least 1s.
	Step time.Duration
	// Window is what each point measures (the rate window); default: the
	// larger of 2 steps and a fifth of the assess window.
	Window time.Duration
	// Before is how far before the deploy the range starts; default: the
	// baseline window.
	Before time.Duration
	// Budget bounds the verdict's reads; default: Options.QueryTimeout.
	Budget time.Duration
	// Neighbours are the other services compared with this one.
	Neighbours []Neighbour
}

// Neighbour is another service the verdict compares with: a service of
// rollbot's config (its own metrics source and thresholds), or a selector
// on this service's Prometheus.
type Neighbour struct {
	Name       string
	Metrics    platforms.Metrics
	Thresholds Thresholds
}

// Relatedness is what the verdict found.
type Relatedness struct {
	Verdict Relation
	// Summary is the evidence in one line: "Started 40 s after the
	// deploy; other services healthy (2 of 2)".
	Summary string
	// Evidence lists what was measured and what could not be, for the
	// row's Source cell and the timeline.
	Evidence []string `json:",omitempty"`
	// Onset is when the failing number first crossed its threshold (zero:
	// not found); OnsetBefore is set when it was over the threshold from
	// the start of the data (the onset is earlier still).
	Onset       time.Time `json:",omitzero"`
	OnsetBefore bool      `json:",omitempty"`
	// Degraded and Measured count the neighbours.
	Degraded, Measured int
}

// Conclusion is the verdict in words.
func (r *Relatedness) Conclusion() string {
	switch r.Verdict {
	case Likely:
		return "likely this deploy"
	case Unlikely:
		return "likely not this deploy: check infrastructure first"
	}
	return "unknown"
}

// Text is the row in one sentence: "Started 40 s after the deploy; other
// services healthy → likely this deploy".
func (r *Relatedness) Text() string {
	if r.Verdict == Unknown {
		return "Deployment-related: unknown (" + r.Summary + ")"
	}
	return r.Summary + " → " + r.Conclusion()
}

// verdictReads are the verdict's raw material, read concurrently with
// the checks.
type verdictReads struct {
	from, to, deployed time.Time
	step, window       time.Duration
	errs, p95          seriesRead
	neighbours         []neighbourRead
	nodes              *platforms.NodeReport
	nodesErr           string
	nodesAsked         bool
	why                string // why nothing was read
}

type seriesRead struct {
	s   platforms.Series
	err string
	ok  bool // asked and answered
}

type neighbourRead struct {
	n         Neighbour
	errs, p95 seriesRead
	why       string // not measurable at all
}

// readVerdict reads the range series of the service and its neighbours
// and the node conditions, within the verdict's budget. It starts when
// the snapshot has said when the deploy started.
func (e *Engine) readVerdict(ctx context.Context, svc *Service, now time.Time, snap func() *platforms.Snapshot) *verdictReads {
	r := &verdictReads{to: now}
	s := snap()
	if s == nil {
		r.why = "the platform could not be read, so the deploy time is unknown"
		return r
	}
	if s.DeployedAt.IsZero() {
		r.why = "the platform did not say when the deploy started"
		return r
	}
	vc := svc.Verdict
	r.deployed = s.DeployedAt
	before := cmp.Or(vc.Before, svc.BaselineWindow)
	r.from = r.deployed.Add(-before)
	if !r.from.Before(now) {
		r.from = now.Add(-before)
	}
	r.step = vc.Step
	if r.step <= 0 {
		r.step = max(now.Sub(r.from)/120, time.Second).Round(time.Second)
	}
	r.window = vc.Window
	if r.window <= 0 {
		r.window = max(2*r.step, svc.AssessWindow/5)
	}
	budget := cmp.Or(vc.Budget, e.opt.QueryTimeout)
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	var wg sync.WaitGroup
	read := func(m platforms.Metrics, into *seriesRead, p95 bool, name string) {
		rm, ok := m.(platforms.RangeMetrics)
		if !ok {
			into.err = "its metrics source cannot look back in time"
			return
		}
		wg.Go(func() {
			f := rm.ErrorRatioRange
			what := "error rate over time"
			if p95 {
				f, what = rm.LatencyP95Range, "p95 over time"
			}
			s, err := f(ctx, r.from, r.to, r.step, r.window)
			if err != nil {
				into.err = e.userText(err, "query "+what, "service", name)
				return
			}
			into.s, into.ok = s, true
		})
	}
	if svc.Metrics != nil {
		read(svc.Metrics, &r.errs, false, svc.Name)
		read(svc.Metrics, &r.p95, true, svc.Name)
	}
	r.neighbours = make([]neighbourRead, len(vc.Neighbours))
	for i, n := range vc.Neighbours {
		nr := &r.neighbours[i]
		nr.n = n
		if n.Metrics == nil {
			nr.why = "no metrics source configured"
			continue
		}
		read(n.Metrics, &nr.errs, false, n.Name)
		read(n.Metrics, &nr.p95, true, n.Name)
	}
	if nc, ok := svc.Platform.(platforms.NodeChecker); ok {
		r.nodesAsked = true
		wg.Go(func() {
			rep, err := nc.NodeConditions(ctx, s.Nodes)
			if err != nil {
				r.nodesErr = e.userText(err, "read node conditions", "service", svc.Name)
				return
			}
			r.nodes = &rep
		})
	}
	wg.Wait()
	return r
}

// judge turns the reads and the checks into the verdict.
func judge(svc *Service, r *verdictReads, checks []Check) *Relatedness {
	rel := &Relatedness{Verdict: Unknown}
	if r == nil {
		rel.Summary = "not measured"
		return rel
	}
	if r.why != "" {
		rel.Summary = r.why
		return rel
	}
	var (
		onsetPart string
		infra     []string
		before    bool
		after     bool
	)
	tolerance := r.step

	// Onset: of each number that fails now, the start of its breach.
	type failing struct {
		name  string
		read  seriesRead
		limit float64
	}
	var fails []failing
	for i, c := range checks[:min(2, len(checks))] {
		if c.Verdict != Fail || c.limit <= 0 {
			continue
		}
		f := failing{name: "error rate", read: r.errs, limit: c.limit}
		if i == 1 {
			f = failing{name: "p95", read: r.p95, limit: c.limit}
		}
		fails = append(fails, f)
	}
	// The facts come first, the queries last: a table cell is short.
	var onsetWhy, sources []string
	defer func() { rel.Evidence = append(rel.Evidence, sources...) }()
	for _, f := range fails {
		if !f.read.ok {
			onsetWhy = append(onsetWhy, fmt.Sprintf("%s over time not measured: %s", f.name, firstNonEmpty(f.read.err, "no metrics source")))
			continue
		}
		if f.read.s.NoData {
			onsetWhy = append(onsetWhy, fmt.Sprintf("%s over time: %s", f.name, f.read.s.Reason))
			continue
		}
		at, fromStart, ok := onsetOf(f.read.s.Points, func(v float64) bool { return v > f.limit }, max(r.window, 2*r.step))
		src := fmt.Sprintf("%s over time: %s, %s–%s UTC every %s over %s", f.name, f.read.s.Source, clockShort(r.from), clockShort(r.to), window(r.step), window(r.window))
		if f.read.s.Query != "" {
			src += ": `" + f.read.s.Query + "`"
		}
		sources = append(sources, src)
		if !ok {
			onsetWhy = append(onsetWhy, fmt.Sprintf("the %s over time is not over its threshold at the end of the range (noisy, or it recovered)", f.name))
			continue
		}
		if rel.Onset.IsZero() || at.Before(rel.Onset) {
			rel.Onset, rel.OnsetBefore = at, fromStart
			rel.Evidence = append(rel.Evidence, fmt.Sprintf("%s first over %s at %s UTC", f.name, limitText(f.name, f.limit), clockShort(at)))
		}
	}
	if !rel.Onset.IsZero() {
		d := rel.Onset.Sub(r.deployed)
		switch {
		case rel.OnsetBefore && !rel.Onset.After(r.deployed):
			before = true
			onsetPart = fmt.Sprintf("Over the threshold since at least %s UTC, %s before the deploy", clockShort(rel.Onset), ago(-d))
		case rel.OnsetBefore:
			onsetWhy = append(onsetWhy, fmt.Sprintf("the data starts at %s UTC, after the deploy, already over the threshold", clockShort(rel.Onset)))
			rel.Onset = time.Time{}
		case d < -tolerance:
			before = true
			onsetPart = fmt.Sprintf("Started %s before the deploy", ago(-d))
		default:
			after = true
			onsetPart = fmt.Sprintf("Started %s after the deploy", ago(max(d, 0)))
		}
	}
	if len(fails) == 0 {
		switch {
		case svc.Metrics == nil:
			onsetWhy = append(onsetWhy, "no metrics source configured, so there is no onset to time")
		case len(checks) >= 2 && checks[0].Verdict == Inconclusive && checks[1].Verdict == Inconclusive:
			onsetWhy = append(onsetWhy, "the error rate and the p95 have no data, so there is no onset to time")
		default:
			onsetWhy = append(onsetWhy, "neither the error rate nor the p95 is over its threshold, so there is no onset to time")
		}
	}

	// Neighbours.
	var degraded, healthy, unmeasured []string
	for _, nr := range r.neighbours {
		bad, measured, why := neighbourState(nr, r, svc.AssessWindow)
		switch {
		case !measured:
			unmeasured = append(unmeasured, nr.n.Name+": "+why)
		case bad != "":
			rel.Measured++
			rel.Degraded++
			degraded = append(degraded, nr.n.Name+" ("+bad+")")
		default:
			rel.Measured++
			healthy = append(healthy, nr.n.Name)
		}
	}
	neighPart := ""
	switch {
	case len(r.neighbours) == 0:
		rel.Evidence = append(rel.Evidence, "other services: none configured (verdict.neighbours)")
	case rel.Measured == 0:
		neighPart = "other services not measured"
	case rel.Degraded == 0:
		neighPart = fmt.Sprintf("other services healthy (%d of %d)", rel.Measured, rel.Measured)
	default:
		// The service itself counts among the degraded when it fails.
		n, k := rel.Measured+1, rel.Degraded
		if len(fails) > 0 || slices.ContainsFunc(checks, func(c Check) bool { return c.Verdict == Fail }) {
			k++
		}
		neighPart = fmt.Sprintf("%d of %d services degraded", k, n)
		if 2*k > n {
			infra = append(infra, neighPart)
		} else {
			neighPart = fmt.Sprintf("%d of %d other services degraded too", rel.Degraded, rel.Measured)
		}
	}
	if len(degraded) > 0 {
		rel.Evidence = append(rel.Evidence, "degraded: "+strings.Join(degraded, ", "))
	}
	if len(healthy) > 0 {
		rel.Evidence = append(rel.Evidence, "healthy: "+strings.Join(healthy, ", "))
	}
	if len(unmeasured) > 0 {
		rel.Evidence = append(rel.Evidence, "not measured: "+strings.Join(unmeasured, "; "))
	}

	// Nodes.
	nodePart := ""
	switch {
	case r.nodesErr != "":
		rel.Evidence = append(rel.Evidence, "nodes not read: "+r.nodesErr)
	case r.nodes != nil:
		var mine, others []string
		for _, p := range r.nodes.Problems {
			s := p.Node + " " + p.Condition
			if !p.Since.IsZero() {
				s += " since " + clockShort(p.Since) + " UTC"
			}
			if p.Workload {
				mine = append(mine, s)
			} else {
				others = append(others, s)
			}
		}
		switch {
		case len(mine) > 0:
			nodePart = "node " + strings.Join(mine, ", node ")
			infra = append(infra, nodePart)
			rel.Evidence = append(rel.Evidence, fmt.Sprintf("nodes running %s: %s", svc.Name, strings.Join(mine, ", ")))
		default:
			rel.Evidence = append(rel.Evidence, fmt.Sprintf("nodes: the %d running %s have no bad condition", r.nodes.Workload, svc.Name))
		}
		if len(others) > 0 {
			rel.Evidence = append(rel.Evidence, fmt.Sprintf("other nodes (%d in the cluster): %s", r.nodes.Nodes, strings.Join(others, ", ")))
		}
	}

	parts := func(xs ...string) string {
		var out []string
		for _, x := range xs {
			if x != "" {
				out = append(out, x)
			}
		}
		return strings.Join(out, "; ")
	}
	switch {
	case before:
		rel.Verdict = Unlikely
		rel.Summary = parts(onsetPart, neighPart, nodePart)
	case len(infra) > 0:
		rel.Verdict = Unlikely
		lead := ""
		if after {
			lead = onsetPart + ", but"
		}
		rel.Summary = strings.TrimSpace(lead + " " + strings.Join(infra, "; "))
		if lead == "" {
			rel.Summary = upperFirst(rel.Summary)
		}
	case after:
		rel.Verdict = Likely
		if neighPart == "" {
			neighPart = "no other services to compare"
		}
		rel.Summary = parts(onsetPart, neighPart)
	default:
		rel.Summary = parts(strings.Join(onsetWhy, "; "), neighPart)
		if rel.Summary == "" {
			rel.Summary = "no evidence either way"
		}
	}
	if rel.Verdict != Unknown && len(onsetWhy) > 0 {
		rel.Evidence = append(rel.Evidence, strings.Join(onsetWhy, "; "))
	}
	return rel
}

// neighbourState judges one neighbour: degraded (and how) when its error
// rate over the assess window is over its threshold, or its p95 over
// its factor × its own p95 before the deploy.
func neighbourState(nr neighbourRead, r *verdictReads, assess time.Duration) (bad string, measured bool, why string) {
	if nr.why != "" {
		return "", false, nr.why
	}
	th := nr.n.Thresholds
	if th == (Thresholds{}) {
		th = DefaultThresholds()
	}
	since := r.to.Add(-assess)
	var whys []string
	if nr.errs.ok && !nr.errs.s.NoData {
		if v, ok := meanSince(nr.errs.s.Points, since); ok {
			measured = true
			if v > th.ErrorRate {
				bad = "error rate " + pct(v)
				if at, _, ok := onsetOf(nr.errs.s.Points, func(x float64) bool { return x > th.ErrorRate }, max(r.window, 2*r.step)); ok {
					bad += " since " + clockShort(at) + " UTC"
				}
			}
		}
	} else {
		whys = append(whys, firstNonEmpty(nr.errs.err, nr.errs.s.Reason))
	}
	if nr.p95.ok && !nr.p95.s.NoData {
		cur, okc := meanSince(nr.p95.s.Points, since)
		base, okb := medianBefore(nr.p95.s.Points, r.deployed)
		if !okb && th.BaselineP95 > 0 {
			base, okb = th.BaselineP95.Seconds(), true
		}
		if okc && okb && base > 0 {
			measured = true
			if cur > th.LatencyFactor*base && bad == "" {
				bad = fmt.Sprintf("p95 %s, %.1f× its %s before the deploy", ms(cur), cur/base, ms(base))
			}
		}
	} else {
		whys = append(whys, firstNonEmpty(nr.p95.err, nr.p95.s.Reason))
	}
	if !measured {
		return "", false, firstNonEmpty(strings.Join(slices.Compact(whys), "; "), "no data over the range")
	}
	return bad, true, ""
}

// onsetOf finds the start of the run of points over the threshold that
// lasts until the last point; dips shorter than gap do not end a run.
// fromStart is set when the run starts at the first point.
func onsetOf(points []platforms.Point, over func(float64) bool, gap time.Duration) (at time.Time, fromStart, ok bool) {
	var (
		inRun    bool
		start    int
		lastOver time.Time
	)
	for i, p := range points {
		if over(p.Value) {
			if !inRun {
				inRun, start = true, i
			}
			lastOver = p.At
			continue
		}
		if inRun && p.At.Sub(lastOver) > gap {
			inRun = false
		}
	}
	if !inRun || len(points) == 0 || points[len(points)-1].At.Sub(lastOver) > gap/2 {
		return time.Time{}, false, false
	}
	return points[start].At, start == 0, true
}

func meanSince(points []platforms.Point, since time.Time) (float64, bool) {
	var sum float64
	n := 0
	for _, p := range points {
		if !p.At.Before(since) {
			sum += p.Value
			n++
		}
	}
	if n == 0 {
		return 0, false
	}
	return sum / float64(n), true
}

func medianBefore(points []platforms.Point, t time.Time) (float64, bool) {
	var vs []float64
	for _, p := range points {
		if !p.At.After(t) && !math.IsNaN(p.Value) {
			vs = append(vs, p.Value)
		}
	}
	if len(vs) == 0 {
		return 0, false
	}
	slices.Sort(vs)
	return vs[len(vs)/2], true
}

func limitText(name string, limit float64) string {
	if name == "error rate" {
		return pct(limit)
	}
	return ms(limit)
}

// ago renders a positive duration for the verdict: "40 s", "12 min", "3.5 h".
func ago(d time.Duration) string {
	switch {
	case d < 90*time.Second:
		return fmt.Sprintf("%d s", int(d.Round(time.Second)/time.Second))
	case d < 90*time.Minute:
		return fmt.Sprintf("%d min", int(d.Round(time.Minute)/time.Minute))
	}
	return fmt.Sprintf("%.1f h", d.Hours())
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}
