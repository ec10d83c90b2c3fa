// Package sim is a SIMULATED platform for rollbot's demo and flow tests:
// an in-memory deployment whose versions, pods and request metrics behave
// like a real service's, so the whole runbook can be clicked through
// without a cluster. Every Target() says "simulated"; nothing here touches
// a real system.
package sim

import (
	"context"
	"fmt"
	"math"
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
	RPS         float64       `yaml:"rps"`          // simulated traffic
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

type span struct {
	at  time.Time
	bad bool
	art string
}

// Sim is the simulated deployment. Safe for concurrent use.
type Sim struct {
	name string
	cfg  Config
	now  func() time.Time

	mu       sync.Mutex
	history  []platforms.Revision // oldest first
	current  int                  // index into history
	ready    int
	replicas int
	paused   bool
	version  int64 // bumped on every write: the compare-and-set token
	spans    []span
	bad      map[string]bool
	marks    map[string]string
	failNext error
}

var (
	_ platforms.Platform  = (*Sim)(nil)
	_ platforms.Fallbacks = (*Sim)(nil)
	_ platforms.Metrics   = (*Sim)(nil)
	_ platforms.Prober    = (*Sim)(nil)
)

// New builds a simulated deployment called name.
func New(name string, cfg Config) (*Sim, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 3
	}
	if cfg.DeployedAgo == 0 {
		cfg.DeployedAgo = 12 * time.Minute
	}
	if cfg.RPS == 0 {
		cfg.RPS = 40
	}
	s := &Sim{name: name, cfg: cfg, now: time.Now, bad: map[string]bool{}, marks: map[string]string{}, replicas: cfg.Replicas}
	now := s.now()
	n := len(cfg.Versions)
	for i, v := range cfg.Versions {
		created := now.Add(-cfg.DeployedAgo - time.Duration(n-1-i)*26*time.Hour)
		if i == n-1 {
			created = now.Add(-cfg.DeployedAgo)
		}
		s.history = append(s.history, platforms.Revision{ID: strconv.Itoa(i + 1), Artifact: v.Artifact, CreatedAt: created,
			ChangeCause: "deploy " + v.Artifact})
		s.bad[v.Artifact] = v.Bad
		s.spans = append(s.spans, span{at: created, bad: v.Bad, art: v.Artifact})
	}
	s.current = n - 1
	s.ready = s.readyFor(cfg.Versions[n-1].Artifact)
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

func (s *Sim) readyFor(art string) int {
	if s.bad[art] {
		return s.replicas / 3 // most pods crash-loop
	}
	return s.replicas
}

func (s *Sim) Kind() string   { return "simulated" }
func (s *Sim) Target() string { return "deployment " + s.name + " (simulated)" }

// Snapshot implements platforms.Platform.
func (s *Sim) Snapshot(ctx context.Context) (*platforms.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.history[s.current]
	hist := make([]platforms.Revision, 0, len(s.history))
	for i := len(s.history) - 1; i >= 0; i-- {
		r := s.history[i]
		if by, ok := s.marks[r.Artifact]; ok {
			r.DoNotDeploy, r.DoNotDeployBy = true, by
		}
		hist = append(hist, r)
	}
	restarts := 0
	if s.bad[cur.Artifact] {
		restarts = 7
	}
	h := platforms.Health{Desired: s.replicas, Ready: s.ready, Restarts: restarts, RestartWindow: 5 * time.Minute, Known: true,
		Detail: fmt.Sprintf("%d/%d pods ready", s.ready, s.replicas)}
	if s.bad[cur.Artifact] {
		h.Detail += fmt.Sprintf(", %d in CrashLoopBackOff", s.replicas-s.ready)
	}
	return &platforms.Snapshot{Current: cur, History: hist, Health: h, Paused: s.paused,
		RolloutInProgress: s.ready < s.replicas && !s.paused, DeployedAt: cur.CreatedAt}, nil
}

// Stop implements platforms.Platform: pause the rollout.
func (s *Sim) Stop(ctx context.Context, dryRun bool) (platforms.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paused {
		return platforms.Result{Outcome: platforms.Skipped, Detail: "rollout already paused"}, nil
	}
	plan := []string{s.Target() + ": pause the rollout"}
	if dryRun {
		return platforms.Result{Outcome: platforms.Planned, Detail: "would pause the rollout", Plan: plan}, nil
	}
	s.paused = true
	s.version++
	return platforms.Result{Outcome: platforms.Done, Detail: "rollout paused", Plan: plan}, nil
}

// Rollback implements platforms.Platform.
func (s *Sim) Rollback(ctx context.Context, to platforms.Revision, dryRun bool, progress platforms.ProgressFunc) (platforms.Result, error) {
	s.mu.Lock()
	idx := -1
	for i, r := range s.history {
		if r.ID == to.ID {
			idx = i
		}
	}
	if idx < 0 {
		s.mu.Unlock()
		return platforms.Result{}, platforms.Userf(platforms.ErrNotFound, "revision %s does not exist in %s", to.ID, s.Target())
	}
	from := s.history[s.current]
	target := s.history[idx]
	if target.Artifact == from.Artifact {
		s.mu.Unlock()
		return platforms.Result{Outcome: platforms.Skipped, Detail: "already at " + target.Label()}, nil
	}
	plan := []string{fmt.Sprintf("%s: template %s -> %s, resume rollout (one write, compare-and-set on version %d)", s.Target(), from.Artifact, target.Artifact, s.version)}
	if dryRun {
		s.mu.Unlock()
		return platforms.Result{Outcome: platforms.Planned, Detail: "would roll back to " + target.Label(), Plan: plan}, nil
	}
	if err := s.failNext; err != nil {
		s.failNext = nil
		s.mu.Unlock()
		return platforms.Result{}, err
	}
	token := s.version
	s.mu.Unlock()

	replaced := 0
	for replaced < s.replicas {
		if progress != nil {
			progress(platforms.Progress{Message: fmt.Sprintf("Waiting for rollout to finish: %d of %d updated replicas are available...", replaced, s.replicas),
				Updated: replaced, Ready: replaced, Desired: s.replicas})
		}
		t := time.NewTimer(s.cfg.StepDelay)
		select {
		case <-ctx.Done():
			t.Stop()
			return platforms.Result{}, platforms.Userf(ctx.Err(), "the rollback of %s did not finish in time (%d of %d pods replaced)", s.Target(), replaced, s.replicas)
		case <-t.C:
		}
		s.mu.Lock()
		if s.version != token {
			s.mu.Unlock()
			return platforms.Result{}, platforms.Userf(platforms.ErrConflict, "%s changed while rolling back (someone else deployed): the rollback stopped instead of fighting it", s.Target())
		}
		if replaced == 0 { // the template write
			s.current = idx
			s.paused = false
			s.spans = append(s.spans, span{at: s.now(), bad: s.bad[target.Artifact], art: target.Artifact})
		}
		replaced++
		s.ready = min(s.replicas, replaced)
		if s.bad[target.Artifact] {
			s.ready = s.readyFor(target.Artifact)
		}
		s.mu.Unlock()
	}
	if progress != nil {
		progress(platforms.Progress{Message: fmt.Sprintf("deployment %q successfully rolled out", s.name), Updated: s.replicas, Ready: s.replicas, Desired: s.replicas, Done: true})
	}
	return platforms.Result{Outcome: platforms.Done, Detail: fmt.Sprintf("%s now runs %s (%d/%d pods ready)", s.Target(), target.Label(), s.ready, s.replicas), Plan: plan}, nil
}

// MarkDoNotDeploy implements platforms.Platform.
func (s *Sim) MarkDoNotDeploy(ctx context.Context, rev platforms.Revision, by string) (platforms.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.marks[rev.Artifact] = by
	return platforms.Result{Outcome: platforms.Done, Detail: "annotated " + rev.Artifact + " do-not-deploy (simulated)"}, nil
}

// SetArtifact implements platforms.Fallbacks.
func (s *Sim) SetArtifact(ctx context.Context, artifact string, dryRun bool, progress platforms.ProgressFunc) (platforms.Result, error) {
	s.mu.Lock()
	var rev platforms.Revision
	for _, r := range s.history {
		if r.Artifact == artifact {
			rev = r
		}
	}
	s.mu.Unlock()
	if rev.ID == "" {
		return platforms.Result{}, platforms.Userf(platforms.ErrNotFound, "image %s is not known to %s", artifact, s.Target())
	}
	return s.Rollback(ctx, rev, dryRun, progress)
}

// ScaleToZero implements platforms.Fallbacks.
func (s *Sim) ScaleToZero(ctx context.Context, dryRun bool) (platforms.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if dryRun {
		return platforms.Result{Outcome: platforms.Planned, Detail: "would scale to 0", Plan: []string{s.Target() + ": replicas " + strconv.Itoa(s.replicas) + " -> 0"}}, nil
	}
	s.replicas, s.ready = 0, 0
	s.version++
	return platforms.Result{Outcome: platforms.Done, Detail: s.Target() + " scaled to 0"}, nil
}

// badShare is the share of [from, to] during which a bad version served.
func (s *Sim) badShare(from, to time.Time) (float64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !to.After(from) || len(s.spans) == 0 || to.Before(s.spans[0].at) {
		return 0, false
	}
	total, bad := to.Sub(from).Seconds(), 0.0
	for i, sp := range s.spans {
		end := to
		if i+1 < len(s.spans) {
			end = s.spans[i+1].at
		}
		a, b := maxTime(sp.at, from), minTime(end, to)
		if b.After(a) && sp.bad {
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

// ErrorRatio implements platforms.Metrics with simulated request data.
func (s *Sim) ErrorRatio(ctx context.Context, from, to time.Time) (platforms.Measurement, error) {
	m := platforms.Measurement{Source: "simulated metrics", Query: "simulated http_requests_total{code=~\"5..\"} / http_requests_total"}
	share, ok := s.badShare(from, to)
	m.Requests = s.cfg.RPS * to.Sub(from).Seconds()
	if !ok || m.Requests < 10 {
		m.NoData, m.Reason = true, "too little traffic in the window"
		return m, nil
	}
	m.Value = goodErrorRatio + share*(badErrorRatio-goodErrorRatio)
	return m, nil
}

// LatencyP95 implements platforms.Metrics with simulated request data.
func (s *Sim) LatencyP95(ctx context.Context, from, to time.Time) (platforms.Measurement, error) {
	m := platforms.Measurement{Source: "simulated metrics", Query: "simulated histogram_quantile(0.95, http_request_duration_seconds)"}
	share, ok := s.badShare(from, to)
	m.Requests = s.cfg.RPS * to.Sub(from).Seconds()
	if !ok || m.Requests < 10 {
		m.NoData, m.Reason = true, "too little traffic in the window"
		return m, nil
	}
	// p95 of a mix: dominated by the slow version once it serves > 5%.
	m.Value = goodP95
	if share > 0.05 {
		m.Value = goodP95 + math.Min(1, share*2)*(badP95-goodP95)
	}
	return m, nil
}

// Health is the simulated health endpoint: failing while a bad version runs.
func (s *Sim) Health(ctx context.Context) (bool, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.history[s.current]
	if s.bad[cur.Artifact] || s.replicas == 0 {
		return false, "GET /health → 503 (simulated)", nil
	}
	return true, "GET /health → 200 (simulated)", nil
}

// Smoke is the simulated smoke test of the critical user flows.
func (s *Sim) Smoke(ctx context.Context) (bool, string, error) {
	ok, _, _ := s.Health(ctx)
	if !ok {
		return false, "checkout flow: 2 of 5 steps failed (simulated)", nil
	}
	return true, "login, search, checkout: 5/5 steps passed (simulated)", nil
}
