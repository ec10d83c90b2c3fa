package scrape

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"rollbot/platforms"
	"rollbot/state"
	"rollbot/testkit/promtest"
	"rollbot/testkit/redistest"
	"rollbot/testkit/wait"
)

func TestSampleEncoding(t *testing.T) {
	inf := math.Inf(1)
	bounds := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, inf}
	tests := []struct {
		name string
		s    sample
		max  int // encoded bytes at most
	}{
		{"first scrape, nothing measured", sample{at: 1764748800123}, 12},
		{"a few requests a second", sample{at: 1764748802123, prev: 1764748800123, total: 6, failed: 6, count: 6, layout: layoutOf(bounds),
			buckets: []float64{5, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6}}, 32},
		{"busy", sample{at: 1764748802123, prev: 1764748800123, total: 40000, failed: 12, count: 40000, layout: layoutOf(bounds),
			buckets: []float64{20000, 35000, 39000, 39990, 40000, 40000, 40000, 40000, 40000, 40000, 40000}}, 48},
		{"fractional and negative numbers", sample{at: 1764748802123, prev: 1764748801000, total: 2.5, failed: -1, count: 1e300, layout: 7,
			buckets: []float64{0.5, 0.25, 1e300}}, 80},
		{"metrics of the wrong kind", sample{at: 1764748802123, prev: 1764748801000, reqType: 3, histType: 2}, 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			enc := tt.s.encode(nil)
			if len(enc) > tt.max {
				t.Errorf("encoded in %d bytes, want at most %d", len(enc), tt.max)
			}
			if got := sampleAt(enc); got != tt.s.at {
				t.Errorf("sampleAt = %d, want %d", got, tt.s.at)
			}
			var got sample
			if err := decodeSample(enc, &got); err != nil {
				t.Fatal(err)
			}
			if len(got.buckets) == 0 {
				got.buckets = nil
			}
			if !reflect.DeepEqual(got, tt.s) {
				t.Fatalf("decoded %+v\nwant    %+v", got, tt.s)
			}
			for i := range len(enc) - 1 {
				if err := decodeSample(enc[:i], &got); err == nil {
					t.Fatalf("decoding the first %d of %d bytes: no error", i, len(enc))
				}
			}
		})
	}
	b, ok := decodeLayout(encodeLayout(bounds))
	if !ok || !reflect.DeepEqual(b, bounds) {
		t.Fatalf("layout round trip = %v, %v", b, ok)
	}
}

func TestRingBounded(t *testing.T) {
	r := newRing(time.Minute, 40)
	t0 := time.UnixMilli(1764748800000)
	for i := range 200 {
		at := t0.Add(time.Duration(i) * time.Second)
		s := sample{at: at.UnixMilli(), prev: at.Add(-time.Second).UnixMilli(), total: float64(i)}
		r.add(s.encode(nil), at)
	}
	h, _ := r.copyOut()
	if len(h.samples) != 40 {
		t.Fatalf("%d samples kept, want the last 40", len(h.samples))
	}
	if got := sampleAt(h.samples[0]); got != t0.Add(160*time.Second).UnixMilli() {
		t.Fatalf("oldest kept sample at %d", got)
	}
	r = newRing(10*time.Second, 1000)
	for i := range 100 {
		at := t0.Add(time.Duration(i) * time.Second)
		r.add((&sample{at: at.UnixMilli()}).encode(nil), at)
	}
	if n := r.len(); n != 11 {
		t.Fatalf("%d samples kept for 10s at 1/s, want 11", n)
	}
	if len(r.buf) > 2*11*12 {
		t.Fatalf("buffer of %d bytes for 11 samples: not compacted", len(r.buf))
	}
}

// TestRingMemoryWithinReadme: three hours of scraping at the default
// interval into a ring that keeps an hour, at 3 and at 1000 requests a
// second. The ring's buffers never hold more than the README's figure per
// service (BenchmarkHistoryMemory measures the heap against it), and after
// the first hour no more than the hour's samples and a little slack: the
// compaction once half the buffer was dropped samples kept twice the
// history, over twice the README's figure.
func TestRingMemoryWithinReadme(t *testing.T) {
	readme := readmeHistoryKB(t)
	n := int(DefaultHistory / DefaultInterval)
	for _, rps := range []float64{3, 1000} {
		t.Run(fmt.Sprintf("%grps", rps), func(t *testing.T) {
			r, peak := scrapeHours(3, rps, 1)
			if k := r.len(); k < n || k > n+2 {
				t.Fatalf("%d samples kept, want an hour's %d", k, n)
			}
			// What an hour of samples takes at least: their bytes and an
			// offset each.
			h, _ := r.copyOut()
			need := 4 * len(h.samples)
			for _, s := range h.samples {
				need += len(s)
			}
			if peak > int(readme[rps]*1000) {
				t.Errorf("the ring's buffers reached %d bytes, more than the README's %g KB per service", peak, readme[rps])
			}
			if now := cap(r.buf) + 4*cap(r.offs); now > need*5/4 {
				t.Errorf("after three hours the buffers hold %d bytes for %d bytes of samples and offsets: more than a quarter of slack", now, need)
			}
			t.Logf("%g req/s: an hour of samples in %d bytes, buffers %d now, %d at most", rps, need, cap(r.buf)+4*cap(r.offs), peak)
		})
	}
}

