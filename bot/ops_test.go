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

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"

	"rollbot/handlers"
	"rollbot/state"
	"rollbot/testkit/redistest"
	"rollbot/testkit/slackemu"
	"rollbot/testkit/wait"
)

// opsBot is a bot with its ops listener, against the local Slack server
// and a redis-server process of its own.
type opsBot struct {
	t     *testing.T
	emu   *slackemu.Server
	redis *redistest.Standalone
	bot   *Bot
	base  string // http://127.0.0.1:PORT
}

func startOpsBot(t *testing.T) *opsBot {
	t.Helper()
	emu, err := slackemu.New(slackemu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	rp := redistest.Server(t)
	opt, _ := redis.ParseURL(rp.URL)
	// Short timeouts and no retries: a stopped Redis shows at once.
	opt.MaxRetries, opt.DialTimeout = -1, 500*time.Millisecond
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	svc, _ := simService(t, "myapp", 20*time.Millisecond)
	other, _ := simService(t, "billing", 20*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	b, err := New(ctx, Options{
		Env:      Env{BotToken: slackemu.BotToken, AppToken: slackemu.AppToken, APIURL: emu.APIURL()},
		Redis:    rdb,
		Prefix:   "ops",
		Services: []*handlers.Service{svc, other},
		Engine:   fastEngine(),
		Log:      slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		OpsAddr:  "127.0.0.1:0",
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("bot did not stop within 15s")
		}
	})
	return &opsBot{t: t, emu: emu, redis: rp, bot: b, base: "http://" + b.OpsAddr()}
}

// get answers status and body of an ops endpoint.
func (o *opsBot) get(path string) (int, string) {
	o.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, o.base+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		o.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		o.t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

// waitStatus polls path until it answers want, and returns the body.
func (o *opsBot) waitStatus(path string, want int) string {
	o.t.Helper()
	var body string
	wait.For(o.t, 15*time.Second, fmt.Sprintf("GET %s to answer %d", path, want), func() (bool, error) {
		var code int
		code, body = o.get(path)
		return code == want, fmt.Errorf("GET %s = %d %q", path, code, body)
	})
	return body
}

// metrics scrapes /metrics and parses the text format.
func (o *opsBot) metrics() map[string]*dto.MetricFamily {
	o.t.Helper()
	code, body := o.get("/metrics")
	if code != http.StatusOK {
		o.t.Fatalf("GET /metrics = %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		o.t.Fatalf("/metrics is not Prometheus text format: %v\n%s", err, body)
	}
	return fams
}

// value is the value of a counter or gauge with the given labels (0 when
// the series does not exist yet).
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f, ok := fams[name]
	if !ok {
		return 0
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// waitMetric polls /metrics until cond holds for the value of name.
func (o *opsBot) waitMetric(what string, cond func(float64) bool, name string, labels ...string) float64 {
	o.t.Helper()
	var v float64
	wait.For(o.t, 15*time.Second, what, func() (bool, error) {
		v = value(o.metrics(), name, labels...)
		return cond(v), fmt.Errorf("%s%v = %v", name, labels, v)
	})
	return v
}

func (o *opsBot) slash(text string) {
	o.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := o.emu.SlashCommand(ctx, slackemu.UserAlice, slackemu.ChannelIncident, "/rollback", text); err != nil {
		o.t.Fatalf("/rollback %s: %v", text, err)
	}
	if _, err := o.emu.WaitForMessage(ctx, func(m slackemu.Message) bool { return strings.Contains(m.PlainText(), text) && len(m.ActionIDs()) > 0 }); err != nil {
		o.t.Fatalf("assessment of %s: %v", text, err)
	}
}

// callsTo counts the emulator's record of method calls (429s included).
func (o *opsBot) callsTo(method string) (all, limited int) {
	for _, c := range o.emu.CallsTo(method) {
		all++
		if c.Error == "ratelimited" {
			limited++
		}
	}
	return all, limited
}

func TestOpsHealthAndReadiness(t *testing.T) {
	light(t)
	o := startOpsBot(t)
	if code, body := o.get("/healthz"); code != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if body := o.waitStatus("/readyz", http.StatusOK); strings.TrimSpace(body) != "ready" {
		t.Errorf("/readyz body %q", body)
	}
	if v := value(o.metrics(), "rollbot_socketmode_connected"); v != 1 {
		t.Errorf("rollbot_socketmode_connected = %v, want 1", v)
	}

	// Slack drops the connection and refuses new ones for a while: not
	// ready, then ready again once it lets the bot back in.
	o.emu.FailMethod("apps.connections.open", "internal_error", -1)
	o.emu.DropConnections()
	body := o.waitStatus("/readyz", http.StatusServiceUnavailable)
	if !strings.Contains(body, "slack: socket mode not connected") || strings.Contains(body, "redis") {
		t.Errorf("/readyz while Slack is away: %q", body)
	}
	if code, _ := o.get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz while Slack is away = %d, want 200 (the process is alive)", code)
	}
	o.emu.FailMethod("apps.connections.open", "", 0)
	o.waitStatus("/readyz", http.StatusOK)
	o.waitMetric("reconnect counted", func(v float64) bool { return v == 1 }, "rollbot_socketmode_reconnects_total")

	// redis-server stops: not ready, the failed PINGs are counted.
	before := value(o.metrics(), "rollbot_redis_errors_total", "command", "ping")
	o.redis.Kill()
	body = o.waitStatus("/readyz", http.StatusServiceUnavailable)
	if !strings.Contains(body, "redis: no answer to PING") || strings.Contains(body, "slack") || strings.Contains(body, "127.0.0.1") {
		t.Errorf("/readyz with redis-server stopped: %q", body)
	}
	o.waitMetric("failed PINGs counted", func(v float64) bool { return v > before }, "rollbot_redis_errors_total", "command", "ping")
	if code, _ := o.get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz with redis-server stopped = %d, want 200", code)
	}
}

func TestOpsMetricsCountSlackCalls(t *testing.T) {
	light(t)
	o := startOpsBot(t)
	o.waitStatus("/readyz", http.StatusOK)
	if v := value(o.metrics(), "rollbot_slack_api_calls_total", "method", "chat.postMessage"); v != 0 {
		t.Fatalf("chat.postMessage counted %v times before any command", v)
	}

	o.slash("myapp")
	posts, _ := o.callsTo("chat.postMessage")
	if posts == 0 {
		t.Fatal("the command made no chat.postMessage call")
	}
	// Every call the local Slack server saw is counted, no more.
	o.waitMetric("calls counted", func(v float64) bool { return v >= float64(posts) }, "rollbot_slack_api_calls_total", "method", "chat.postMessage")

	// Slack answers the next post with 429: the bot waits Retry-After,
	// posts again, and the 429 is counted as one rate limit and one error.
	o.emu.RateLimit("chat.postMessage", time.Second, 1)
	o.slash("billing")
	all, limited := o.callsTo("chat.postMessage")
	if limited != 1 {
		t.Fatalf("the local Slack server answered %d 429s, want 1", limited)
	}
	o.waitMetric("429 counted", func(v float64) bool { return v == 1 }, "rollbot_slack_api_ratelimited_total", "method", "chat.postMessage")
	o.waitMetric("calls counted", func(v float64) bool { return v == float64(all) }, "rollbot_slack_api_calls_total", "method", "chat.postMessage")
	if v := value(o.metrics(), "rollbot_slack_api_errors_total", "method", "chat.postMessage"); v != 1 {
		t.Errorf("rollbot_slack_api_errors_total{chat.postMessage} = %v, want 1 (the 429)", v)
	}
	if v := value(o.metrics(), "rollbot_slack_api_ratelimited_total", "method", "chat.update"); v != 0 {
		t.Errorf("429 counted against chat.update: %v", v)
	}
}

func TestOpsEngineMetrics(t *testing.T) {
	light(t)
	m := NewMetrics()
	m.RollbackFinished("verified")
	m.RollbackFinished("verified")
	m.RollbackFinished("failed")
	m.StepDone("rollback", 3*time.Second)
	m.LeaseTakeover()
	var nilMetrics *Metrics // a bot without metrics records nothing and does not panic
	nilMetrics.RollbackFinished("verified")
	nilMetrics.StepDone("verify", time.Second)
	nilMetrics.LeaseTakeover()

	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		byName[f.GetName()] = f
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"rollbot_rollbacks_total", []string{"outcome", "verified"}, 2},
		{"rollbot_rollbacks_total", []string{"outcome", "failed"}, 1},
		{"rollbot_lease_takeovers_total", nil, 1},
	} {
		if v := value(byName, c.name, c.labels...); v != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, v, c.want)
		}
	}
	h := byName["rollbot_step_duration_seconds"]
	if h == nil || len(h.GetMetric()) != 1 || h.GetMetric()[0].GetHistogram().GetSampleCount() != 1 || h.GetMetric()[0].GetHistogram().GetSampleSum() != 3 {
		t.Errorf("rollbot_step_duration_seconds: %v", h)
	}
}

