package prom

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"rollbot/platforms"
	"rollbot/testkit/promtest"

	"rollbot/testkit/nettest"

	"rollbot/testkit/platformtest"
)

func TestConfigValidate(t *testing.T) {
	t.Setenv("ROLLBOT_TEST_PROM_TOKEN_SET", "x")
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none means valid
	}{
		{"minimal", Config{URL: "http://prom:9090"}, nil},
		{"full", Config{URL: "https://prom.example/prometheus", Selector: `job="myapp"`, ErrorQuery: `sum(x{ {{.Selector}} }[{{.Window}}])`, Timeout: time.Second, MinRequests: 5, TokenEnv: "ROLLBOT_TEST_PROM_TOKEN_SET"}, nil},
		{"missing url", Config{}, []string{"url: required"}},
		{"bad scheme", Config{URL: "ftp://prom"}, []string{"url: scheme"}},
		{"credentials in url", Config{URL: "http://u:p@prom:9090"}, []string{"url: must not contain credentials"}},
		{"braces in selector", Config{URL: "http://prom", Selector: `{job="x"}`}, []string{"selector:"}},
		{"bad template", Config{URL: "http://prom", P95Query: "{{.Nope"}, []string{"p95_query: template"}},
		{"unknown field", Config{URL: "http://prom", RequestsQuery: "{{.Job}}"}, []string{"requests_query: template"}},
		{"negatives", Config{URL: "http://prom", Timeout: -1, MinRequests: -1}, []string{"timeout:", "min_requests:"}},
		{"token env unset", Config{URL: "http://prom", TokenEnv: "ROLLBOT_TEST_PROM_TOKEN_UNSET"}, []string{"token_env: environment variable ROLLBOT_TEST_PROM_TOKEN_UNSET is not set"}},
		{"token env bad name", Config{URL: "http://prom", TokenEnv: "a-b"}, []string{"token_env:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to contain %q", err, w)
				}
			}
			if _, nerr := New(tt.cfg, nil); nerr == nil {
				t.Errorf("New accepted a config that Validate rejects")
			}
		})
	}
}

func TestConfigYAML(t *testing.T) {
	in := `
url: http://prom:9090
selector: job="myapp"
error_query: 'sum(rate(errors_total{ {{.Selector}} }[{{.Window}}]))'
p95_query: 'x'
requests_query: 'y'
timeout: 3s
min_requests: 50
token_env: PROM_TOKEN
`
	var c Config
	if err := yaml.Unmarshal([]byte(in), &c); err != nil {
		t.Fatal(err)
	}
	want := Config{URL: "http://prom:9090", Selector: `job="myapp"`, ErrorQuery: `sum(rate(errors_total{ {{.Selector}} }[{{.Window}}]))`, P95Query: "x", RequestsQuery: "y", Timeout: 3 * time.Second, MinRequests: 50, TokenEnv: "PROM_TOKEN"}
	if c != want {
		t.Fatalf("decoded %+v\nwant    %+v", c, want)
	}
}

func TestQueries(t *testing.T) {
	tests := []struct {
		name, selector   string
		window           time.Duration
		errQ, p95Q, reqQ string
	}{
		{"selector", `job="myapp"`, 5 * time.Minute,
			`(sum(rate(http_requests_total{code=~"5..",job="myapp"}[5m])) or vector(0)) / sum(rate(http_requests_total{job="myapp"}[5m]))`,
			`histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{job="myapp"}[5m])))`,
			`sum(increase(http_requests_total{job="myapp"}[5m]))`},
		{"no selector", "", 90 * time.Second,
			`(sum(rate(http_requests_total{code=~"5..",}[1m30s])) or vector(0)) / sum(rate(http_requests_total{}[1m30s]))`,
			`histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{}[1m30s])))`,
			`sum(increase(http_requests_total{}[1m30s]))`},
		{"sub-second window", `job="a",env="prod"`, 1500 * time.Millisecond,
			`(sum(rate(http_requests_total{code=~"5..",job="a",env="prod"}[1s500ms])) or vector(0)) / sum(rate(http_requests_total{job="a",env="prod"}[1s500ms]))`,
			`histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{job="a",env="prod"}[1s500ms])))`,
			`sum(increase(http_requests_total{job="a",env="prod"}[1s500ms]))`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(Config{URL: "http://prom:9090", Selector: tt.selector}, nil)
			if err != nil {
				t.Fatal(err)
			}
			e, p, r, err := a.Queries(tt.window)
			if err != nil {
				t.Fatal(err)
			}
			if e != tt.errQ || p != tt.p95Q || r != tt.reqQ {
				t.Fatalf("Queries(%s) =\n%s\n%s\n%s\nwant\n%s\n%s\n%s", tt.window, e, p, r, tt.errQ, tt.p95Q, tt.reqQ)
			}
		})
	}
}

