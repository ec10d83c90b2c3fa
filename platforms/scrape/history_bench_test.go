package scrape

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"rollbot/state"
)

// benchSamples makes n consecutive samples of one service as the sample
// service's instrumentation gives them (requests by code, a 10-bucket
// latency histogram) at about rps requests a second, 1% failing, scraped
// every interval.
func benchSamples(n int, rps float64, interval time.Duration, seed uint64) ([][]byte, map[uint32][]float64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	bounds := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}
	t0 := time.UnixMilli(1764748800000)
	var ok, failed float64
	cum := make([]float64, len(bounds))
	var count float64
	snap := func(at time.Time) *snapshot {
		s := &snapshot{at: at, requests: map[string]counter{
			`code="200",handler="/work",`: {value: ok},
			`code="500",handler="/work",`: {value: failed, failed: true},
		}, hists: map[string]histogram{}}
		h := histogram{count: count, buckets: map[float64]float64{math.Inf(1): count}}
		for i, le := range bounds {
			h.buckets[le] = cum[i]
		}
		s.hists[`handler="/work",`] = h
		return s
	}
	layouts := map[uint32][]float64{}
	var out [][]byte
	prev := snap(t0)
	for i := 1; i <= n; i++ {
		reqs := math.Round(rps * interval.Seconds() * (0.8 + 0.4*rng.Float64()))
		for range int(reqs) {
			if rng.Float64() < 0.01 {
				failed++
			} else {
				ok++
			}
			count++
			lat := 0.002 + rng.ExpFloat64()*0.01
			for j, le := range bounds {
				if lat <= le {
					cum[j]++
				}
			}
		}
		cur := snap(t0.Add(time.Duration(i) * interval))
		s, b := makeSample(prev, cur)
		layouts[s.layout] = b
		out = append(out, s.encode(nil))
		prev = cur
	}
	return out, layouts
}

// scrapeHours streams hours of samples (scraped every DefaultInterval at
// about rps requests a second) into a ring that keeps DefaultHistory, as
// the collector does, and reports the most its buffers ever held
// (capacities: what the heap holds for them).
func scrapeHours(hours int, rps float64, seed uint64) (r *ring, peak int) {
	n := int(DefaultHistory / DefaultInterval)
	samples, layouts := benchSamples(hours*n, rps, DefaultInterval, seed)
	r = newRing(DefaultHistory, n+2)
	for id, l := range layouts {
		r.addLayout(id, l)
	}
	for _, s := range samples {
		r.add(s, time.UnixMilli(sampleAt(s)))
		peak = max(peak, cap(r.buf)+4*cap(r.offs))
	}
	return r, peak
}

// readmeHistoryKB reads the README's figures for the direct scrape history
// in memory: KB (1000 bytes) per service by requests a second.
func readmeHistoryKB(tb testing.TB) map[float64]float64 {
	tb.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		tb.Fatal(err)
	}
	var row string
	for line := range strings.Lines(string(b)) {
		if strings.HasPrefix(line, "| Direct scrape history: an hour of samples") {
			row = line
		}
	}
	out := map[float64]float64{}
	for _, m := range regexp.MustCompile(`\b(\d+) req/s: [^;|]*?\b(\d+) KB per service`).FindAllStringSubmatch(row, -1) {
		rps, _ := strconv.ParseFloat(m[1], 64)
		kb, _ := strconv.ParseFloat(m[2], 64)
		out[rps] = kb
	}
	if len(out) != 2 {
		tb.Fatalf("the README's direct scrape history row gives %v KB per service, want the 3 and 1000 req/s figures:\n%s", out, row)
	}
	return out
}