func TestOpsAddrFromOS(t *testing.T) {
	for _, c := range []struct {
		env, want string
		bad       bool
	}{
		{"", DefaultOpsAddr, false},
		{"off", "", false},
		{"OFF", "", false},
		{"127.0.0.1:9191", "127.0.0.1:9191", false},
		{":8080", ":8080", false},
		{"9090", "", true},
	} {
		t.Run(c.env, func(t *testing.T) {
			t.Setenv(OpsAddrVar, c.env)
			got, err := OpsAddrFromOS()
			if (err != nil) != c.bad || got != c.want {
				t.Errorf("%s=%q: %q, %v", OpsAddrVar, c.env, got, err)
			}
			if err != nil && !strings.Contains(err.Error(), OpsAddrVar) {
				t.Errorf("error does not name %s: %v", OpsAddrVar, err)
			}
		})
	}
}

func TestRedisHookCountsFailures(t *testing.T) {
	light(t)
	rdb, prefix := redistest.Client(t)
	m := NewMetrics()
	rdb.AddHook(m.RedisHook())
	ctx := t.Context()
	if err := rdb.Get(ctx, prefix+":missing").Err(); err != redis.Nil {
		t.Fatalf("get of a missing key: %v", err)
	}
	if err := rdb.Do(ctx, "nosuchcommand").Err(); err == nil {
		t.Fatal("an unknown command succeeded")
	}
	if err := rdb.Incr(ctx, prefix+":n").Err(); err != nil {
		t.Fatal(err)
	}
	// A pipeline: one good command, one missing key, one wrong type.
	pipe := rdb.Pipeline()
	pipe.Set(ctx, prefix+":s", "text", time.Minute)
	pipe.Get(ctx, prefix+":missing")
	pipe.Incr(ctx, prefix+":s")
	if _, err := pipe.Exec(ctx); err == nil {
		t.Fatal("a pipeline with INCR of a string succeeded")
	}
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		byName[f.GetName()] = f
	}
	got := map[string]float64{}
	for _, mm := range byName["rollbot_redis_errors_total"].GetMetric() {
		got[mm.GetLabel()[0].GetValue()] = mm.GetCounter().GetValue()
	}
	if len(got) != 2 || got["nosuchcommand"] != 1 || got["incr"] != 1 {
		t.Errorf("redis errors by command %v, want nosuchcommand 1 and incr 1 (a missing key is no error)", got)
	}
}

