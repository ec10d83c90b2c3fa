package handlers

import (
	"strings"
	"testing"
	"time"

	"rollbot/state"
)

func TestStepTimes(t *testing.T) {
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	tests := []struct {
		name string
		in   state.Incident
		now  time.Time
		want string // label=state:took per step
	}{
		{"running rollback on kubernetes", state.Incident{Platform: "kubernetes", Status: state.RollingBack, StepStarted: at(200),
			Timings: map[string]state.StepTiming{"assess": {Start: at(0), End: at(90)}, "stop": {Start: at(150), End: at(195)}}},
			at(230), "Assess=pass:1m30s Stop=slow:45s Roll back=running:30s Verify=pending:0s"},
		{"completed on a VM: 10 min is within 5–15", state.Incident{Platform: "vm", Status: state.Completed,
			Timings: map[string]state.StepTiming{"assess": {Start: at(0), End: at(60)}, "stop": {Start: at(70), End: at(80)},
				"rollback": {Start: at(80), End: at(680)}, "verify": {Start: at(680), End: at(900)}}},
			at(2000), "Assess=pass:1m0s Stop=pass:10s Roll back=pass:10m0s Verify=slow:3m40s"},
		{"10 min is slow on kubernetes", state.Incident{Platform: "kubernetes", Status: state.RollbackFailed,
			Timings: map[string]state.StepTiming{"assess": {Start: at(0), End: at(60)}, "stop": {Start: at(70), End: at(80)},
				"rollback": {Start: at(80), End: at(680), Failed: true}}},
			at(2000), "Assess=pass:1m0s Stop=pass:10s Roll back=failed:10m0s Verify=pending:0s"},
		{"database step when migrations ran", state.Incident{Platform: "kubernetes", Status: state.RollingBackDB, MigrationsRan: true, StepStarted: at(100),
			Timings: map[string]state.StepTiming{"assess": {Start: at(0), End: at(60)}}},
			at(160), "Assess=pass:1m0s Database=running:1m0s Stop=pending:0s Roll back=pending:0s Verify=pending:0s"},
		{"dry run: the assessment only", state.Incident{Platform: "swarm", Status: state.Planned, DryRun: true,
			Timings: map[string]state.StepTiming{"assess": {Start: at(0), End: at(3)}}}, at(10), "Assess=pass:3s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, st := range StepTimes(&tt.in, tt.now) {
				got = append(got, st.Label+"="+st.State+":"+st.Took.String())
			}
			if g := strings.Join(got, " "); g != tt.want {
				t.Fatalf("got  %s\nwant %s", g, tt.want)
			}
		})
	}
}

func TestStepTimesMarkdown(t *testing.T) {
	in := &state.Incident{Platform: "kubernetes", Status: state.Completed, CreatedAt: t0, DeployedAt: t0.Add(-10 * time.Minute),
		Timings: map[string]state.StepTiming{"assess": {Start: t0, End: t0.Add(20 * time.Second)}, "stop": {Start: t0.Add(time.Minute), End: t0.Add(61 * time.Second)},
			"rollback": {Start: t0.Add(61 * time.Second), End: t0.Add(5 * time.Minute)}, "verify": {Start: t0.Add(5 * time.Minute), End: t0.Add(6 * time.Minute)}}}
	md := stepTimesMarkdown(in, t0.Add(time.Hour))
	for _, want := range []string{"| Assess | 20s | 2 min | pass |", "| Stop | 1s | 30 s | pass |", "| Roll back | 3m59s | 1–3 min | slow |",
		"| Verify | 1m0s | 3 min | pass |", "Time to recovery: 6m0s from the rollback request to the verified rollback (16m0s from the bad deploy)"} {
		if !strings.Contains(md, want) {
			t.Errorf("export lacks %q:\n%s", want, md)
		}
	}
	in.Status = state.VerifyFailed
	if md := stepTimesMarkdown(in, t0); !strings.Contains(md, "Time to recovery: not recovered (status: verification_failed)") {
		t.Errorf("a failed incident claims a recovery:\n%s", md)
	}
}
