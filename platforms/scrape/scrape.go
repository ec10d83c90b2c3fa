// Package scrape reads a service's error ratio and p95 latency straight
// from its /metrics endpoint (Prometheus text format, parsed with
// github.com/prometheus/common/expfmt), for teams without a Prometheus
// server. It implements platforms.Metrics.
//
// A scrape is a snapshot of cumulative counters, so a number needs two
// scrapes: the error ratio is the increase of 5xx requests divided by the
// increase of all requests between them, and the p95 comes from the
// increase of each histogram bucket, interpolated linearly within the
// bucket like PromQL's histogram_quantile.
//
// In rollbot a Collector (collector.go) scrapes every such service in the
// background from start-up and keeps compact samples of the last History
// (sample.go; shared through Redis between replicas), and the adapter
// answers any window from them (history.go): Measurement.From and To say
// which span that was. What follows is the on-demand path, for an adapter
// without a Collector or a window ending now that the history has no
// sample of yet.
//
// The adapter keeps the scrapes it took (the last hour, at most 64). For a
// window ending now it takes a fresh scrape and compares it with the oldest
// kept scrape inside the window that is at least interval/2 older; when it
// has none (the first call, or a window that starts after every kept
// scrape) it scrapes, waits interval (default 2s) and scrapes again. So the
// first call takes about interval plus two scrapes, and the span measured
// may be shorter than the window asked for; Measurement.Query says which
// span it is.
//
// A scrape source cannot go back in time: a window that ended in the past
// is answered only from kept scrapes inside it, and otherwise is NoData
// ("a direct scrape has no history; …").
//
// Counters that went down between two scrapes (the process restarted, as
// it does after a rollback) are counted from zero, like PromQL's rate().
// The url must reach one instance; behind a load balancer consecutive
// scrapes may come from different instances and their differences mean
// nothing.
package scrape

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"rollbot/platforms"
	"rollbot/platforms/internal/neterr"
)

// Defaults for the usual instrumentation: an http_requests_total counter
// with a code label and an http_request_duration_seconds histogram.
const (
	DefaultRequestsMetric = "http_requests_total"
	DefaultDurationMetric = "http_request_duration_seconds"
	DefaultCodeLabel      = "code"
	DefaultTimeout        = 5 * time.Second
	DefaultInterval       = 2 * time.Second
	DefaultMinRequests    = 10
	DefaultHistory        = time.Hour

	// currentSlack: a window whose end is at most this far in the past is
	// "current" and answered with a fresh scrape.
	currentSlack = 5 * time.Second
	keepFor      = time.Hour
	keepMax      = 64
	maxBody      = 32 << 20
)

// Config is the `scrape:` block of a service in rollbot's YAML.
type Config struct {
	// URL of the service's metrics endpoint, e.g. http://10.0.0.5:8080/metrics.
	// It must not carry credentials; use token_env.
	URL string `yaml:"url"`
	// RequestsMetric is a counter of requests with a status code label
	// (default http_requests_total); CodeLabel names that label (default
	// code); a value of 5xx counts as failed.
	RequestsMetric string `yaml:"requests_metric"`
	CodeLabel      string `yaml:"code_label"`
	// DurationMetric is the request latency histogram, without the
	// _bucket suffix (default http_request_duration_seconds).
	DurationMetric string `yaml:"duration_metric"`
	// Labels restricts both metrics to series carrying these label values,
	// e.g. {handler: /work}.
	Labels map[string]string `yaml:"labels"`
	// Timeout bounds each scrape (default 5s).
	Timeout time.Duration `yaml:"timeout"`
	// Interval is the gap between the two scrapes a call takes when it
	// has no earlier scrape inside its window (default 2s).
	Interval time.Duration `yaml:"interval"`
	// MinRequests: fewer requests between the two scrapes is NoData ("too
	// little traffic"). 0 means the default, 10; set 1 to accept any.
	MinRequests int `yaml:"min_requests"`
	// TokenEnv names an environment variable holding a bearer token sent
	// with each scrape. The token is never logged nor put in errors.
	TokenEnv string `yaml:"token_env"`
	// History is how much background scrape history rollbot keeps for the
	// service (default 1h): the assessment's windows are answered from
	// it, so it should cover windows.baseline before a deploy and
	// windows.assess.
	History time.Duration `yaml:"history"`
}