// The engine's own metrics are wired to /metrics: a real rollback through
// the local Slack server counts its outcome and each working step's time.
func TestOpsMetricsCountARealRollback(t *testing.T) {
	light(t)
	o := startOpsBot(t)
	o.waitStatus("/readyz", http.StatusOK)
	if v := value(o.metrics(), "rollbot_rollbacks_total", "outcome", string(state.Completed)); v != 0 {
		t.Fatalf("a rollback counted before any: %v", v)
	}
	o.slash("myapp")
	var assessment slackemu.Message
	for _, m := range o.emu.Messages(slackemu.ChannelIncident) {
		if slices.Contains(m.ActionIDs(), handlers.ActConfirm) {
			assessment = m
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := o.emu.ClickButton(ctx, slackemu.UserBob, slackemu.ChannelIncident, assessment.TS, handlers.ActConfirm); err != nil {
		t.Fatal(err)
	}
	o.waitMetric("the completed rollback counted", func(v float64) bool { return v == 1 }, "rollbot_rollbacks_total", "outcome", string(state.Completed))
	// The last step's time is recorded as the step returns, just after
	// the outcome: wait for every step's.
	working := []state.Status{state.Assessing, state.Stopping, state.RollingBack, state.Verifying}
	steps := map[string]uint64{}
	wait.For(t, 15*time.Second, "every working step's time on /metrics", func() (bool, error) {
		clear(steps)
		for _, m := range o.metrics()["rollbot_step_duration_seconds"].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "step" {
					steps[l.GetValue()] = m.GetHistogram().GetSampleCount()
				}
			}
		}
		for _, st := range working {
			if steps[string(st)] == 0 {
				return false, fmt.Errorf("steps %v", steps)
			}
		}
		return true, nil
	})
	for _, st := range working {
		if steps[string(st)] != 1 {
			t.Errorf("rollbot_step_duration_seconds{step=%q} count %d, want 1 (all: %v)", st, steps[string(st)], steps)
		}
	}
}
