// Package promtest starts real servers for tests of rollbot's metric
// sources and of the assessment built on them: Debian's prometheus binary
// with a generated configuration that scrapes given targets every second,
// and the sample service (examples/sampleapp) built from this repository.
//
// Everything listens on random loopback ports, keeps its files in t's temp
// directories and is stopped on t.Cleanup. A missing binary fails the test
// (t.Fatal), it never skips.
package promtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"rollbot/testkit/wait"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"rollbot/testkit/nettest"
)

// ScrapeInterval is how often the started Prometheus scrapes its targets.
const ScrapeInterval = time.Second

// Target is one scrape target: a job name and a host:port serving /metrics.
type Target struct {
	Job  string
	Addr string
}

// Prometheus is a running Prometheus server.
type Prometheus struct {
	// URL is the base URL of its HTTP API, e.g. http://127.0.0.1:41234.
	URL    string
	Addr   string
	Dir    string // config, storage and log live here
	cmd    *exec.Cmd
	exited chan struct{}
	log    string
}

// Binary locates the prometheus binary: $PROMETHEUS_BIN, then PATH, then
// /usr/bin/prometheus (Debian's package). It fails t when none exists.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("PROMETHEUS_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("PROMETHEUS_BIN=%s: %v", p, err)
		}
		return p
	}
	if p, err := exec.LookPath("prometheus"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/bin/prometheus"); err == nil {
		return "/usr/bin/prometheus"
	}
	t.Fatal("prometheus binary not found on PATH or at /usr/bin/prometheus: install the Debian package `prometheus` (listed in .ci/apt-packages) or set PROMETHEUS_BIN")
	return ""
}

// Start runs Prometheus scraping targets every ScrapeInterval and waits
// until it is ready to answer queries. It is stopped on t.Cleanup.
func Start(t testing.TB, targets ...Target) *Prometheus {
	t.Helper()
	return StartWith(t, Options{Targets: targets})
}

// Options are StartWith's: scrape targets, alerting rules (the content of
// a rule file, evaluated every ScrapeInterval) and the Alertmanagers
// (host:port) that firing alerts are sent to.
type Options struct {
	Targets       []Target
	Rules         string
	Alertmanagers []string
}

// StartWith is Start with rules and Alertmanagers.
func StartWith(t testing.TB, o Options) *Prometheus {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "prometheus.yml")
	cfg := config(o.Targets)
	if o.Rules != "" {
		rules := filepath.Join(dir, "rules.yml")
		if err := os.WriteFile(rules, []byte(o.Rules), 0o644); err != nil {
			t.Fatalf("write prometheus rules: %v", err)
		}
		cfg += fmt.Sprintf("rule_files:\n  - %q\n", rules)
	}
	if len(o.Alertmanagers) > 0 {
		cfg += "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets:\n"
		for _, a := range o.Alertmanagers {
			cfg += fmt.Sprintf("            - %q\n", a)
		}
	}
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatalf("write prometheus config: %v", err)
	}
	var lastErr error
	for attempt := range 3 { // a free port can be taken between probe and bind
		addr := nettest.FreeAddr(t)
		p := &Prometheus{URL: "http://" + addr, Addr: addr, Dir: dir, log: filepath.Join(dir, fmt.Sprintf("prometheus-%d.log", attempt))}
		lastErr = p.start(bin, cfgPath)
		if lastErr == nil {
			t.Cleanup(func() { p.stop(t) })
			if err := p.waitReady(30 * time.Second); err != nil {
				t.Fatalf("prometheus did not become ready: %v\n%s", err, p.LogTail(30))
			}
			return p
		}
	}
	t.Fatalf("start prometheus: %v", lastErr)
	return nil
}

func config(targets []Target) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  scrape_timeout: %s\n  evaluation_interval: %s\n", ScrapeInterval, ScrapeInterval, ScrapeInterval)
	b.WriteString("scrape_configs:\n")
	byJob := map[string][]string{}
	var jobs []string
	for _, tg := range targets {
		if _, ok := byJob[tg.Job]; !ok {
			jobs = append(jobs, tg.Job)
		}
		byJob[tg.Job] = append(byJob[tg.Job], tg.Addr)
	}
	for _, job := range jobs {
		fmt.Fprintf(&b, "  - job_name: %q\n    static_configs:\n      - targets:\n", job)
		for _, a := range byJob[job] {
			fmt.Fprintf(&b, "          - %q\n", a)
		}
	}
	return b.String()
}

