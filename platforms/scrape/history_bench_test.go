package scrape

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
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

// BenchmarkHistoryMemory keeps an hour of samples at the default 2s
// interval (1800 samples) for each of 200 services and reports the heap
// they take: B/service and B/sample, with the encoded size of a sample.
func BenchmarkHistoryMemory(b *testing.B) {
	const services = 200
	n := int(DefaultHistory / DefaultInterval)
	for _, rps := range []float64{3, 1000} {
		b.Run(fmt.Sprintf("%grps", rps), func(b *testing.B) {
			samples, layouts := benchSamples(n, rps, DefaultInterval, 1)
			var encoded int
			for _, s := range samples {
				encoded += len(s)
			}
			end := time.UnixMilli(sampleAt(samples[len(samples)-1]))
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
						r.add(s, end)
					}
					rings[i] = r
				}
				b.StopTimer()
				runtime.GC()
				runtime.ReadMemStats(&m1)
				for _, r := range rings {
					if r.len() != n {
						b.Fatalf("ring holds %d samples, want %d", r.len(), n)
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
