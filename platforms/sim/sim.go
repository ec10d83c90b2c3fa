// Package sim is a SIMULATED platform for rollbot's demo and flow tests:
// a deployment whose versions, pods and request metrics behave like a real
// service's, so the whole runbook can be clicked through without a
// cluster. Every Target() says "simulated"; nothing here touches a real
// system. Its metrics, instant and over time (platforms.RangeMetrics),
// follow which version served when: healthy numbers while a good version
// ran, failing ones from a bad version's deploy on. Nothing is random.
//
// By default the deployment lives in the process's memory. With
// state_file set it lives in that JSON file instead, shared by every
// process configured with the same path (several `rollbot serve` replicas,
// a test and the child processes it kills): each operation takes an
// advisory lock (flock, Unix only) on <state_file>.lock, loads, acts,
// saves and unlocks. The first process creates the file from its config;
// the others load it. Every write the platform accepts is also appended,
// one JSON line each, to <state_file>.writes (see ReadWrites), so tests
// can count on the platform's side that each write happened once.
//
// A rollback writes the template first, then replaces the pods one by one
// (step_delay each), recording its progress in the state. The process
// driving it holds a lock file of that revision next to the state file
// (<state_file>.rollout-<hex of the revision ID>.lock), which the kernel
// releases when that process dies. A Rollback to the same revision from
// anywhere else therefore never writes the template a second time: while
// the driver is alive it waits for it and then reports Skipped ("already
// at"); once the driver is gone it continues from the last replaced pod.
// A Rollback to another revision does not wait: it writes its own
// template, and the older rollout stops at its next pod with ErrConflict
// (the compare-and-set every write makes).
package sim

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"rollbot/platforms"
)

// Version is one simulated release.
type Version struct {
	Artifact string `yaml:"artifact"`
	Bad      bool   `yaml:"bad"` // errors, slow responses, crash-looping pods
}

// Config describes the simulated deployment. Versions are oldest first;
// the last one runs now.
type Config struct {
	Versions    []Version     `yaml:"versions"`
	Replicas    int           `yaml:"replicas"`
	DeployedAgo time.Duration `yaml:"deployed_ago"` // when the current version rolled out
	StepDelay   time.Duration `yaml:"step_delay"`   // per pod during a rollback
	StopDelay   time.Duration `yaml:"stop_delay"`   // how long stopping the rollout takes, before its write
	RPS         float64       `yaml:"rps"`          // simulated traffic
	// StateFile, when set, keeps the deployment in this JSON file, shared
	// by every process configured with the same path (see the package doc).
	StateFile string `yaml:"state_file"`
}

// Validate checks the config.
func (c Config) Validate() error {
	if len(c.Versions) == 0 {
		return fmt.Errorf("versions: at least one is required")
	}
	for i, v := range c.Versions {
		if v.Artifact == "" {
			return fmt.Errorf("versions[%d].artifact: required", i)
		}
	}
	if c.Replicas < 0 {
		return fmt.Errorf("replicas: must not be negative")
	}
	return nil
}

// Waits are the simulation's waits inside the runbook's steps
// (platforms.Wait), at the config path at: stopping the rollout takes
// stop_delay, a rollback step_delay per pod.
func (c Config) Waits(at string) []platforms.Wait {
	pods := cmp.Or(c.Replicas, defaultReplicas)
	var waits []platforms.Wait
	if c.StopDelay > 0 {
		waits = append(waits, platforms.Wait{Step: platforms.WaitStop, D: c.StopDelay,
			What: fmt.Sprintf("%s.stop_delay (%s)", at, c.StopDelay), Lower: "lower " + at + ".stop_delay"})
	}
	if c.StepDelay > 0 {
		waits = append(waits, platforms.Wait{Step: platforms.WaitRollback, D: time.Duration(pods) * c.StepDelay,
			What: fmt.Sprintf("%d pods × %s.step_delay (%s)", pods, at, c.StepDelay), Lower: "lower " + at + ".step_delay"})
	}
	return waits
}

// defaultReplicas is Config.Replicas' default.
const defaultReplicas = 3

