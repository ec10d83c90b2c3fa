// Package prom reads a service's error ratio and p95 latency from the
// Prometheus HTTP API (github.com/prometheus/client_golang/api). It
// implements platforms.Metrics.
//
// Every number is an instant query evaluated at the end of the requested
// window, over a range equal to the window ([to-from] as a PromQL
// duration). The assessment asks for the baseline as the window that ends
// when the bad deploy started and for the current value as the last few
// minutes; both are the same query at a different time.
//
// The queries are Go text/template strings with two fields:
//   - {{.Selector}} the configured label matchers, e.g. job="myapp" (may be empty)
//   - {{.Window}}   the window as a PromQL duration, e.g. 5m or 20s
//
// A result that is empty, NaN or ±Inf, or that comes with fewer than
// min_requests requests in the window, is a Measurement with NoData and a
// Reason; an assessment built on it is inconclusive, never healthy.
package prom

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/template"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"rollbot/platforms"
	"rollbot/platforms/internal/neterr"
)

// Default queries, for services instrumented with the usual
// http_requests_total{code} counter and http_request_duration_seconds
// histogram. The 5xx numerator falls back to 0 when no request ever failed
// (no 5xx series exists), so a healthy service measures 0, not "no data".
const (
	DefaultErrorQuery    = `(sum(rate(http_requests_total{code=~"5..",{{.Selector}}}[{{.Window}}])) or vector(0)) / sum(rate(http_requests_total{ {{- .Selector -}} }[{{.Window}}]))`
	DefaultP95Query      = `histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{ {{- .Selector -}} }[{{.Window}}])))`
	DefaultRequestsQuery = `sum(increase(http_requests_total{ {{- .Selector -}} }[{{.Window}}]))`

	DefaultTimeout     = 5 * time.Second
	DefaultMinRequests = 10
)

// Config is the `prometheus:` block of a service in rollbot's YAML.
type Config struct {
	// URL is Prometheus's base URL, e.g. http://prometheus.monitoring:9090.
	// It must not carry credentials; use token_env.
	URL string `yaml:"url"`
	// Selector is inserted as {{.Selector}} in the queries: label matchers
	// without braces, e.g. `job="myapp",namespace="prod"`.
	Selector string `yaml:"selector"`
	// ErrorQuery, P95Query and RequestsQuery override the defaults
	// (DefaultErrorQuery, DefaultP95Query, DefaultRequestsQuery).
	// RequestsQuery counts the requests in the window; it decides "too
	// little traffic".
	ErrorQuery    string `yaml:"error_query"`
	P95Query      string `yaml:"p95_query"`
	RequestsQuery string `yaml:"requests_query"`
	// Timeout bounds each measurement (both of its queries); default 5s.
	Timeout time.Duration `yaml:"timeout"`
	// MinRequests: a window with fewer requests is NoData ("too little
	// traffic"). 0 means the default, 10; set 1 to accept any traffic.
	MinRequests int `yaml:"min_requests"`
	// TokenEnv names an environment variable holding a bearer token sent
	// to Prometheus. The token is never logged nor put in errors.
	TokenEnv string `yaml:"token_env"`
}

