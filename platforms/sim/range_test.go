package sim

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"rollbot/platforms"
)

// errorLimit is the runbook's default error-rate threshold (1%), which
// the verdict compares the range with.
const errorLimit = 0.01

// onset is where the run of points over limit that lasts until the last
// point starts; ok is false when the last point is not over it.
func onset(points []platforms.Point, limit float64) (at time.Time, ok bool) {
	for i := len(points) - 1; i >= 0 && points[i].Value > limit; i-- {
		at, ok = points[i].At, true
	}
	return at, ok
}

// The range history agrees with the instant metrics and with the deploy:
// a failing service is healthy before its bad deploy and over the
// threshold from one step after it on; a healthy one stays healthy.
func TestRange(t *testing.T) {
	const (
		step   = 20 * time.Second
		window = time.Minute
	)
	tests := []struct {
		name     string
		cfg      Config
		failing  bool
		useState bool // the deployment in a state file
	}{
		{name: "failing", cfg: Config{Versions: []Version{{Artifact: "app:v1"}, {Artifact: "app:v2", Bad: true}}}, failing: true},
		{name: "failing, state file", cfg: Config{Versions: []Version{{Artifact: "app:v1"}, {Artifact: "app:v2", Bad: true}}}, failing: true, useState: true},
		{name: "healthy", cfg: Config{Versions: []Version{{Artifact: "search:3.2.0"}, {Artifact: "search:3.2.1"}}, DeployedAgo: 3 * time.Hour}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.useState {
				tc.cfg.StateFile = filepath.Join(t.TempDir(), "state.json")
			}
			s := newSim(t, tc.cfg)
			ctx := context.Background()
			deployed := snapshot(t, s).DeployedAt
			from, to := deployed.Add(-30*time.Minute), deployed.Add(12*time.Minute)
			errs, err := s.ErrorRatioRange(ctx, from, to, step, window)
			if err != nil {
				t.Fatal(err)
			}
			p95, err := s.LatencyP95Range(ctx, from, to, step, window)
			if err != nil {
				t.Fatal(err)
			}
			if want := int(to.Sub(from)/step) + 1; len(errs.Points) != want || len(p95.Points) != want {
				t.Fatalf("points: error ratio %d, p95 %d; want %d (every step from %s to %s)", len(errs.Points), len(p95.Points), want, from, to)
			}
			if errs.NoData || errs.Source != "simulated metrics" || errs.Query == "" {
				t.Errorf("series: %+v", errs)
			}

			// Every point is what the instant metrics say for its window.
			for i, p := range errs.Points {
				m, err := s.ErrorRatio(ctx, p.At.Add(-window), p.At)
				if err != nil {
					t.Fatal(err)
				}
				l, err := s.LatencyP95(ctx, p.At.Add(-window), p.At)
				if err != nil {
					t.Fatal(err)
				}
				if m.Value != p.Value || l.Value != p95.Points[i].Value || p95.Points[i].At != p.At {
					t.Fatalf("at %s: range says error ratio %v, p95 %v; instant says %v, %v", p.At, p.Value, p95.Points[i].Value, m.Value, l.Value)
				}
				if !p.At.After(deployed) && (p.Value != goodErrorRatio || p95.Points[i].Value != goodP95) {
					t.Errorf("at %s, before the deploy at %s: error ratio %v, p95 %v; want healthy", p.At, deployed, p.Value, p95.Points[i].Value)
				}
			}

			at, over := onset(errs.Points, errorLimit)
			pAt, pOver := onset(p95.Points, 2*goodP95) // the default factor × the baseline
			if !tc.failing {
				if over || pOver {
					t.Errorf("healthy service over the threshold: error ratio from %s (%v), p95 from %s (%v)", at, over, pAt, pOver)
				}
				return
			}
			switch {
			case !over || !pOver:
				t.Fatalf("failing service not over the threshold at the end: error ratio %v, p95 %v", errs.Points[len(errs.Points)-1], p95.Points[len(p95.Points)-1])
			case !at.After(deployed) || at.Sub(deployed) > step:
				t.Errorf("error ratio onset at %s; want within one step (%s) after the deploy at %s", at, step, deployed)
			case !pAt.After(deployed) || pAt.Sub(deployed) > step:
				t.Errorf("p95 onset at %s; want within one step (%s) after the deploy at %s", pAt, step, deployed)
			}
			if last := errs.Points[len(errs.Points)-1]; last.Value != badErrorRatio {
				t.Errorf("error ratio at the end %v; want the bad version's %v", last.Value, badErrorRatio)
			}
		})
	}
}

// After a rollback to a good version the history recovers from the
// rollback's template write on, and what came before is unchanged.
func TestRangeAfterRollback(t *testing.T) {
	s := newSim(t, Config{Versions: []Version{{Artifact: "app:v1"}, {Artifact: "app:v2", Bad: true}}, Replicas: 2})
	ctx := context.Background()
	deployed := snapshot(t, s).DeployedAt
	if _, err := s.Rollback(ctx, platforms.Revision{ID: "1", Artifact: "app:v1"}, false, nil); err != nil {
		t.Fatal(err)
	}
	back := snapshot(t, s)
	if back.Current.Artifact != "app:v1" {
		t.Fatalf("current after the rollback: %s", back.Current.Artifact)
	}
	rolledBack := time.Now() // after the template write
	const step, window = 10 * time.Second, time.Minute
	errs, err := s.ErrorRatioRange(ctx, deployed.Add(-5*time.Minute), rolledBack.Add(5*time.Minute), step, window)
	if err != nil {
		t.Fatal(err)
	}
	sawBad := false
	for _, p := range errs.Points {
		switch {
		case !p.At.After(deployed) && p.Value != goodErrorRatio:
			t.Errorf("at %s, before the deploy: %v", p.At, p.Value)
		case p.At.After(deployed.Add(window)) && p.At.Before(deployed.Add(10*time.Minute)) && p.Value != badErrorRatio:
			t.Errorf("at %s, while the bad version ran: %v", p.At, p.Value)
		case p.At.After(rolledBack.Add(window)) && p.Value != goodErrorRatio:
			t.Errorf("at %s, a window after the rollback: %v", p.At, p.Value)
		}
		sawBad = sawBad || p.Value == badErrorRatio
	}
	if !sawBad {
		t.Error("the bad version's errors are missing from the history")
	}
	if _, ok := onset(errs.Points, errorLimit); ok {
		t.Error("still over the threshold at the end of the range, a window after the rollback")
	}
}

func TestRangeRefusesBadArguments(t *testing.T) {
	s := newSim(t, Config{Versions: []Version{{Artifact: "app:v1"}}})
	now := time.Now()
	for _, tc := range []struct {
		name         string
		from, to     time.Time
		step, window time.Duration
	}{
		{"zero step", now.Add(-time.Hour), now, 0, time.Minute},
		{"zero window", now.Add(-time.Hour), now, time.Minute, 0},
		{"reversed", now, now.Add(-time.Hour), time.Minute, time.Minute},
		{"too many points", now.Add(-24 * time.Hour), now, time.Second, time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.ErrorRatioRange(context.Background(), tc.from, tc.to, tc.step, tc.window); err == nil {
				t.Error("no error")
			}
		})
	}
}