// waitPoll is how often a Rollback waiting for another process's rollout
// to the same revision checks whether that process is done or gone.
const waitPoll = 20 * time.Millisecond

// Sim is the simulated deployment. Safe for concurrent use, and with a
// state file, by concurrent processes.
type Sim struct {
	name string
	cfg  Config
	now  func() time.Time

	mu       sync.Mutex
	st       *state     // without a state file
	file     *stateFile // with one
	rolling  map[string]chan struct{}
	failNext error
}

var (
	_ platforms.Platform     = (*Sim)(nil)
	_ platforms.Fallbacks    = (*Sim)(nil)
	_ platforms.Metrics      = (*Sim)(nil)
	_ platforms.RangeMetrics = (*Sim)(nil)
	_ platforms.Prober       = (*Sim)(nil)
)

// New builds a simulated deployment called name.
func New(name string, cfg Config) (*Sim, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = defaultReplicas
	}
	if cfg.DeployedAgo == 0 {
		cfg.DeployedAgo = 12 * time.Minute
	}
	if cfg.RPS == 0 {
		cfg.RPS = 40
	}
	s := &Sim{name: name, cfg: cfg, now: time.Now, rolling: map[string]chan struct{}{}}
	st := &state{Bad: map[string]bool{}, Marks: map[string]string{}, Replicas: cfg.Replicas}
	now := s.now()
	n := len(cfg.Versions)
	for i, v := range cfg.Versions {
		created := now.Add(-cfg.DeployedAgo - time.Duration(n-1-i)*26*time.Hour)
		if i == n-1 {
			created = now.Add(-cfg.DeployedAgo)
		}
		st.History = append(st.History, platforms.Revision{ID: strconv.Itoa(i + 1), Artifact: v.Artifact, CreatedAt: created,
			ChangeCause: "deploy " + v.Artifact})
		st.Bad[v.Artifact] = v.Bad
		st.Spans = append(st.Spans, span{At: created, Bad: v.Bad, Artifact: v.Artifact})
	}
	st.Current = n - 1
	st.Ready = readyFor(st, cfg.Versions[n-1].Artifact)
	if cfg.StateFile == "" {
		s.st = st
		return s, nil
	}
	s.file = &stateFile{path: cfg.StateFile}
	if err := s.file.init(st); err != nil {
		return nil, fmt.Errorf("state_file %s: %w", cfg.StateFile, err)
	}
	return s, nil
}

// SetClock replaces the clock (tests).
func (s *Sim) SetClock(now func() time.Time) { s.now = now }

// FailNextRollback makes the next Rollback fail with err (tests, demo).
func (s *Sim) FailNextRollback(err error) {
	s.mu.Lock()
	s.failNext = err
	s.mu.Unlock()
}

// view runs fn on the state without changing it.
func (s *Sim) view(fn func(st *state)) error {
	return s.do(false, func(t *tx) error { fn(t.state); return nil })
}

// update runs fn on the state; the changes stay when it returns nil, and
// fn must not change anything when it returns an error.
func (s *Sim) update(fn func(t *tx) error) error { return s.do(true, fn) }

func (s *Sim) do(write bool, fn func(t *tx) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.file == nil {
		return fn(&tx{state: s.st})
	}
	return s.file.do(write, fn)
}

func readyFor(st *state, art string) int {
	if st.Bad[art] {
		return st.Replicas / 3 // most pods crash-loop
	}
	return st.Replicas
}

func (s *Sim) Kind() string   { return "simulated" }
func (s *Sim) Target() string { return "deployment " + s.name + " (simulated)" }

