package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"rollbot/platforms"
	"rollbot/platforms/sim"
)

// fakeMetrics answers with fixed measurements; Slow makes every call
// wait for the context (a source that never answers).
type fakeMetrics struct {
	errRatio, p95, baseline platforms.Measurement
	err                     error
	slow                    bool
}

func (f fakeMetrics) wait(ctx context.Context) error {
	if f.slow {
		<-ctx.Done()
		return platforms.Userf(ctx.Err(), "Prometheus at prom:9090 did not answer within the query timeout")
	}
	return f.err
}

func (f fakeMetrics) ErrorRatio(ctx context.Context, from, to time.Time) (platforms.Measurement, error) {
	return f.errRatio, f.wait(ctx)
}

func (f fakeMetrics) LatencyP95(ctx context.Context, from, to time.Time) (platforms.Measurement, error) {
	if to.Before(time.Now().Add(-time.Minute)) {
		return f.baseline, f.wait(ctx)
	}
	return f.p95, f.wait(ctx)
}

func TestAssessVerdicts(t *testing.T) {
	val := func(v float64) platforms.Measurement {
		return platforms.Measurement{Value: v, Source: "test", Requests: 500}
	}
	none := platforms.Measurement{NoData: true, Reason: "too little traffic: 3 requests", Source: "test"}
	// A scrape history of 40s when 5m were asked for.
	short := func(v float64) platforms.Measurement {
		m := val(v)
		m.To = time.Now()
		m.From = m.To.Add(-40 * time.Second)
		return m
	}
	// A history that covers the window but whose newest sample is 20s old.
	late := func(v float64) platforms.Measurement {
		m := val(v)
		m.From = time.Now().Add(-5*time.Minute + time.Second)
		m.To = time.Now().Add(-20 * time.Second)
		return m
	}
	tests := []struct {
		name        string
		m           fakeMetrics
		wantErr     Verdict
		wantLatency Verdict
		wantText    string
		fixed       time.Duration // thresholds.baseline_p95
		wantNote    string
	}{
		{"bad release", fakeMetrics{errRatio: val(0.05), p95: val(0.9), baseline: val(0.1)}, Fail, Fail, "900 ms (9.0× baseline 100 ms)", 0, ""},
		{"healthy", fakeMetrics{errRatio: val(0.002), p95: val(0.12), baseline: val(0.1)}, Pass, Pass, "0.20%", 0, ""},
		{"no traffic is inconclusive, never healthy", fakeMetrics{errRatio: none, p95: none, baseline: val(0.1)}, Inconclusive, Inconclusive, "too little traffic", 0, ""},
		{"no baseline", fakeMetrics{errRatio: val(0.002), p95: val(0.12), baseline: none}, Pass, Inconclusive, "no baseline: too little traffic", 0, ""},
		{"source down", fakeMetrics{err: platforms.Userf(errors.New("dial tcp"), "Prometheus at prom:9090 is not reachable (connection refused)")}, Inconclusive, Inconclusive, "is not reachable", 0, ""},
		{"source hangs", fakeMetrics{slow: true}, Inconclusive, Inconclusive, "did not answer", 0, ""},
		{"measured baseline first", fakeMetrics{errRatio: val(0.002), p95: val(0.3), baseline: val(0.1)}, Pass, Fail, "baseline = p95 over the 30m before the deploy", 500 * time.Millisecond, ""},
		{"baseline_p95 is the fallback", fakeMetrics{errRatio: val(0.002), p95: val(0.3), baseline: none}, Pass, Pass, "configured baseline_p95 500 ms (no measured baseline: too little traffic: 3 requests in the 30m before the deploy)", 500 * time.Millisecond, ""},
		{"a shorter span than the window", fakeMetrics{errRatio: short(0.5), p95: short(0.3), baseline: val(0.1)}, Fail, Fail, "50.00% (over 40s)", 0,
			"Error rate measured over the last 40s only"},
		{"a baseline shorter than its window", fakeMetrics{errRatio: val(0.002), p95: val(0.3), baseline: func() platforms.Measurement {
			m := val(0.1)
			m.From, m.To = time.Now().Add(-2*time.Minute), time.Now().Add(-90*time.Second)
			return m
		}()}, Pass, Fail, "baseline = p95 over 30s before the deploy at ", 0, "Baseline p95 measured over 30s only"},
		{"a span that ends a little early is the window", fakeMetrics{errRatio: late(0.5), p95: late(0.3), baseline: val(0.1)}, Fail, Fail, "50.00%", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := sim.New("myapp", sim.Config{Versions: []sim.Version{{Artifact: "app:v1"}, {Artifact: "app:v2", Bad: true}}})
			if err != nil {
				t.Fatal(err)
			}
			svc := &Service{Name: "myapp", Platform: s, Metrics: tt.m}
			if tt.fixed > 0 {
				svc.Thresholds = DefaultThresholds()
				svc.Thresholds.BaselineP95 = tt.fixed
			}
			e := New(context.Background(), nil, nil, []*Service{svc}, Options{QueryTimeout: 50 * time.Millisecond}, slog.New(slog.DiscardHandler))
			a := e.Assess(context.Background(), svc, "", nil)
			if len(a.Checks) != 4 {
				t.Fatalf("%d checks, want the runbook's 4", len(a.Checks))
			}
			if a.Checks[0].Verdict != tt.wantErr || a.Checks[1].Verdict != tt.wantLatency {
				t.Fatalf("verdicts = %s/%s, want %s/%s: %+v", a.Checks[0].Verdict, a.Checks[1].Verdict, tt.wantErr, tt.wantLatency, a.Checks)
			}
			all := ""
			for _, c := range a.Checks {
				all += c.Measured + " | " + c.Source + "\n"
			}
			if !strings.Contains(all, tt.wantText) {
				t.Errorf("table lacks %q:\n%s", tt.wantText, all)
			}
			notes := strings.Join(a.Notes(), "\n")
			if (tt.wantNote == "") != (notes == "") || !strings.Contains(notes, tt.wantNote) {
				t.Errorf("notes %q, want %q", notes, tt.wantNote)
			}
			if tt.wantNote != "" && !strings.Contains(assessmentMsg(goldenIncident(), a, nil).Text+blocksText(t, assessmentMsg(goldenIncident(), a, nil)), tt.wantNote) {
				t.Errorf("the assessment message does not show the note %q", tt.wantNote)
			}
			// The platform checks are there whatever the metrics did.
			if a.Checks[2].Verdict != Fail || a.Checks[3].Verdict != Fail {
				t.Errorf("restarts/readiness of the crash-looping release: %+v", a.Checks[2:])
			}
			if !a.HasGood || a.Good.Artifact != "app:v1" {
				t.Errorf("last known good = %+v", a.Good)
			}
		})
	}
}

