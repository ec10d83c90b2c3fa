package bot

import (
	"runtime"
	"runtime/metrics"
	"testing"
)

func TestRunwayLow(t *testing.T) {
	for _, c := range []struct {
		objects, live, goal uint64
		low                 bool
	}{
		{8 << 20, 8 << 20, 16 << 20, false},  // just collected
		{10 << 20, 8 << 20, 16 << 20, false}, // a quarter used
		{10<<20 + 1, 8 << 20, 16 << 20, true},
		{17 << 20, 8 << 20, 16 << 20, true}, // past the goal
		{4 << 20, 8 << 20, 16 << 20, false}, // swept below live
		{9 << 20, 8 << 20, 8 << 20, true},   // a goal at the live size
	} {
		if got := runwayLow(c.objects, c.live, c.goal); got != c.low {
			t.Errorf("runwayLow(objects %d, live %d, goal %d) = %v, want %v", c.objects, c.live, c.goal, got, c.low)
		}
	}
}

// Not parallel: it reads the process's heap, which the parallel tests
// (paused while this one runs) would change under it.
func TestKeepHeapRunwayCollectsOnlyWhenLow(t *testing.T) {
	cycles := func() uint64 {
		s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	runtime.GC()
	before := cycles()
	if keepHeapRunway() {
		objects, live, goal := heapFigures()
		t.Fatalf("collected right after a collection (heap %d, live %d, goal %d)", objects, live, goal)
	}
	// Garbage until past a quarter of the runway, short of the goal.
	var garbage [][]byte
	for {
		objects, live, goal := heapFigures()
		if runwayLow(objects, live, goal) || cycles() != before {
			break
		}
		garbage = append(garbage, make([]byte, 64<<10))
	}
	runtime.KeepAlive(garbage) // garbage from here on
	if cycles() != before {
		t.Fatal("the heap was collected before a quarter of its runway was used")
	}
	if !keepHeapRunway() {
		t.Fatal("did not collect with more than a quarter of the runway used")
	}
	if after := cycles(); after == before {
		t.Fatal("keepHeapRunway reported a collection that did not happen")
	}
	if objects, live, goal := heapFigures(); runwayLow(objects, live, goal) {
		t.Fatalf("runway still low after the collection: heap %d, live %d, goal %d", objects, live, goal)
	}
}