func newAdapter(t *testing.T, cfg Config, log *slog.Logger) *Adapter {
	t.Helper()
	a, err := New(cfg, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

// TestPrometheus runs Debian's Prometheus scraping the sample service
// every second: one instance under self-load whose failure mode is switched
// at run time, and one without traffic.
func TestPrometheus(t *testing.T) {
	const window = 10 * time.Second
	bin := promtest.BuildSampleApp(t)
	loaded := promtest.StartSampleApp(t, bin, "-self-load", "50")
	idle := promtest.StartSampleApp(t, bin)
	p := promtest.Start(t, promtest.Target{Job: "loaded", Addr: loaded.Addr}, promtest.Target{Job: "idle", Addr: idle.Addr})
	ctx := context.Background()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a := newAdapter(t, Config{URL: p.URL, Selector: `job="loaded"`, MinRequests: 50}, log)
	wantSource := "prometheus " + p.Addr

	// crossCheck evaluates m.Query itself, through Prometheus's plain HTTP
	// API, and demands the same number: the Query shown is the one evaluated.
	crossCheck := func(t *testing.T, m platforms.Measurement, at time.Time) {
		t.Helper()
		res, err := p.Query(ctx, m.Query, at)
		if err != nil {
			t.Fatalf("cross-check query: %v", err)
		}
		if len(res) != 1 || math.Abs(res[0].Value-m.Value) > 1e-9 {
			t.Fatalf("Query %q evaluated directly = %+v, adapter said %v", m.Query, res, m.Value)
		}
	}

	// The window must lie after the first scrape, or rate() extrapolates
	// from a partial window.
	first := p.WaitScrapedAfter(t, "loaded", time.Time{}, time.Minute)
	good := p.WaitScrapedAfter(t, "loaded", first.Add(window+time.Second), time.Minute)
	var baselineP95 float64

	t.Run("good build", func(t *testing.T) {
		m, err := a.ErrorRatio(ctx, good.Add(-window), good)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("error ratio %v over %v requests: %s", m.Value, m.Requests, m.Query)
		wantQ := `(sum(rate(http_requests_total{code=~"5..",job="loaded"}[10s])) or vector(0)) / sum(rate(http_requests_total{job="loaded"}[10s]))`
		if m.NoData || m.Value != 0 || m.Query != wantQ || m.Source != wantSource {
			t.Fatalf("ErrorRatio = %+v, want value 0, query %s, source %s", m, wantQ, wantSource)
		}
		if m.Requests < 350 { // 50 rps over 10s
			t.Fatalf("Requests = %v, want about 500", m.Requests)
		}
		crossCheck(t, m, good)

		p95, err := a.LatencyP95(ctx, good.Add(-window), good)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("p95 %v: %s", p95.Value, p95.Query)
		if p95.NoData || p95.Value <= 0 || p95.Value > 0.05 {
			t.Fatalf("LatencyP95 = %+v, want a few milliseconds", p95)
		}
		crossCheck(t, p95, good)
		baselineP95 = p95.Value
	})

	switchAt := time.Now()
	loaded.SetMode(t, "error_ratio", "0.3", "latency", "300ms")
	bad := p.WaitScrapedAfter(t, "loaded", switchAt.Add(window+time.Second), time.Minute)

	t.Run("bad build", func(t *testing.T) {
		m, err := a.ErrorRatio(ctx, bad.Add(-window), bad)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("error ratio %v over %v requests", m.Value, m.Requests)
		// ~500 requests at 30%: one standard deviation is 0.02.
		if m.NoData || math.Abs(m.Value-0.3) > 0.08 {
			t.Fatalf("ErrorRatio = %+v, want about 0.3", m)
		}
		crossCheck(t, m, bad)

		p95, err := a.LatencyP95(ctx, bad.Add(-window), bad)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("p95 %v (baseline %v)", p95.Value, baselineP95)
		if p95.NoData || p95.Value <= 2*baselineP95 || p95.Value < 0.25 || p95.Value > 0.5 {
			t.Fatalf("LatencyP95 = %+v, want in the 0.25-0.5s bucket and > 2x baseline %v", p95, baselineP95)
		}
		crossCheck(t, p95, bad)
	})

	t.Run("baseline before the deploy, asked afterwards", func(t *testing.T) {
		er, err := a.ErrorRatio(ctx, switchAt.Add(-window), switchAt)
		if err != nil {
			t.Fatal(err)
		}
		p95, err := a.LatencyP95(ctx, switchAt.Add(-window), switchAt)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("baseline error ratio %v, p95 %v", er.Value, p95.Value)
		if er.NoData || er.Value != 0 || p95.NoData || p95.Value > 0.05 {
			t.Fatalf("baseline = %+v / %+v, want 0 errors and a few ms", er, p95)
		}
	})

	t.Run("over time", func(t *testing.T) {
		const step = time.Second
		s, err := a.ErrorRatioRange(ctx, switchAt.Add(-window), bad, step, 3*time.Second)
		if err != nil || s.NoData || s.Source != wantSource {
			t.Fatalf("ErrorRatioRange = %+v, %v", s, err)
		}
		wantQ := `(sum(rate(http_requests_total{code=~"5..",job="loaded"}[3s])) or vector(0)) / sum(rate(http_requests_total{job="loaded"}[3s]))`
		if s.Query != wantQ {
			t.Fatalf("query %s, want %s", s.Query, wantQ)
		}
		var before, after int
		for _, p := range s.Points {
			switch {
			case p.At.Before(switchAt.Add(-time.Second)):
				before++
				if p.Value != 0 {
					t.Fatalf("error ratio %v at %s, before the switch at %s", p.Value, p.At.Format(time.TimeOnly), switchAt.Format(time.TimeOnly))
				}
			case p.At.After(switchAt.Add(5 * time.Second)):
				after++
				if p.Value < 0.1 || p.Value > 0.5 {
					t.Fatalf("error ratio %v at %s, after the switch at %s", p.Value, p.At.Format(time.TimeOnly), switchAt.Format(time.TimeOnly))
				}
			}
		}
		if before < 5 || after < 5 {
			t.Fatalf("%d points before the switch, %d after: %+v", before, after, s.Points)
		}
		p95, err := a.LatencyP95Range(ctx, switchAt.Add(-window), bad, step, 3*time.Second)
		if err != nil || p95.NoData || p95.Points[len(p95.Points)-1].Value < 0.25 {
			t.Fatalf("LatencyP95Range = %+v, %v", p95, err)
		}

		idle, err := a.WithSelector(`job="idle"`)
		if err != nil {
			t.Fatal(err)
		}
		quiet, err := idle.ErrorRatioRange(ctx, switchAt.Add(-window), bad, step, 3*time.Second)
		if err != nil || !quiet.NoData || !(strings.Contains(quiet.Reason, "no requests") || strings.Contains(quiet.Reason, "returned no series")) {
			t.Fatalf("a service without traffic: %+v, %v", quiet, err)
		}
		if _, err := a.WithSelector(`{job="x"}`); err == nil {
			t.Fatal("a selector with braces was taken")
		}
	})

	t.Run("too little traffic", func(t *testing.T) {
		strict := newAdapter(t, Config{URL: p.URL, Selector: `job="loaded"`, MinRequests: 100000}, log)
		m, err := strict.ErrorRatio(ctx, bad.Add(-window), bad)
		if err != nil {
			t.Fatal(err)
		}
		if !m.NoData || !strings.Contains(m.Reason, "too little traffic") || !strings.Contains(m.Reason, "min_requests 100000") || m.Requests < 200 {
			t.Fatalf("ErrorRatio = %+v, want NoData for too little traffic with the request count", m)
		}
	})

	t.Run("no traffic", func(t *testing.T) {
		quiet := newAdapter(t, Config{URL: p.URL, Selector: `job="idle"`}, log)
		now := time.Now()
		for _, f := range []func(context.Context, time.Time, time.Time) (platforms.Measurement, error){quiet.ErrorRatio, quiet.LatencyP95} {
			m, err := f(ctx, now.Add(-window), now)
			if err != nil {
				t.Fatal(err)
			}
			if !m.NoData || !strings.Contains(m.Reason, "no requests in the 10s window") || m.Value != 0 {
				t.Fatalf("measurement = %+v, want NoData with reason", m)
			}
		}
	})

	t.Run("rejected query", func(t *testing.T) {
		broken := newAdapter(t, Config{URL: p.URL, Selector: `job="loaded"`, ErrorQuery: `sum(rate(http_requests_total{ {{.Selector}} }[{{.Window}}])`}, log)
		_, err := broken.ErrorRatio(ctx, bad.Add(-window), bad)
		if msg := platformtest.UserMessage(t, err); !strings.Contains(msg, "Prometheus at "+p.Addr+" rejected the error ratio query") {
			t.Fatalf("user message %q", msg)
		}
	})

	t.Run("query not aggregated", func(t *testing.T) {
		perCode := newAdapter(t, Config{URL: p.URL, Selector: `job="loaded"`, ErrorQuery: `sum by (code) (rate(http_requests_total{ {{.Selector}} }[{{.Window}}]))`}, log)
		_, err := perCode.ErrorRatio(ctx, bad.Add(-window), bad)
		if msg := platformtest.UserMessage(t, err); !strings.Contains(msg, "returned 2 series") {
			t.Fatalf("user message %q", msg)
		}
	})

	t.Run("bearer token", func(t *testing.T) {
		const secret = "s3cret-token-4f9a"
		target, _ := url.Parse(p.URL)
		proxy := httputil.NewSingleHostReverseProxy(target)
		var seen atomic.Int32
		auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer "+secret {
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			seen.Add(1)
			proxy.ServeHTTP(w, r)
		}))
		defer auth.Close()
		t.Setenv("ROLLBOT_TEST_PROM_TOKEN", secret)
		withToken := newAdapter(t, Config{URL: auth.URL, Selector: `job="loaded"`, TokenEnv: "ROLLBOT_TEST_PROM_TOKEN"}, log)
		m, err := withToken.ErrorRatio(ctx, bad.Add(-window), bad)
		if err != nil {
			t.Fatal(err)
		}
		if seen.Load() != 2 || m.NoData || math.Abs(m.Value-0.3) > 0.08 {
			t.Fatalf("through the authenticating proxy: %d authorised requests, %+v", seen.Load(), m)
		}
		if strings.Contains(m.Source, secret) || strings.Contains(m.Query, secret) {
			t.Fatalf("measurement leaks the token: %+v", m)
		}

		const wrong = "wrong-token-77c1"
		t.Setenv("ROLLBOT_TEST_PROM_TOKEN", wrong)
		withWrong := newAdapter(t, Config{URL: auth.URL, Selector: `job="loaded"`, TokenEnv: "ROLLBOT_TEST_PROM_TOKEN"}, log)
		_, err = withWrong.LatencyP95(ctx, bad.Add(-window), bad)
		msg := platformtest.UserMessage(t, err)
		if !strings.Contains(msg, "refused the request (HTTP 401); check the token in $ROLLBOT_TEST_PROM_TOKEN") {
			t.Fatalf("user message %q", msg)
		}
		for _, s := range []string{secret, wrong} {
			if strings.Contains(err.Error(), s) || strings.Contains(logs.String(), s) {
				t.Fatalf("token %q leaked into the error or the log", s)
			}
		}
	})

	t.Run("prometheus down", func(t *testing.T) {
		p.Stop(t)
		_, err := a.ErrorRatio(ctx, bad.Add(-window), bad)
		msg := platformtest.UserMessage(t, err)
		if msg != "Prometheus at "+p.Addr+" is not reachable (connection refused)" {
			t.Fatalf("user message %q", msg)
		}
	})
}

