// Command sampleapp is a tiny HTTP service used by rollbot's tests and demo
// as the thing being rolled back. Its version and failure mode are set at
// build time (-ldflags "-X main.version=v2 -X main.errorRatio=0.3") and can
// be overridden at start (flags or SAMPLEAPP_* env) or at run time
// (POST /admin/mode?error_ratio=0.5&latency=200ms).
//
// Endpoints: /work (does some work, fails with the configured ratio),
// /health (200 unless -fail-health), /metrics (Prometheus text format:
// http_requests_total{code,handler} and http_request_duration_seconds),
// /version. With -version it prints its version and exits.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Set with -ldflags -X.
var (
	version      = "v1"
	errorRatio   = "0"
	extraLatency = "0s"
	crashOnStart = "false"
	failHealth   = "false"
)

type mode struct {
	mu         sync.RWMutex
	errorRatio float64
	latency    time.Duration
	failHealth bool
}

func (m *mode) get() (float64, time.Duration, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.errorRatio, m.latency, m.failHealth
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sampleapp:", err)
		os.Exit(1)
	}
}

func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}

func run() error {
	fs := flag.NewFlagSet("sampleapp", flag.ContinueOnError)
	addr := fs.String("listen", envOr("SAMPLEAPP_LISTEN", ":8080"), "listen address")
	ver := fs.String("app-version", envOr("SAMPLEAPP_VERSION", version), "version reported by /version and /metrics")
	ratio := fs.String("error-ratio", envOr("SAMPLEAPP_ERROR_RATIO", errorRatio), "share of /work requests that fail with 500")
	lat := fs.String("latency", envOr("SAMPLEAPP_LATENCY", extraLatency), "latency added to each /work request")
	crash := fs.String("crash-on-start", envOr("SAMPLEAPP_CRASH_ON_START", crashOnStart), "exit 1 right after start")
	fh := fs.String("fail-health", envOr("SAMPLEAPP_FAIL_HEALTH", failHealth), "answer /health with 503")
	flood := fs.Int("log-flood", atoiOr(os.Getenv("SAMPLEAPP_LOG_FLOOD"), 0), "bytes of log lines to write to stderr at start (0: none), for tests of bounded log reading")
	logLine := fs.String("log-line", os.Getenv("SAMPLEAPP_LOG_LINE"), "a line to write to stderr at start (tests: what an app may log by mistake)")
	selfLoad := fs.Int("self-load", atoiOr(os.Getenv("SAMPLEAPP_SELF_LOAD"), 0), "requests per second the app sends to its own /work (0: none)")
	printVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	if *printVersion {
		fmt.Println(*ver)
		return nil
	}
	m := &mode{}
	var err error
	if m.errorRatio, err = strconv.ParseFloat(*ratio, 64); err != nil {
		return fmt.Errorf("error-ratio %q: %w", *ratio, err)
	}
	if m.latency, err = time.ParseDuration(*lat); err != nil {
		return fmt.Errorf("latency %q: %w", *lat, err)
	}
	m.failHealth = *fh == "true"
	if *logLine != "" {
		fmt.Fprintln(os.Stderr, *logLine)
	}
	if *flood > 0 {
		logFlood(os.Stderr, *flood)
	}
	if *crash == "true" {
		return fmt.Errorf("version %s crashes on start (crash-on-start=true)", *ver)
	}

	reg := prometheus.NewRegistry()
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "http_requests_total", Help: "HTTP requests by handler and status code.",
	}, []string{"handler", "code"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "http_request_duration_seconds",
		Help:    "HTTP request latency.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"handler"})
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sampleapp_build_info", Help: "Build version."}, []string{"version"})
	reg.MustRegister(requests, duration, info)
	info.WithLabelValues(*ver).Set(1)

	mux := http.NewServeMux()
	mux.HandleFunc("/work", func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ratio, latency, _ := m.get()
		time.Sleep(latency + time.Duration(rand.IntN(3))*time.Millisecond)
		code := http.StatusOK
		if rand.Float64() < ratio {
			code = http.StatusInternalServerError
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, "%s %d\n", *ver, code)
		requests.WithLabelValues("/work", strconv.Itoa(code)).Inc()
		duration.WithLabelValues("/work").Observe(time.Since(start).Seconds())
	})
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		if _, _, fail := m.get(); fail {
			http.Error(w, "unhealthy", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/version", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, *ver) })
	mux.HandleFunc("POST /admin/mode", func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		defer m.mu.Unlock()
		if v := r.FormValue("error_ratio"); v != "" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			m.errorRatio = f
		}
		if v := r.FormValue("latency"); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			m.latency = d
		}
		if v := r.FormValue("fail_health"); v != "" {
			m.failHealth = v == "true"
		}
		fmt.Fprintf(w, "error_ratio=%g latency=%s fail_health=%v\n", m.errorRatio, m.latency, m.failHealth)
	})
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	slog.Info("sampleapp listening", "addr", *addr, "version", *ver, "error_ratio", m.errorRatio, "latency", m.latency)
	if *selfLoad > 0 {
		go generateLoad(ctx, *addr, *selfLoad)
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}

func atoiOr(s string, def int) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return def
	}
	return n
}

// generateLoad calls the app's own /work at rps until ctx ends, so a
// scraper sees traffic without an external load generator.
func generateLoad(ctx context.Context, addr string, rps int) {
	host := addr
	if len(host) > 0 && host[0] == ':' {
		host = "127.0.0.1" + host
	}
	url := "http://" + host + "/work"
	t := time.NewTicker(time.Second / time.Duration(rps))
	defer t.Stop()
	client := &http.Client{Timeout: 5 * time.Second}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			go func() {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				if resp, err := client.Do(req); err == nil {
					resp.Body.Close()
				}
			}()
		}
	}
}

// logFlood writes n bytes of numbered log lines to w.
func logFlood(w io.Writer, n int) {
	bw := bufio.NewWriterSize(w, 1<<16)
	pad := strings.Repeat(".", 100)
	for i, written := 0, 0; written < n; i++ {
		k, _ := fmt.Fprintf(bw, "flood line %09d %s\n", i, pad)
		written += k
	}
	bw.Flush()
}
