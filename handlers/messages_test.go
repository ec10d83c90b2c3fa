package handlers

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slack-go/slack"

	"rollbot/platforms"
	"rollbot/state"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var t0 = time.Date(2026, 11, 25, 9, 30, 0, 0, time.UTC)

func goldenIncident() *state.Incident {
	return &state.Incident{
		ID: "RB-7", Service: "myapp", Channel: "C0INCIDENT", ThreadTS: "1795630449.000005", RequestedBy: "U0ALICE",
		Reason: "5xx spike after deploy", Status: state.AwaitingConfirm, CreatedAt: t0, UpdatedAt: t0.Add(time.Minute),
		Bad:        platforms.Revision{ID: "4", Artifact: "registry/myapp:v1.5.0"},
		Target:     platforms.Revision{ID: "3", Artifact: "registry/myapp:v1.4.1"},
		DeployedAt: t0.Add(-12 * time.Minute), Platform: "kubernetes", PlatformTgt: "deployment prod/myapp (cluster east)",
		DBPlan: "run `migrate down 1` as a Kubernetes Job with registry/myapp:v1.5.0",
	}
}

func goldenAssessment() *Assessment {
	return &Assessment{
		Service: "myapp", Target: "deployment prod/myapp (cluster east)",
		Snapshot: &platforms.Snapshot{DeployedAt: t0.Add(-12 * time.Minute)},
		Checks: []Check{
			{Name: "Error rate", Measured: "7.40%", Threshold: "> 1.00%", Verdict: Fail, Source: "prometheus prom:9090, last 5m: `sum(rate(...))`"},
			{Name: "Latency p95", Measured: "780 ms (6.6× baseline 118 ms)", Threshold: "> 2× baseline (236 ms)", Verdict: Fail, Source: "prometheus prom:9090, last 5m"},
			{Name: "Pod restarts", Measured: "7", Threshold: "> 3 in 5m", Verdict: Fail, Source: "kubernetes deployment prod/myapp"},
			{Name: "Failed readiness", Measured: "no data", Threshold: "> 50.00% of pods", Verdict: Inconclusive, Source: "kubernetes deployment prod/myapp"},
		},
		Bad: platforms.Revision{ID: "4", Artifact: "registry/myapp:v1.5.0"}, Good: platforms.Revision{ID: "3", Artifact: "registry/myapp:v1.4.1"},
		HasGood: true, GoodWhy: "newest earlier revision not marked DO_NOT_DEPLOY",
		Migrations: &platforms.MigrationReport{Tool: "golang-migrate", Source: "schema_migrations", Ran: []platforms.Migration{
			{ID: "20261125090000", Description: "add_orders_currency", Reversible: true},
			{ID: "20261125090100", Description: "drop_legacy_email", Reversible: true, Destructive: true, Why: "DROP COLUMN email"},
		}},
		Gate: true, Took: 840 * time.Millisecond,
	}
}

