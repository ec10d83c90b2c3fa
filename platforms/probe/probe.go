// Package probe holds the verification probes of runbook §5: an HTTP
// health check that expects a 2xx answer, and a smoke-test command run
// with a timeout whose output tail goes into the incident thread.
//
// Probes do not return errors: every outcome, including "could not even
// try", is a ProbeResult with OK false and a one-line Detail for users.
package probe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"rollbot/platforms/internal/neterr"
)

const (
	// DefaultHealthTimeout bounds a health check whose ctx has no deadline.
	DefaultHealthTimeout = 5 * time.Second
	// DefaultSmokeTimeout bounds a smoke test given no timeout.
	DefaultSmokeTimeout = time.Minute
	// TailLines is how many trailing lines of output a smoke test keeps.
	TailLines = 20
	// maxLineBytes truncates longer output lines.
	maxLineBytes = 300
	// maxBodyBytes of a health answer are kept for users.
	maxBodyBytes = 300
)

// ProbeResult is the outcome of one probe.
type ProbeResult struct {
	OK bool `json:"ok"`
	// Target is what was probed: the URL without credentials or query, or
	// the command line.
	Target string `json:"target"`
	// Detail is one line for users: "HTTP 200 in 4ms", "HTTP 503 Service
	// Unavailable", "connection refused", "exit status 3 after 1.2s",
	// "timed out after 30s; killed".
	Detail string `json:"detail"`
	// Status is the HTTP status of a health check (0 when none came).
	Status int `json:"status,omitempty"`
	// ExitCode of a smoke test; -1 when it was killed or did not start.
	ExitCode int  `json:"exit_code,omitempty"`
	TimedOut bool `json:"timed_out,omitempty"`
	// Output is the last TailLines lines of a smoke test's combined
	// stdout and stderr, or the start of a failed health check's body.
	Output   string        `json:"output,omitempty"`
	Duration time.Duration `json:"duration"`
	// At is when the probe finished.
	At time.Time `json:"at"`
}

// HealthCheck GETs rawURL and expects a 2xx answer. Redirects are not
// followed (a health endpoint that redirects, e.g. to a login page, is not
// healthy). Without a ctx deadline it gives up after DefaultHealthTimeout.
func HealthCheck(ctx context.Context, rawURL string) ProbeResult {
	start := time.Now()
	r := ProbeResult{Target: redact(rawURL)}
	done := func() ProbeResult {
		r.Duration = time.Since(start)
		r.At = time.Now()
		return r
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		r.Detail = "not an http(s) URL"
		return done()
	}
	budget := DefaultHealthTimeout
	if dl, ok := ctx.Deadline(); ok {
		budget = time.Until(dl)
	} else {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultHealthTimeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		r.Detail = "not a valid request URL"
		return done()
	}
	req.Header.Set("User-Agent", "rollbot-health-check")
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		r.Detail = netDetail(ctx, err, budget)
		return done()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // let the connection be reused
	r.Status = resp.StatusCode
	r.OK = resp.StatusCode/100 == 2
	r.Detail = fmt.Sprintf("HTTP %s in %s", resp.Status, roundDur(time.Since(start)))
	if loc := resp.Header.Get("Location"); resp.StatusCode/100 == 3 && loc != "" {
		r.Detail += ", redirect to " + redact(loc)
	}
	if !r.OK {
		r.Output = strings.TrimSpace(string(bytes.ToValidUTF8(body, []byte("?"))))
	}
	return done()
}

// netDetail is the Detail of a health check whose request failed: the
// neterr phrase ("connection refused", "no answer within 5s", "TLS check
// failed: …"), or, for a failure neterr does not recognise, the transport
// error without the URL (which may carry credentials).
func netDetail(ctx context.Context, err error, budget time.Duration) string {
	if reason := neterr.Classify(ctx, err).Reason(budget); reason != "" {
		return reason
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// redact drops credentials and the query string (tokens live there too).
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	u.RawQuery, u.Fragment = "", ""
	return u.String()
}

func roundDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Microsecond).String()
}

// SmokeTest runs command (argv; use {"sh", "-c", "..."} for a shell line)
// with Smoke's defaults; see Smoke.Run.
func SmokeTest(ctx context.Context, command []string, timeout time.Duration) ProbeResult {
	return Smoke{Command: command, Timeout: timeout}.Run(ctx)
}

