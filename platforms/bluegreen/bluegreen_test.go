package bluegreen

// These tests run the real aws-sdk-go-v2 ELBv2 client (SigV4 signing,
// standard retryer, query-protocol XML decoding) against awstest, a local
// HTTP server speaking the ELBv2 query protocol. Nothing reaches AWS.

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"rollbot/platforms"
	"rollbot/testkit/awstest"

	"rollbot/testkit/platformtest"
)

const (
	listenerARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/myapp-lb/50dc6c495c0c9188/f2f7dc8efc522ab2"
	ruleARN     = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener-rule/app/myapp-lb/50dc6c495c0c9188/f2f7dc8efc522ab2/9683b2d02a6cabee"
	blueARN     = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/myapp-blue/73e2d6bc24d8a067"
	greenARN    = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/myapp-green/2453ed029918f21f"
	otherARN    = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/other/aaaaaaaaaaaaaaaa"

	testKeyID  = "AKIAROLLBOTTESTKEY01"
	testSecret = "rollbot/Test+Secret/wJalrXUtnFEMIK7MDENGbPxRfiCY"
)

// awsEnv points the default credential chain at static env credentials
// and away from any real AWS configuration on the machine.
func awsEnv(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("AWS_ACCESS_KEY_ID", testKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", testSecret)
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_CONFIG_FILE", dir+"/config")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", dir+"/credentials")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

func forward(groups ...awstest.WeightedGroup) []awstest.Action {
	return []awstest.Action{{Type: "forward", Order: 1, Forward: groups, StickinessEnabled: true, StickinessSeconds: 300}}
}

func targets(state string, ids ...string) []awstest.Target {
	var out []awstest.Target
	for _, id := range ids {
		out = append(out, awstest.Target{ID: id, Port: 8080, State: state})
	}
	return out
}

type env struct {
	fake *awstest.Server
	cfg  Config
	logs *bytes.Buffer
	log  *slog.Logger
}

// setup starts a fake with a listener forwarding 100% to blue and two
// target groups with healthy targets.
func setup(t *testing.T) *env {
	t.Helper()
	awsEnv(t)
	f := awstest.New()
	t.Cleanup(f.Close)
	f.AddTargetGroup(awstest.TargetGroup{ARN: blueARN, Name: "myapp-blue", Port: 8080, Protocol: "HTTP", Targets: targets("healthy", "i-0blue1", "i-0blue2")})
	f.AddTargetGroup(awstest.TargetGroup{ARN: greenARN, Name: "myapp-green", Port: 8080, Protocol: "HTTP", Targets: targets("healthy", "i-0green1", "i-0green2")})
	f.AddListener(awstest.Listener{ARN: listenerARN, LoadBalancerARN: "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/myapp-lb/50dc6c495c0c9188", Port: 443, Protocol: "HTTPS",
		DefaultActions: forward(awstest.WeightedGroup{ARN: blueARN, Weight: 100}, awstest.WeightedGroup{ARN: greenARN, Weight: 0})})
	var buf bytes.Buffer
	return &env{
		fake: f,
		cfg: Config{Region: "us-east-1", Endpoint: f.URL, ListenerARN: listenerARN,
			Blue: TargetGroup{ARN: blueARN}, Green: TargetGroup{ARN: greenARN},
			MaxAttempts: 4, MaxBackoff: 20 * time.Millisecond},
		logs: &buf,
		log:  slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

func (e *env) adapter(t *testing.T) *Adapter {
	t.Helper()
	a, err := New(context.Background(), e.cfg, e.log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

func weights(t *testing.T, f *awstest.Server) map[string]int {
	t.Helper()
	l, ok := f.Listener(listenerARN)
	if !ok {
		t.Fatal("listener gone")
	}
	out := map[string]int{}
	for _, a := range l.DefaultActions {
		for _, g := range a.Forward {
			out[tgNameFromARN(g.ARN)] = g.Weight
		}
	}
	return out
}

func TestSnapshot(t *testing.T) {
	e := setup(t)
	e.fake.SetTargetState(blueARN, "healthy", "")
	a := e.adapter(t)
	snap, err := a.Snapshot(context.Background())
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if snap.Current.ID != "blue" || snap.Current.Artifact != "myapp-blue" {
		t.Errorf("Current = %+v, want blue/myapp-blue", snap.Current)
	}
	if len(snap.History) != 2 || snap.History[1].ID != "green" || snap.History[1].Artifact != "myapp-green" {
		t.Errorf("History = %+v", snap.History)
	}
	if lkg, ok := platforms.LastKnownGood(snap.History, snap.Current, nil); !ok || lkg.ID != "green" {
		t.Errorf("LastKnownGood = %+v,%v; want green", lkg, ok)
	}
	if !snap.Health.Known || snap.Health.Desired != 2 || snap.Health.Ready != 2 || snap.RolloutInProgress {
		t.Errorf("Health = %+v rollout=%v", snap.Health, snap.RolloutInProgress)
	}
	if strings.Contains(snap.Health.Detail, "123456789012") {
		t.Errorf("detail shows the account id: %q", snap.Health.Detail)
	}
	reqs := e.fake.Requests("DescribeTargetHealth")
	if len(reqs) != 1 || reqs[0].Params.Get("TargetGroupArn") != blueARN {
		t.Errorf("DescribeTargetHealth calls = %+v; want one for blue", reqs)
	}
	if reqs[0].AccessKeyID != testKeyID {
		t.Errorf("request signed with %q, want the env credentials %q", reqs[0].AccessKeyID, testKeyID)
	}
}

func TestSnapshotUnhealthyAndSplit(t *testing.T) {
	e := setup(t)
	e.fake.AddTargetGroup(awstest.TargetGroup{ARN: greenARN, Name: "myapp-green", Targets: []awstest.Target{
		{ID: "i-0green1", Port: 8080, State: "healthy"},
		{ID: "i-0green2", Port: 8080, State: "unhealthy", Reason: "Target.ResponseCodeMismatch"},
	}})
	e.fake.SetListenerActions(listenerARN, forward(awstest.WeightedGroup{ARN: blueARN, Weight: 10}, awstest.WeightedGroup{ARN: greenARN, Weight: 90}))
	snap, err := e.adapter(t).Snapshot(context.Background())
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if snap.Current.ID != "green" || !snap.RolloutInProgress {
		t.Errorf("Current = %s, rollout = %v; want green (heavier side), true", snap.Current.ID, snap.RolloutInProgress)
	}
	if snap.Health.Ready != 1 || snap.Health.Desired != 2 {
		t.Errorf("Health = %+v, want 1/2", snap.Health)
	}
	for _, want := range []string{"split", "blue (myapp-blue) 10%", "green (myapp-green) 90%", "i-0green2 unhealthy (Target.ResponseCodeMismatch)"} {
		if !strings.Contains(snap.Health.Detail, want) {
			t.Errorf("Detail %q lacks %q", snap.Health.Detail, want)
		}
	}
}

func TestRollbackSwitchesListener(t *testing.T) {
	e := setup(t)
	a := e.adapter(t)
	ctx := context.Background()
	if _, err := a.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	var progress []platforms.Progress
	res, err := a.Rollback(ctx, platforms.Revision{ID: "green"}, false, func(p platforms.Progress) { progress = append(progress, p) })
	if err != nil {
		t.Fatalf("Rollback: %v", err)
	}
	if res.Outcome != platforms.Done {
		t.Fatalf("Outcome = %s", res.Outcome)
	}
	if w := weights(t, e.fake); w["myapp-green"] != 100 || w["myapp-blue"] != 0 || len(w) != 2 {
		t.Errorf("listener weights after switch = %v; want green 100, blue 0 (kept attached)", w)
	}
	// The previous action is recorded so it can be switched back.
	if len(res.Plan) != 2 || !strings.Contains(res.Plan[1], "blue (myapp-blue) 100% / green (myapp-green) 0%") || !strings.Contains(res.Plan[1], "roll back to blue") {
		t.Errorf("Plan = %q; want the previous action", res.Plan)
	}
	mods := e.fake.Requests("ModifyListener")
	if len(mods) != 1 {
		t.Fatalf("ModifyListener calls = %d, want 1", len(mods))
	}
	p := mods[0].Params
	if p.Get("DefaultActions.member.1.ForwardConfig.TargetGroups.member.1.TargetGroupArn") != greenARN ||
		p.Get("DefaultActions.member.1.ForwardConfig.TargetGroups.member.1.Weight") != "100" ||
		p.Get("DefaultActions.member.1.ForwardConfig.TargetGroups.member.2.Weight") != "0" ||
		p.Get("DefaultActions.member.1.ForwardConfig.TargetGroupStickinessConfig.DurationSeconds") != "300" ||
		p.Get("DefaultActions.member.1.TargetGroupArn") != "" {
		t.Errorf("ModifyListener params = %v", p)
	}
	if len(progress) == 0 || !progress[len(progress)-1].Done {
		t.Errorf("progress = %+v; want a final Done", progress)
	}
	// The target group was checked before the switch.
	reqs := e.fake.Requests("")
	iHealth, iModify := -1, -1
	for i, r := range reqs {
		if r.Action == "DescribeTargetHealth" && r.Params.Get("TargetGroupArn") == greenARN {
			iHealth = i
		}
		if r.Action == "ModifyListener" {
			iModify = i
		}
	}
	if iHealth < 0 || iHealth > iModify {
		t.Errorf("green's health not checked before ModifyListener (health at %d, modify at %d)", iHealth, iModify)
	}

	// Again: already there.
	res, err = a.Rollback(ctx, platforms.Revision{ID: "green"}, false, nil)
	if err != nil || res.Outcome != platforms.Skipped {
		t.Errorf("second Rollback = %+v, %v; want Skipped", res, err)
	}
	// And back to blue, by target group name.
	res, err = a.Rollback(ctx, platforms.Revision{ID: "myapp-blue"}, false, nil)
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("switch back = %+v, %v", res, err)
	}
	if w := weights(t, e.fake); w["myapp-blue"] != 100 || w["myapp-green"] != 0 {
		t.Errorf("weights after switching back = %v", w)
	}
}

func TestRollbackRule(t *testing.T) {
	e := setup(t)
	e.fake.AddRule(awstest.Rule{ARN: ruleARN, ListenerARN: listenerARN, Priority: "10", PathPattern: "/api/*",
		Actions: []awstest.Action{{Type: "forward", Forward: []awstest.WeightedGroup{{ARN: blueARN, Weight: 1}}, TargetGroupARNOnly: true}}})
	e.cfg.RuleARN = ruleARN
	a := e.adapter(t)
	if !strings.Contains(a.Target(), "listener rule myapp-lb/9683b2d0") {
		t.Errorf("Target() = %q", a.Target())
	}
	res, err := a.Rollback(context.Background(), platforms.Revision{ID: "green"}, false, nil)
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("Rollback = %+v, %v", res, err)
	}
	r, _ := e.fake.Rule(ruleARN)
	if len(r.Actions) != 1 || len(r.Actions[0].Forward) != 2 || r.Actions[0].Forward[0].ARN != greenARN || r.Actions[0].Forward[0].Weight != 100 || r.Actions[0].Forward[1].Weight != 0 {
		t.Errorf("rule actions = %+v", r.Actions)
	}
	if len(e.fake.Requests("ModifyListener")) != 0 {
		t.Error("listener modified although a rule is configured")
	}
	if w := weights(t, e.fake); w["myapp-blue"] != 100 {
		t.Errorf("listener default action changed: %v", w)
	}
}

func TestRollbackRefusesUnhealthy(t *testing.T) {
	tests := []struct {
		name    string
		targets []awstest.Target
		want    []string
	}{
		{"one unhealthy", []awstest.Target{{ID: "i-0g1", State: "healthy"}, {ID: "i-0g2", State: "unhealthy", Reason: "Target.FailedHealthChecks"}},
			[]string{"refusing to switch to green (myapp-green)", "1/2 targets healthy", "i-0g2 unhealthy (Target.FailedHealthChecks)"}},
		{"no targets", nil, []string{"refusing", "no registered targets"}},
		{"unused", []awstest.Target{{ID: "i-0g1", State: "unused", Reason: "Target.NotInUse"}},
			[]string{"refusing", "not health-checked", "weight 0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := setup(t)
			e.fake.AddTargetGroup(awstest.TargetGroup{ARN: greenARN, Name: "myapp-green", Targets: tt.targets})
			_, err := e.adapter(t).Rollback(context.Background(), platforms.Revision{ID: "green"}, false, nil)
			if err == nil {
				t.Fatal("Rollback switched to an unhealthy group")
			}
			msg := platformtest.UserMessage(t, err)
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %q", msg, w)
				}
			}
			if n := len(e.fake.Requests("ModifyListener")); n != 0 {
				t.Errorf("ModifyListener called %d times", n)
			}
			if w := weights(t, e.fake); w["myapp-blue"] != 100 {
				t.Errorf("weights changed: %v", w)
			}
		})
	}
}

func TestRollbackDryRun(t *testing.T) {
	e := setup(t)
	res, err := e.adapter(t).Rollback(context.Background(), platforms.Revision{ID: "green"}, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != platforms.Planned || len(res.Plan) == 0 || !strings.Contains(res.Plan[0], "green (myapp-green) 100%") {
		t.Errorf("dry run = %+v", res)
	}
	if n := len(e.fake.Requests("ModifyListener")); n != 0 {
		t.Errorf("dry run modified the listener (%d calls)", n)
	}
}

func TestRollbackConflict(t *testing.T) {
	t.Run("changed since snapshot", func(t *testing.T) {
		e := setup(t)
		a := e.adapter(t)
		if _, err := a.Snapshot(context.Background()); err != nil {
			t.Fatal(err)
		}
		e.fake.SetListenerActions(listenerARN, forward(awstest.WeightedGroup{ARN: blueARN, Weight: 50}, awstest.WeightedGroup{ARN: greenARN, Weight: 50}))
		_, err := a.Rollback(context.Background(), platforms.Revision{ID: "green"}, false, nil)
		if !errors.Is(err, platforms.ErrConflict) {
			t.Fatalf("err = %v, want ErrConflict", err)
		}
		if !strings.Contains(platformtest.UserMessage(t, err), "changed since the assessment") {
			t.Errorf("message = %q", platformtest.UserMessage(t, err))
		}
		if n := len(e.fake.Requests("ModifyListener")); n != 0 {
			t.Errorf("ModifyListener called %d times", n)
		}
	})
	t.Run("changed during rollback", func(t *testing.T) {
		e := setup(t)
		a := e.adapter(t)
		// Someone else moves traffic while rollbot checks green's health.
		e.fake.After("DescribeTargetHealth", func() {
			e.fake.SetListenerActions(listenerARN, forward(awstest.WeightedGroup{ARN: blueARN, Weight: 80}, awstest.WeightedGroup{ARN: greenARN, Weight: 20}))
		})
		_, err := a.Rollback(context.Background(), platforms.Revision{ID: "green"}, false, nil)
		if !errors.Is(err, platforms.ErrConflict) {
			t.Fatalf("err = %v, want ErrConflict", err)
		}
		if msg := platformtest.UserMessage(t, err); !strings.Contains(msg, "changed while rolling back") || !strings.Contains(msg, "80%") {
			t.Errorf("message = %q", msg)
		}
		if n := len(e.fake.Requests("ModifyListener")); n != 0 {
			t.Errorf("ModifyListener called %d times", n)
		}
		if w := weights(t, e.fake); w["myapp-blue"] != 80 {
			t.Errorf("the other party's change was overwritten: %v", w)
		}
	})
}

func TestUnknownTargetGroupRefused(t *testing.T) {
	e := setup(t)
	e.fake.AddTargetGroup(awstest.TargetGroup{ARN: otherARN, Name: "other", Targets: targets("healthy", "i-1")})
	e.fake.SetListenerActions(listenerARN, forward(awstest.WeightedGroup{ARN: otherARN, Weight: 1}))
	_, err := e.adapter(t).Snapshot(context.Background())
	if err == nil || !strings.Contains(platformtest.UserMessage(t, err), "neither blue") {
		t.Fatalf("Snapshot err = %v", err)
	}
	_, err = e.adapter(t).Rollback(context.Background(), platforms.Revision{ID: "purple"}, false, nil)
	if !errors.Is(err, platforms.ErrNotFound) {
		t.Errorf("Rollback to unknown = %v, want ErrNotFound", err)
	}
}

func TestThrottlingRetried(t *testing.T) {
	e := setup(t)
	e.fake.Inject(awstest.Fault{Action: "DescribeListeners", Code: "Throttling", Times: 2})
	e.fake.Inject(awstest.Fault{Action: "ModifyListener", Code: "Throttling", Times: 1})
	a := e.adapter(t)
	res, err := a.Rollback(context.Background(), platforms.Revision{ID: "green"}, false, nil)
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("Rollback with throttling = %+v, %v", res, err)
	}
	var throttled, mods int
	for _, r := range e.fake.Requests("") {
		if r.Failed == "Throttling" {
			throttled++
		}
		if r.Action == "ModifyListener" && r.Failed == "" {
			mods++
		}
	}
	if throttled != 3 || mods != 1 {
		t.Errorf("throttled = %d, successful ModifyListener = %d; want 3 and 1", throttled, mods)
	}
	if w := weights(t, e.fake); w["myapp-green"] != 100 {
		t.Errorf("weights = %v", w)
	}
}

func TestThrottlingExhausted(t *testing.T) {
	e := setup(t)
	e.fake.Inject(awstest.Fault{Action: "DescribeListeners", Code: "Throttling", Times: -1})
	_, err := e.adapter(t).Snapshot(context.Background())
	if err == nil {
		t.Fatal("Snapshot succeeded under permanent throttling")
	}
	if msg := platformtest.UserMessage(t, err); !strings.Contains(msg, "kept throttling elasticloadbalancing:DescribeListeners") {
		t.Errorf("message = %q", msg)
	}
	if n := len(e.fake.Requests("DescribeListeners")); n != e.cfg.MaxAttempts {
		t.Errorf("attempts = %d, want max_attempts %d", n, e.cfg.MaxAttempts)
	}
}

func TestAccessDeniedNoSecrets(t *testing.T) {
	e := setup(t)
	e.fake.Inject(awstest.Fault{Action: "ModifyListener", Code: "AccessDenied", Times: -1})
	_, err := e.adapter(t).Rollback(context.Background(), platforms.Revision{ID: "green"}, false, nil)
	if err == nil {
		t.Fatal("Rollback succeeded without permission")
	}
	msg := platformtest.UserMessage(t, err)
	if !strings.Contains(msg, "elasticloadbalancing:ModifyListener") || !strings.Contains(msg, "IAM") {
		t.Errorf("message = %q; want the missing IAM action named", msg)
	}
	if strings.Contains(msg, "123456789012") || strings.Contains(msg, "arn:") {
		t.Errorf("user message carries an ARN: %q", msg)
	}
	if n := len(e.fake.Requests("ModifyListener")); n != 1 {
		t.Errorf("AccessDenied retried: %d calls", n)
	}
	for _, secret := range []string{testSecret, testKeyID} {
		if strings.Contains(err.Error(), secret) || strings.Contains(e.logs.String(), secret) {
			t.Errorf("credential %q leaked into the error or log", secret)
		}
	}
}

func TestStopSkipped(t *testing.T) {
	e := setup(t)
	res, err := e.adapter(t).Stop(context.Background(), false)
	if err != nil || res.Outcome != platforms.Skipped || !strings.Contains(res.Detail, "no rollout") {
		t.Errorf("Stop = %+v, %v", res, err)
	}
}

func TestValidate(t *testing.T) {
	good := Config{ListenerARN: listenerARN, Blue: TargetGroup{ARN: blueARN}, Green: TargetGroup{ARN: greenARN}}
	tests := []struct {
		name string
		mod  func(*Config)
		want string // "" = valid
	}{
		{"ok", func(*Config) {}, ""},
		{"no listener", func(c *Config) { c.ListenerARN = "" }, "listener_arn: required"},
		{"bad listener", func(c *Config) { c.ListenerARN = blueARN }, "listener_arn: not a listener ARN"},
		{"bad rule", func(c *Config) { c.RuleARN = listenerARN }, "rule_arn:"},
		{"no blue", func(c *Config) { c.Blue.ARN = "" }, "blue.arn: required"},
		{"same groups", func(c *Config) { c.Green = c.Blue }, "green.arn: same target group as blue"},
		{"bad endpoint", func(c *Config) { c.Endpoint = "localhost:4566" }, "endpoint:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mod(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want %q", err, tt.want)
			}
		})
	}
}