func (p *Prometheus) start(bin, cfgPath string) error {
	logf, err := os.Create(p.log)
	if err != nil {
		return err
	}
	defer logf.Close()
	p.cmd = exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(p.Dir, "data"),
		"--web.listen-address="+p.Addr,
		"--storage.tsdb.retention.time=1h",
		"--log.level=info",
	)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(exited) }()
	// Either the port answers or the process exits (e.g. address in use).
	err = wait.UntilEvery(context.Background(), 50*time.Millisecond, 15*time.Second, "prometheus to listen on "+p.Addr, func() (bool, error) {
		select {
		case <-exited:
			return false, wait.Stop(errors.New("prometheus exited early"))
		default:
		}
		c, err := net.DialTimeout("tcp", p.Addr, 200*time.Millisecond)
		if err != nil {
			return false, err
		}
		c.Close()
		return true, nil
	})
	if err != nil {
		_ = p.cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%w: %s", err, p.LogTail(10))
	}
	p.exited = exited
	return nil
}

func (p *Prometheus) waitReady(timeout time.Duration) error {
	return wait.UntilEvery(context.Background(), 100*time.Millisecond, timeout, "prometheus to be ready", func() (bool, error) {
		select {
		case <-p.exited:
			return false, wait.Stop(errors.New("prometheus exited"))
		default:
		}
		resp, err := http.Get(p.URL + "/-/ready")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, fmt.Errorf("/-/ready: HTTP %d", resp.StatusCode)
	})
}

func (p *Prometheus) stop(t testing.TB) {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	if t.Failed() {
		t.Logf("prometheus log tail:\n%s", p.LogTail(20))
	}
}

// Stop stops Prometheus now (e.g. to test a source whose Prometheus went
// away). Cleanup does nothing more afterwards.
func (p *Prometheus) Stop(t testing.TB) {
	t.Helper()
	p.stop(t)
}

// LogTail returns the last n lines of Prometheus's log.
func (p *Prometheus) LogTail(n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Sample is one element of an instant-vector query result.
type Sample struct {
	Metric map[string]string
	Time   time.Time
	Value  float64
}

// Query evaluates an instant query at ts (now when zero) through the plain
// HTTP API, independently of the code under test.
func (p *Prometheus) Query(ctx context.Context, query string, ts time.Time) ([]Sample, error) {
	v := url.Values{"query": {query}}
	if !ts.IsZero() {
		v.Set("time", strconv.FormatFloat(float64(ts.UnixMilli())/1000, 'f', 3, 64))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.URL+"/api/v1/query", strings.NewReader(v.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("query %q: decode: %w", query, err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", query, body.Error)
	}
	if body.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %q: result type %s, want vector", query, body.Data.ResultType)
	}
	out := make([]Sample, 0, len(body.Data.Result))
	for _, r := range body.Data.Result {
		ts, _ := r.Value[0].(float64)
		s, _ := r.Value[1].(string)
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("query %q: value %q: %w", query, s, err)
		}
		out = append(out, Sample{Metric: r.Metric, Time: time.UnixMilli(int64(ts * 1000)), Value: f})
	}
	return out, nil
}

// WaitScrapedAfter polls until Prometheus holds a successful scrape of job
// taken after t0 and returns that scrape's time. Use it to wait until a
// query window [t0, returned time] is fully covered by samples.
func (p *Prometheus) WaitScrapedAfter(t testing.TB, job string, t0 time.Time, timeout time.Duration) time.Time {
	t.Helper()
	q := fmt.Sprintf(`timestamp(up{job=%q} == 1)`, job)
	var at time.Time
	err := wait.UntilEvery(context.Background(), 100*time.Millisecond, timeout, fmt.Sprintf("a scrape of job %q after %s", job, t0.Format(time.RFC3339Nano)), func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		res, err := p.Query(ctx, q, time.Time{})
		cancel()
		switch {
		case err != nil:
			return false, err
		case len(res) == 0:
			return false, errors.New("no successful scrape yet")
		}
		at = time.UnixMilli(int64(res[0].Value * 1000))
		return at.After(t0), errors.New("last scrape at " + at.Format(time.RFC3339Nano))
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, p.LogTail(10))
	}
	return at
}

// SilentAddr returns a loopback host:port that accepts connections and
// never answers, like a hung server. It is closed on t.Cleanup.
func SilentAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // hold it open, read nothing, answer nothing
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// ---- the sample service ----------------------------------------------------

// SampleApp is a running examples/sampleapp.
type SampleApp struct {
	URL  string // http://127.0.0.1:port
	Addr string
	bin  string
	args []string
	cmd  *exec.Cmd
	exit chan struct{}
	out  *os.File
}

