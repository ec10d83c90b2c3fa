package handlers

import (
	"strings"
	"testing"
	"time"

	"rollbot/platforms"
	"rollbot/state"
)

// drillIncident is a finished drill whose Stop took 45 s (the runbook's
// time is 30 s): the other steps are within theirs.
func drillIncident() *state.Incident {
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	return &state.Incident{ID: "RB-5", Service: "myapp@staging", Status: state.Completed, Platform: "kubernetes", PlatformTgt: "deployment staging/myapp",
		Drill: &state.DrillRun{Bad: "registry.local/myapp:broken", Original: platforms.Revision{ID: "1", Artifact: "registry.local/myapp:v1"}, Replicas: 3},
		Timings: map[string]state.StepTiming{"assess": {Start: at(0), End: at(40)}, "stop": {Start: at(60), End: at(105)},
			"rollback": {Start: at(105), End: at(225)}, "verify": {Start: at(225), End: at(315)}}}
}

// The drill report has one line per runbook step with the measured time,
// the runbook's time, pass or slow, and the trend of earlier drills,
// oldest first, this drill last; a step slower than the runbook fails the
// verdict; a target not put back says what is left.
func TestDrillReport(t *testing.T) {
	in := drillIncident()
	steps := StepTimes(in, t0.Add(time.Hour))
	rec := state.DrillRecord{Incident: in.ID, At: t0, Passed: true, Restored: true, Steps: map[string]time.Duration{}}
	for _, st := range steps {
		rec.Steps[st.Step] = st.Took
		rec.Total += st.Took
		if st.State != "pass" {
			rec.Passed = false
		}
	}
	if rec.Passed {
		t.Fatalf("a 45 s stop passed the runbook's 30 s: %+v", steps)
	}
	// Drills lists the newest first.
	earlier := []state.DrillRecord{
		{Incident: "RB-3", Steps: map[string]time.Duration{"assess": time.Minute, "stop": 20 * time.Second}},
		{Incident: "RB-1", Steps: map[string]time.Duration{"assess": 90 * time.Second, "stop": 25 * time.Second, "rollback": 150 * time.Second}},
	}
	next := t0.Add(drillEvery)
	text := msgText(drillReportMsg(in, steps, rec, earlier, "", true, next))
	for _, want := range []string{
		"Drill report RB-5: myapp@staging* (total 4m55s)",
		"✅ *Assess* 40s of 2 min · pass · trend: 1m30s → 1m0s → *40s*\n",
		"🐢 *Stop* 45s of 30 s · slow · trend: 25s → 20s → *45s*\n",
		"✅ *Roll back* 2m0s of 1–3 min · pass · trend: 2m30s → *2m0s*\n",
		"✅ *Verify* 1m30s of 3 min · pass · trend: first drill\n",
		":turtle: some steps were slower than the runbook's time",
		"deployment staging/myapp is back as the drill found it: 1 (registry.local/myapp:v1), 3 units.",
		"Next drill reminder: " + next.Format("2006-01-02") + " in this channel",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}

	left := "it runs registry.local/myapp:broken, not registry.local/myapp:v1"
	text = msgText(drillReportMsg(in, steps[:1], state.DrillRecord{Passed: true, Total: 40 * time.Second}, nil, left, false, next))
	for _, want := range []string{":white_check_mark: every step within the runbook's time", ":warning: not restored: " + left + "."} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "back as the drill found it") || strings.Contains(text, "Next drill reminder") {
		t.Errorf("a drill not restored, without a reminder, claims otherwise:\n%s", text)
	}
}

// /rollback drills lists earlier drills newest first, each with its step
// times, total, pass or slow, and whether the target was put back.
func TestDrillsList(t *testing.T) {
	svc := &Service{Name: "myapp@staging"}
	if text := msgText(drillsMsg(svc, nil)); !strings.Contains(text, "No drills of `myapp@staging` yet") {
		t.Errorf("no drills:\n%s", text)
	}
	recs := []state.DrillRecord{
		{Incident: "RB-5", At: t0.Add(48 * time.Hour), Passed: false, Restored: false, Total: 5 * time.Minute,
			Steps: map[string]time.Duration{"assess": 40 * time.Second, "stop": 45 * time.Second, "rollback": 2 * time.Minute, "verify": 95 * time.Second}},
		{Incident: "RB-1", At: t0, Passed: true, Restored: true, Total: 4 * time.Minute,
			Steps: map[string]time.Duration{"assess": time.Minute, "stop": 10 * time.Second, "rollback": 90 * time.Second, "verify": 80 * time.Second}},
	}
	text := msgText(drillsMsg(svc, recs))
	want := ":turtle: 2026-11-27 09:30 RB-5 · Assess 40s, Stop 45s, Roll back 2m0s, Verify 1m35s · total 5m0s · NOT restored\n" +
		":white_check_mark: 2026-11-25 09:30 RB-1 · Assess 1m0s, Stop 10s, Roll back 1m30s, Verify 1m20s · total 4m0s · restored\n"
	if !strings.Contains(text, want) {
		t.Errorf("drills list:\n%s\nwant it to contain:\n%s", text, want)
	}
}
