package bot

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"rollbot/handlers"
	"rollbot/platforms"
	"rollbot/state"
	"rollbot/testkit/dockertest"
	"rollbot/testkit/redistest"
	"rollbot/testkit/slackemu"
	"rollbot/testkit/wait"

	"rollbot/testkit/nettest"

	"rollbot/testkit/logtest"
)

// newConfigHarness is newHarness for services built from YAML config the
// way `rollbot` builds them (ParseConfig, Validate, BuildServices), with
// the config's engine timings and the same Redis store as rollbot's own
// deployment record.
func newConfigHarness(t *testing.T, yaml string) (*harness, []*handlers.Service) {
	t.Helper()
	cfg, err := ParseConfig([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	emu, err := slackemu.New(slackemu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	rdb, prefix := redistest.Client(t)
	h := &harness{t: t, emu: emu, store: state.New(rdb, prefix), logs: &logtest.Buffer{}}
	log := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	services, err := BuildServices(context.Background(), cfg, h.store, log)
	if err != nil {
		t.Fatalf("build services: %v", err)
	}
	eng := cfg.EngineOptions()
	eng.UpdateInterval = 200 * time.Millisecond
	h.opts = Options{
		Env:      Env{BotToken: slackemu.BotToken, AppToken: slackemu.AppToken, APIURL: emu.APIURL()},
		Redis:    rdb,
		Prefix:   prefix,
		Services: services,
		Engine:   eng,
		Log:      log,
	}
	h.start()
	return h, services
}

// waitLong is waitFor with a deadline for steps that act on a real engine
// (a shared, busy machine: the deadline is generous, nothing is timed).
func (h *harness) waitLong(what string, pred func(slackemu.Message) bool) slackemu.Message {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	m, err := h.emu.WaitForMessage(ctx, pred)
	if err != nil {
		h.t.Fatalf("waiting for %s: %v\nmessages:\n%s\nlog:\n%s", what, err, h.dump(), h.logs.String())
	}
	return m
}

// httpGet fetches url and returns the status and the trimmed body.
func httpGet(url string) (int, string, error) {
	hc := &http.Client{Timeout: 3 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

// waitWorkServed waits until the sample service at base has counted at
// least n /work requests since it started (its own traffic), so that the
// assessment measures the running version, not a process seconds old.
func waitWorkServed(t *testing.T, base string, n float64) {
	t.Helper()
	wait.Every(t, 200*time.Millisecond, 2*time.Minute, fmt.Sprintf("%v /work requests served", n), func() (bool, error) {
		code, body, err := httpGet(base + "/metrics")
		if err != nil || code != 200 {
			return false, fmt.Errorf("/metrics: %d %v", code, err)
		}
		var sum float64
		for _, line := range strings.Split(body, "\n") {
			if !strings.HasPrefix(line, "http_requests_total{") || !strings.Contains(line, `handler="/work"`) {
				continue
			}
			var v float64
			if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
				sum += v
			}
		}
		return sum >= n, fmt.Errorf("%g /work requests served, want %g", sum, n)
	})
}

// Sample images of the Docker end-to-end tests: v1 is good; v2 fails 30%
// of its requests and its /health, and has no HEALTHCHECK, so the engine
// runs it happily and only rollbot's own checks (metrics scraped from the
// service, health over HTTP through the published port) see that it is bad.
var (
	e2eGood = dockertest.Variant{Tag: "e2e-v1", Version: "v1"}
	e2eBad  = dockertest.Variant{Tag: "e2e-v2", Version: "v2", ErrorRatio: "0.3", FailHealth: true, NoHealthcheck: true}
)

// TestSwarmRollbackThroughSlack: a swarm service on the engine of this
// machine runs v1, then v2 is deployed. /rollback myapp in the local Slack
// server assesses it from the service's own /metrics and health, an
// on-call engineer confirms, the adapter rolls the service back (the
// engine's native rollback to the previous spec) and waits for healthy
// tasks, and the verification re-reads metrics and health until
// "Rollback verified". The service is configured through YAML, as rollbot
// is in production.
func TestSwarmRollbackThroughSlack(t *testing.T) {
	heavy(t)
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
	v2 := dockertest.MustImage(t, cli, e2eBad)

	port := uint32(nettest.FreePort(t))
	name := dockertest.ServiceWith(t, cli, v1, dockertest.ServiceOptions{
		PublishedPort: port, Env: []string{"SAMPLEAPP_SELF_LOAD=20"},
	})
	dockertest.Deploy(t, cli, name, v2)
	dockertest.WaitTasks(t, cli, name, v2, 1, true)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	wait.Every(t, 200*time.Millisecond, time.Minute, "v2 to answer", func() (bool, error) {
		code, body, err := httpGet(base + "/version")
		return err == nil && code == 200 && body == "v2", fmt.Errorf("/version: %d %q %v", code, body, err)
	})
	waitWorkServed(t, base, 40)

	h, services := newConfigHarness(t, fmt.Sprintf(`
incident_channels: [%s]
verify_timeout: 3m
verify_soak: 2s              # every check must hold 2s (soak_e2e_test.go proves the soak)
verify_interval: 500ms
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
    thresholds:
      baseline_p95: 250ms
    health_urls: [%s/health]
    approvers: {groups: [%s]}
`, slackemu.ChannelIncident, name, base, base, slackemu.GroupOnCall))
	if len(services) != 1 || services[0].Platform.Kind() != "swarm" || services[0].Metrics == nil || !services[0].HasHealth {
		t.Fatalf("services built from the config: %+v", services)
	}

	h.slash(slackemu.UserAlice, `myapp --reason "5xx after the v2 deploy"`)
	a := h.waitLong("assessment", hasAction(handlers.ActConfirm))
	text := a.PlainText()
	wantAll(t, "assessment", text, "Bad version:* e2e-v2 ("+v2+")",
		"Last known good:* e2e-v1 ("+v1+")",
		"scrape "+base+"/metrics")
	wantProceed(t, text, []string{"Error rate", "Failed readiness"}, "Latency p95")
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	// No smoke test: the critical user flows are a check by hand.
	answerChecksByHand(t, h.emu, slackemu.UserBob, 1, 4*time.Minute)
	h.waitLong("verified", textHas("Rollback verified"))
	h.waitLong("post-rollback actions", textHas("Post-rollback actions"))

	// The service runs v1 again: spec, tasks, and what the task answers.
	svc, err := cli.ServiceInspect(ctx, name, client.ServiceInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := svc.Service.Spec.TaskTemplate.ContainerSpec.Image; got != v1 {
		t.Errorf("service spec runs %s after the rollback, want %s", got, v1)
	}
	tasks, err := cli.TaskList(ctx, client.TaskListOptions{Filters: make(client.Filters).Add("service", name).Add("desired-state", "running")})
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks.Items) != 1 || slices.ContainsFunc(tasks.Items, func(tk swarm.Task) bool {
		return tk.Status.State != swarm.TaskStateRunning || tk.Spec.ContainerSpec.Image != v1
	}) {
		t.Errorf("tasks meant to run after the rollback: %+v; want one running %s", tasks.Items, v1)
	}
	if code, body, err := httpGet(base + "/version"); err != nil || code != 200 || body != "v1" {
		t.Errorf("GET /version after the rollback: %d %q %v; want v1", code, body, err)
	}
	if code, _, err := httpGet(base + "/health"); err != nil || code != 200 {
		t.Errorf("GET /health after the rollback: %d %v", code, err)
	}

	// rollbot's record has both images; v2 is marked and refused from now on.
	dep, err := h.store.Deployed(ctx, "myapp")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(dep, func(r platforms.Revision) bool { return r.Artifact == v1 }) ||
		!slices.ContainsFunc(dep, func(r platforms.Revision) bool { return r.Artifact == v2 }) {
		t.Errorf("deployment record %+v lacks %s or %s", dep, v1, v2)
	}
	marks, err := h.store.Marks(ctx, "myapp")
	if err != nil || marks[v2].Incident == "" {
		t.Errorf("v2 not marked DO_NOT_DEPLOY: %v %v", marks, err)
	}
	// The checklist is posted while RB-1 still holds the service; it
	// gives it back when it completes.
	h.waitStatus("RB-1", state.Completed)
	h.slash(slackemu.UserAlice, "myapp --to e2e-v2")
	h.waitLong("refusal to roll back to v2", textHas("is marked DO_NOT_DEPLOY"))
}
