package handlers

import (
	"strings"
	"testing"
	"time"

	"rollbot/state"
)

func metricObs(ok bool, v float64, from, to time.Time) observation {
	ob := observation{verdict: Fail, detail: pct(v) + " (limit 1.00% threshold)", value: v, hasValue: true, valText: pct(v), from: from, to: to, requests: 500}
	if ok {
		ob.verdict = Pass
	}
	return ob
}

// The soak rules, item by item: a run of good observations passes once it
// is as long as the soak; a failure after holding is a regression (when,
// after how long, by how much) and restarts the run; a missing observation
// keeps the run but cannot pass; a request-metric measurement counts from
// the start of its window, but never from before the last failure.
func TestSoakRules(t *testing.T) {
	soak := 30 * time.Second
	svc := &Service{Metrics: nil, HasHealth: true, HasSmoke: true, Health: nil, Thresholds: DefaultThresholds()}
	v := newVerification(svc, soak, t0)
	if !v.Items[2].Manual || !v.Items[3].Manual || !v.Items[1].Manual || !v.Items[4].Manual || v.Items[0].Manual {
		t.Fatalf("manual items: %+v", v.Items)
	}

	// Pods: good from t0+2s on.
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	v.observe(0, observation{verdict: Pass, detail: "3/3 ready"}, at(2*time.Second))
	if held, _ := v.observe(0, observation{verdict: Pass, detail: "3/3 ready"}, at(31*time.Second)); held || v.Items[0].State == ItemPass {
		t.Fatalf("passed after 29s of a 30s soak: %+v", v.Items[0])
	}
	if held, _ := v.observe(0, observation{verdict: Pass, detail: "3/3 ready"}, at(32*time.Second)); !held || v.Items[0].State != ItemPass {
		t.Fatalf("not passed after holding the soak: %+v", v.Items[0])
	}
	// A missing observation: not passed now, the run goes on.
	v.observe(0, observation{verdict: Inconclusive, detail: "read failed"}, at(33*time.Second))
	if v.Items[0].State != ItemPending || !v.Items[0].Since.Equal(at(2*time.Second)) {
		t.Fatalf("after a missing observation: %+v", v.Items[0])
	}
	if held, _ := v.observe(0, observation{verdict: Pass, detail: "3/3 ready"}, at(34*time.Second)); held || v.Items[0].State != ItemPass {
		t.Fatalf("not passed again (and not reported twice): %+v", v.Items[0])
	}
	// A regression after passing.
	_, regressed := v.observe(0, observation{verdict: Fail, detail: "2/3 ready"}, at(40*time.Second))
	it := v.Items[0]
	if !regressed || it.State != ItemPending || !it.Since.IsZero() || !it.Bad ||
		it.Regressed != "regressed at 09:30:40 UTC after holding 38s of 30s: 2/3 ready" {
		t.Fatalf("regression: %+v", it)
	}

	// Error rate (treated as automatic here): a good window counts from its start.
	v.Items[2].Manual = false
	v.observe(2, metricObs(true, 0.001, t0, at(3*time.Second)), at(3*time.Second))
	if !v.Items[2].Since.Equal(t0) {
		t.Fatalf("good window [t0, +3s] holds since %s", v.Items[2].Since)
	}
	_, regressed = v.observe(2, metricObs(false, 0.014, t0, at(20*time.Second)), at(20*time.Second))
	if !regressed || !strings.Contains(v.Items[2].Regressed, "after holding 20s of 30s: 1.40% (limit 1.00% threshold)") {
		t.Fatalf("error rate regression: %+v", v.Items[2])
	}
	// The next good window starts before the failure: the run counts from the failure.
	v.observe(2, metricObs(true, 0.005, t0, at(21*time.Second)), at(21*time.Second))
	if !v.Items[2].Since.Equal(at(20 * time.Second)) {
		t.Fatalf("after a regression, held since %s, want the failure's time", v.Items[2].Since)
	}
	if v.Items[2].WorstText != "1.40%" || v.Items[2].Requests != 500 {
		t.Fatalf("worst %q, requests %v", v.Items[2].WorstText, v.Items[2].Requests)
	}

	// Manual answers: OK passes, NOT OK fails with who.
	v.applyAnswers(map[string]state.ManualCheck{"latency": {Answer: state.CheckOK, By: "U0BOB", At: at(5 * time.Second)},
		"flows": {Answer: state.CheckNotOK, By: "U0ALICE", At: at(6 * time.Second)}})
	if v.Items[3].State != ItemPass || v.Items[3].By != "U0BOB" || v.Items[4].State != ItemFail {
		t.Fatalf("answers: %+v %+v", v.Items[3], v.Items[4])
	}
}

// The verdict: verified only when every item passed; an automatic item that
// can no longer hold for the soak before the deadline ends it at once;
// "did not recover" only when an automatic item's last observation failed.
func TestSoakVerdict(t *testing.T) {
	soak := 30 * time.Second
	svc := &Service{Metrics: nil, HasHealth: false, HasSmoke: false, Thresholds: DefaultThresholds()}
	e := &Engine{now: func() time.Time { return t0.Add(10 * time.Second) }}
	v := newVerification(svc, soak, t0)
	v.Deadline = t0.Add(45 * time.Second)
	v.observe(0, observation{verdict: Pass, detail: "3/3 ready"}, t0.Add(10*time.Second))
	if e.decideVerification(v) {
		t.Fatalf("decided early: %s", v.Failure)
	}
	// At +20s the pods fail: holding 30s from now ends after the deadline.
	e.now = func() time.Time { return t0.Add(20 * time.Second) }
	v.observe(0, observation{verdict: Fail, detail: "1/3 ready"}, t0.Add(20*time.Second))
	if !e.decideVerification(v) || !strings.HasPrefix(v.Failure, "the service did not recover after the rollback: All pods healthy: 1/3 ready (regressed at ") {
		t.Fatalf("failure %q", v.Failure)
	}
	// No data at the deadline, nothing failed: not verified, never "did not recover".
	v = newVerification(&Service{Metrics: nil, HasHealth: true, HasSmoke: true, Health: nil}, soak, t0)
	v.Deadline = t0.Add(45 * time.Second)
	v.observe(0, observation{verdict: Inconclusive, detail: "read failed"}, t0.Add(44*time.Second))
	e.now = func() time.Time { return t0.Add(45 * time.Second) }
	if !e.decideVerification(v) || strings.Contains(v.Failure, "did not recover") || !strings.Contains(v.Failure, "All pods healthy: never held (read failed)") ||
		!strings.Contains(v.Failure, "nobody answered the checks by hand: Health checks passing, Error rate < baseline, Latency p95 normal, Critical user flows working") {
		t.Fatalf("failure %q", v.Failure)
	}
}
