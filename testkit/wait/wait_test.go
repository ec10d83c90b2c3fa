package wait

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestUntilHolds(t *testing.T) {
	var n atomic.Int32
	err := Until(context.Background(), time.Minute, "the third call", func() (bool, error) {
		return n.Add(1) == 3, errors.New("not yet")
	})
	if err != nil || n.Load() != 3 {
		t.Fatalf("Until = %v after %d calls, want nil after 3", err, n.Load())
	}
}

func TestUntilReportsWhatAndLastReason(t *testing.T) {
	var n atomic.Int32
	err := Until(context.Background(), 100*time.Millisecond, "the impossible", func() (bool, error) {
		n.Add(1)
		return false, errors.New("still impossible")
	})
	if err == nil || !strings.Contains(err.Error(), "waiting for the impossible") || !strings.Contains(err.Error(), "still impossible") {
		t.Fatalf("Until = %v", err)
	}
	if n.Load() < 2 {
		t.Fatalf("condition evaluated %d times, want it polled", n.Load())
	}
}

func TestStopEndsAtOnce(t *testing.T) {
	var n atomic.Int32
	gone := errors.New("process exited")
	err := Until(context.Background(), time.Hour, "a server", func() (bool, error) {
		n.Add(1)
		return false, Stop(gone)
	})
	if !errors.Is(err, gone) || n.Load() != 1 {
		t.Fatalf("Until = %v after %d calls, want the stop error after 1", err, n.Load())
	}
}

func TestUntilHonoursCtx(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Until(ctx, time.Hour, "anything", func() (bool, error) { return false, nil }); err == nil {
		t.Fatal("Until with a cancelled ctx returned nil")
	}
}
