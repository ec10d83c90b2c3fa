package handlers

import (
	"context"
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
	tests := []struct {
		name        string
		m           fakeMetrics
		wantErr     Verdict
		wantLatency Verdict
		wantText    string
	}{
		{"bad release", fakeMetrics{errRatio: val(0.05), p95: val(0.9), baseline: val(0.1)}, Fail, Fail, "900 ms (9.0× baseline 100 ms)"},
		{"healthy", fakeMetrics{errRatio: val(0.002), p95: val(0.12), baseline: val(0.1)}, Pass, Pass, "0.20%"},
		{"no traffic is inconclusive, never healthy", fakeMetrics{errRatio: none, p95: none, baseline: val(0.1)}, Inconclusive, Inconclusive, "too little traffic"},
		{"no baseline", fakeMetrics{errRatio: val(0.002), p95: val(0.12), baseline: none}, Pass, Inconclusive, "no baseline: too little traffic"},
		{"source down", fakeMetrics{err: platforms.Userf(errors.New("dial tcp"), "Prometheus at prom:9090 is not reachable (connection refused)")}, Inconclusive, Inconclusive, "is not reachable"},
		{"source hangs", fakeMetrics{slow: true}, Inconclusive, Inconclusive, "did not answer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := sim.New("myapp", sim.Config{Versions: []sim.Version{{Artifact: "app:v1"}, {Artifact: "app:v2", Bad: true}}})
			if err != nil {
				t.Fatal(err)
			}
			svc := &Service{Name: "myapp", Platform: s, Metrics: tt.m}
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