// newestAt is the time of the newest sample of a's history.
func newestAt(t *testing.T, a *Adapter) time.Time {
	t.Helper()
	h, err := a.bg.history(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(h.samples) == 0 {
		return time.Time{}
	}
	return time.UnixMilli(sampleAt(h.samples[len(h.samples)-1]))
}

// waitScraped waits for a background scrape after t0 and returns its time.
func waitScraped(t *testing.T, a *Adapter, t0 time.Time) time.Time {
	t.Helper()
	var at time.Time
	wait.For(t, 20*time.Second, "a background scrape after "+t0.Format(time.TimeOnly), func() (bool, error) {
		at = newestAt(t, a)
		return at.After(t0), fmt.Errorf("newest sample at %s", at.Format(time.StampMilli))
	})
	return at
}

// TestCollectorHistory: the background history answers any window inside
// it from the samples that lie in it, exactly, including a window from
// before a change; a counter reset (the service restarted) counts from
// zero; a window before the history is NoData.
func TestCollectorHistory(t *testing.T) {
	bin := promtest.BuildSampleApp(t)
	app := promtest.StartSampleApp(t, bin)
	a := newAdapter(t, Config{URL: app.URL + "/metrics", Interval: 200 * time.Millisecond, MinRequests: 20}, nil)
	c := NewCollector(CollectorOptions{}, nil)
	c.Add("app", a)
	t0 := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitScraped(t, a, t0)

	// Phase 1: 100 good requests. The window ends after a scrape that
	// follows them, and the next phase starts after the next scrape, so
	// no sample holds traffic of both.
	app.Work(t, 100, 4)
	waitScraped(t, a, time.Now())
	mark := time.Now()
	waitScraped(t, a, mark)
	// Phase 2: 60 slow failing requests.
	app.SetMode(t, "error_ratio", "1", "latency", "60ms")
	app.Work(t, 60, 6)
	waitScraped(t, a, time.Now())
	ctx0 := context.Background()

	good, err := a.ErrorRatio(ctx0, t0, mark)
	if err != nil || good.NoData || good.Requests != 100 || good.Value != 0 {
		t.Fatalf("error ratio before the change = %+v, %v; want 0 over 100 requests", good, err)
	}
	bad, err := a.ErrorRatio(ctx0, mark, time.Now())
	if err != nil || bad.NoData || bad.Requests != 60 || bad.Value != 1 {
		t.Fatalf("error ratio after the change = %+v, %v; want 1 over 60 requests", bad, err)
	}
	// Samples keep millisecond times: compare at that precision.
	if bad.From.Before(mark.Truncate(time.Millisecond)) || !strings.Contains(bad.Query, "scrape history ") {
		t.Fatalf("error ratio after the change measured from %s (window from %s): %q", bad.From, mark, bad.Query)
	}
	base, err := a.LatencyP95(ctx0, t0, mark)
	if err != nil || base.NoData || base.Value > 0.025 || base.Requests != 100 {
		t.Fatalf("p95 before = %+v, %v; want a few ms over 100", base, err)
	}
	slow, err := a.LatencyP95(ctx0, mark, time.Now())
	if err != nil || slow.NoData || slow.Value < 0.05 || slow.Value > 0.1 || slow.Requests != 60 {
		t.Fatalf("p95 after = %+v, %v; want in [50ms, 100ms] over 60", slow, err)
	}

	// An hour asked for: the history measured, from the first scrape.
	all, err := a.ErrorRatio(ctx0, time.Now().Add(-time.Hour), time.Now())
	if err != nil || all.Requests != 160 || all.Value != 60.0/160 {
		t.Fatalf("error ratio over the history = %+v, %v; want 60/160", all, err)
	}
	if all.From.Before(t0.Truncate(time.Millisecond)) || all.From.After(t0.Add(time.Second)) {
		t.Fatalf("history measured from %s, want the first scrape, just after %s", all.From, t0)
	}

	// min_requests applies to the span measured.
	few := time.Now()
	waitScraped(t, a, few)
	app.Work(t, 5, 1)
	waitScraped(t, a, time.Now())
	m, err := a.ErrorRatio(ctx0, few, time.Now())
	if err != nil || !m.NoData || m.Requests != 5 || !strings.Contains(m.Reason, "too little traffic: 5 requests in the ") || !strings.Contains(m.Reason, "of scrape history measured, fewer than min_requests 20") {
		t.Fatalf("5 requests = %+v, %v; want too little traffic", m, err)
	}

	// Before the history: NoData, saying where the history starts.
	old, err := a.LatencyP95(ctx0, t0.Add(-10*time.Minute), t0.Add(-5*time.Minute))
	if err != nil || !old.NoData || !strings.Contains(old.Reason, "no scrape history for ") || !strings.Contains(old.Reason, "set thresholds.baseline_p95") {
		t.Fatalf("window before the history = %+v, %v", old, err)
	}

	// The service restarts (as after a rollback): its counters start
	// from zero, and the increase is counted from zero.
	r0 := time.Now()
	waitScraped(t, a, r0)
	app.Stop()
	app = promtest.StartSampleAppAt(t, bin, app.Addr, "-error-ratio", "1")
	app.Work(t, 30, 3)
	waitScraped(t, a, time.Now())
	after, err := a.ErrorRatio(ctx0, r0, time.Now())
	if err != nil || after.NoData || after.Requests != 30 || after.Value != 1 {
		t.Fatalf("after the restart = %+v, %v; want 30 requests, all failed", after, err)
	}
}

// sharedRedis returns two clients of the test Redis (as two replicas
// have) and a prefix of this test's own.
func sharedRedis(t testing.TB) (redis.UniversalClient, redis.UniversalClient, string) {
	t.Helper()
	opt, err := redis.ParseURL(redistest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	a, b := redis.NewClient(opt), redis.NewClient(opt)
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b, "scrapetest" + strconv.FormatInt(time.Now().UnixNano(), 36)
}

// TestCollectorShared: two replicas (collectors on their own Redis
// clients) share one service's history; one scrapes at a time. When the
// scraping one stops, the other takes the lease over and starts from the
// shared samples, so the history from before the takeover is still there.
func TestCollectorShared(t *testing.T) {
	bin := promtest.BuildSampleApp(t)
	app := promtest.StartSampleApp(t, bin)
	ra, rb, prefix := sharedRedis(t)
	sa, sb := state.New(ra, prefix), state.New(rb, prefix)
	cfg := Config{URL: app.URL + "/metrics", Interval: 200 * time.Millisecond, MinRequests: 1}
	aa, ab := newAdapter(t, cfg, nil), newAdapter(t, cfg, nil)
	ca := NewCollector(CollectorOptions{Shared: sa, Owner: "replica-a", Lease: time.Second}, nil)
	cb := NewCollector(CollectorOptions{Shared: sb, Owner: "replica-b", Lease: time.Second}, nil)
	ca.Add("app", aa)
	cb.Add("app", ab)

	run := func(c *Collector) func() {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); c.Run(ctx) }()
		stop := func() { cancel(); <-done }
		t.Cleanup(stop)
		return stop
	}
	ctx := context.Background()
	owner := func() string {
		h, err := sa.ScrapeHistory(ctx, "app")
		if err != nil {
			t.Fatal(err)
		}
		return h.Owner
	}
	t0 := time.Now()
	stopA := run(ca)
	wait.For(t, 10*time.Second, "replica-a to scrape", func() (bool, error) {
		return owner() == "replica-a", errors.New("owner " + owner())
	})
	run(cb)
	waitScraped(t, aa, t0)
	app.Work(t, 50, 5)
	waitScraped(t, aa, time.Now())
	// replica-b reads the shared list, which has the samples after a push.
	wait.For(t, 10*time.Second, "replica-b to see the 50 requests", func() (bool, error) {
		m, err := ab.ErrorRatio(ctx, t0, time.Now())
		return err == nil && m.Requests == 50, fmt.Errorf("%+v %v", m, err)
	})
	if o := owner(); o != "replica-a" {
		t.Fatalf("owner %q while replica-a runs, want replica-a", o)
	}
	before, err := sa.ScrapeHistory(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}

	stopA()
	wait.For(t, 10*time.Second, "replica-b to take the scraping over", func() (bool, error) {
		return owner() == "replica-b", errors.New("owner " + owner())
	})
	took := time.Now()
	waitScraped(t, ab, took)
	// Redis forgets the push script (as after a restart): the next push
	// loads it again.
	if err := rb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	flushed := len(sampleList(t, sb))
	wait.For(t, 10*time.Second, "pushes after SCRIPT FLUSH", func() (bool, error) {
		n := len(sampleList(t, sb))
		return n > flushed+2, fmt.Errorf("%d samples, %d at the flush", n, flushed)
	})
	app.Work(t, 20, 2)
	waitScraped(t, ab, time.Now())
	m, err := ab.ErrorRatio(ctx, t0, time.Now())
	if err != nil || m.Requests != 70 {
		t.Fatalf("after the takeover: %+v, %v; want the 50 requests from before and the 20 after", m, err)
	}
	if m.From.After(sampleTime(t, before, 1)) {
		t.Fatalf("history measured from %s, after replica-a's samples (from %s)", m.From, sampleTime(t, before, 0))
	}
	after, err := sb.ScrapeHistory(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Samples) <= len(before.Samples) || string(after.Samples[0]) != string(before.Samples[0]) {
		t.Fatalf("shared list: %d samples before the takeover, %d after, first kept: %v", len(before.Samples), len(after.Samples), string(after.Samples[0]) == string(before.Samples[0]))
	}
}

