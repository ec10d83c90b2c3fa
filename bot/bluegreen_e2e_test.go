package bot

// The blue-green end-to-end tests run the real aws-sdk-go-v2 ELBv2 client
// (through BuildServices, so the default credential chain reads the
// credentials from the environment) against platforms/awstest, a local
// server speaking the ELBv2 query protocol. Behind the fake listener are
// real processes: blue is the sample service at v2 (30% of its requests
// fail), green the sample service at v1. awstest's DataPlane stands in for
// the load balancer's data plane: it forwards each request to the group the
// listener's forward action selects at that moment, so the switch rollbot
// makes through ModifyListener really moves the traffic. The service's
// request metrics are a direct scrape of the data plane's own request
// counters (what a team would read from the load balancer's metrics), and
// its health URL is the public /health through the load balancer. Target
// health (DescribeTargetHealth) is the state seeded in the fake.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"rollbot/handlers"
	"rollbot/state"
	"rollbot/testkit/awstest"
	"rollbot/testkit/slackemu"
	"rollbot/testkit/sshtest"
	"rollbot/testkit/wait"

	"rollbot/testkit/logtest"
)

const (
	bgListenerARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/storefront-lb/50dc6c495c0c9188/f2f7dc8efc522ab2"
	bgBlueARN     = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/storefront-blue/73e2d6bc24d8a067"
	bgGreenARN    = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/storefront-green/8c1b3f2a9d4e5f60"
	// Static fake credentials, only ever seen by awstest.
	bgAccessKeyID = "AKIAE2EFAKE7ROLLBOT1"
	bgSecretKey   = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYE2EFAKEKEY"
)

// bgApp starts the sample service binary on a free loopback port and
// returns the port once it answers /health (or /version when it is meant
// to fail its health check). It is killed on cleanup.
func bgApp(t *testing.T, bin string, args ...string) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	logf, err := os.Create(filepath.Join(t.TempDir(), "app.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"-listen", fmt.Sprintf("127.0.0.1:%d", port)}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		logf.Close()
	})
	c := http.Client{Timeout: time.Second}
	err = wait.Until(context.Background(), 15*time.Second, "the sample app to answer", func() (bool, error) {
		resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/version", port))
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return true, nil
	})
	if err != nil {
		b, _ := os.ReadFile(logf.Name())
		t.Fatalf("%s on port %d: %v\n%s", bin, port, err, b)
	}
	return port
}