var (
	metricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	labelName  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// Validate checks the configuration; each error names its field.
func (c Config) Validate() error {
	var errs []error
	errs = append(errs, platforms.FieldErrors("url", platforms.CheckHTTPURL(c.URL))...)
	for _, f := range []struct{ field, v string }{{"requests_metric", c.RequestsMetric}, {"duration_metric", c.DurationMetric}} {
		if f.v != "" && !metricName.MatchString(f.v) {
			errs = append(errs, fmt.Errorf("%s: %q is not a metric name", f.field, f.v))
		}
	}
	if c.CodeLabel != "" && !labelName.MatchString(c.CodeLabel) {
		errs = append(errs, fmt.Errorf("code_label: %q is not a label name", c.CodeLabel))
	}
	for _, k := range slices.Sorted(maps.Keys(c.Labels)) {
		if !labelName.MatchString(k) {
			errs = append(errs, fmt.Errorf("labels: %q is not a label name", k))
		}
	}
	if c.Timeout < 0 {
		errs = append(errs, errors.New("timeout: must not be negative"))
	}
	if c.Interval < 0 {
		errs = append(errs, errors.New("interval: must not be negative"))
	}
	if c.MinRequests < 0 {
		errs = append(errs, errors.New("min_requests: must not be negative"))
	}
	if c.History < 0 {
		errs = append(errs, errors.New("history: must not be negative"))
	} else if iv := cmp.Or(c.Interval, DefaultInterval); c.History > 0 && c.History < iv {
		errs = append(errs, errors.New("history: must be at least the scrape interval"))
	} else if c.History > 24*time.Hour {
		errs = append(errs, errors.New("history: at most 24h (the samples are kept in memory and in Redis)"))
	}
	if c.TokenEnv != "" {
		errs = append(errs, platforms.FieldErrors("token_env", platforms.CheckSecretEnv(c.TokenEnv))...)
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.RequestsMetric == "" {
		c.RequestsMetric = DefaultRequestsMetric
	}
	if c.DurationMetric == "" {
		c.DurationMetric = DefaultDurationMetric
	}
	if c.CodeLabel == "" {
		c.CodeLabel = DefaultCodeLabel
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.MinRequests == 0 {
		c.MinRequests = DefaultMinRequests
	}
	if c.History == 0 {
		c.History = DefaultHistory
	}
	return c
}

// doer is the part of *http.Client this package uses.
type doer interface {
	Do(*http.Request) (*http.Response, error)
}

// Adapter is a platforms.Metrics that scrapes one service instance.
type Adapter struct {
	cfg    Config
	source string // "scrape http://host:port/metrics", no credentials, no query
	where  string // host:port/path, for messages
	client doer
	log    *slog.Logger
	now    func() time.Time // time.Now; tests look at a window from later

	// sem serialises calls (a channel so waiting honours ctx); it guards
	// scrapes, which is oldest first.
	sem     chan struct{}
	scrapes []*snapshot

	// bg is the background history, when a Collector scrapes the service.
	bg *background
}

var _ platforms.Metrics = (*Adapter)(nil)

// New builds an Adapter. It does not contact the service.
func New(cfg Config, log *slog.Logger) (*Adapter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u, _ := url.Parse(cfg.URL) // checked by Validate
	clean := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	var rt http.RoundTripper = http.DefaultTransport
	if cfg.TokenEnv != "" {
		rt = neterr.Bearer{Token: os.Getenv(cfg.TokenEnv), Next: rt}
	}
	return &Adapter{
		cfg:    cfg,
		source: "scrape " + clean.String(),
		where:  u.Host + u.Path,
		client: &http.Client{Transport: rt},
		log:    log.With("platform", "scrape"),
		sem:    make(chan struct{}, 1),
		now:    time.Now,
	}, nil
}

// Source is what Measurement.Source says: "scrape <url>".
func (a *Adapter) Source() string { return a.source }

// ErrorRatio is the increase of 5xx requests / the increase of all requests
// between two scrapes inside [from, to].
func (a *Adapter) ErrorRatio(ctx context.Context, from, to time.Time) (platforms.Measurement, error) {
	m := platforms.Measurement{Source: a.source}
	errQ := fmt.Sprintf("%s{%s=~\"5..\"%s} / %s%s", a.cfg.RequestsMetric, a.cfg.CodeLabel, a.selector(true), a.cfg.RequestsMetric, a.braces())
	if a.bg != nil {
		w, ok, err := a.fromHistory(ctx, "error ratio", from, to)
		if err != nil {
			m.Query = errQ
			return m, err
		}
		if ok {
			return a.errorRatioOf(w, errQ), nil
		}
	}
	base, cur, reason, err := a.pair(ctx, "error ratio", from, to)
	if err != nil || reason != "" {
		m.Query = errQ
		if reason != "" {
			m.NoData, m.Reason = true, reason+"; use Prometheus for a baseline error ratio"
		}
		return m, err
	}
	m.Query = errQ + span(base, cur)
	m.From, m.To = base.at, cur.at
	if cur.requestsErr != "" {
		m.NoData, m.Reason = true, cur.requestsErr
		return m, nil
	}
	var failed, total float64
	for key, c := range cur.requests {
		d := c.value
		if b, ok := base.requests[key]; ok && c.value >= b.value {
			d = c.value - b.value
		}
		total += d
		if c.failed {
			failed += d
		}
	}
	m.Requests = total
	if reason := a.traffic(total, cur.at.Sub(base.at), a.cfg.RequestsMetric); reason != "" {
		m.NoData, m.Reason = true, reason
		if total > 0 {
			m.Value = failed / total
		}
		return m, nil
	}
	m.Value = failed / total
	return m, nil
}

// LatencyP95 is the 95th percentile of the latency histogram's increase
// between two scrapes inside [from, to], in seconds.
func (a *Adapter) LatencyP95(ctx context.Context, from, to time.Time) (platforms.Measurement, error) {
	m := platforms.Measurement{Source: a.source}
	q := fmt.Sprintf("p95 of %s_bucket%s", a.cfg.DurationMetric, a.braces())
	if a.bg != nil {
		w, ok, err := a.fromHistory(ctx, "p95 latency", from, to)
		if err != nil {
			m.Query = q
			return m, err
		}
		if ok {
			return a.latencyOf(w, q), nil
		}
	}
	base, cur, reason, err := a.pair(ctx, "p95 latency", from, to)
	if err != nil || reason != "" {
		m.Query = q
		if reason != "" {
			m.NoData, m.Reason = true, reason+"; set thresholds.baseline_p95 or use Prometheus"
		}
		return m, err
	}
	m.Query = q + span(base, cur)
	m.From, m.To = base.at, cur.at
	if cur.histErr != "" {
		m.NoData, m.Reason = true, cur.histErr
		return m, nil
	}
	// Sum the increase of each bucket over all matching series.
	inc := map[float64]float64{}
	var count float64
	for key, h := range cur.hists {
		b, ok := base.hists[key]
		reset := !ok || h.count < b.count
		for le, v := range h.buckets {
			if !reset {
				v -= b.buckets[le]
			}
			inc[le] += v
		}
		if reset {
			count += h.count
		} else {
			count += h.count - b.count
		}
	}
	m.Requests = count
	if reason := a.traffic(count, cur.at.Sub(base.at), a.cfg.DurationMetric); reason != "" {
		m.NoData, m.Reason = true, reason
		return m, nil
	}
	v := quantile(0.95, inc)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		m.NoData, m.Reason = true, fmt.Sprintf("the p95 of %s is %v (buckets missing or no +Inf bucket)", a.cfg.DurationMetric, v)
		return m, nil
	}
	m.Value = v
	return m, nil
}

func (a *Adapter) traffic(n float64, gap time.Duration, metric string) string {
	switch {
	case n <= 0:
		return fmt.Sprintf("no requests between scrapes %s apart (no %s%s series, or none increased)", fmtDur(gap), metric, a.braces())
	case n < float64(a.cfg.MinRequests):
		return fmt.Sprintf("too little traffic: %.0f requests between scrapes %s apart, fewer than min_requests %d", n, fmtDur(gap), a.cfg.MinRequests)
	}
	return ""
}

// selector renders the configured labels as PromQL matchers; lead adds a
// leading comma.
func (a *Adapter) selector(lead bool) string {
	if len(a.cfg.Labels) == 0 {
		return ""
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(a.cfg.Labels)) {
		parts = append(parts, fmt.Sprintf("%s=%q", k, a.cfg.Labels[k]))
	}
	s := strings.Join(parts, ",")
	if lead {
		s = "," + s
	}
	return s
}

func (a *Adapter) braces() string {
	if len(a.cfg.Labels) == 0 {
		return ""
	}
	return "{" + a.selector(false) + "}"
}

func span(base, cur *snapshot) string {
	return fmt.Sprintf(", increase between scrapes at %s and %s (%s)",
		base.at.UTC().Format("15:04:05.000"), cur.at.UTC().Format("15:04:05.000"), fmtDur(cur.at.Sub(base.at)))
}

func fmtDur(d time.Duration) string { return neterr.Duration(d) }

// pair returns two scrapes inside [from, to], oldest first, or a reason
// why there are none (a window in the past with no kept scrapes).
func (a *Adapter) pair(ctx context.Context, what string, from, to time.Time) (base, cur *snapshot, reason string, err error) {
	now := a.now()
	if to.IsZero() {
		to = now
	}
	if !from.Before(to) {
		return nil, nil, "", fmt.Errorf("%s from %s: window [%s, %s] is empty", what, a.source, from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	select {
	case a.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, "", a.late(what, ctx.Err())
	}
	defer func() { <-a.sem }()

	minGap := a.cfg.Interval / 2
	if now.Sub(to) > currentSlack {
		// A past window: only kept scrapes can answer.
		base, cur = a.kept(from, to, minGap)
		if base == nil {
			return nil, nil, fmt.Sprintf("a direct scrape has no history for the window ending %s", to.UTC().Format(time.TimeOnly)), nil
		}
		return base, cur, "", nil
	}
	if cur, err = a.scrape(ctx, what); err != nil {
		return nil, nil, "", err
	}
	base = a.oldestSince(from, cur.at.Add(-minGap))
	if base == nil {
		base = cur
		t := time.NewTimer(a.cfg.Interval)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			a.keep(base)
			return nil, nil, "", a.late(what, ctx.Err())
		}
		if cur, err = a.scrape(ctx, what); err != nil {
			a.keep(base)
			return nil, nil, "", err
		}
		a.keep(base)
	}
	a.keep(cur)
	return base, cur, "", nil
}

// oldestSince is the oldest kept scrape taken in [from, until].
func (a *Adapter) oldestSince(from, until time.Time) *snapshot {
	for _, s := range a.scrapes {
		if !s.at.Before(from) && !s.at.After(until) {
			return s
		}
	}
	return nil
}

// kept finds the widest pair of kept scrapes inside [from, to] at least
// minGap apart.
func (a *Adapter) kept(from, to time.Time, minGap time.Duration) (base, cur *snapshot) {
	base = a.oldestSince(from, to)
	if base == nil {
		return nil, nil
	}
	for i := len(a.scrapes) - 1; i >= 0; i-- {
		s := a.scrapes[i]
		if !s.at.After(to) {
			if s.at.Sub(base.at) >= minGap && s != base {
				return base, s
			}
			return nil, nil
		}
	}
	return nil, nil
}

func (a *Adapter) keep(s *snapshot) {
	if slices.Contains(a.scrapes, s) {
		return
	}
	a.scrapes = append(a.scrapes, s)
	sort.SliceStable(a.scrapes, func(i, j int) bool { return a.scrapes[i].at.Before(a.scrapes[j].at) })
	cut := 0
	for cut < len(a.scrapes) && (time.Since(a.scrapes[cut].at) > keepFor || len(a.scrapes)-cut > keepMax) {
		cut++
	}
	a.scrapes = slices.Delete(a.scrapes, 0, cut)
}

// snapshot is what one scrape saw of the two metrics, filtered by Labels.
type snapshot struct {
	at          time.Time
	requests    map[string]counter // by label signature
	hists       map[string]histogram
	requestsErr string // why the requests metric is unusable, for users
	histErr     string
	// reqType and histType are 1 + the type of a metric of the wrong kind.
	reqType, histType uint8
}

type counter struct {
	value  float64
	failed bool // a 5xx code
}

type histogram struct {
	count   float64
	buckets map[float64]float64 // upper bound -> cumulative count, with +Inf
}

func (a *Adapter) scrape(ctx context.Context, what string) (*snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	budget := a.cfg.Timeout
	if dl, ok := ctx.Deadline(); ok {
		budget = time.Until(dl)
	}
	start := time.Now()
	fams, err := a.fetch(ctx)
	a.log.DebugContext(ctx, "scrape", "op", what, "source", a.source, "took", time.Since(start), "err", err)
	if err != nil {
		return nil, a.userError(ctx, what, err, budget)
	}
	s := &snapshot{at: time.Now(), requests: map[string]counter{}, hists: map[string]histogram{}}
	if mf, ok := fams[a.cfg.RequestsMetric]; ok {
		switch mf.GetType() {
		case dto.MetricType_COUNTER, dto.MetricType_UNTYPED, dto.MetricType_GAUGE:
			for _, m := range mf.GetMetric() {
				labels, ok := a.match(m)
				if !ok {
					continue
				}
				v := m.GetCounter().GetValue()
				if mf.GetType() == dto.MetricType_UNTYPED {
					v = m.GetUntyped().GetValue()
				} else if mf.GetType() == dto.MetricType_GAUGE {
					v = m.GetGauge().GetValue()
				}
				code := labels[a.cfg.CodeLabel]
				s.requests[signature(labels)] = counter{value: v, failed: len(code) == 3 && code[0] == '5'}
			}
		default:
			s.requestsErr = fmt.Sprintf("%s at %s is a %s, not a counter", a.cfg.RequestsMetric, a.where, strings.ToLower(mf.GetType().String()))
			s.reqType = uint8(mf.GetType()) + 1
		}
	}
	if mf, ok := fams[a.cfg.DurationMetric]; ok {
		if mf.GetType() != dto.MetricType_HISTOGRAM {
			s.histErr = fmt.Sprintf("%s at %s is a %s, not a histogram", a.cfg.DurationMetric, a.where, strings.ToLower(mf.GetType().String()))
			s.histType = uint8(mf.GetType()) + 1
		}
		for _, m := range mf.GetMetric() {
			labels, ok := a.match(m)
			if !ok || m.GetHistogram() == nil {
				continue
			}
			h := m.GetHistogram()
			count := float64(h.GetSampleCount())
			if h.SampleCountFloat != nil {
				count = h.GetSampleCountFloat()
			}
			hb := histogram{count: count, buckets: map[float64]float64{math.Inf(1): count}}
			for _, b := range h.GetBucket() {
				c := float64(b.GetCumulativeCount())
				if b.CumulativeCountFloat != nil {
					c = b.GetCumulativeCountFloat()
				}
				hb.buckets[b.GetUpperBound()] = c
			}
			s.hists[signature(labels)] = hb
		}
	}
	return s, nil
}

func (a *Adapter) fetch(ctx context.Context) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.cfg.URL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain))+";q=1,*/*;q=0.1")
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, &neterr.StatusError{Code: resp.StatusCode}
	}
	body := io.LimitReader(resp.Body, maxBody)
	format := expfmt.ResponseFormat(resp.Header)
	switch format.FormatType() {
	case expfmt.TypeProtoDelim, expfmt.TypeOpenMetrics:
		fams := map[string]*dto.MetricFamily{}
		dec := expfmt.NewDecoder(body, format)
		for {
			mf := &dto.MetricFamily{}
			if err := dec.Decode(mf); errors.Is(err, io.EOF) {
				return fams, nil
			} else if err != nil {
				return nil, &formatError{err: err}
			}
			fams[mf.GetName()] = mf
		}
	default: // text/plain, or an endpoint that does not say
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(body)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			var pe expfmt.ParseError
			if errors.As(err, &pe) {
				return nil, &formatError{err: err}
			}
			return nil, err // reading the body failed
		}
		return fams, nil
	}
}

