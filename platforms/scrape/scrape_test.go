package scrape

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"rollbot/platforms"
	"rollbot/testkit/promtest"

	"rollbot/testkit/nettest"

	"rollbot/testkit/platformtest"
)

func TestConfigValidate(t *testing.T) {
	t.Setenv("ROLLBOT_TEST_SCRAPE_TOKEN_SET", "x")
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"minimal", Config{URL: "http://app:8080/metrics"}, nil},
		{"full", Config{URL: "https://app/metrics", RequestsMetric: "reqs_total", CodeLabel: "status", DurationMetric: "lat_seconds", Labels: map[string]string{"handler": "/work"}, Timeout: time.Second, Interval: time.Second, MinRequests: 3, TokenEnv: "ROLLBOT_TEST_SCRAPE_TOKEN_SET"}, nil},
		{"missing url", Config{}, []string{"url: required"}},
		{"bad scheme", Config{URL: "file:///metrics"}, []string{"url: scheme"}},
		{"credentials", Config{URL: "http://u:p@app/metrics"}, []string{"url: must not contain credentials"}},
		{"bad names", Config{URL: "http://app/metrics", RequestsMetric: "a-b", DurationMetric: "1x", CodeLabel: "c.d", Labels: map[string]string{"x y": "1"}}, []string{"requests_metric:", "duration_metric:", "code_label:", "labels:"}},
		{"negatives", Config{URL: "http://app/metrics", Timeout: -1, Interval: -1, MinRequests: -1, History: -1}, []string{"timeout:", "interval:", "min_requests:", "history: must not be negative"}},
		{"history shorter than the interval", Config{URL: "http://app/metrics", Interval: 10 * time.Second, History: 5 * time.Second}, []string{"history: must be at least the scrape interval"}},
		{"history too long", Config{URL: "http://app/metrics", History: 48 * time.Hour}, []string{"history: at most 24h"}},
		{"token env unset", Config{URL: "http://app/metrics", TokenEnv: "ROLLBOT_TEST_SCRAPE_TOKEN_UNSET"}, []string{"token_env: environment variable ROLLBOT_TEST_SCRAPE_TOKEN_UNSET is not set"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to contain %q", err, w)
				}
			}
			if _, nerr := New(tt.cfg, nil); nerr == nil {
				t.Error("New accepted a config that Validate rejects")
			}
		})
	}
}

func TestConfigYAML(t *testing.T) {
	in := `
url: http://app:8080/metrics
requests_metric: reqs_total
code_label: status
duration_metric: latency_seconds
labels: {handler: /work}
timeout: 2s
interval: 500ms
min_requests: 20
token_env: METRICS_TOKEN
history: 2h
`
	var c Config
	if err := yaml.Unmarshal([]byte(in), &c); err != nil {
		t.Fatal(err)
	}
	want := Config{URL: "http://app:8080/metrics", RequestsMetric: "reqs_total", CodeLabel: "status", DurationMetric: "latency_seconds", Labels: map[string]string{"handler": "/work"}, Timeout: 2 * time.Second, Interval: 500 * time.Millisecond, MinRequests: 20, TokenEnv: "METRICS_TOKEN", History: 2 * time.Hour}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("decoded %+v\nwant    %+v", c, want)
	}
}

