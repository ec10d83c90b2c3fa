package bot

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"rollbot/handlers"
	"rollbot/testkit/dockertest"
	"rollbot/testkit/nettest"
	"rollbot/testkit/slackemu"
	"rollbot/testkit/wait"
)

// e2eFailing fails every /work request.
var e2eFailing = dockertest.Variant{Tag: "e2e-v3-fail", Version: "v3", ErrorRatio: "1", NoHealthcheck: true}

// measuredOver finds "<check> measured over the last <d> only" in an
// assessment and returns d.
func measuredOver(t *testing.T, text, check string) time.Duration {
	t.Helper()
	re := regexp.MustCompile(regexp.QuoteMeta(check) + ` measured over the last ((?:\d+m)?\d+s) only`)
	sm := re.FindStringSubmatch(text)
	if sm == nil {
		t.Fatalf("the assessment does not say over which span %s was measured:\n%s", check, text)
	}
	d, err := time.ParseDuration(sm[1])
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestScrapeHistoryThroughSlack: a swarm service on this machine's Docker
// engine serves about 3 requests a second (its own load), and rollbot
// scrapes it in the background from start-up. Then a version that fails
// every request (and, set through its admin endpoint, answers 300 ms
// slower) is deployed.
//   - a dry run before it, while the history is shorter than the window,
//     says over how many seconds it measured: about as long as rollbot has
//     run;
//   - once the failing version has served for longer than windows.assess
//     (40 s here, to keep the test short; the runbook's 5m works the same),
//     /rollback assesses it as failing from the history, not inconclusive
//     (at 3 requests a second, two scrapes a second apart would have too
//     little traffic), with the baseline p95 measured from the samples
//     before the deploy (no baseline_p95 is configured).
func TestScrapeHistoryThroughSlack(t *testing.T) {
	heavyLong(t)
	cli := dockertest.Client(t)
	ctx := context.Background()
	release, err := dockertest.EnsureSwarm(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := release(context.Background()); err != nil {
			t.Errorf("leave the test swarm: %v", err)
		}
	})
	v1 := dockertest.MustImage(t, cli, e2eGood)
	v3 := dockertest.MustImage(t, cli, e2eFailing)

	port := uint32(nettest.FreePort(t))
	name := dockertest.ServiceWith(t, cli, v1, dockertest.ServiceOptions{
		PublishedPort: port, Env: []string{"SAMPLEAPP_SELF_LOAD=3"},
	})
	dockertest.WaitTasks(t, cli, name, v1, 1, true)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitVersion := func(v string) {
		wait.Every(t, 200*time.Millisecond, 2*time.Minute, v+" to answer", func() (bool, error) {
			code, body, err := httpGet(base + "/version")
			return err == nil && code == 200 && body == v, fmt.Errorf("/version: %d %q %v", code, body, err)
		})
	}
	waitVersion("v1")

	started := time.Now()
	h, _ := newConfigHarness(t, fmt.Sprintf(`
incident_channels: [%s]
query_timeout: 20s
services:
  myapp:
    platform: swarm
    swarm:
      service: %s
      update_parallelism: 1
      update_delay: 1s
      timeout: 3m
      health_path: /health
    metrics:
      scrape:
        url: %s/metrics
        labels: {handler: /work}
        interval: 1s
    windows: {assess: 40s, baseline: 10m}
    health_urls: [%s/health]
    approvers: {groups: [%s]}
`, slackemu.ChannelIncident, name, base, base, slackemu.GroupOnCall))

	// The history before the deploy: at least 15 scrapes of v1.
	wait.Every(t, 500*time.Millisecond, time.Minute, "15 background scrapes of v1", func() (bool, error) {
		hist, err := h.store.ScrapeHistory(ctx, "myapp")
		return err == nil && len(hist.Samples) >= 15, fmt.Errorf("%d samples, %v", len(hist.Samples), err)
	})
	// rollbot has run for less than the 40s window: a dry run says over
	// how many seconds it measured, about as long as it has run.
	h.slash(slackemu.UserAlice, "myapp --dry-run")
	dry := h.waitLong("dry-run assessment", textHas("Plan (dry run"))
	age := time.Since(started)
	got := measuredOver(t, dry.PlainText(), "Error rate")
	// The first scrape starts the history; the newest may be an interval
	// old, and the bot took a moment to start.
	if got > age || got < age-5*time.Second {
		t.Errorf("rollbot started %s ago and said it measured %s:\n%s", age.Round(time.Second), got, dry.PlainText())
	}
	t.Logf("rollbot started %s ago; the dry run says it measured %s", age.Round(time.Second), got)

	dockertest.Deploy(t, cli, name, v3)
	dockertest.WaitTasks(t, cli, name, v3, 1, true)
	waitVersion("v3")
	resp, err := http.PostForm(base+"/admin/mode", url.Values{"latency": {"300ms"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	failingSince := time.Now()

	// A failing version serving longer than the window.
	wait.Every(t, time.Second, 2*time.Minute, "v3 to fail for longer than the 40s window", func() (bool, error) {
		return time.Since(failingSince) > 44*time.Second, nil
	})
	h.slash(slackemu.UserAlice, `myapp --reason "5xx after the v3 deploy"`)
	a := h.waitLong("assessment", hasAction(handlers.ActConfirm))
	text := a.PlainText()
	wantAll(t, "assessment", text,
		"Proceed to rollback: Error rate, Latency p95",
		"100.00%",
		"baseline = p95 over ",
		"before the deploy at ",
		"(history shorter than 10m)",
		"Baseline p95 measured over ",
		"before the deploy), not the 10m window",
		"scrape history ",
		// The verdict from the same history: the errors began with v3.
		"after the deploy; no other services to compare → likely this deploy")
	for _, bad := range []string{"Inconclusive", "too little traffic", "configured baseline", "Error rate measured over the last"} {
		if strings.Contains(text, bad) {
			t.Errorf("assessment says %q:\n%s", bad, text)
		}
	}
	// The baseline is v1's few milliseconds, measured before the deploy.
	if m := regexp.MustCompile(`\(([\d.]+)× baseline (\d+) ms\)`).FindStringSubmatch(text); m == nil {
		t.Errorf("no measured p95 against the baseline in:\n%s", text)
	} else if b, _ := strconv.Atoi(m[2]); b > 50 {
		t.Errorf("baseline p95 %s ms, want v1's few ms", m[2])
	}
	t.Logf("assessment:\n%s", text)
}
