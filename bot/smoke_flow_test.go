package bot

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"rollbot/handlers"
	"rollbot/platforms/probe"
	"rollbot/platforms/sim"
	"rollbot/state"
	"rollbot/testkit/slackemu"
)

// slowSmoke is the simulated service's health with a real smoke-test
// command that takes longer than a metric query may.
type slowSmoke struct {
	*sim.Sim
	smoke *probe.Probes
}

func (p slowSmoke) Smoke(ctx context.Context) (bool, string, error) { return p.smoke.Smoke(ctx) }

// The verification gives the smoke test its own timeout, not
// query_timeout: a smoke test that takes 1s passes although each metric
// query gets 300ms (cut at query_timeout, it could never pass).
func TestVerifySmokeTestGetsItsOwnTimeout(t *testing.T) {
	light(t)
	svc, s := simService(t, "myapp", time.Millisecond)
	svc.Health = slowSmoke{s, &probe.Probes{SmokeCommand: []string{"sleep", "1"}, SmokeTimeout: 10 * time.Second}}
	svc.SmokeTimeout = 10 * time.Second
	eng := fastEngine()
	eng.QueryTimeout = 300 * time.Millisecond
	h := newHarness(t, []*handlers.Service{svc}, eng)
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	h.waitStatusWithin("RB-1", state.Completed, 30*time.Second)

	// From the config: the service gets smoke_test.timeout, or the default.
	for _, tt := range []struct {
		timeout string
		want    time.Duration
	}{{"", probe.DefaultSmokeTimeout}, {", timeout: 45s", 45 * time.Second}} {
		c, err := ParseConfig([]byte(`
incident_channels: [C0INCIDENT]
services:
  myapp:
    platform: simulated
    simulated: {versions: [{artifact: 'app:v1'}]}
    approvers: {groups: [S0ONCALL]}
    smoke_test: {command: [/bin/true]` + tt.timeout + `}
`))
		if err != nil {
			t.Fatal(err)
		}
		svcs, err := BuildServices(context.Background(), c, nil, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		if got := svcs[0].SmokeTimeout; got != tt.want {
			t.Errorf("smoke_test%s: the verification gives the smoke test %s, want %s", tt.timeout, got, tt.want)
		}
	}
}