// BenchmarkHistoryMemory keeps an hour of samples at the default 2s
// interval (1800 samples) for each of 200 services, after three hours of
// scraping (the rings have dropped and compacted samples for two hours,
// as in a bot that has run for a while), and reports the heap they take:
// B/service and B/sample, with the encoded size of a sample. It fails
// above the README's figure per service.
func BenchmarkHistoryMemory(b *testing.B) {
	const services = 200
	n := int(DefaultHistory / DefaultInterval)
	readme := readmeHistoryKB(b)
	for _, rps := range []float64{3, 1000} {
		b.Run(fmt.Sprintf("%grps", rps), func(b *testing.B) {
			samples, layouts := benchSamples(3*n, rps, DefaultInterval, 1)
			var encoded int
			for _, s := range samples[2*n:] {
				encoded += len(s)
			}
			var perService float64
			for b.Loop() {
				b.StopTimer()
				runtime.GC()
				var m0, m1 runtime.MemStats
				runtime.ReadMemStats(&m0)
				b.StartTimer()
				rings := make([]*ring, services)
				for i := range rings {
					r := newRing(DefaultHistory, n+2)
					for id, l := range layouts {
						r.addLayout(id, l)
					}
					for _, s := range samples {
						r.add(s, time.UnixMilli(sampleAt(s)))
					}
					rings[i] = r
				}
				b.StopTimer()
				runtime.GC()
				runtime.ReadMemStats(&m1)
				for _, r := range rings {
					if r.len() < n || r.len() > n+2 {
						b.Fatalf("ring holds %d samples, want an hour's %d", r.len(), n)
					}
				}
				runtime.KeepAlive(rings)
				perService = float64(m1.HeapAlloc-m0.HeapAlloc) / services
				b.StartTimer()
			}
			b.ReportMetric(perService, "B/service")
			b.ReportMetric(perService/float64(n), "B/sample")
			b.ReportMetric(float64(encoded)/float64(n), "encoded-B/sample")
			b.ReportMetric(perService*services, "B/200-services")
			if perService > readme[rps]*1000 {
				b.Fatalf("%.0f B per service, more than the README's %g KB", perService, readme[rps])
			}
		})
	}
}

// BenchmarkSharedHistory measures the Redis side on a real redis-server:
// one flush of 200 services, one new sample each, in one round trip
// (ns/op), and the memory Redis uses for an hour of one service's samples
// (MEMORY USAGE of its list, B/service-redis).
func BenchmarkSharedHistory(b *testing.B) {
	rdb, _, prefix := sharedRedis(b)
	st := state.New(rdb, prefix)
	ctx := context.Background()
	const services = 200
	n := int(DefaultHistory / DefaultInterval)
	samples, layouts := benchSamples(n, 3, DefaultInterval, 2)
	names := make([]string, services)
	for i := range names {
		names[i] = fmt.Sprintf("svc%03d", i)
	}
	if got, err := st.ClaimScrapes(ctx, "bench", names, time.Hour); err != nil || len(got) != services {
		b.Fatalf("claim: %v %v", got, err)
	}
	lays := map[string][]byte{}
	for id, l := range layouts {
		lays[state.LayoutID(id)] = encodeLayout(l)
	}
	// An hour of svc000, in flushes of 100.
	for i := 0; i < n; i += 100 {
		p := state.ScrapePush{Service: names[0], Samples: samples[i:min(i+100, n)], Max: n + 2, Keep: DefaultHistory, Layouts: lays}
		if lost, err := st.PushScrapes(ctx, "bench", time.Hour, []state.ScrapePush{p}); err != nil || len(lost) > 0 {
			b.Fatalf("push: %v %v", lost, err)
		}
	}
	usage, err := rdb.MemoryUsage(ctx, "{"+prefix+"}:scrape:"+names[0], 0).Result()
	if err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		pushes := make([]state.ScrapePush, services)
		for j := range pushes {
			pushes[j] = state.ScrapePush{Service: names[j], Samples: [][]byte{samples[i%n]}, Max: n + 2, Keep: DefaultHistory}
		}
		i++
		if lost, err := st.PushScrapes(ctx, "bench", time.Hour, pushes); err != nil || len(lost) > 0 {
			b.Fatalf("push: %v %v", lost, err)
		}
	}
	b.ReportMetric(float64(usage), "B/service-redis")
}