// Snapshot implements platforms.Platform.
func (s *Sim) Snapshot(ctx context.Context) (*platforms.Snapshot, error) {
	var snap *platforms.Snapshot
	err := s.view(func(st *state) {
		cur := st.History[st.Current]
		hist := make([]platforms.Revision, 0, len(st.History))
		for i := len(st.History) - 1; i >= 0; i-- {
			r := st.History[i]
			if by, ok := st.Marks[r.Artifact]; ok {
				r.DoNotDeploy, r.DoNotDeployBy = true, by
			}
			hist = append(hist, r)
		}
		restarts := 0
		if st.Bad[cur.Artifact] {
			restarts = 7
		}
		h := platforms.Health{Desired: st.Replicas, Ready: st.Ready, Restarts: restarts, RestartWindow: 5 * time.Minute, Known: true,
			Detail: fmt.Sprintf("%d/%d pods ready", st.Ready, st.Replicas)}
		if st.Bad[cur.Artifact] {
			h.Detail += fmt.Sprintf(", %d in CrashLoopBackOff", st.Replicas-st.Ready)
		}
		snap = &platforms.Snapshot{Current: cur, History: hist, Health: h, Paused: st.Paused,
			RolloutInProgress: (st.Rollout != nil || st.Ready < st.Replicas) && !st.Paused, DeployedAt: cur.CreatedAt}
	})
	return snap, err
}

// Stop implements platforms.Platform: pause the rollout.
func (s *Sim) Stop(ctx context.Context, dryRun bool) (platforms.Result, error) {
	plan := []string{s.Target() + ": pause the rollout"}
	if !dryRun && s.cfg.StopDelay > 0 {
		t := time.NewTimer(s.cfg.StopDelay)
		select {
		case <-ctx.Done():
			t.Stop()
			return platforms.Result{}, platforms.Userf(ctx.Err(), "stopping the rollout of %s did not finish in time", s.Target())
		case <-t.C:
		}
	}
	var res platforms.Result
	err := s.update(func(t *tx) error {
		switch {
		case t.Paused:
			res = platforms.Result{Outcome: platforms.Skipped, Detail: "rollout already paused"}
		case dryRun:
			res = platforms.Result{Outcome: platforms.Planned, Detail: "would pause the rollout", Plan: plan}
		default:
			t.Paused = true
			t.Version++
			t.wrote(OpStop, "pause the rollout")
			res = platforms.Result{Outcome: platforms.Done, Detail: "rollout paused", Plan: plan}
		}
		return nil
	})
	return res, err
}

// Rollback implements platforms.Platform.
func (s *Sim) Rollback(ctx context.Context, to platforms.Revision, dryRun bool, progress platforms.ProgressFunc) (platforms.Result, error) {
	return s.rollback(ctx, to, "", dryRun, progress, OpRollback)
}

