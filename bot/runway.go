package bot

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// keepHeapRunway collects garbage while rollbot is quiet, once the heap
// has used more than a quarter of its runway to the next collection (the
// garbage collector's goal less the live heap). Start-up and the periodic
// work between incidents (lease renewals, scrapes, Socket Mode pings)
// leave the heap close to the point where the pacer starts the next
// collection, so the first burst of commands after a quiet spell started
// one among its acks, often three before its handlers were done: with the
// bench/ackload config the heap idled at 9.3 MB of objects (6.5 MB live,
// goal 14 MB) and the burst's collection began 11 MB in, within the first
// envelopes. Collected here, while nothing waits, the burst has most of
// the runway to itself. The cost: a collection of a few milliseconds of
// CPU once the slow allocation of an idle process has used a quarter of
// the runway (minutes), and less garbage held meanwhile.
//
// It reports whether it collected.
func keepHeapRunway() bool {
	if !runwayLow(heapFigures()) {
		return false
	}
	runtime.GC()
	return true
}

// runwayLow reports whether the heap has used more than a quarter of the
// way from its live size to its goal.
func runwayLow(objects, live, goal uint64) bool {
	if goal <= live {
		return objects >= goal
	}
	return objects-min(objects, live) > (goal-live)/4
}

// heapFigures reads the heap's current size (live objects and garbage
// not yet swept), its live size at the last collection, and the goal.
func heapFigures() (objects, live, goal uint64) {
	s := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/heap/goal:bytes"},
	}
	metrics.Read(s)
	return s[0].Value.Uint64(), s[1].Value.Uint64(), s[2].Value.Uint64()
}

// gcHold keeps the garbage collector out of a burst's acknowledgements:
// the first envelope after a quiet spell raises GOGC to burstGCPercent,
// and gcHoldAfter after the last envelope the previous value comes back
// (and with it, if the heap has passed its goal, a collection, while the
// handlers work). Without it a burst of 200 commands started a collection
// within its first envelopes in every run even after keepHeapRunway:
// GODEBUG=gctrace=1 under bench/ackload, 2026-12-06, showed two
// collections in the burst's first 60 ms (12→13→9 MB, 16→16→8 MB, goal
// 15 MB), with stop-the-world phases of up to 1.9 ms. The same work is
// done, after the acks. A GOGC set off, or at least burstGCPercent, is
// left alone. The heap may grow to burstGCPercent/100 times its live size
// during a burst; it is an idle process's memory that the goal bounds.
type gcHold struct {
	burst quietTimer
	held  bool // GOGC raised by this hold
	saved int  // GOGC before the hold
}

const (
	burstGCPercent = 400
	gcHoldAfter    = 250 * time.Millisecond
)

func newGCHold() *gcHold {
	g := &gcHold{}
	g.burst.start = func() {
		old := debug.SetGCPercent(burstGCPercent)
		if old < 0 || old >= burstGCPercent {
			debug.SetGCPercent(old)
			return
		}
		g.held, g.saved = true, old
	}
	g.burst.end = func() {
		if g.held {
			debug.SetGCPercent(g.saved)
			g.held = false
		}
	}
	return g
}

// envelope records an envelope's arrival, raising GOGC if it is the first
// of a burst.
func (g *gcHold) envelope(now time.Time) { g.burst.mark(now, gcHoldAfter) }