// bgLoad sends GET url at about rps requests per second until cleanup,
// like the users of the service behind the load balancer.
func bgLoad(t *testing.T, url string, rps int) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	c := &http.Client{Timeout: 5 * time.Second}
	wg.Go(func() {
		tick := time.NewTicker(time.Second / time.Duration(rps))
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				if resp, err := c.Do(req); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// bgFixture is a blue-green service behind the fake load balancer, built
// from YAML config, with rollbot running against the local Slack server.
type bgFixture struct {
	fake    *awstest.Server
	dp      *awstest.DataPlane
	h       *harness
	svcLogs *logtest.Buffer
}

func newBGFixture(t *testing.T, greenState, greenReason string, greenArgs ...string) *bgFixture {
	t.Helper()
	bin := t.TempDir()
	v1 := sshtest.BuildSampleApp(t, bin, "v1", map[string]string{"version": "v1"})
	v2 := sshtest.BuildSampleApp(t, bin, "v2", map[string]string{"version": "v2", "errorRatio": "0.3"})
	bluePort := bgApp(t, v2)
	greenPort := bgApp(t, v1, greenArgs...)

	f := &bgFixture{fake: awstest.New(), svcLogs: &logtest.Buffer{}}
	t.Cleanup(f.fake.Close)
	f.fake.AddTargetGroup(awstest.TargetGroup{ARN: bgBlueARN, Name: "storefront-blue", Port: 8080, Protocol: "HTTP",
		Targets: []awstest.Target{{ID: "127.0.0.1", Port: bluePort, State: "healthy"}}})
	f.fake.AddTargetGroup(awstest.TargetGroup{ARN: bgGreenARN, Name: "storefront-green", Port: 8080, Protocol: "HTTP",
		Targets: []awstest.Target{{ID: "127.0.0.1", Port: greenPort, State: greenState, Reason: greenReason}}})
	f.fake.AddListener(awstest.Listener{ARN: bgListenerARN, LoadBalancerARN: "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/storefront-lb/50dc6c495c0c9188",
		Port: 443, Protocol: "HTTPS", DefaultActions: []awstest.Action{{Type: "forward", Order: 1,
			Forward: []awstest.WeightedGroup{{ARN: bgBlueARN, Weight: 100}, {ARN: bgGreenARN, Weight: 0}}}}})
	f.dp = f.fake.DataPlane(bgListenerARN)
	t.Cleanup(f.dp.Close)
	bgLoad(t, f.dp.URL+"/work", 40)

	// The default credential chain: static keys in the environment only.
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": bgAccessKeyID, "AWS_SECRET_ACCESS_KEY": bgSecretKey, "AWS_SESSION_TOKEN": "",
		"AWS_PROFILE": "", "AWS_REGION": "", "AWS_DEFAULT_REGION": "", "AWS_EC2_METADATA_DISABLED": "true",
		"AWS_CONFIG_FILE": filepath.Join(dir, "config"), "AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"),
	} {
		t.Setenv(k, v)
	}

	yaml := fmt.Sprintf(`
incident_channels: [%[1]s]
verify_timeout: 90s
verify_interval: 250ms
query_timeout: 15s
services:
  storefront:
    platform: bluegreen
    bluegreen:
      endpoint: %[2]q
      region: us-east-1
      listener_arn: %[3]q
      blue: {arn: %[4]q}
      green: {arn: %[5]q}
      max_attempts: 3
      max_backoff: 200ms
    approvers: {groups: [%[6]s]}
    thresholds: {baseline_p95: 200ms}
    metrics:
      scrape: {url: %[7]q, interval: 1s}
    health_urls: [%[8]q]
`, slackemu.ChannelIncident, f.fake.URL, bgListenerARN, bgBlueARN, bgGreenARN, slackemu.GroupOnCall,
		f.dp.MetricsURL+"/metrics", f.dp.URL+"/health")
	cfg, err := ParseConfig([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	services, err := BuildServices(context.Background(), cfg, nil, slog.New(slog.NewJSONHandler(f.svcLogs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	if len(services) != 1 || services[0].Platform.Kind() != "bluegreen" || services[0].Metrics == nil || !services[0].HasHealth {
		t.Fatalf("built service: %+v", services)
	}
	eng := cfg.EngineOptions()
	eng.UpdateInterval = 50 * time.Millisecond
	f.h = newHarness(t, services, eng)
	return f
}

// weights reads the listener's forward weights by group name from the fake.
func (f *bgFixture) weights(t *testing.T) map[string]int {
	t.Helper()
	l, ok := f.fake.Listener(bgListenerARN)
	if !ok {
		t.Fatal("listener gone")
	}
	out := map[string]int{}
	for _, a := range l.DefaultActions {
		if a.Type == "forward" {
			for _, g := range a.Forward {
				out[strings.Split(g.ARN, "/")[1]] = g.Weight
			}
		}
	}
	return out
}

// noSecrets checks that the AWS keys reached neither Slack nor a log.
func (f *bgFixture) noSecrets(t *testing.T) {
	t.Helper()
	for _, c := range f.h.emu.Calls() {
		for k, v := range c.Params {
			if strings.Contains(v, bgAccessKeyID) || strings.Contains(v, bgSecretKey) {
				t.Errorf("an AWS credential was sent to Slack in %s param %s", c.Method, k)
			}
		}
	}
	for name, logs := range map[string]string{"bot log": f.h.logs.String(), "service log": f.svcLogs.String()} {
		if strings.Contains(logs, bgAccessKeyID) || strings.Contains(logs, bgSecretKey) {
			t.Errorf("an AWS credential reached the %s", name)
		}
	}
	// The SDK did use them: every call to the fake was signed with the key.
	reqs := f.fake.Requests("")
	if len(reqs) == 0 {
		t.Fatal("no AWS call reached the fake")
	}
	for _, r := range reqs {
		if r.AccessKeyID != bgAccessKeyID {
			t.Errorf("%s signed with %q, want the key from the environment", r.Action, r.AccessKeyID)
		}
	}
}

// get returns the body of GET url.
func bgGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

// TestBlueGreenRollbackThroughSlack: /rollback storefront, confirmed by
// another on-call engineer, switches the listener to green and is verified
// on the traffic that really goes to green afterwards.
func TestBlueGreenRollbackThroughSlack(t *testing.T) {
	f := newBGFixture(t, "healthy", "")
	h := f.h
	if v := bgGet(t, f.dp.URL+"/version"); v != "v2" {
		t.Fatalf("before the rollback the load balancer serves %q, want blue's v2", v)
	}

	h.slash(slackemu.UserAlice, `storefront --reason "checkout errors since the switch to blue"`)
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	wantAll(t, "assessment", a.PlainText(), "Bad version:* blue (storefront-blue)", "Last known good:* green (storefront-green)",
		"Proceed to rollback: Error rate", "ELB listener storefront-lb/f2f7dc8e", "scrape "+f.dp.MetricsURL+"/metrics")
	as := h.storedAssessment("RB-1")
	if c := as.Checks[0]; c.Name != "Error rate" || c.Verdict != handlers.Fail {
		t.Errorf("error rate check = %+v, want a failure (blue fails 30%% of requests)", c)
	}
	if n := len(f.fake.Requests("ModifyListener")); n != 0 {
		t.Fatalf("%d ModifyListener calls before the confirmation", n)
	}

	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	v := h.waitFor("verified", textHas("Rollback verified"))
	wantAll(t, "verification", v.PlainText(), "All pods healthy", "green (storefront-green): 1/1 targets healthy", "1/1 health URLs answer 2xx", "Error rate < baseline", "Latency p95 normal")
	h.waitFor("post-rollback actions", textHas("Post-rollback actions"))

	// The fake's listener now forwards 100% to green, through one ModifyListener.
	if w := f.weights(t); w["storefront-green"] != 100 || w["storefront-blue"] != 0 || len(w) != 2 {
		t.Errorf("listener weights after the rollback = %v, want green 100, blue 0 (kept attached)", w)
	}
	if n := len(f.fake.Requests("ModifyListener")); n != 1 {
		t.Errorf("%d ModifyListener calls, want 1", n)
	}
	// And the traffic really goes to green.
	before := f.dp.Served()["storefront-blue"]
	for range 5 {
		if v := bgGet(t, f.dp.URL+"/version"); v != "v1" {
			t.Errorf("after the rollback the load balancer serves %q, want green's v1", v)
		}
	}
	if after := f.dp.Served()["storefront-blue"]; after != before {
		t.Errorf("blue still gets traffic: %d -> %d requests", before, after)
	}

	evs := h.wantSteps("RB-1", "request", "assess", "confirm", "stop", "rollback", "verify", "postactions")
	if !slices.ContainsFunc(evs, func(e state.Event) bool {
		return e.Step == "rollback" && strings.Contains(e.Detail, "switched traffic to green (storefront-green)")
	}) {
		t.Errorf("timeline lacks the switch:\n%+v", evs)
	}
	h.waitStatus("RB-1", state.Completed)
	f.noSecrets(t)
}

// TestBlueGreenUnhealthyGreenRefused: when green's targets fail their
// health checks, rollbot does not switch: the rollback is refused with
// the reason and the next step, and the listener still forwards to blue.
func TestBlueGreenUnhealthyGreenRefused(t *testing.T) {
	f := newBGFixture(t, "unhealthy", "Target.FailedHealthChecks", "-fail-health", "true")
	h := f.h

	h.slash(slackemu.UserAlice, "storefront")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	m := h.waitFor("refusal", textHas("The rollback failed"))
	wantAll(t, "refusal", m.PlainText(), "refusing to switch to green (storefront-green): 0/1 targets healthy; 127.0.0.1 unhealthy (Target.FailedHealthChecks)",
		"Fix or wait for those targets, then retry",
		"What now?")
	if slices.Contains(m.ActionIDs(), handlers.ActFallbackImage) || slices.Contains(m.ActionIDs(), handlers.ActFallbackZero) {
		t.Errorf("fallback buttons offered for a platform without fallbacks: %v", m.ActionIDs())
	}

	// Nothing was switched: blue still takes the traffic.
	if n := len(f.fake.Requests("ModifyListener")); n != 0 {
		t.Errorf("%d ModifyListener calls, want none", n)
	}
	if w := f.weights(t); w["storefront-blue"] != 100 || w["storefront-green"] != 0 {
		t.Errorf("listener weights = %v, want blue 100 unchanged", w)
	}
	if v := bgGet(t, f.dp.URL+"/version"); v != "v2" {
		t.Errorf("the load balancer serves %q, want blue's v2 still", v)
	}
	if len(f.fake.Requests("DescribeTargetHealth")) == 0 {
		t.Error("green's target health was never read")
	}
	in, err := h.store.Get(context.Background(), "RB-1")
	if err != nil || in.Status != state.RollbackFailed {
		t.Fatalf("incident: %+v, %v; want rollback failed", in, err)
	}
	evs, _ := h.store.Timeline(context.Background(), "RB-1")
	if !slices.ContainsFunc(evs, func(e state.Event) bool {
		return e.Step == "rollback" && strings.Contains(e.Detail, "failed") && strings.Contains(e.Detail, "refusing to switch to green")
	}) {
		t.Errorf("timeline lacks the refusal:\n%+v", evs)
	}
	if slices.ContainsFunc(evs, func(e state.Event) bool { return e.Step == "verify" }) {
		t.Error("a refused switch was verified")
	}
	f.noSecrets(t)
}