// rollback moves the deployment to revision to: the template write (op in
// the write log) after the first step_delay, then one pod per step_delay.
// With expect set, only from a deployment that runs expect (checked on the
// state the template write compares against).
func (s *Sim) rollback(ctx context.Context, to platforms.Revision, expect string, dryRun bool, progress platforms.ProgressFunc, op string) (platforms.Result, error) {
	if progress == nil {
		progress = func(platforms.Progress) {}
	}
	// Check and plan against the deployment as it is now.
	var (
		res     platforms.Result
		ended   bool
		idx     = -1
		target  platforms.Revision
		base    int64 // the version the template write compares against
		plan    []string
		refused error
	)
	err := s.view(func(st *state) {
		for i, r := range st.History {
			if r.ID == to.ID {
				idx = i
			}
		}
		if idx < 0 {
			refused = platforms.Userf(platforms.ErrNotFound, "revision %s does not exist in %s", to.ID, s.Target())
			return
		}
		from := st.History[st.Current]
		target = st.History[idx]
		base = st.Version
		resuming := st.Rollout != nil && st.Rollout.Target == target.ID
		switch {
		case resuming:
			plan = []string{fmt.Sprintf("%s: continue the rollout to %s that process %d started (template already written; %d of %d pods replaced)",
				s.Target(), target.Artifact, st.Rollout.PID, st.Rollout.Replaced, st.Rollout.Desired)}
		case target.Artifact == from.Artifact:
			res, ended = platforms.Result{Outcome: platforms.Skipped, Detail: "already at " + target.Label()}, true
		case expect != "" && from.Artifact != expect:
			refused = platforms.Userf(platforms.ErrConflict, "%s runs %s, not %s: someone changed it, so %s was not deployed over it", s.Target(), from.Label(), expect, target.Artifact)
		default:
			plan = []string{fmt.Sprintf("%s: template %s -> %s, resume rollout (one write, compare-and-set on version %d)", s.Target(), from.Artifact, target.Artifact, st.Version)}
		}
	})
	switch {
	case err != nil:
		return platforms.Result{}, err
	case refused != nil:
		return platforms.Result{}, refused
	case ended:
		return res, nil
	case dryRun:
		return platforms.Result{Outcome: platforms.Planned, Detail: "would roll back to " + target.Label(), Plan: plan}, nil
	}
	s.mu.Lock()
	failed := s.failNext
	s.failNext = nil
	s.mu.Unlock()
	if failed != nil {
		return platforms.Result{}, failed
	}

	// Drive the rollout to this revision, alone: another rollout to it,
	// alive in this or another process, is waited for.
	release, err := s.drive(ctx, target, progress)
	if err != nil {
		return platforms.Result{}, err
	}
	defer release()

	var (
		replaced, desired int
		token             = base
		resumedFrom       int // the process whose rollout this one continues
	)
	err = s.update(func(t *tx) error {
		cur, r := t.History[t.Current], t.Rollout
		switch {
		case r != nil && r.Target == target.ID && t.Version == r.Token && cur.ID == target.ID:
			replaced, desired, token, resumedFrom = r.Replaced, r.Desired, r.Token, r.PID
			plan = []string{fmt.Sprintf("%s: continue the rollout to %s that process %d started at %s (template already written; %d of %d pods replaced)",
				s.Target(), target.Artifact, r.PID, r.StartedAt.Format(time.RFC3339), r.Replaced, r.Desired)}
		case cur.Artifact == target.Artifact:
			// Another rollback to it finished while this one waited, or a
			// later write (a pause, a scale) ended that rollout's claim.
			if r != nil && r.Target == target.ID {
				t.Rollout = nil
			}
			res, ended = platforms.Result{Outcome: platforms.Skipped, Detail: "already at " + target.Label()}, true
		case t.Version != base:
			return s.conflict()
		default:
			desired = t.Replicas
		}
		return nil
	})
	if err != nil || ended {
		return res, err
	}

	fresh := replaced == 0
	if resumedFrom != 0 {
		progress(platforms.Progress{Message: fmt.Sprintf("Continuing the rollout to %s that process %d started: %d of %d updated replicas are available...",
			target.Label(), resumedFrom, replaced, desired), Updated: replaced, Ready: replaced, Desired: desired})
	}
	var ready int
	for first := fresh; first || replaced < desired; first = false {
		progress(platforms.Progress{Message: fmt.Sprintf("Waiting for rollout to finish: %d of %d updated replicas are available...", replaced, desired),
			Updated: replaced, Ready: replaced, Desired: desired})
		t := time.NewTimer(s.cfg.StepDelay)
		select {
		case <-ctx.Done():
			t.Stop()
			return platforms.Result{}, platforms.Userf(ctx.Err(), "the rollback of %s did not finish in time (%d of %d pods replaced)", s.Target(), replaced, desired)
		case <-t.C:
		}
		err := s.update(func(t *tx) error {
			if t.Version != token || (replaced > 0 && (t.Rollout == nil || t.Rollout.Target != target.ID)) {
				return s.conflict()
			}
			if replaced == 0 { // the template write
				from := t.History[t.Current].Artifact
				t.Current = idx
				t.Paused = false
				t.Spans = append(t.Spans, span{At: s.now(), Bad: t.Bad[target.Artifact], Artifact: target.Artifact})
				t.Version++
				token = t.Version
				t.Rollout = &rollout{Target: target.ID, Artifact: target.Artifact, Desired: desired, Token: token, StartedAt: s.now(), PID: os.Getpid()}
				t.wrote(op, fmt.Sprintf("%s: template %s -> %s", s.Target(), from, target.Artifact))
			}
			replaced++
			t.Rollout.Replaced = replaced
			t.Ready = min(t.Replicas, replaced)
			if t.Bad[target.Artifact] {
				t.Ready = readyFor(t.state, target.Artifact)
			}
			if replaced >= desired {
				t.Rollout = nil
			}
			ready = t.Ready
			return nil
		})
		if err != nil {
			return platforms.Result{}, err
		}
	}
	progress(platforms.Progress{Message: fmt.Sprintf("deployment %q successfully rolled out", s.name), Updated: desired, Ready: desired, Desired: desired, Done: true})
	detail := fmt.Sprintf("%s now runs %s (%d/%d pods ready)", s.Target(), target.Label(), ready, desired)
	if resumedFrom != 0 {
		detail += fmt.Sprintf("; continued the rollout process %d had started", resumedFrom)
	}
	return platforms.Result{Outcome: platforms.Done, Detail: detail, Plan: plan}, nil
}