// The mark is a tag on the bad side's target group, made once, and the
// other group is left alone.
func TestMarkDoNotDeployTagsTheGroup(t *testing.T) {
	e := setup(t)
	a := e.adapter(t)
	ctx := context.Background()
	res, err := a.MarkDoNotDeploy(ctx, platforms.Revision{ID: "green", Artifact: "myapp-green"}, "U0BOB")
	if err != nil || res.Outcome != platforms.Done || !strings.Contains(res.Detail, "myapp-green tagged rollbot:do-not-deploy=true") {
		t.Fatalf("MarkDoNotDeploy = %+v, %v", res, err)
	}
	tags := e.fake.GroupTags(greenARN)
	if tags[TagDoNotDeploy] != "true" || tags[TagDoNotDeployBy] != "U0BOB" {
		t.Errorf("green tags = %v", tags)
	}
	if at, err := time.Parse(time.RFC3339, tags[TagDoNotDeployAt]); err != nil || time.Since(at) > time.Minute {
		t.Errorf("tag %s = %q: %v", TagDoNotDeployAt, tags[TagDoNotDeployAt], err)
	}
	if tags := e.fake.GroupTags(blueARN); len(tags) != 0 {
		t.Errorf("blue was tagged too: %v", tags)
	}
	again, err := a.MarkDoNotDeploy(ctx, platforms.Revision{ID: "green"}, "U0CAROL")
	if err != nil || again.Outcome != platforms.Skipped || e.fake.GroupTags(greenARN)[TagDoNotDeployBy] != "U0BOB" {
		t.Errorf("second mark = %+v, %v; tags %v", again, err, e.fake.GroupTags(greenARN))
	}
	if n := len(e.fake.Requests("AddTags")); n != 1 {
		t.Errorf("AddTags called %d times, want 1", n)
	}
	if _, err := a.MarkDoNotDeploy(ctx, platforms.Revision{ID: "purple"}, "U0BOB"); !errors.Is(err, platforms.ErrNotFound) {
		t.Errorf("unknown side: %v", err)
	}
}

func TestMarkDoNotDeployAccessDenied(t *testing.T) {
	e := setup(t)
	e.fake.Inject(awstest.Fault{Action: "AddTags", Code: "AccessDenied", Times: -1})
	_, err := e.adapter(t).MarkDoNotDeploy(context.Background(), platforms.Revision{ID: "green"}, "U0BOB")
	msg := platformtest.UserMessage(t, err)
	if !strings.Contains(msg, "elasticloadbalancing:AddTags") || strings.Contains(msg, "arn:") {
		t.Errorf("message = %q", msg)
	}
}