func TestUnreachable(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	t.Run("closed port", func(t *testing.T) {
		addr := nettest.ClosedAddr(t)
		a := newAdapter(t, Config{URL: "http://" + addr}, nil)
		m, err := a.ErrorRatio(ctx, now.Add(-time.Minute), now)
		if msg := platformtest.UserMessage(t, err); msg != "Prometheus at "+addr+" is not reachable (connection refused)" {
			t.Fatalf("user message %q", msg)
		}
		if m.Source != "prometheus "+addr {
			t.Fatalf("Source = %q", m.Source)
		}
	})
	t.Run("hangs past the timeout", func(t *testing.T) {
		addr := promtest.SilentAddr(t)
		a := newAdapter(t, Config{URL: "http://" + addr, Timeout: 300 * time.Millisecond}, nil)
		_, err := a.LatencyP95(ctx, now.Add(-time.Minute), now)
		if msg := platformtest.UserMessage(t, err); msg != "Prometheus at "+addr+" did not answer within 300ms" {
			t.Fatalf("user message %q (%v)", msg, err)
		}
	})
	t.Run("caller deadline shorter than timeout", func(t *testing.T) {
		addr := promtest.SilentAddr(t)
		a := newAdapter(t, Config{URL: "http://" + addr, Timeout: time.Minute}, nil)
		ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		_, err := a.ErrorRatio(ctx, now.Add(-time.Minute), now)
		msg := platformtest.UserMessage(t, err)
		if !strings.HasPrefix(msg, "Prometheus at "+addr+" did not answer within ") || strings.Contains(msg, "1m") {
			t.Fatalf("user message %q, want the caller's deadline, not the 1m timeout", msg)
		}
	})
	t.Run("empty window", func(t *testing.T) {
		a := newAdapter(t, Config{URL: "http://127.0.0.1:1"}, nil)
		if _, err := a.ErrorRatio(ctx, now, now); err == nil {
			t.Fatal("empty window accepted")
		}
	})
}