func (s *Sim) conflict() error {
	return platforms.Userf(platforms.ErrConflict, "%s changed while rolling back (someone else deployed): the rollback stopped instead of fighting it", s.Target())
}

// drive claims the right to drive the rollout to target, waiting (and
// saying so once) while someone else drives it. The claim is a lock file
// with a state file, so that it dies with its process; a channel without.
func (s *Sim) drive(ctx context.Context, target platforms.Revision, progress platforms.ProgressFunc) (release func(), err error) {
	if s.file == nil {
		s.mu.Lock()
		c, ok := s.rolling[target.ID]
		if !ok {
			c = make(chan struct{}, 1)
			s.rolling[target.ID] = c
		}
		s.mu.Unlock()
		select {
		case c <- struct{}{}:
		default:
			progress(waiting(target))
			select {
			case c <- struct{}{}:
			case <-ctx.Done():
				return nil, s.gaveUp(ctx, target)
			}
		}
		return func() { <-c }, nil
	}
	path := s.file.rolloutLockPath(target.ID)
	for said := false; ; said = true {
		f, ok, err := flock(path, true, false)
		if err != nil {
			return nil, fmt.Errorf("roll back %s: %w", s.Target(), err)
		}
		if ok {
			return func() { f.Close() }, nil
		}
		if !said {
			progress(waiting(target))
		}
		t := time.NewTimer(waitPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, s.gaveUp(ctx, target)
		case <-t.C:
		}
	}
}

func waiting(target platforms.Revision) platforms.Progress {
	return platforms.Progress{Message: "Waiting for another rollback to " + target.Label() + " that is already in progress..."}
}

func (s *Sim) gaveUp(ctx context.Context, target platforms.Revision) error {
	return platforms.Userf(ctx.Err(), "another rollback of %s to %s was still in progress when time ran out", s.Target(), target.Label())
}

// MarkDoNotDeploy implements platforms.Platform.
func (s *Sim) MarkDoNotDeploy(ctx context.Context, rev platforms.Revision, by string) (platforms.Result, error) {
	err := s.update(func(t *tx) error {
		t.Marks[rev.Artifact] = by
		t.wrote(OpMarkDoNotDeploy, fmt.Sprintf("%s: annotate %s do-not-deploy (by %s)", s.Target(), rev.Artifact, by))
		return nil
	})
	if err != nil {
		return platforms.Result{}, err
	}
	return platforms.Result{Outcome: platforms.Done, Detail: "annotated " + rev.Artifact + " do-not-deploy (simulated)"}, nil
}

// SetArtifact implements platforms.Fallbacks.
func (s *Sim) SetArtifact(ctx context.Context, artifact string, dryRun bool, progress platforms.ProgressFunc) (platforms.Result, error) {
	var rev platforms.Revision
	err := s.view(func(st *state) {
		for _, r := range st.History {
			if r.Artifact == artifact {
				rev = r
			}
		}
	})
	if err != nil {
		return platforms.Result{}, err
	}
	if rev.ID == "" {
		return platforms.Result{}, platforms.Userf(platforms.ErrNotFound, "image %s is not known to %s", artifact, s.Target())
	}
	return s.rollback(ctx, rev, "", dryRun, progress, OpSetArtifact)
}

