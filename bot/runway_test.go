package bot

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"

	"rollbot/testkit/wait"
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

// A burst's envelopes hold GOGC at burstGCPercent until none has come for
// gcHoldAfter; then the value from before comes back. GOGC off is left
// alone. Not parallel: GOGC is the process's.
func TestGCHoldDuringABurst(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	percent := func() int { p := debug.SetGCPercent(-1); debug.SetGCPercent(p); return p }
	g := newGCHold()
	start := time.Now()
	g.envelope(time.Now())
	if p := percent(); p != burstGCPercent {
		t.Fatalf("GOGC %d during a burst, want %d", p, burstGCPercent)
	}
	// Envelopes keep coming for twice the hold: still held.
	var last time.Time
	for time.Since(start) < 2*gcHoldAfter {
		last = time.Now()
		g.envelope(last)
		time.Sleep(gcHoldAfter / 10)
	}
	if p := percent(); p != burstGCPercent {
		t.Fatalf("GOGC %d while envelopes still come, want %d", p, burstGCPercent)
	}
	if err := wait.Until(context.Background(), 5*time.Second, "GOGC back to 100", func() (bool, error) {
		return percent() == 100, nil
	}); err != nil {
		t.Fatal(err)
	}
	if quiet := time.Since(last); quiet < gcHoldAfter {
		t.Errorf("GOGC restored %s after the last envelope; want %s or later", quiet, gcHoldAfter)
	}

	debug.SetGCPercent(-1)
	g.envelope(time.Now())
	if p := percent(); p != -1 {
		t.Errorf("GOGC off became %d during a burst", p)
	}
	if err := wait.Until(context.Background(), 5*time.Second, "the burst to end", func() (bool, error) {
		return !g.burst.running(), nil
	}); err != nil {
		t.Fatal(err)
	}
	if p := percent(); p != -1 {
		t.Errorf("GOGC off became %d after a burst", p)
	}
}