// blocksText is the JSON of a message's blocks, to look for text in.
func blocksText(t *testing.T, m Msg) string {
	t.Helper()
	b, err := json.Marshal(m.Blocks)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// hangingRange is a metrics source whose instant queries answer and whose
// range queries never do (a Prometheus that chokes on query_range).
type hangingRange struct{ fakeMetrics }

func (hangingRange) hang(ctx context.Context) (platforms.Series, error) {
	<-ctx.Done()
	return platforms.Series{}, platforms.Userf(ctx.Err(), "Prometheus at prom:9090 did not answer within the query timeout")
}

func (h hangingRange) ErrorRatioRange(ctx context.Context, _, _ time.Time, _, _ time.Duration) (platforms.Series, error) {
	return h.hang(ctx)
}

func (h hangingRange) LatencyP95Range(ctx context.Context, _, _ time.Time, _, _ time.Duration) (platforms.Series, error) {
	return h.hang(ctx)
}

// The verdict's reads are time-boxed by their own budget: a range query
// that never answers does not hold the assessment up, and the row says
// what could not be measured instead of guessing.
func TestAssessVerdictWithinItsBudget(t *testing.T) {
	s, err := sim.New("myapp", sim.Config{Versions: []sim.Version{{Artifact: "app:v1"}, {Artifact: "app:v2", Bad: true}}})
	if err != nil {
		t.Fatal(err)
	}
	val := func(v float64) platforms.Measurement {
		return platforms.Measurement{Value: v, Source: "test", Requests: 500}
	}
	m := hangingRange{fakeMetrics{errRatio: val(0.05), p95: val(0.9), baseline: val(0.1)}}
	svc := &Service{Name: "myapp", Platform: s, Metrics: m, Verdict: VerdictConfig{Budget: 300 * time.Millisecond,
		Neighbours: []Neighbour{{Name: "payments", Metrics: m}, {Name: "search"}}}}
	e := New(context.Background(), nil, nil, []*Service{svc}, Options{QueryTimeout: 100 * time.Millisecond}, slog.New(slog.DiscardHandler))
	start := time.Now()
	a := e.Assess(context.Background(), svc, "", nil)
	took := time.Since(start)
	r := a.Related
	t.Logf("assessed in %s: %s | %s", took, r.Text(), strings.Join(r.Evidence, " | "))
	if took > 5*time.Second { // the budget is 300ms; this only catches a verdict that waits for ever
		t.Fatalf("the assessment took %s with a hanging range query", took)
	}
	if r.Verdict != Unknown || !strings.Contains(r.Summary, "error rate over time not measured: Prometheus at prom:9090 did not answer") {
		t.Fatalf("verdict %s: %q", r.Verdict, r.Summary)
	}
	ev := strings.Join(r.Evidence, "\n")
	if !strings.Contains(ev, "not measured: payments: Prometheus at prom:9090 did not answer") || !strings.Contains(ev, "search: no metrics source configured") {
		t.Fatalf("evidence does not say which neighbours were not measured:\n%s", ev)
	}
	if rec := a.Recommendation(); !strings.Contains(rec, "Whether it is deployment-related is unknown (error rate over time not measured") {
		t.Fatalf("recommendation %q", rec)
	}
}