// Deploy implements platforms.Deployer: the simulated deployment moves
// to one of its configured versions (a drill's bad one), as a deploy;
// with from set, only while it runs from.
func (s *Sim) Deploy(ctx context.Context, artifact, from string, dryRun bool) (platforms.Result, error) {
	var rev platforms.Revision
	current := ""
	err := s.view(func(st *state) {
		current = st.History[st.Current].Artifact
		for _, r := range st.History {
			if r.Artifact == artifact {
				rev = r
			}
		}
	})
	if err != nil {
		return platforms.Result{}, err
	}
	if rev.ID == "" {
		return platforms.Result{}, platforms.Userf(platforms.ErrNotFound, "image %s is not one of the versions of %s; add it to simulated.versions", artifact, s.Target())
	}
	if current == artifact {
		return platforms.Result{Outcome: platforms.Skipped, Detail: s.Target() + " already runs " + artifact}, nil
	}
	res, err := s.rollback(ctx, rev, from, dryRun, nil, OpDeploy)
	if err != nil {
		return res, err
	}
	if res.Outcome == platforms.Done {
		res.Detail = fmt.Sprintf("deployed %s to %s", artifact, s.Target())
	}
	return res, nil
}

// ScaleToZero implements platforms.Fallbacks.
func (s *Sim) ScaleToZero(ctx context.Context, dryRun bool) (platforms.Result, error) {
	var res platforms.Result
	err := s.update(func(t *tx) error {
		if dryRun {
			res = platforms.Result{Outcome: platforms.Planned, Detail: "would scale to 0", Plan: []string{s.Target() + ": replicas " + strconv.Itoa(t.Replicas) + " -> 0"}}
			return nil
		}
		from := t.Replicas
		t.Replicas, t.Ready = 0, 0
		t.Version++
		t.wrote(OpScaleToZero, fmt.Sprintf("%s: replicas %d -> 0", s.Target(), from))
		res = platforms.Result{Outcome: platforms.Done, Detail: s.Target() + " scaled to 0"}
		return nil
	})
	return res, err
}

// badShare is the share of [from, to] during which a bad version served.
func (s *Sim) badShare(from, to time.Time) (share float64, ok bool, err error) {
	err = s.view(func(st *state) { share, ok = badShareOf(st.Spans, from, to) })
	return share, ok, err
}

// spans copies which artifact served when, for a range: one read of the
// state for all its points.
func (s *Sim) spans() ([]span, error) {
	var out []span
	err := s.view(func(st *state) { out = slices.Clone(st.Spans) })
	return out, err
}

