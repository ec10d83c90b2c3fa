package bot

import (
	"runtime"
	"runtime/metrics"
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