// match reports whether m carries every configured label and returns its labels.
func (a *Adapter) match(m *dto.Metric) (map[string]string, bool) {
	labels := make(map[string]string, len(m.GetLabel()))
	for _, lp := range m.GetLabel() {
		labels[lp.GetName()] = lp.GetValue()
	}
	for k, v := range a.cfg.Labels {
		if labels[k] != v {
			return nil, false
		}
	}
	return labels, true
}

func signature(labels map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		fmt.Fprintf(&b, "%s=%q,", k, labels[k])
	}
	return b.String()
}

// quantile computes the q-quantile from cumulative bucket counts by upper
// bound, as PromQL's histogram_quantile does: linear interpolation within
// the bucket holding the rank; the lowest bucket starts at 0 (when its upper
// bound is positive); a rank in the +Inf bucket gives the highest finite
// bound. NaN when there are no observations or no +Inf bucket.
func quantile(q float64, buckets map[float64]float64) float64 {
	type bucket struct{ upper, count float64 }
	var bs []bucket
	for le, c := range buckets {
		bs = append(bs, bucket{le, c})
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].upper < bs[j].upper })
	if len(bs) < 2 || !math.IsInf(bs[len(bs)-1].upper, 1) {
		return math.NaN()
	}
	for i := 1; i < len(bs); i++ { // cumulative counts never decrease
		if bs[i].count < bs[i-1].count {
			bs[i].count = bs[i-1].count
		}
	}
	observations := bs[len(bs)-1].count
	if observations == 0 {
		return math.NaN()
	}
	switch {
	case q < 0:
		return math.Inf(-1)
	case q > 1:
		return math.Inf(1)
	}
	rank := q * observations
	b := sort.Search(len(bs)-1, func(i int) bool { return bs[i].count >= rank })
	if b == len(bs)-1 {
		return bs[len(bs)-2].upper
	}
	if b == 0 && bs[0].upper <= 0 {
		return bs[0].upper
	}
	var start float64
	end, count := bs[b].upper, bs[b].count
	if b > 0 {
		start = bs[b-1].upper
		count -= bs[b-1].count
		rank -= bs[b-1].count
	}
	return start + (end-start)*(rank/count)
}

