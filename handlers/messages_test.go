package handlers

import (
	"encoding/json"
	"flag"
	"fmt"
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
	// A drill cancelled before its rollback: putting its original back,
	// then back, then left on what someone deployed by hand.
	drillRun := &state.DrillRun{Bad: "registry/myapp:drill-broken", Original: in.Target, Replicas: 3}
	drillRestoring := cancelled
	drillRestoring.Status, drillRestoring.Drill, drillRestoring.Steps = state.DrillRestoring, drillRun, map[string]string{"drill_deploy": "done"}
	drillRestored := drillRestoring
	drillRestored.Status = state.Cancelled
	drillLeft := drillRestored
	leftRun := *drillRun
	leftRun.Left = "it runs 4 (registry/myapp:v1.5.1), not the drill's bad version registry/myapp:drill-broken: someone changed it during the drill, so rollbot did not overwrite it (before the drill it ran 3 (registry/myapp:v1.4.1) with 3 units)"
	drillLeft.Drill = &leftRun
	planned := *in
	planned.Status, planned.DryRun = state.Planned, true
	destructive := *in
	destructive.DBDestructive = true
	optional := *in
	optional.DBOptional = true
	v := &Verification{Started: t0, Soak: 3 * time.Minute, Recent: 30 * time.Second, Deadline: t0.Add(8 * time.Minute), Items: []VerifyItem{
		{Key: "pods", Name: "All pods healthy", State: ItemPass, At: t0.Add(3*time.Minute + 40*time.Second), Since: t0.Add(40 * time.Second), Last: t0.Add(4 * time.Minute), Detail: "3/3 ready, 0 restarts", Checks: 24},
		{Key: "health", Name: "Health checks passing", State: ItemPending, Since: t0.Add(2 * time.Minute), Last: t0.Add(4 * time.Minute), Detail: "1/1 health URLs answer 2xx", Checks: 24},
		{Key: "errors", Name: "Error rate < baseline", State: ItemPending, Bad: true, Last: t0.Add(4 * time.Minute), Checks: 24,
			Regressed: "regressed at 09:33:10 after holding 2m50s of 3m: 14.30% (limit 1.00% threshold)", Detail: "14.30% (limit 1.00% threshold)",
			From: t0.Add(time.Minute), To: t0.Add(4 * time.Minute), Requests: 7200, Worst: 0.143, WorstText: "14.30%"},
		{Key: "latency", Name: "Latency p95 normal", State: ItemPending, Last: t0.Add(4 * time.Minute), Detail: "waiting for data since the rollback: no samples yet", Checks: 24},
		{Key: "flows", Name: "Critical user flows working", State: ItemPending, Manual: true, Hint: "no smoke_test configured: try the critical user flows by hand"},
	}}
	recentRelapse := VerifyItem{Key: "errors", Name: "Error rate < baseline", State: ItemPending, Bad: true, RecentBad: true, Last: t0.Add(3 * time.Minute), Checks: 19,
		Regressed: "regressed at 09:33:00 UTC after holding 3m of 3m: 3.37% over the last 30s alone (limit 1.00% threshold; 600 requests); 0.64% over the whole 3m window"}
	vdone := *v
	vdone.Items = []VerifyItem{
		{Key: "pods", Name: "All pods healthy", State: ItemPass, At: t0.Add(3*time.Minute + 40*time.Second), Since: t0.Add(40 * time.Second), Last: t0.Add(5 * time.Minute), Detail: "3/3 ready, 0 restarts", Checks: 30},
		{Key: "health", Name: "Health checks passing", State: ItemPass, At: t0.Add(3*time.Minute + 12*time.Second), Since: t0.Add(12 * time.Second), Last: t0.Add(5 * time.Minute), Detail: "1/1 health URLs answer 2xx", Checks: 30},
		{Key: "errors", Name: "Error rate < baseline", State: ItemPass, At: t0.Add(5 * time.Minute), Since: t0.Add(2 * time.Minute), Last: t0.Add(5 * time.Minute), Checks: 30,
			Detail: "0.10% (limit 1.00% threshold)", From: t0.Add(2 * time.Minute), To: t0.Add(5 * time.Minute), Requests: 7200, Worst: 0.143, WorstText: "14.30%", RecentChecks: 26,
			Regressed: "regressed at 09:31:50 after holding 1m of 3m: 14.30% (limit 1.00% threshold)"},
		{Key: "latency", Name: "Latency p95 normal", State: ItemPass, At: t0.Add(4 * time.Minute), Since: t0.Add(time.Minute), Last: t0.Add(5 * time.Minute), Checks: 30,
			Detail: "120 ms (limit 236 ms = 2× baseline)", From: t0.Add(2 * time.Minute), To: t0.Add(5 * time.Minute), Requests: 7200, Worst: 0.3, WorstText: "300 ms (the last 30s to 09:33:40 UTC, 1200 requests)", RecentChecks: 26},
		{Key: "flows", Name: "Critical user flows working", State: ItemPass, Manual: true, By: "U0BOB", At: t0.Add(150 * time.Second), Hint: "no smoke_test configured: try the critical user flows by hand"},
	}
	vdone.Done, vdone.Finished = true, t0.Add(5*time.Minute)
	vfailed := *v
	vfailed.Done, vfailed.Finished = true, t0.Add(8*time.Minute)
	oncall := Access{Groups: []string{"S0ONCALL"}}
	done := *in
	done.Done = map[string]string{"dnd": "marked by rollbot; deploys of myapp locked until an approver runs `/rollback unlock myapp`", "timeline": "`/rollback timeline RB-7`",
		"registry": "marked by rollbot in `registry/myapp`: DO_NOT_DEPLOY artifact <http://registry/v2/myapp/manifests/sha256:0a1b|sha256:0a1b> refers to `sha256:9f8e` (fallback tag sha256-9f8e)"}
	regFailed := *in
	regFailed.Notes = map[string]string{"registry": "registry mark of `registry/myapp:v1.5.0` not made: the registry registry refused rollbot's credentials (401)"}
	withPost := *in
	withPost.PostPlan = "mark the image DO_NOT_DEPLOY in `registry.example.com/team/myapp` and delete its tag `v1.5.0`; lock deploys of myapp until `/rollback unlock myapp`"
	registryMarks := map[string]state.Mark{"registry/myapp:v1.5.0": {Incident: "RB-7", Registry: &state.RegistryMark{Repository: "registry/myapp",
		Digest: "sha256:9f8e7d6c5b4a39281706f5e4d3c2b1a0", Referrer: "sha256:0a1b2c3d4e5f60718293a4b5c6d7e8f9", Via: "fallback tag sha256-9f8e7d6c5b4a39281706f5e4d3c2b1a0", TagDeleted: "v1.5.0", At: t0}}}
	deployLock := &state.DeployLock{Service: "myapp", Incident: "RB-7", By: "U0BOB", At: t0}
	events := []state.Event{
		{Time: t0, Actor: "U0ALICE", Step: "request", Detail: "requested rollback of myapp: 5xx spike after deploy"},
		{Time: t0.Add(time.Second), Actor: "rollbot", Step: "assess", Detail: "Error rate 7.40% (fail)"},
	}
	lock := &state.Lock{Service: "myapp", Incident: "RB-7", Holder: "U0ALICE", Since: t0}
	argo := &platforms.Owner{Kind: platforms.OwnerArgoCD, Name: "myapp", Namespace: "argocd", Detail: "Argo CD Application argocd/myapp (auto-sync, self-heal)", Reconciles: true,
		Plan: "Auto-sync of Argo CD Application argocd/myapp is turned off first (spec.syncPolicy.automated removed, its value kept for resume-sync), so Argo CD does not put the bad version back."}
	owned := *a
	owned.Snapshot = &platforms.Snapshot{DeployedAt: t0.Add(-12 * time.Minute), Owner: argo}
	helm := *a
	helm.Snapshot = &platforms.Snapshot{DeployedAt: t0.Add(-12 * time.Minute), Owner: &platforms.Owner{Kind: platforms.OwnerHelm, Name: "myapp", Namespace: "prod",
		Detail: "Helm release prod/myapp (revision 7, deployed)", Plan: "rollbot rolls back through Helm (its Rollback action, as `helm rollback` does) to the newest revision that deployed successfully and is not marked DO_NOT_DEPLOY: the release history records the rollback as a new revision."}}
	missing := *a
	missing.Snapshot = &platforms.Snapshot{DeployedAt: t0.Add(-12 * time.Minute), Owner: &platforms.Owner{Kind: platforms.OwnerArgoCD, Name: "ghost", Namespace: "argocd", Detail: "Argo CD Application argocd/ghost",
		Problem: "Argo CD Application argocd/ghost not found, though deployment prod/myapp names it as its owner: check the workload's labels/annotations (or `argocd_namespace:` in rollbot's config)"}}
	noRelease := *a
	noRelease.Snapshot = &platforms.Snapshot{DeployedAt: t0.Add(-12 * time.Minute), Owner: &platforms.Owner{Kind: platforms.OwnerHelm, Name: "ghost", Namespace: "prod", Detail: "Helm release prod/ghost",
		Problem: "Helm release prod/ghost was not found, though deployment prod/myapp names it in its meta.helm.sh/release-name / meta.helm.sh/release-namespace annotations: check them, or that the release was not uninstalled; rollbot will not write anything until it finds the release"}}
	paused := *in
	paused.OwnerPause = &platforms.OwnerPause{Owner: *argo, Incident: "RB-7", Field: "spec.syncPolicy.automated", Previous: []byte(`{"prune":true,"selfHeal":true}`), Changed: true}
	git := platforms.GitChange{Repo: "https://git.example.com/platform/deploy.git", Path: "apps/myapp/prod", Revision: "release-7", Source: "Argo CD Application argocd/myapp", From: in.Bad.Artifact, To: in.Target.Artifact}
	gitDone := done
	gitDone.OwnerPause, gitDone.GitChange = paused.OwnerPause, &git

	verdicts := goldenVerdicts()
	related, notRelated, relatedUnknown := *a, *a, *a
	related.Related, notRelated.Related, relatedUnknown.Related = verdicts["likely"], verdicts["unlikely"], verdicts["unknown"]

	cases := map[string]Msg{
		"assessment_related":         assessmentMsg(in, &related, nil),
		"assessment_not_related":     assessmentMsg(in, &notRelated, nil),
		"assessment_related_unknown": assessmentMsg(in, &relatedUnknown, nil),
		"help":                       helpMsg([]string{"myapp", "payments"}),
		"usage":                      usageMsg("unknown option `--force`; options are `--to <revision|tag>`, `--dry-run`, `--reason \"…\"`"),
		"unknown_service":            unknownServiceMsg("myap", "myapp", []string{"myapp", "payments"}),
		"not_incident_channel":       notIncidentChannelMsg([]string{"C0INCIDENT", "incident-rollbacks"}),
		"locked":                     lockedMsg("myapp", lock, in),
		"assessing":                  assessingMsg(in),
		"assessment":                 assessmentMsg(in, a, nil),
		"assessment_decided":         decidedMsg(&decided, a),
		"assessment_post_plan":       assessmentMsg(&withPost, a, nil),
		"assessment_cancelled":       decidedMsg(&cancelled, a),
		"assessment_dry_run":         assessmentMsg(&planned, a, []string{"stop: deployment prod/myapp: pause the rollout", "rollback: deployment prod/myapp: template registry/myapp:v1.5.0 -> registry/myapp:v1.4.1"}),
		"not_allowed":                notAllowedMsg("myapp", "roll back", "<!subteam^S0ONCALL>"),
		"already_decided":            alreadyDecidedMsg(&decided),
		"progress":                   progressMsg(in, "Rolling back…", []string{"Waiting for rollout to finish: 1 of 3 updated replicas are available..."}, "done: rollout paused"),
		"rolled_back":                rolledBackMsg(in, platforms.Result{Outcome: platforms.Done, Detail: "deployment prod/myapp now runs revision 3"}, 12*time.Second, nil, "done: rollout paused"),
		"skipped":                    rolledBackMsg(in, platforms.Result{Outcome: platforms.Skipped, Detail: "already at revision 3"}, 0, nil, ""),
		"rollback_failed":            rollbackFailedMsg(in, "image registry/myapp:v1.4.1 cannot be pulled", "kubernetes", true),
		"rollback_failed_bare":       rollbackFailedMsg(in, "refusing to switch to green: 0/1 targets healthy", "bluegreen", false),
		"ended":                      endedMsg(in, "U0BOB", t0),
		"fallback_chosen":            fallbackChosenMsg(in, "U0BOB", "scale deployment prod/myapp to zero"),
		"verify_running":             verifyMsg(in, v, oncall),
		"verify_done":                verifyMsg(in, &vdone, oncall),
		"verify_done_failed":         verifyMsg(in, &vfailed, oncall),
		"verify_failed":              verifyFailedMsg(in, "the service did not recover after the rollback: Error rate < baseline: 14.30% (limit 1.00% threshold)", true),
		"verify_regressed":           regressedMsg(in, v.Items[2], 3*time.Minute),
		"verify_regressed_recent":    regressedMsg(in, recentRelapse, 3*time.Minute),
		"check_recorded":             checkRecordedMsg(in, state.ManualCheck{Name: "Critical user flows working", Answer: state.CheckOK, By: "U0BOB", At: t0}),
		"check_closed":               checkClosedMsg(in, state.ManualCheck{Name: "Critical user flows working", Answer: state.CheckNotOK, By: "U0BOB", At: t0}),
		"postmortem_reminder":        postmortemReminderMsg(in, t0.Add(20*time.Hour)),
		"post_actions":               postActionsMsg(&done),
		"post_actions_note":          postActionsMsg(&regFailed),
		"history_registry":           historyMsg("myapp", "deployment prod/myapp", &platforms.Snapshot{Current: in.Bad, History: []platforms.Revision{in.Bad, in.Target}}, registryMarks, []*state.Incident{in}),
		"unlocked":                   unlockedMsg("myapp", deployLock, "U0BOB"),
		"db_approval":                dbApprovalMsg(in, Access{Groups: []string{"S0DBA"}}, 1, nil, 15*time.Minute),
		"db_approval_2of2":           dbApprovalMsg(&destructive, Access{Groups: []string{"S0DBA"}}, 2, []string{"U0DANA"}, 15*time.Minute),
		"db_approval_optional":       dbApprovalMsg(&optional, Access{Groups: []string{"S0DBA"}}, 1, nil, 15*time.Minute),
		"switch_wait":                switchWaitMsg(&destructive, "point the app at the restored instance myapp-db-rb-7 by hand", Access{Groups: []string{"S0DBA"}}, t0.Add(30*time.Minute)),
		"switch_confirmed":           switchConfirmedMsg(&destructive, "U0DANA", t0),
		"switch_failed":              switchFailedMsg(&destructive, "renaming myapp-db-rb-7 to myapp-db failed"),
		"db_approved":                dbApprovedMsg(in, []string{"U0DANA", "U0ERIN"}),
		"db_closed":                  dbClosedMsg(in, "Refused by <@U0DANA>"),
		"db_output":                  dbOutputMsg(in, "Database rollback", "running…", "1/d add_orders_currency (12.1ms)"),
		"status":                     statusMsg([]*state.Incident{in}, []string{"myapp"}, map[string]*state.DeployLock{"myapp": deployLock}),
		"service_status":             serviceStatusMsg("myapp", "kubernetes", "deployment prod/myapp", &platforms.Snapshot{Current: in.Bad, Health: platforms.Health{Desired: 3, Ready: 1, Restarts: 7, Known: true}, RolloutInProgress: true}, "", lock, deployLock, []*state.Incident{in}),
		"history":                    historyMsg("myapp", "deployment prod/myapp", &platforms.Snapshot{Current: in.Bad, History: []platforms.Revision{in.Bad, in.Target}}, map[string]state.Mark{"registry/myapp:v1.5.0": {Incident: "RB-7"}}, []*state.Incident{in}),
		"timeline":                   timelineMsg(in, events, 1),
		"markdown":                   markdownMsg(in, state.Markdown(in, events, func(a string) string { return a })),
		"interrupted":                interruptedMsg(in, state.RollingBack),
		"assessment_argocd":          assessmentMsg(in, &owned, nil),
		"assessment_helm":            assessmentMsg(in, &helm, nil),
		"assessment_no_owner":        assessmentMsg(in, &missing, nil),
		"owner_paused":               ownerPausedMsg(&paused, platforms.Result{Outcome: platforms.Done, Detail: `paused Argo CD Application argocd/myapp (spec.syncPolicy.automated was {"prune":true,"selfHeal":true})`, Plan: []string{`Argo CD Application argocd/myapp: remove spec.syncPolicy.automated (was {"prune":true,"selfHeal":true})`}}),
		"owner_refused":              ownerRefusedMsg(in, "Argo CD Application argocd/myapp could not be paused, so rollbot did not roll back (it would put the bad version back): cannot pause Argo CD Application argocd/myapp: rollbot may not patch applications.argoproj.io in argocd"),
		"owner_overridden":           ownerOverriddenMsg(in, "U0BOB"),
		"bad_version_back":           badVersionBackMsg(in, "deployment prod/myapp", argo),
		"git_change":                 gitChangeMsg(in, git),
		"post_actions_git":           postActionsMsg(&gitDone),
		"owner_resumed":              ownerResumedMsg(in, "U0BOB", platforms.Result{Outcome: platforms.Done, Detail: `resumed Argo CD Application argocd/myapp: spec.syncPolicy.automated is {"prune":true,"selfHeal":true} again`}),
		"assessment_no_release":      assessmentMsg(in, &noRelease, nil),
		"drill_report":               drillReportMsg(drillIncident(), StepTimes(drillIncident(), t0.Add(time.Hour)), state.DrillRecord{Total: 295 * time.Second}, []state.DrillRecord{{Incident: "RB-3", Steps: map[string]time.Duration{"assess": time.Minute}}}, "", true, t0.Add(drillEvery)),
		"drill_restoring":            decidedMsg(&drillRestoring, a),
		"drill_restored_assessment":  decidedMsg(&drillRestored, a),
		"drill_left_assessment":      decidedMsg(&drillLeft, a),
		"drill_restored":             drillRestoredMsg(&drillRestored, "restored to 3 (registry/myapp:v1.4.1): deployment prod/myapp runs it with 3 units, as before the drill"),
		"drill_left":                 drillRestoredMsg(&drillLeft, "not restored: deployment prod/myapp r"+strings.TrimPrefix(leftRun.Left, "it r")),
		"drills":                     drillsMsg(&Service{Name: "myapp@staging"}, []state.DrillRecord{{Incident: "RB-5", At: t0, Total: 295 * time.Second, Restored: true, Steps: map[string]time.Duration{"assess": 40 * time.Second, "verify": 90 * time.Second}}}),
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
	checkLimits(t, timelineMsg(in, evs, 1))
}

// A 10 000-event timeline is shown page by page, each page within Slack's
// limits, every event on exactly one page, and each page says where the
// next one is.
func TestTimelinePagesKeepEveryEvent(t *testing.T) {
	in := goldenIncident()
	evs := manyEvents(10000)
	pages := timelinePages(evs)
	if len(pages) < 2 {
		t.Fatalf("%d pages for 10 000 events", len(pages))
	}
	seen := 0
	for p := range pages {
		m := timelineMsg(in, evs, p+1)
		checkLimits(t, m)
		text := msgText(m)
		seen += strings.Count(text, "*verify* rollbot: event ")
		if p+1 < len(pages) && !strings.Contains(text, fmt.Sprintf("--page %d", p+2)) {
			t.Fatalf("page %d does not point at the next", p+1)
		}
		if !strings.Contains(text, fmt.Sprintf("page %d of %d", p+1, len(pages))) {
			t.Fatalf("page %d does not say which page it is", p+1)
		}
	}
	if seen != len(evs) {
		t.Errorf("%d events over all pages, want %d", seen, len(evs))
	}
	last := msgText(timelineMsg(in, evs, len(pages)+3))
	if !strings.Contains(last, fmt.Sprintf("has %d", len(pages))) {
		t.Errorf("a page past the end: %s", last)
	}
}

func manyEvents(n int) []state.Event {
	evs := make([]state.Event, n)
	for i := range evs {
		evs[i] = state.Event{Time: t0.Add(time.Duration(i) * time.Second), Actor: "rollbot", Step: "verify",
			Detail: fmt.Sprintf("event %d: error rate 0.4%% over the last 30s, p95 120 ms | checked", i)}
	}
	return evs
}

func msgText(m Msg) string {
	var b strings.Builder
	for _, bl := range m.Blocks {
		switch x := bl.(type) {
		case *slack.SectionBlock:
			if x.Text != nil {
				b.WriteString(x.Text.Text + "\n")
			}
		case *slack.ContextBlock:
			for _, e := range x.ContextElements.Elements {
				if t, ok := e.(*slack.TextBlockObject); ok {
					b.WriteString(t.Text + "\n")
				}
			}
		}
	}
	return b.String()
}

func BenchmarkTimelinePages10k(b *testing.B) {
	evs := manyEvents(10000)
	for b.Loop() {
		timelinePages(evs)
	}
}