func TestQuantile(t *testing.T) {
	inf := math.Inf(1)
	tests := []struct {
		name    string
		q       float64
		buckets map[float64]float64
		want    float64
	}{
		// All observations in (0.25, 0.5]: Prometheus's histogram_quantile
		// gave 0.4875 for the sample service at 300ms (see the prom tests).
		{"inside one bucket", 0.95, map[float64]float64{0.1: 0, 0.25: 0, 0.5: 100, inf: 100}, 0.4875},
		{"first bucket starts at 0", 0.5, map[float64]float64{0.01: 100, 0.1: 100, inf: 100}, 0.005},
		{"across buckets", 0.95, map[float64]float64{0.1: 50, 0.2: 90, 0.4: 100, inf: 100}, 0.2 + 0.2*(95-90)/10},
		{"rank in +Inf bucket", 0.95, map[float64]float64{0.1: 10, 0.2: 20, inf: 100}, 0.2},
		{"non-monotonic repaired", 0.5, map[float64]float64{0.1: 60, 0.2: 50, inf: 100}, 0.1 * 50 / 60},
		{"negative lowest bound", 0.01, map[float64]float64{-1: 5, 0: 10, inf: 10}, -1},
		{"no observations", 0.95, map[float64]float64{0.1: 0, inf: 0}, math.NaN()},
		{"no +Inf bucket", 0.95, map[float64]float64{0.1: 1, 0.2: 2}, math.NaN()},
		{"too few buckets", 0.95, map[float64]float64{inf: 3}, math.NaN()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := quantile(tt.q, tt.buckets)
			if math.IsNaN(tt.want) != math.IsNaN(got) || (!math.IsNaN(got) && math.Abs(got-tt.want) > 1e-12) {
				t.Fatalf("quantile(%v) = %v, want %v", tt.q, got, tt.want)
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

// TestSampleApp drives the sample service from the test, so the number of
// requests and of failures between two scrapes is known exactly.
func TestSampleApp(t *testing.T) {
	bin := promtest.BuildSampleApp(t)
	app := promtest.StartSampleApp(t, bin)
	ctx := context.Background()
	a := newAdapter(t, Config{URL: app.URL + "/metrics", Interval: 200 * time.Millisecond, MinRequests: 50}, nil)
	t0 := time.Now()
	since := func(t0 time.Time) (time.Time, time.Time) { return t0, time.Now() }
	if a.Source() != "scrape "+app.URL+"/metrics" {
		t.Fatalf("Source() = %q", a.Source())
	}

	t.Run("no traffic", func(t *testing.T) {
		for _, f := range []func(context.Context, time.Time, time.Time) (platforms.Measurement, error){a.ErrorRatio, a.LatencyP95} {
			from, to := since(t0)
			m, err := f(ctx, from, to)
			if err != nil {
				t.Fatal(err)
			}
			if !m.NoData || !strings.HasPrefix(m.Reason, "no requests between scrapes") || m.Requests != 0 || m.Value != 0 {
				t.Fatalf("measurement = %+v, want NoData: no requests", m)
			}
		}
	})

	var baseline float64
	t.Run("error ratio and baseline p95", func(t *testing.T) {
		app.SetMode(t, "error_ratio", "0.3")
		failed := app.Work(t, 400, 8)
		from, to := since(t0)
		m, err := a.ErrorRatio(ctx, from, to)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%d/400 failed; measured %+v", failed, m)
		if m.NoData || m.Requests != 400 || m.Value != float64(failed)/400 {
			t.Fatalf("ErrorRatio = %+v, want %d/400 exactly", m, failed)
		}
		if math.Abs(m.Value-0.3) > 0.1 {
			t.Fatalf("ErrorRatio = %v, want about 0.3", m.Value)
		}
		if !strings.HasPrefix(m.Query, `http_requests_total{code=~"5.."} / http_requests_total, increase between scrapes at `) {
			t.Fatalf("Query = %q", m.Query)
		}
		p95, err := a.LatencyP95(ctx, from, to)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("baseline p95 %+v", p95)
		if p95.NoData || p95.Requests != 400 || p95.Value <= 0 || p95.Value > 0.025 {
			t.Fatalf("LatencyP95 = %+v, want a few ms over 400 requests", p95)
		}
		baseline = p95.Value
	})

	t.Run("latency added", func(t *testing.T) {
		app.SetMode(t, "error_ratio", "0", "latency", "300ms")
		t1 := time.Now()
		// A scrape inside the new window, before the traffic.
		if m, err := a.ErrorRatio(ctx, t1, time.Now()); err != nil || !m.NoData {
			t.Fatalf("ErrorRatio before traffic = %+v, %v; want NoData", m, err)
		}
		app.Work(t, 60, 30)
		m, err := a.LatencyP95(ctx, t1, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("p95 %+v (baseline %v)", m, baseline)
		if m.NoData || m.Requests != 60 || m.Value <= 2*baseline || m.Value < 0.25 || m.Value > 0.5 {
			t.Fatalf("LatencyP95 = %+v, want in (0.25, 0.5] over 60 requests, > 2x baseline %v", m, baseline)
		}
		er, err := a.ErrorRatio(ctx, t1, time.Now())
		if err != nil || er.NoData || er.Value != 0 || er.Requests != 60 {
			t.Fatalf("ErrorRatio = %+v, %v; want 0 over 60 requests", er, err)
		}
	})

	t.Run("too little traffic", func(t *testing.T) {
		app.SetMode(t, "latency", "0s")
		t2 := time.Now()
		if _, err := a.ErrorRatio(ctx, t2, time.Now()); err != nil {
			t.Fatal(err)
		}
		app.Work(t, 20, 4)
		m, err := a.ErrorRatio(ctx, t2, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if !m.NoData || m.Requests != 20 || !strings.Contains(m.Reason, "too little traffic: 20 requests") || !strings.Contains(m.Reason, "min_requests 50") {
			t.Fatalf("ErrorRatio = %+v, want NoData for too little traffic", m)
		}
	})

	t.Run("label filter", func(t *testing.T) {
		other := newAdapter(t, Config{URL: app.URL + "/metrics", Interval: 100 * time.Millisecond, MinRequests: 1, Labels: map[string]string{"handler": "/elsewhere"}}, nil)
		work := newAdapter(t, Config{URL: app.URL + "/metrics", Interval: 100 * time.Millisecond, MinRequests: 1, Labels: map[string]string{"handler": "/work"}}, nil)
		t3 := time.Now()
		for _, x := range []*Adapter{other, work} {
			if _, err := x.ErrorRatio(ctx, t3, time.Now()); err != nil {
				t.Fatal(err)
			}
		}
		app.Work(t, 5, 1)
		mo, err := other.ErrorRatio(ctx, t3, time.Now())
		if err != nil || !mo.NoData || !strings.Contains(mo.Reason, `no http_requests_total{handler="/elsewhere"} series`) {
			t.Fatalf("other handler = %+v, %v", mo, err)
		}
		mw, err := work.ErrorRatio(ctx, t3, time.Now())
		if err != nil || mw.NoData || mw.Requests != 5 || !strings.HasPrefix(mw.Query, `http_requests_total{code=~"5..",handler="/work"} / http_requests_total{handler="/work"}`) {
			t.Fatalf("/work handler = %+v, %v", mw, err)
		}
	})

	t.Run("a window in the past", func(t *testing.T) {
		// Kept scrapes inside a past window answer it...
		from, to := t0, time.Now()
		// Look at it from a minute later.
		a.now = func() time.Time { return time.Now().Add(time.Minute) }
		defer func() { a.now = time.Now }()
		m, err := a.ErrorRatio(ctx, from, to)
		if err != nil {
			t.Fatal(err)
		}
		// a's last scrape came before the label filter's 5 requests.
		if m.NoData || m.Requests != 400+60+20 {
			t.Fatalf("past window from kept scrapes = %+v, want all %d requests", m, 400+60+20)
		}
		// ...one before any scrape is NoData.
		for _, f := range []struct {
			fn   func(context.Context, time.Time, time.Time) (platforms.Measurement, error)
			want string
		}{
			{a.ErrorRatio, "a direct scrape has no history"},
			{a.LatencyP95, "set thresholds.baseline_p95 or use Prometheus"},
		} {
			m, err := f.fn(ctx, t0.Add(-10*time.Minute), t0.Add(-5*time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			if !m.NoData || !strings.Contains(m.Reason, f.want) {
				t.Fatalf("baseline window = %+v, want NoData containing %q", m, f.want)
			}
		}
	})
}

// TestSelfLoad uses the sample service's own load at 50 rps: the first
// call scrapes twice, interval apart; concurrent calls share the scrapes.
func TestSelfLoad(t *testing.T) {
	bin := promtest.BuildSampleApp(t)
	app := promtest.StartSampleApp(t, bin, "-self-load", "50")
	ctx := context.Background()
	var logs bytes.Buffer
	a := newAdapter(t, Config{URL: app.URL + "/metrics", Interval: time.Second}, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	now := time.Now()
	var wg sync.WaitGroup
	var er, p95 platforms.Measurement
	var errE, errP error
	wg.Go(func() { er, errE = a.ErrorRatio(ctx, now.Add(-5*time.Minute), now) })
	wg.Go(func() { p95, errP = a.LatencyP95(ctx, now.Add(-5*time.Minute), now) })
	wg.Wait()
	if errE != nil || errP != nil {
		t.Fatal(errE, errP)
	}
	t.Logf("error ratio %+v\np95 %+v", er, p95)
	// 50 rps over at least the 1s interval.
	if er.NoData || er.Value != 0 || er.Requests < 20 {
		t.Fatalf("ErrorRatio = %+v, want 0 over about 50 requests", er)
	}
	if p95.NoData || p95.Value <= 0 || p95.Value > 0.025 || p95.Requests < 20 {
		t.Fatalf("LatencyP95 = %+v, want a few ms", p95)
	}
	if n := strings.Count(logs.String(), "msg=scrape"); n != 3 {
		t.Fatalf("%d scrapes for two concurrent first calls, want 3 (two interval apart, one more)\n%s", n, logs.String())
	}
}

// TestRestart: the counters start again from zero when the service
// restarts (as after a rollback); the increase is counted from zero.
func TestRestart(t *testing.T) {
	bin := promtest.BuildSampleApp(t)
	app := promtest.StartSampleApp(t, bin)
	ctx := context.Background()
	a := newAdapter(t, Config{URL: app.URL + "/metrics", Interval: 100 * time.Millisecond, MinRequests: 1}, nil)
	t0 := time.Now()
	app.Work(t, 100, 4)
	if _, err := a.ErrorRatio(ctx, t0, time.Now()); err != nil {
		t.Fatal(err)
	}
	app.Stop()
	app = promtest.StartSampleAppAt(t, bin, app.Addr, "-error-ratio", "1")
	app.Work(t, 30, 4)
	er, err := a.ErrorRatio(ctx, t0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p95, err := a.LatencyP95(ctx, t0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// The base scrape holds 100 good requests (and 0 at the first scrape),
	// the restarted process 30 failed ones.
	if er.NoData || er.Requests != 30 || er.Value != 1 || p95.Requests != 30 {
		t.Fatalf("after restart: %+v / %+v, want 30 requests, all failed", er, p95)
	}
}

func TestUnreachable(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	t.Run("closed port", func(t *testing.T) {
		addr := nettest.ClosedAddr(t)
		a := newAdapter(t, Config{URL: "http://" + addr + "/metrics"}, nil)
		_, err := a.ErrorRatio(ctx, now.Add(-time.Minute), now)
		if msg := platformtest.UserMessage(t, err); msg != "the metrics endpoint "+addr+"/metrics is not reachable (connection refused)" {
			t.Fatalf("user message %q", msg)
		}
	})
	t.Run("hangs past the timeout", func(t *testing.T) {
		addr := promtest.SilentAddr(t)
		a := newAdapter(t, Config{URL: "http://" + addr + "/metrics", Timeout: 300 * time.Millisecond}, nil)
		_, err := a.LatencyP95(ctx, now.Add(-time.Minute), now)
		if msg := platformtest.UserMessage(t, err); msg != "the metrics endpoint "+addr+"/metrics did not answer within 300ms" {
			t.Fatalf("user message %q (%v)", msg, err)
		}
	})

	const secret = "scrape-secret-91be"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/down":
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
		case "/garbage":
			fmt.Fprintln(w, "<html>this is not metrics{</html>")
		case "/auth":
			if r.Header.Get("Authorization") != "Bearer "+secret {
				http.Error(w, "no", http.StatusUnauthorized)
				return
			}
			fmt.Fprintln(w, "# TYPE http_requests_total counter\nhttp_requests_total{code=\"200\"} 1")
		case "/summary":
			fmt.Fprintln(w, "# TYPE http_request_duration_seconds summary\nhttp_request_duration_seconds{quantile=\"0.95\"} 0.1\nhttp_request_duration_seconds_sum 1\nhttp_request_duration_seconds_count 10")
		}
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	for _, tt := range []struct{ path, want string }{
		{"/down", "the metrics endpoint " + host + "/down answered HTTP 503"},
		{"/garbage", "the metrics endpoint " + host + "/garbage did not serve the Prometheus text format: "},
	} {
		t.Run(tt.path, func(t *testing.T) {
			a := newAdapter(t, Config{URL: srv.URL + tt.path}, nil)
			_, err := a.ErrorRatio(ctx, now.Add(-time.Minute), now)
			if msg := platformtest.UserMessage(t, err); !strings.HasPrefix(msg, tt.want) {
				t.Fatalf("user message %q, want prefix %q", msg, tt.want)
			}
		})
	}
	t.Run("summary instead of histogram", func(t *testing.T) {
		a := newAdapter(t, Config{URL: srv.URL + "/summary", Interval: 10 * time.Millisecond}, nil)
		m, err := a.LatencyP95(ctx, now.Add(-time.Minute), time.Now())
		if err != nil || !m.NoData || !strings.Contains(m.Reason, "http_request_duration_seconds at "+host+"/summary is a summary, not a histogram") {
			t.Fatalf("LatencyP95 = %+v, %v", m, err)
		}
	})
	t.Run("bearer token", func(t *testing.T) {
		var logs bytes.Buffer
		log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		t.Setenv("ROLLBOT_TEST_SCRAPE_TOKEN", secret)
		ok := newAdapter(t, Config{URL: srv.URL + "/auth", Interval: 10 * time.Millisecond, TokenEnv: "ROLLBOT_TEST_SCRAPE_TOKEN"}, log)
		m, err := ok.ErrorRatio(ctx, now.Add(-time.Minute), time.Now())
		if err != nil || !m.NoData || !strings.HasPrefix(m.Reason, "no requests") {
			t.Fatalf("with token: %+v, %v; want NoData (the counter does not move)", m, err)
		}
		const wrong = "wrong-secret-5d2a"
		t.Setenv("ROLLBOT_TEST_SCRAPE_TOKEN", wrong)
		bad := newAdapter(t, Config{URL: srv.URL + "/auth", TokenEnv: "ROLLBOT_TEST_SCRAPE_TOKEN"}, log)
		_, err = bad.ErrorRatio(ctx, now.Add(-time.Minute), time.Now())
		if msg := platformtest.UserMessage(t, err); msg != "the metrics endpoint "+host+"/auth refused the request (HTTP 401); check the token in $ROLLBOT_TEST_SCRAPE_TOKEN" {
			t.Fatalf("user message %q", msg)
		}
		for _, s := range []string{secret, wrong} {
			if strings.Contains(err.Error(), s) || strings.Contains(logs.String(), s) {
				t.Fatalf("token %q leaked into the error or the log", s)
			}
		}
	})
	t.Run("caller deadline during the interval", func(t *testing.T) {
		bin := promtest.BuildSampleApp(t)
		app := promtest.StartSampleApp(t, bin)
		a := newAdapter(t, Config{URL: app.URL + "/metrics", Interval: time.Minute}, nil)
		ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		_, err := a.ErrorRatio(ctx, now.Add(-time.Minute), time.Now())
		if msg := platformtest.UserMessage(t, err); msg != "no error ratio from "+app.Addr+"/metrics in the time allowed (a first measurement takes two scrapes 1m apart)" {
			t.Fatalf("user message %q", msg)
		}
	})
}

// A push or claim that ran out of its own time is logged (a slow Redis
// costs the lease, then the history); one cut short because the
// collector stops is not.
func TestStoppingIsOnlyTheCollectorsEnd(t *testing.T) {
	parent, stop := context.WithCancel(context.Background())
	short, cancel := context.WithTimeout(parent, time.Millisecond)
	defer cancel()
	<-short.Done()
	if stopping(short) {
		t.Error("a round trip past its own deadline counts as stopping: it would not be logged")
	}
	running, cancel2 := context.WithTimeout(parent, time.Hour)
	defer cancel2()
	if stopping(running) {
		t.Error("a live context counts as stopping")
	}
	stop()
	if !stopping(running) {
		t.Error("the collector's end does not count as stopping: every shutdown would warn")
	}
}