func sampleTime(t *testing.T, h state.ScrapeHistory, i int) time.Time {
	t.Helper()
	if i >= len(h.Samples) {
		t.Fatalf("only %d samples", len(h.Samples))
	}
	return time.UnixMilli(sampleAt(h.Samples[i]))
}

func sampleList(t *testing.T, s *state.Store) [][]byte {
	t.Helper()
	h, err := s.ScrapeHistory(context.Background(), "app")
	if err != nil {
		t.Fatal(err)
	}
	return h.Samples
}

// TestCollectorRange: the background history answers the verdict's range
// queries: each point over the samples of its window, the series starting
// where the history does; an adapter without a history says it cannot
// look back.
func TestCollectorRange(t *testing.T) {
	bin := promtest.BuildSampleApp(t)
	app := promtest.StartSampleApp(t, bin, "-self-load", "100", "-latency", "5ms")
	a := newAdapter(t, Config{URL: app.URL + "/metrics", Interval: 200 * time.Millisecond}, nil)
	ctx0 := context.Background()
	before := time.Now()
	if s, err := a.ErrorRatioRange(ctx0, before.Add(-time.Minute), before, time.Second, 5*time.Second); err != nil || !s.NoData || !strings.Contains(s.Reason, "cannot look back") {
		t.Fatalf("without a background history: %+v, %v", s, err)
	}
	c := NewCollector(CollectorOptions{}, nil)
	c.Add("app", a)
	t0 := time.Now()
	ctx, cancel := context.WithCancel(ctx0)
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitScraped(t, a, t0.Add(3*time.Second))
	mark := time.Now()
	app.SetMode(t, "error_ratio", "0.3", "latency", "300ms")
	waitScraped(t, a, mark.Add(3*time.Second))
	end := time.Now()

	const step, window = 250 * time.Millisecond, time.Second
	errs, err := a.ErrorRatioRange(ctx0, t0.Add(-time.Minute), end, step, window)
	if err != nil || errs.NoData || len(errs.Points) < 16 {
		t.Fatalf("error ratio range: %d points, %+v, %v", len(errs.Points), errs.Reason, err)
	}
	if errs.From.Before(t0.Truncate(time.Millisecond)) || errs.From.After(t0.Add(time.Second)) {
		t.Fatalf("series starts at %s, want the history's first scrape just after %s", errs.From, t0)
	}
	p95, err := a.LatencyP95Range(ctx0, t0.Add(-time.Minute), end, step, window)
	if err != nil || p95.NoData {
		t.Fatalf("p95 range: %+v, %v", p95, err)
	}
	for _, s := range []struct {
		name      string
		points    []platforms.Point
		good, bad func(float64) bool
	}{
		{"error ratio", errs.Points, func(v float64) bool { return v < 0.01 }, func(v float64) bool { return v > 0.15 && v < 0.45 }},
		{"p95", p95.Points, func(v float64) bool { return v < 0.1 }, func(v float64) bool { return v > 0.25 && v <= 0.5 }},
	} {
		var goods, bads int
		for _, p := range s.points {
			switch {
			case p.At.Before(mark.Add(-100 * time.Millisecond)):
				if !s.good(p.Value) {
					t.Fatalf("%s at %s (before the change at %s) = %v", s.name, p.At.Format(time.StampMilli), mark.Format(time.StampMilli), p.Value)
				}
				goods++
			case p.At.After(mark.Add(window + 500*time.Millisecond)):
				if !s.bad(p.Value) {
					t.Fatalf("%s at %s (after the change at %s) = %v", s.name, p.At.Format(time.StampMilli), mark.Format(time.StampMilli), p.Value)
				}
				bads++
			}
		}
		if goods < 4 || bads < 4 {
			t.Fatalf("%s: %d points before the change, %d after", s.name, goods, bads)
		}
	}
}
