package scrape

import (
	"context"
	"fmt"
	"math"
	"time"

	"rollbot/platforms"
)

// windowSum is what the samples of a window add up to.
type windowSum struct {
	samples int
	// from and to are the span measured: from the scrape the window's
	// first sample compares with, to the window's last scrape.
	from, to time.Time
	// covered is the time the samples cover; less than to-from when
	// scrapes failed (or the lease changed hands) in between.
	covered       time.Duration
	total, failed float64
	count         float64
	buckets       map[float64]float64
	hasHist       bool
	// reqType and histType are the newest sample's (see sample).
	reqType, histType uint8
	// start is when the history begins: its oldest sample.
	start time.Time
	// askFrom and askTo are the window asked for.
	askFrom, askTo time.Time
}

// sumWindow adds up the samples that lie inside [from, to]: a sample
// counts the increase since the scrape before it, so one that started
// before from or ended after to is left out. A window that ends at a
// deploy counts nothing of the new version, and one that starts at a
// rollback nothing of the old.
func sumWindow(h history, from, to time.Time) windowSum {
	w := windowSum{buckets: map[float64]float64{}}
	f, t := from.UnixMilli(), to.UnixMilli()
	var s sample
	for i, enc := range h.samples {
		at := sampleAt(enc)
		if i == 0 {
			w.start = time.UnixMilli(at)
		}
		if at <= f || at > t || decodeSample(enc, &s) != nil {
			continue
		}
		w.reqType, w.histType = s.reqType, s.histType
		if s.prev == 0 || s.prev < f {
			// Nothing measured, or partly before the window: a window
			// that starts at a rollback counts nothing from before it.
			continue
		}
		if w.samples == 0 {
			w.from = time.UnixMilli(s.prev)
		}
		w.to = time.UnixMilli(s.at)
		w.covered += time.Duration(s.at-s.prev) * time.Millisecond
		w.samples++
		w.total += s.total
		w.failed += s.failed
		w.count += s.count
		if bounds, ok := h.layouts[s.layout]; ok && len(bounds) == len(s.buckets) {
			w.hasHist = true
			for i, le := range bounds {
				w.buckets[le] += s.buckets[i]
			}
		}
	}
	return w
}