type formatError struct{ err error }

func (e *formatError) Error() string { return "parse metrics: " + e.err.Error() }
func (e *formatError) Unwrap() error { return e.err }

// late is the error for a caller whose ctx ended while the adapter waited
// for the gap between two scrapes or for another call's scrapes.
func (a *Adapter) late(what string, err error) error {
	return platforms.Userf(fmt.Errorf("%s from %s: %w", what, a.source, err),
		"no %s from %s in the time allowed (a first measurement takes two scrapes %s apart)", what, a.where, fmtDur(a.cfg.Interval))
}

// userError turns a failed scrape into an error whose platforms.UserMessage
// says what happened; a failure neterr does not recognise keeps no user
// message (the handlers show a reference into the log).
func (a *Adapter) userError(ctx context.Context, what string, err error, budget time.Duration) error {
	err = fmt.Errorf("%s from %s: %w", what, a.source, err)
	var fe *formatError
	if errors.As(err, &fe) {
		return platforms.Userf(err, "the metrics endpoint %s did not serve the Prometheus text format: %v", a.where, fe.err)
	}
	call := neterr.Call{Peer: "the metrics endpoint " + a.where, What: what + " scrape", Budget: budget, TokenEnv: a.cfg.TokenEnv}
	if msg, ok := call.Message(ctx, err); ok {
		return platforms.Userf(err, "%s", msg)
	}
	return err
}