// Smoke is a smoke-test command.
type Smoke struct {
	// Command is argv; no shell is involved unless it names one.
	Command []string
	// Timeout kills the command and everything it started (its process
	// group); default DefaultSmokeTimeout.
	Timeout time.Duration
	// Env is added to a minimal environment (PATH, HOME, LANG, LC_ALL, TZ,
	// TMPDIR, USER from the bot's). The bot's other variables, which hold
	// its tokens, are not passed on.
	Env []string
	// Dir is the working directory; empty means the bot's.
	Dir string
	// Redact are secret values replaced in the output, besides the
	// credentials scrub recognises by their shape.
	Redact []string
}

// Run runs the command and reports its exit status and the last TailLines
// lines of its combined output. It passes when the command exits 0 in time.
func (s Smoke) Run(ctx context.Context) ProbeResult {
	start := time.Now()
	r := ProbeResult{Target: strings.Join(s.Command, " "), ExitCode: -1}
	done := func() ProbeResult {
		r.Duration = time.Since(start)
		r.At = time.Now()
		return r
	}
	if len(s.Command) == 0 || s.Command[0] == "" {
		r.Detail = "no smoke test command configured"
		return done()
	}
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = DefaultSmokeTimeout
	}
	runCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	tail := newTail(TailLines)
	tail.redact = s.Redact
	cmd := exec.CommandContext(runCtx, s.Command[0], s.Command[1:]...)
	cmd.Stdout, cmd.Stderr = tail, tail
	cmd.Dir = s.Dir
	cmd.Env = append(minimalEnv(), s.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The whole group: a shell's children die with it.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 2 * time.Second // stop waiting for output of escaped grandchildren
	err := cmd.Run()
	r.Output = tail.String()
	elapsed := roundDur(time.Since(start))
	var ee *exec.ExitError
	switch {
	case err == nil:
		r.OK, r.ExitCode = true, 0
		r.Detail = "exit 0 after " + elapsed
	case errors.Is(runCtx.Err(), context.DeadlineExceeded) && ctx.Err() == nil:
		r.TimedOut = true
		r.Detail = fmt.Sprintf("timed out after %s; killed", roundDur(timeout))
	case ctx.Err() != nil:
		r.Detail = "cancelled after " + elapsed
	case errors.As(err, &ee):
		r.ExitCode = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			r.Detail = fmt.Sprintf("killed by %s after %s", ws.Signal(), elapsed)
		} else {
			r.Detail = fmt.Sprintf("exit status %d after %s", r.ExitCode, elapsed)
		}
	case errors.Is(err, exec.ErrWaitDelay):
		// Exited 0, but something it started kept the output open.
		r.OK, r.ExitCode = true, 0
		r.Detail = "exit 0 after " + elapsed + " (a background process it started kept running)"
	default:
		r.Detail = "cannot run " + s.Command[0] + ": " + startError(err)
	}
	return done()
}

func startError(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	if errors.Is(err, exec.ErrNotFound) {
		return "not found on PATH"
	}
	return err.Error()
}

func minimalEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// tail keeps the last n lines written to it, each scrubbed of
// credentials (scrub) and then cut to maxLineBytes.
type tail struct {
	mu      sync.Mutex
	n       int
	lines   []string
	cur     []byte
	dropped int
	redact  []string
}

func newTail(n int) *tail { return &tail{n: n} }

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range p {
		if c == '\n' {
			t.push(string(t.cur))
			t.cur = t.cur[:0]
			continue
		}
		if len(t.cur) < scrubLineBytes {
			t.cur = append(t.cur, c)
		}
	}
	return len(p), nil
}

func clean(line string) string {
	if len(line) > maxLineBytes {
		line = strings.ToValidUTF8(line[:maxLineBytes], "") + "…"
	}
	return strings.ToValidUTF8(strings.TrimRight(line, "\r"), "?")
}

func (t *tail) push(line string) {
	t.lines = append(t.lines, clean(scrub(line, t.redact)))
	if len(t.lines) > t.n {
		t.dropped += len(t.lines) - t.n
		t.lines = t.lines[len(t.lines)-t.n:]
	}
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := t.lines
	if len(t.cur) > 0 { // an unterminated last line
		lines = append(lines[:len(lines):len(lines)], clean(scrub(string(t.cur), t.redact)))
		if len(lines) > t.n {
			lines = lines[1:]
		}
	}
	dropped := t.dropped + len(t.lines) + boolInt(len(t.cur) > 0) - len(lines)
	var b strings.Builder
	if dropped > 0 {
		fmt.Fprintf(&b, "[%d earlier lines omitted]\n", dropped)
	}
	b.WriteString(strings.Join(lines, "\n"))
	return b.String()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