// TestGoldenMessages renders every message the bot posts from fixed
// domain values and compares the Block Kit JSON with testdata/golden.
// Run `go test ./handlers -run Golden -update` after an intended change.
func TestGoldenMessages(t *testing.T) {
	in := goldenIncident()
	a := goldenAssessment()
	decided := *in
	decided.Status, decided.DecidedBy = state.Stopping, "U0BOB"
	cancelled := *in
	cancelled.Status, cancelled.DecidedBy = state.Cancelled, "U0ALICE"
	planned := *in
	planned.Status, planned.DryRun = state.Planned, true
	destructive := *in
	destructive.DBDestructive = true
	optional := *in
	optional.DBOptional = true
	v := &Verification{Started: t0, Items: []VerifyItem{
		{Name: "All pods healthy", State: ItemPass, At: t0.Add(40 * time.Second), Detail: "3/3 ready, 0 restarts"},
		{Name: "Health checks passing", State: ItemPass, At: t0.Add(12 * time.Second), Detail: "1/1 health URLs answer 2xx"},
		{Name: "Error rate < baseline", State: ItemPending, Detail: "waiting for data since the rollback: no samples yet"},
		{Name: "Latency p95 normal", State: ItemFail, Detail: "540 ms (limit 236 ms = 2× baseline)"},
		{Name: "Critical user flows working", State: ItemSkipped, Detail: "no smoke_test configured"},
	}}
	vdone := *v
	vdone.Done, vdone.Finished = true, t0.Add(5*time.Minute)
	done := *in
	done.Done = map[string]string{"dnd": "marked by rollbot", "timeline": "`/rollback timeline RB-7`"}
	events := []state.Event{
		{Time: t0, Actor: "U0ALICE", Step: "request", Detail: "requested rollback of myapp: 5xx spike after deploy"},
		{Time: t0.Add(time.Second), Actor: "rollbot", Step: "assess", Detail: "Error rate 7.40% (fail)"},
	}
	lock := &state.Lock{Service: "myapp", Incident: "RB-7", Holder: "U0ALICE", Since: t0}

	cases := map[string]Msg{
		"help":                 helpMsg([]string{"myapp", "payments"}),
		"usage":                usageMsg("unknown option `--force`; options are `--to <revision|tag>`, `--dry-run`, `--reason \"…\"`"),
		"unknown_service":      unknownServiceMsg("myap", "myapp", []string{"myapp", "payments"}),
		"not_incident_channel": notIncidentChannelMsg([]string{"C0INCIDENT", "incident-rollbacks"}),
		"locked":               lockedMsg("myapp", lock, in),
		"assessing":            assessingMsg(in),
		"assessment":           assessmentMsg(in, a, nil),
		"assessment_decided":   decidedMsg(&decided, a),
		"assessment_cancelled": decidedMsg(&cancelled, a),
		"assessment_dry_run":   assessmentMsg(&planned, a, []string{"stop: deployment prod/myapp: pause the rollout", "rollback: deployment prod/myapp: template registry/myapp:v1.5.0 -> registry/myapp:v1.4.1"}),
		"not_allowed":          notAllowedMsg("myapp", "roll back", "<!subteam^S0ONCALL>"),
		"already_decided":      alreadyDecidedMsg(&decided),
		"progress":             progressMsg(in, "Rolling back…", []string{"Waiting for rollout to finish: 1 of 3 updated replicas are available..."}, "done: rollout paused"),
		"rolled_back":          rolledBackMsg(in, platforms.Result{Outcome: platforms.Done, Detail: "deployment prod/myapp now runs revision 3"}, 12*time.Second, nil, "done: rollout paused"),
		"skipped":              rolledBackMsg(in, platforms.Result{Outcome: platforms.Skipped, Detail: "already at revision 3"}, 0, nil, ""),
		"rollback_failed":      rollbackFailedMsg(in, "image registry/myapp:v1.4.1 cannot be pulled", "kubernetes", true),
		"rollback_failed_bare": rollbackFailedMsg(in, "refusing to switch to green: 0/1 targets healthy", "bluegreen", false),
		"ended":                endedMsg(in, "U0BOB", t0),
		"fallback_chosen":      fallbackChosenMsg(in, "U0BOB", "scale deployment prod/myapp to zero"),
		"verify_running":       verifyMsg(in, v),
		"verify_done":          verifyMsg(in, &vdone),
		"verify_failed":        verifyFailedMsg(in, "Latency p95 normal fail", true),
		"postmortem_reminder":  postmortemReminderMsg(in, t0.Add(20*time.Hour)),
		"post_actions":         postActionsMsg(&done),
		"db_approval":          dbApprovalMsg(in, Access{Groups: []string{"S0DBA"}}, 1, nil, 15*time.Minute),
		"db_approval_2of2":     dbApprovalMsg(&destructive, Access{Groups: []string{"S0DBA"}}, 2, []string{"U0DANA"}, 15*time.Minute),
		"db_approval_optional": dbApprovalMsg(&optional, Access{Groups: []string{"S0DBA"}}, 1, nil, 15*time.Minute),
		"switch_wait":          switchWaitMsg(&destructive, "point the app at the restored instance myapp-db-rb-7 by hand", Access{Groups: []string{"S0DBA"}}, t0.Add(30*time.Minute)),
		"switch_confirmed":     switchConfirmedMsg(&destructive, "U0DANA", t0),
		"switch_failed":        switchFailedMsg(&destructive, "renaming myapp-db-rb-7 to myapp-db failed"),
		"db_approved":          dbApprovedMsg(in, []string{"U0DANA", "U0ERIN"}),
		"db_closed":            dbClosedMsg(in, "Refused by <@U0DANA>"),
		"db_output":            dbOutputMsg(in, "Database rollback", "running…", "1/d add_orders_currency (12.1ms)"),
		"status":               statusMsg([]*state.Incident{in}, []string{"myapp"}),
		"service_status":       serviceStatusMsg("myapp", "kubernetes", "deployment prod/myapp", &platforms.Snapshot{Current: in.Bad, Health: platforms.Health{Desired: 3, Ready: 1, Restarts: 7, Known: true}, RolloutInProgress: true}, "", lock, []*state.Incident{in}),
		"history":              historyMsg("myapp", "deployment prod/myapp", &platforms.Snapshot{Current: in.Bad, History: []platforms.Revision{in.Bad, in.Target}}, map[string]state.Mark{"registry/myapp:v1.5.0": {Incident: "RB-7"}}, []*state.Incident{in}),
		"timeline":             timelineMsg(in, events),
		"markdown":             markdownMsg(in, state.Markdown(in, events, func(a string) string { return a })),
		"interrupted":          interruptedMsg(in, state.RollingBack),
	}
	for name, m := range cases {
		t.Run(name, func(t *testing.T) {
			checkLimits(t, m)
			got, err := json.MarshalIndent(map[string]any{"text": m.Text, "blocks": m.Blocks}, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", "golden", name+".json")
			if *update {
				if err := os.WriteFile(path, append(got, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if strings.TrimSpace(string(want)) != strings.TrimSpace(string(got)) {
				t.Errorf("%s differs from the golden file; if intended, run with -update\ngot:\n%s", path, got)
			}
		})
	}
	t.Run("modal", func(t *testing.T) {
		v := dbApproveModalView(in, "1795630449.000009")
		if v.CallbackID != viewDBApprove || v.PrivateMetadata != "RB-7|1795630449.000009" || len(v.Blocks.BlockSet) != 3 {
			t.Fatalf("modal: %+v", v)
		}
	})
}

// checkLimits enforces Slack's Block Kit limits on a message.
func checkLimits(t *testing.T, m Msg) {
	t.Helper()
	if len(m.Blocks) > 50 {
		t.Errorf("%d blocks, Slack allows 50", len(m.Blocks))
	}
	tables := 0
	for _, b := range m.Blocks {
		switch b := b.(type) {
		case *slack.TableBlock:
			tables++
			if len(b.Rows) > 100 {
				t.Errorf("table has %d rows, at most 100", len(b.Rows))
			}
		case *slack.SectionBlock:
			if b.Text != nil && len([]rune(b.Text.Text)) > 3000 {
				t.Errorf("section text of %d characters, at most 3000", len([]rune(b.Text.Text)))
			}
		case *slack.HeaderBlock:
			if len([]rune(b.Text.Text)) > 150 {
				t.Errorf("header of %d characters", len([]rune(b.Text.Text)))
			}
		}
	}
	if tables > 1 {
		t.Errorf("%d table blocks, Slack allows one per message", tables)
	}
}

func TestTimelineMessageStaysWithinLimits(t *testing.T) {
	in := goldenIncident()
	var evs []state.Event
	for i := range 400 {
		evs = append(evs, state.Event{Time: t0.Add(time.Duration(i) * time.Second), Actor: "rollbot", Step: "verify", Detail: strings.Repeat("x", 200)})
	}
	checkLimits(t, timelineMsg(in, evs))
}
