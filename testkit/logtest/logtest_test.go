package logtest

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

// TestConcurrentWrites writes from many goroutines (run with -race) and
// checks that every line arrived whole.
func TestConcurrentWrites(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fmt.Fprintf(&b, "line %02d\n", i)
		}()
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 20 {
		t.Fatalf("%d lines, want 20:\n%s", len(lines), b.String())
	}
	for _, l := range lines {
		if len(l) != len("line 00") || !strings.HasPrefix(l, "line ") {
			t.Fatalf("torn line %q", l)
		}
	}
}