// BuildSampleApp builds examples/sampleapp statically into a temp dir of t
// (the Go build cache makes repeat builds cheap) and returns the binary.
// $SAMPLEAPP_BIN, when set, is used instead.
func BuildSampleApp(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("SAMPLEAPP_BIN"); p != "" {
		return p
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go toolchain not found to build examples/sampleapp: %v", err)
	}
	out := filepath.Join(t.TempDir(), "sampleapp")
	cmd := exec.Command(goBin, "build", "-o", out, "rollbot/examples/sampleapp")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build sampleapp: %v\n%s", err, b)
	}
	return out
}

// StartSampleApp runs the sample service built by BuildSampleApp on a free
// loopback port with extra args (e.g. "-self-load", "50") and waits until
// /health answers. It is stopped on t.Cleanup.
func StartSampleApp(t testing.TB, bin string, args ...string) *SampleApp {
	t.Helper()
	return StartSampleAppAt(t, bin, nettest.FreeAddr(t), args...)
}

// StartSampleAppAt is StartSampleApp on a given address, e.g. to restart
// the service where it ran before.
func StartSampleAppAt(t testing.TB, bin, addr string, args ...string) *SampleApp {
	t.Helper()
	a := &SampleApp{URL: "http://" + addr, Addr: addr, bin: bin, args: args}
	out, err := os.CreateTemp(t.TempDir(), "sampleapp-*.log")
	if err != nil {
		t.Fatal(err)
	}
	a.out = out
	a.cmd = exec.Command(bin, append([]string{"-listen", addr}, args...)...)
	a.cmd.Stdout, a.cmd.Stderr = out, out
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("start sampleapp: %v", err)
	}
	a.exit = make(chan struct{})
	go func() { _ = a.cmd.Wait(); close(a.exit) }()
	t.Cleanup(a.stop)
	err = wait.UntilEvery(context.Background(), 50*time.Millisecond, 15*time.Second, "sampleapp to answer on "+addr, func() (bool, error) {
		select {
		case <-a.exit:
			return false, wait.Stop(errors.New("sampleapp exited at start"))
		default:
		}
		resp, err := http.Get(a.URL + "/health")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return true, nil
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, a.output())
	}
	return a
}

func (a *SampleApp) output() string {
	b, _ := os.ReadFile(a.out.Name())
	return string(b)
}

func (a *SampleApp) stop() {
	select {
	case <-a.exit:
		return
	default:
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exit:
	case <-time.After(10 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.exit
	}
	a.out.Close()
}

// Stop stops the service now and waits until it has exited.
func (a *SampleApp) Stop() { a.stop() }

// SetMode changes the failure mode at run time through POST /admin/mode,
// e.g. SetMode(t, "error_ratio", "0.3", "latency", "300ms").
func (a *SampleApp) SetMode(t testing.TB, kv ...string) {
	t.Helper()
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	resp, err := http.PostForm(a.URL+"/admin/mode", v)
	if err != nil {
		t.Fatalf("set sampleapp mode: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("set sampleapp mode %v: HTTP %d %s", v, resp.StatusCode, b)
	}
}

// Work sends n requests to /work, up to concurrency at a time, and returns
// how many answered with a 5xx status.
func (a *SampleApp) Work(t testing.TB, n, concurrency int) (failed int) {
	t.Helper()
	if concurrency < 1 {
		concurrency = 1
	}
	type res struct {
		code int
		err  error
	}
	jobs := make(chan struct{})
	results := make(chan res)
	for range concurrency {
		go func() {
			for range jobs {
				resp, err := http.Get(a.URL + "/work")
				if err != nil {
					results <- res{err: err}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				results <- res{code: resp.StatusCode}
			}
		}()
	}
	go func() {
		for range n {
			jobs <- struct{}{}
		}
		close(jobs)
	}()
	var errs []error
	for range n {
		r := <-results
		if r.err != nil {
			errs = append(errs, r.err)
		} else if r.code >= 500 {
			failed++
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("requests to sampleapp /work: %v", err)
	}
	return failed
}

// Metrics returns the service's /metrics text, for diagnostics.
func (a *SampleApp) Metrics(t testing.TB) string {
	t.Helper()
	resp, err := http.Get(a.URL + "/metrics")
	if err != nil {
		t.Fatalf("get /metrics: %v", err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if !strings.HasPrefix(sc.Text(), "#") {
			b.WriteString(sc.Text() + "\n")
		}
	}
	return b.String()
}