// badShareOf is the share of [from, to] during which a bad version served;
// not ok before the first version existed.
func badShareOf(spans []span, from, to time.Time) (share float64, ok bool) {
	if !to.After(from) || len(spans) == 0 || to.Before(spans[0].At) {
		return 0, false
	}
	total, bad := to.Sub(from).Seconds(), 0.0
	for i, sp := range spans {
		end := to
		if i+1 < len(spans) {
			end = spans[i+1].At
		}
		a, b := maxTime(sp.At, from), minTime(end, to)
		if b.After(a) && sp.Bad {
			bad += b.Sub(a).Seconds()
		}
	}
	return bad / total, true
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

const (
	goodErrorRatio = 0.002
	badErrorRatio  = 0.074
	goodP95        = 0.118
	badP95         = 0.780
)

const (
	errorQuery = "simulated http_requests_total{code=~\"5..\"} / http_requests_total"
	p95Query   = "simulated histogram_quantile(0.95, http_request_duration_seconds)"
)

// ErrorRatio implements platforms.Metrics with simulated request data.
func (s *Sim) ErrorRatio(ctx context.Context, from, to time.Time) (platforms.Measurement, error) {
	return s.measure(from, to, errorQuery, errorRatioOf)
}

// LatencyP95 implements platforms.Metrics with simulated request data.
func (s *Sim) LatencyP95(ctx context.Context, from, to time.Time) (platforms.Measurement, error) {
	return s.measure(from, to, p95Query, p95Of)
}

func (s *Sim) measure(from, to time.Time, query string, value func(share float64) float64) (platforms.Measurement, error) {
	m := platforms.Measurement{Source: "simulated metrics", Query: query}
	share, ok, err := s.badShare(from, to)
	if err != nil {
		return m, err
	}
	m.Requests = s.cfg.RPS * to.Sub(from).Seconds()
	if !ok || m.Requests < 10 {
		m.NoData, m.Reason = true, "too little traffic in the window"
		return m, nil
	}
	m.Value = value(share)
	return m, nil
}

// errorRatioOf is the error ratio of a window in which a bad version
// served share of the time.
func errorRatioOf(share float64) float64 {
	return goodErrorRatio + share*(badErrorRatio-goodErrorRatio)
}

// p95Of is the p95 of such a window: dominated by the slow version once
// it serves > 5%.
func p95Of(share float64) float64 {
	if share > 0.05 {
		return goodP95 + math.Min(1, share*2)*(badP95-goodP95)
	}
	return goodP95
}

// ErrorRatioRange implements platforms.RangeMetrics: at every step from
// from to to, the error ratio over the window that ends there, from the
// same simulated history as ErrorRatio (a point over [t-window, t] equals
// ErrorRatio(t-window, t)). Deterministic: the numbers follow which
// version served when, nothing else.
func (s *Sim) ErrorRatioRange(ctx context.Context, from, to time.Time, step, window time.Duration) (platforms.Series, error) {
	return s.series(from, to, step, window, errorQuery, errorRatioOf)
}

// LatencyP95Range implements platforms.RangeMetrics, likewise for the p95.
func (s *Sim) LatencyP95Range(ctx context.Context, from, to time.Time, step, window time.Duration) (platforms.Series, error) {
	return s.series(from, to, step, window, p95Query, p95Of)
}

// maxRangePoints bounds a range query, as Prometheus does (11,000 points).
const maxRangePoints = 11000

func (s *Sim) series(from, to time.Time, step, window time.Duration, query string, value func(share float64) float64) (platforms.Series, error) {
	out := platforms.Series{Source: "simulated metrics", Query: query}
	switch {
	case step <= 0 || window <= 0:
		return out, fmt.Errorf("simulated range query of %s: step and window must be positive (step %s, window %s)", s.name, step, window)
	case to.Before(from):
		return out, fmt.Errorf("simulated range query of %s: range [%s, %s] is empty", s.name, from.Format(time.RFC3339), to.Format(time.RFC3339))
	case to.Sub(from)/step >= maxRangePoints:
		return out, fmt.Errorf("simulated range query of %s: more than %d points (step %s over %s)", s.name, maxRangePoints, step, to.Sub(from))
	}
	spans, err := s.spans()
	if err != nil {
		return out, err
	}
	for t := from; !t.After(to); t = t.Add(step) {
		share, ok := badShareOf(spans, t.Add(-window), t)
		if !ok || s.cfg.RPS*window.Seconds() < 10 {
			continue // no traffic: left out, like Prometheus's NaN
		}
		out.Points = append(out.Points, platforms.Point{At: t, Value: value(share)})
	}
	if len(out.Points) == 0 {
		out.NoData, out.Reason = true, "too little traffic in the range"
	}
	return out, nil
}

// Health is the simulated health endpoint: failing while a bad version runs.
func (s *Sim) Health(ctx context.Context) (bool, string, error) {
	var up bool
	err := s.view(func(st *state) {
		up = !st.Bad[st.History[st.Current].Artifact] && st.Replicas > 0
	})
	switch {
	case err != nil:
		return false, "", err
	case !up:
		return false, "GET /health → 503 (simulated)", nil
	}
	return true, "GET /health → 200 (simulated)", nil
}

// Smoke is the simulated smoke test of the critical user flows.
func (s *Sim) Smoke(ctx context.Context) (bool, string, error) {
	ok, _, err := s.Health(ctx)
	if err != nil {
		return false, "", err
	}
	if !ok {
		return false, "checkout flow: 2 of 5 steps failed (simulated)", nil
	}
	return true, "login, search, checkout: 5/5 steps passed (simulated)", nil
}