// fromHistory adds up the background history over [from, to]. ok is
// false for a window ending now that the history has no sample of yet
// (the collector just started): the caller measures on demand.
func (a *Adapter) fromHistory(ctx context.Context, what string, from, to time.Time) (w windowSum, ok bool, err error) {
	now := a.now()
	if to.IsZero() || to.After(now) {
		to = now
	}
	if !from.Before(to) {
		return w, false, fmt.Errorf("%s from %s: window [%s, %s] is empty", what, a.source, from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	h, err := a.bg.history(ctx)
	if err != nil {
		return w, false, platforms.Userf(fmt.Errorf("%s from %s: %w", what, a.source, err),
			"could not read the scrape history of %s from Redis; try again", a.where)
	}
	w = sumWindow(h, from, to)
	w.askFrom, w.askTo = from, to
	if w.samples == 0 && now.Sub(to) <= currentSlack {
		return w, false, nil
	}
	return w, true, nil
}

// noHistory says why a window has no samples.
func (a *Adapter) noHistory(w windowSum) string {
	if w.start.IsZero() {
		return "no scrape history yet"
	}
	return fmt.Sprintf("no scrape history for %s–%s UTC (rollbot's history of %s starts at %s UTC)",
		clockOf(w.askFrom), clockOf(w.askTo), a.where, clockOf(w.start))
}

func clockOf(t time.Time) string { return t.UTC().Format(time.TimeOnly) }

// historySpan is the Query suffix of a measurement from history.
func historySpan(w windowSum, requests float64) string {
	s := fmt.Sprintf(", scrape history %s–%s UTC (%s, %.0f requests", clockOf(w.from), clockOf(w.to), fmtDur(w.to.Sub(w.from)), requests)
	if gap := w.to.Sub(w.from) - w.covered; gap > time.Second {
		s += fmt.Sprintf(", %s of it missing", fmtDur(gap))
	}
	return s + ")"
}

func (a *Adapter) historyTraffic(n float64, w windowSum, metric string) string {
	span := fmtDur(w.to.Sub(w.from))
	switch {
	case n <= 0:
		return fmt.Sprintf("no requests in the %s of scrape history measured (no %s%s series, or none increased)", span, metric, a.braces())
	case n < float64(a.cfg.MinRequests):
		return fmt.Sprintf("too little traffic: %.0f requests in the %s of scrape history measured, fewer than min_requests %d", n, span, a.cfg.MinRequests)
	}
	return ""
}

func (a *Adapter) errorRatioOf(w windowSum, q string) platforms.Measurement {
	m := platforms.Measurement{Source: a.source, Query: q}
	if w.samples == 0 {
		m.NoData, m.Reason = true, a.noHistory(w)+"; use Prometheus for a baseline error ratio"
		return m
	}
	m.Query += historySpan(w, w.total)
	m.From, m.To, m.Requests = w.from, w.to, w.total
	if w.reqType != 0 {
		m.NoData, m.Reason = true, fmt.Sprintf("%s at %s is a %s, not a counter", a.cfg.RequestsMetric, a.where, wrongType(w.reqType))
		return m
	}
	if w.total > 0 {
		m.Value = w.failed / w.total
	}
	if reason := a.historyTraffic(w.total, w, a.cfg.RequestsMetric); reason != "" {
		m.NoData, m.Reason = true, reason
	}
	return m
}

func (a *Adapter) latencyOf(w windowSum, q string) platforms.Measurement {
	m := platforms.Measurement{Source: a.source, Query: q}
	if w.samples == 0 {
		m.NoData, m.Reason = true, a.noHistory(w)+"; set thresholds.baseline_p95 or use Prometheus"
		return m
	}
	m.Query += historySpan(w, w.count)
	m.From, m.To, m.Requests = w.from, w.to, w.count
	if w.histType != 0 {
		m.NoData, m.Reason = true, fmt.Sprintf("%s at %s is a %s, not a histogram", a.cfg.DurationMetric, a.where, wrongType(w.histType))
		return m
	}
	if reason := a.historyTraffic(w.count, w, a.cfg.DurationMetric); reason != "" {
		m.NoData, m.Reason = true, reason
		return m
	}
	v := quantile(0.95, w.buckets)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		m.NoData, m.Reason = true, fmt.Sprintf("the p95 of %s is %v (buckets missing or no +Inf bucket)", a.cfg.DurationMetric, v)
		return m
	}
	m.Value = v
	return m
}

var _ platforms.RangeMetrics = (*Adapter)(nil)

// ErrorRatioRange is the error ratio at every step in [from, to], each
// point over the samples of the window that ends at it, from the
// background history (a direct scrape without one cannot look back). A
// point with fewer than min_requests requests is left out.
func (a *Adapter) ErrorRatioRange(ctx context.Context, from, to time.Time, step, window time.Duration) (platforms.Series, error) {
	q := fmt.Sprintf("%s{%s=~\"5..\"%s} / %s%s", a.cfg.RequestsMetric, a.cfg.CodeLabel, a.selector(true), a.cfg.RequestsMetric, a.braces())
	return a.rangeOf(ctx, "error ratio", q, from, to, step, window, func(w windowSum) (float64, bool) {
		if w.reqType != 0 || w.total < float64(a.cfg.MinRequests) {
			return 0, false
		}
		return w.failed / w.total, true
	})
}

// LatencyP95Range is the p95 latency at every step in [from, to], likewise.
func (a *Adapter) LatencyP95Range(ctx context.Context, from, to time.Time, step, window time.Duration) (platforms.Series, error) {
	q := fmt.Sprintf("p95 of %s_bucket%s", a.cfg.DurationMetric, a.braces())
	return a.rangeOf(ctx, "p95 latency", q, from, to, step, window, func(w windowSum) (float64, bool) {
		if w.histType != 0 || !w.hasHist || w.count < float64(a.cfg.MinRequests) {
			return 0, false
		}
		v := quantile(0.95, w.buckets)
		return v, !math.IsNaN(v) && !math.IsInf(v, 0)
	})
}

func (a *Adapter) rangeOf(ctx context.Context, what, q string, from, to time.Time, step, window time.Duration, value func(windowSum) (float64, bool)) (platforms.Series, error) {
	s := platforms.Series{Source: a.source, Query: q + ", scrape history"}
	if !from.Before(to) || step <= 0 || window <= 0 {
		return s, fmt.Errorf("%s range from %s: range [%s, %s] step %s window %s is empty", what, a.source, from.Format(time.RFC3339), to.Format(time.RFC3339), step, window)
	}
	if a.bg == nil {
		s.NoData, s.Reason = true, "a direct scrape without rollbot's background history cannot look back"
		return s, nil
	}
	h, err := a.bg.history(ctx)
	if err != nil {
		return s, platforms.Userf(fmt.Errorf("%s from %s: %w", what, a.source, err),
			"could not read the scrape history of %s from Redis; try again", a.where)
	}
	var start time.Time
	if len(h.samples) > 0 {
		start = time.UnixMilli(sampleAt(h.samples[0]))
	}
	for t := from; !t.After(to); t = t.Add(step) {
		w := sumWindow(h, t.Add(-window), t)
		if w.samples == 0 {
			continue
		}
		if v, ok := value(w); ok {
			s.Points = append(s.Points, platforms.Point{At: t, Value: v})
		}
	}
	if len(s.Points) > 0 && start.After(from) {
		s.From = start
	}
	if len(s.Points) == 0 {
		w := windowSum{start: start, askFrom: from, askTo: to}
		s.NoData, s.Reason = true, a.noHistory(w)
		if !start.IsZero() && start.Before(to) {
			s.Reason = fmt.Sprintf("too little traffic in the scrape history of %s for %s–%s UTC (fewer than min_requests %d per %s)", a.where, clockOf(from), clockOf(to), a.cfg.MinRequests, fmtDur(window))
		}
	}
	return s, nil
}