// Validate checks the configuration; each error names its field.
func (c Config) Validate() error {
	var errs []error
	errs = append(errs, platforms.FieldErrors("url", platforms.CheckHTTPURL(c.URL))...)
	if strings.ContainsAny(c.Selector, "{}") {
		errs = append(errs, errors.New(`selector: label matchers without braces, e.g. job="myapp"`))
	}
	for _, q := range []struct{ field, text string }{
		{"error_query", c.ErrorQuery}, {"p95_query", c.P95Query}, {"requests_query", c.RequestsQuery},
	} {
		if q.text == "" {
			continue
		}
		if _, err := render(q.text, c.Selector, time.Minute); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", q.field, err))
		}
	}
	if c.Timeout < 0 {
		errs = append(errs, errors.New("timeout: must not be negative"))
	}
	if c.MinRequests < 0 {
		errs = append(errs, errors.New("min_requests: must not be negative"))
	}
	if c.TokenEnv != "" {
		errs = append(errs, platforms.FieldErrors("token_env", platforms.CheckSecretEnv(c.TokenEnv))...)
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.ErrorQuery == "" {
		c.ErrorQuery = DefaultErrorQuery
	}
	if c.P95Query == "" {
		c.P95Query = DefaultP95Query
	}
	if c.RequestsQuery == "" {
		c.RequestsQuery = DefaultRequestsQuery
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MinRequests == 0 {
		c.MinRequests = DefaultMinRequests
	}
	return c
}

// querier is the part of the Prometheus v1 API this package uses.
type querier interface {
	Query(ctx context.Context, query string, ts time.Time, opts ...promv1.Option) (model.Value, promv1.Warnings, promv1.Infos, error)
	QueryRange(ctx context.Context, query string, r promv1.Range, opts ...promv1.Option) (model.Value, promv1.Warnings, promv1.Infos, error)
}

// Adapter is a platforms.Metrics backed by one Prometheus server.
type Adapter struct {
	cfg  Config
	host string // Prometheus host:port, for messages
	api  querier
	log  *slog.Logger
}

var _ platforms.RangeMetrics = (*Adapter)(nil)

// New builds an Adapter. It does not contact Prometheus.
func New(cfg Config, log *slog.Logger) (*Adapter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u, _ := url.Parse(cfg.URL) // checked by Validate
	var rt http.RoundTripper = api.DefaultRoundTripper
	if cfg.TokenEnv != "" {
		rt = neterr.Bearer{Token: os.Getenv(cfg.TokenEnv), Next: rt}
	}
	client, err := api.NewClient(api.Config{Address: cfg.URL, RoundTripper: rt})
	if err != nil {
		return nil, fmt.Errorf("prometheus client %s: %w", u.Host, err)
	}
	return &Adapter{
		cfg:  cfg,
		host: u.Host,
		api:  promv1.NewAPI(statusClient{client}),
		log:  log.With("platform", "prometheus"),
	}, nil
}

// Source is what Measurement.Source says: "prometheus <host:port>".
func (a *Adapter) Source() string { return "prometheus " + a.host }

// ErrorRatio is 5xx requests / all requests over [from, to], evaluated at to.
func (a *Adapter) ErrorRatio(ctx context.Context, from, to time.Time) (platforms.Measurement, error) {
	return a.measure(ctx, "error ratio", a.cfg.ErrorQuery, from, to)
}

// LatencyP95 is the 95th percentile request latency in seconds over
// [from, to], evaluated at to.
func (a *Adapter) LatencyP95(ctx context.Context, from, to time.Time) (platforms.Measurement, error) {
	return a.measure(ctx, "p95 latency", a.cfg.P95Query, from, to)
}

// Queries returns the PromQL the adapter evaluates for a window, as
// Measurement.Query will show it.
func (a *Adapter) Queries(window time.Duration) (errorRatio, p95, requests string, err error) {
	if errorRatio, err = render(a.cfg.ErrorQuery, a.cfg.Selector, window); err != nil {
		return
	}
	if p95, err = render(a.cfg.P95Query, a.cfg.Selector, window); err != nil {
		return
	}
	requests, err = render(a.cfg.RequestsQuery, a.cfg.Selector, window)
	return
}

func (a *Adapter) measure(ctx context.Context, what, tmpl string, from, to time.Time) (platforms.Measurement, error) {
	m := platforms.Measurement{Source: a.Source()}
	if to.IsZero() {
		to = time.Now()
	}
	window := to.Sub(from).Truncate(time.Millisecond)
	if window <= 0 {
		return m, fmt.Errorf("%s from %s: window [%s, %s] is empty", what, a.Source(), from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	q, err := render(tmpl, a.cfg.Selector, window)
	if err != nil {
		return m, fmt.Errorf("%s query: %w", what, err)
	}
	rq, err := render(a.cfg.RequestsQuery, a.cfg.Selector, window)
	if err != nil {
		return m, fmt.Errorf("requests query: %w", err)
	}
	m.Query = q

	ctx, cancel, budget := a.bounded(ctx)
	defer cancel()

	// The value and the traffic are independent queries; run them together.
	type answer struct {
		v   float64
		ok  bool
		err error
	}
	reqc := make(chan answer, 1)
	go func() {
		v, ok, err := a.scalar(ctx, rq, to)
		reqc <- answer{v, ok, err}
	}()
	start := time.Now()
	v, ok, err := a.scalar(ctx, q, to)
	r := <-reqc
	a.log.DebugContext(ctx, "prometheus query", "op", what, "query", q, "at", to, "value", v, "found", ok, "requests", r.v, "took", time.Since(start), "err", err)
	if err == nil {
		err = r.err
	}
	if err != nil {
		return m, a.userError(ctx, what, err, budget)
	}
	if r.ok && !isNaNOrInf(r.v) {
		m.Requests = r.v
	}
	if ok && !isNaNOrInf(v) {
		m.Value = v
	}
	switch {
	case !r.ok || r.v == 0 || isNaNOrInf(r.v):
		m.NoData, m.Reason = true, fmt.Sprintf("no requests in the %s window (Prometheus %s)", fmtWindow(window), a.host)
	case r.v < float64(a.cfg.MinRequests):
		m.NoData, m.Reason = true, fmt.Sprintf("too little traffic: %.0f requests in the %s window, fewer than min_requests %d", r.v, fmtWindow(window), a.cfg.MinRequests)
	case !ok:
		m.NoData, m.Reason = true, fmt.Sprintf("the %s query returned no series for the %s window", what, fmtWindow(window))
	case math.IsNaN(v):
		m.NoData, m.Reason = true, fmt.Sprintf("the %s query returned NaN for the %s window (no samples to compute it from)", what, fmtWindow(window))
	case math.IsInf(v, 0):
		m.NoData, m.Reason = true, fmt.Sprintf("the %s query returned %v for the %s window (the highest histogram bucket is +Inf or buckets are missing)", what, v, fmtWindow(window))
	}
	return m, nil
}

func isNaNOrInf(v float64) bool { return math.IsNaN(v) || math.IsInf(v, 0) }

// scalar evaluates q at ts and returns its single value. ok is false when
// the result is empty. More than one series is an error: the query must
// aggregate to one number.
func (a *Adapter) scalar(ctx context.Context, q string, ts time.Time) (float64, bool, error) {
	val, warnings, _, err := a.api.Query(ctx, q, ts, timeoutOpts(ctx)...)
	if err != nil {
		return 0, false, err
	}
	if len(warnings) > 0 {
		a.log.WarnContext(ctx, "prometheus query warnings", "op", "query", "query", q, "warnings", strings.Join(warnings, "; "))
	}
	switch v := val.(type) {
	case model.Vector:
		switch len(v) {
		case 0:
			return 0, false, nil
		case 1:
			return float64(v[0].Value), true, nil
		}
		return 0, false, &resultError{q: q, msg: fmt.Sprintf("returned %d series; it must aggregate to one number (wrap it in sum(...))", len(v))}
	case *model.Scalar:
		return float64(v.Value), true, nil
	default:
		return 0, false, &resultError{q: q, msg: fmt.Sprintf("returned a %s, want an instant vector or scalar", val.Type())}
	}
}

// bounded is ctx limited to the configured timeout, and the time the
// caller has (the timeout, or less when ctx ends sooner), for messages.
func (a *Adapter) bounded(ctx context.Context) (context.Context, context.CancelFunc, time.Duration) {
	budget := a.cfg.Timeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < budget {
		budget = max(time.Until(dl), 0)
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	return ctx, cancel, budget
}

// timeoutOpts passes ctx's deadline on, so Prometheus stops evaluating
// too. The client sends Duration.String(); Prometheus 2.x parses "4s" or
// "250ms" but not "4.9s".
func timeoutOpts(ctx context.Context) []promv1.Option {
	dl, ok := ctx.Deadline()
	if !ok {
		return nil
	}
	d := time.Until(dl)
	if d >= time.Second {
		d = d.Truncate(time.Second)
	} else {
		d = d.Truncate(time.Millisecond)
	}
	if d <= 0 {
		return nil
	}
	return []promv1.Option{promv1.WithTimeout(d)}
}

// WithSelector is a copy of the adapter that measures another set of
// series on the same Prometheus with the same queries: a neighbour
// service the verdict compares with (selector: label matchers without
// braces, e.g. job="payments").
func (a *Adapter) WithSelector(selector string) (*Adapter, error) {
	if strings.ContainsAny(selector, "{}") || strings.TrimSpace(selector) == "" {
		return nil, fmt.Errorf(`selector %q: label matchers without braces, e.g. job="payments"`, selector)
	}
	b := *a
	b.cfg.Selector = selector
	return &b, nil
}

// ErrorRatioRange is the error ratio at every step in [from, to], each
// point over the window that ends at it (one query_range).
func (a *Adapter) ErrorRatioRange(ctx context.Context, from, to time.Time, step, window time.Duration) (platforms.Series, error) {
	return a.series(ctx, "error ratio", a.cfg.ErrorQuery, from, to, step, window)
}

// LatencyP95Range is the p95 latency at every step in [from, to].
func (a *Adapter) LatencyP95Range(ctx context.Context, from, to time.Time, step, window time.Duration) (platforms.Series, error) {
	return a.series(ctx, "p95 latency", a.cfg.P95Query, from, to, step, window)
}

func (a *Adapter) series(ctx context.Context, what, tmpl string, from, to time.Time, step, window time.Duration) (platforms.Series, error) {
	s := platforms.Series{Source: a.Source()}
	if !from.Before(to) || step <= 0 || window <= 0 {
		return s, fmt.Errorf("%s range from %s: range [%s, %s] step %s window %s is empty", what, a.Source(), from.Format(time.RFC3339), to.Format(time.RFC3339), step, window)
	}
	q, err := render(tmpl, a.cfg.Selector, window)
	if err != nil {
		return s, fmt.Errorf("%s query: %w", what, err)
	}
	s.Query = q
	ctx, cancel, budget := a.bounded(ctx)
	defer cancel()
	start := time.Now()
	val, warnings, _, err := a.api.QueryRange(ctx, q, promv1.Range{Start: from, End: to, Step: step}, timeoutOpts(ctx)...)
	a.log.DebugContext(ctx, "prometheus range query", "op", what, "query", q, "from", from, "to", to, "step", step, "took", time.Since(start), "err", err)
	if err != nil {
		return s, a.userError(ctx, what, err, budget)
	}
	if len(warnings) > 0 {
		a.log.WarnContext(ctx, "prometheus query warnings", "op", "query_range", "query", q, "warnings", strings.Join(warnings, "; "))
	}
	m, ok := val.(model.Matrix)
	if !ok {
		return s, a.userError(ctx, what, &resultError{q: q, msg: fmt.Sprintf("returned a %s over a range, want a range vector", val.Type())}, budget)
	}
	switch len(m) {
	case 0:
		s.NoData, s.Reason = true, fmt.Sprintf("the %s query returned no series for %s–%s UTC", what, clockOf(from), clockOf(to))
		return s, nil
	case 1:
	default:
		return s, a.userError(ctx, what, &resultError{q: q, msg: fmt.Sprintf("returned %d series; it must aggregate to one number (wrap it in sum(...))", len(m))}, budget)
	}
	for _, p := range m[0].Values {
		if v := float64(p.Value); !isNaNOrInf(v) {
			s.Points = append(s.Points, platforms.Point{At: p.Timestamp.Time(), Value: v})
		}
	}
	if len(s.Points) == 0 {
		s.NoData, s.Reason = true, fmt.Sprintf("no requests (or no value) for %s–%s UTC (Prometheus %s)", clockOf(from), clockOf(to), a.host)
	}
	return s, nil
}

func clockOf(t time.Time) string { return t.UTC().Format(time.TimeOnly) }

type resultError struct{ q, msg string }

func (e *resultError) Error() string { return fmt.Sprintf("query %s %s", e.q, e.msg) }

// userError turns a query failure into an error whose platforms.UserMessage
// says what happened in words an on-call engineer can act on; a failure
// neither Prometheus nor neterr recognises keeps no user message (the
// handlers show a reference into the log).
func (a *Adapter) userError(ctx context.Context, what string, err error, budget time.Duration) error {
	err = fmt.Errorf("%s from prometheus %s: %w", what, a.host, err)
	var (
		pe *promv1.Error
		re *resultError
	)
	switch {
	case errors.As(err, &pe) && (pe.Type == promv1.ErrBadData || pe.Type == promv1.ErrExec):
		return platforms.Userf(err, "Prometheus at %s rejected the %s query: %s", a.host, what, pe.Msg)
	case errors.As(err, &pe) && pe.Type == promv1.ErrTimeout:
		return platforms.Userf(err, "Prometheus at %s timed out evaluating the %s query", a.host, what)
	case errors.As(err, &re):
		return platforms.Userf(err, "the %s query to Prometheus at %s %s", what, a.host, re.msg)
	}
	call := neterr.Call{Peer: "Prometheus at " + a.host, What: what + " query", Budget: budget, TokenEnv: a.cfg.TokenEnv}
	if msg, ok := call.Message(ctx, err); ok {
		return platforms.Userf(err, "%s", msg)
	}
	return err
}

// render executes a query template for a selector and window.
func render(tmpl, selector string, window time.Duration) (string, error) {
	t, err := template.New("query").Option("missingkey=error").Parse(tmpl)
	if err != nil {
		return "", fmt.Errorf("template: %w", err)
	}
	var b bytes.Buffer
	data := struct{ Selector, Window string }{Selector: selector, Window: promDuration(window)}
	if err := t.Execute(&b, data); err != nil {
		return "", fmt.Errorf("template: %w", err)
	}
	return b.String(), nil
}

// promDuration formats d as a PromQL duration: 5m, 1h30m, 20s, 1500ms.
func promDuration(d time.Duration) string {
	return model.Duration(d.Truncate(time.Millisecond)).String()
}

// fmtWindow formats d for people: 5m, 20s, 1h30m.
func fmtWindow(d time.Duration) string {
	if d < time.Millisecond {
		return d.String()
	}
	return promDuration(d)
}

// statusClient turns HTTP statuses that are not Prometheus API answers
// (401, 403, 404, 5xx from a proxy) into a typed error, so callers can
// branch on the status without parsing text.
type statusClient struct{ api.Client }

func (c statusClient) Do(ctx context.Context, req *http.Request) (*http.Response, []byte, error) {
	resp, body, err := c.Client.Do(ctx, req)
	if err != nil || resp == nil {
		return resp, body, err
	}
	switch code := resp.StatusCode; {
	case code/100 == 2, code == http.StatusBadRequest, code == http.StatusUnprocessableEntity:
		return resp, body, nil // API answers, decoded by promv1
	default:
		return resp, body, &neterr.StatusError{Code: code}
	}
}
