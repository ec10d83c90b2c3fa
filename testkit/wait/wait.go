// Package wait is the one way tests and test kits wait for something that
// happens on its own time: a server that starts listening, a container
// that becomes healthy, a record that appears. It polls a condition until
// it holds or a deadline passes, and on timeout says what was awaited and
// the last reason it did not hold.
//
// The deadline is a bound on a shared, busy machine, not a measurement:
// choose it generously. Nothing here asserts how fast anything is (speed
// belongs in benchmarks).
//
//	wait.For(t, 10*time.Second, "sshd to listen", func() (bool, error) {
//		c, err := net.Dial("tcp", addr)
//		if err != nil {
//			return false, err
//		}
//		c.Close()
//		return true, nil
//	})
//
// A condition returns (true, nil) when it holds; (false, err) or
// (false, nil) when it does not hold yet — the error is the reason shown
// on timeout and does not stop the polling. A condition that knows the
// state will never come (the process it waits for exited) returns
// (false, wait.Stop(err)): the polling ends at once with err.
package wait

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// Interval is the pause between two evaluations of a condition.
const Interval = 20 * time.Millisecond

// Cond reports whether the awaited state holds, or why not yet.
type Cond func() (bool, error)

// For polls cond every Interval until it holds; after timeout it fails t
// with what and the last reason.
func For(t testing.TB, timeout time.Duration, what string, cond Cond) {
	t.Helper()
	if err := Until(context.Background(), timeout, what, cond); err != nil {
		t.Fatal(err)
	}
}

// Every is For with another pause between evaluations, for conditions
// that cost something to evaluate (a Docker or Kubernetes API call, a
// process start).
func Every(t testing.TB, interval, timeout time.Duration, what string, cond Cond) {
	t.Helper()
	if err := poll(context.Background(), interval, timeout, what, cond); err != nil {
		t.Fatal(err)
	}
}

// Until is For for code without a testing.TB (a kit's start-up that
// returns errors): it returns an error naming what and the last reason
// when timeout passes or ctx ends first, nil when cond holds.
func Until(ctx context.Context, timeout time.Duration, what string, cond Cond) error {
	return poll(ctx, Interval, timeout, what, cond)
}

// UntilEvery is Until with another pause between evaluations.
func UntilEvery(ctx context.Context, interval, timeout time.Duration, what string, cond Cond) error {
	return poll(ctx, interval, timeout, what, cond)
}

// Stop marks err as final: the awaited state will never come, so the
// polling ends at once and reports err.
func Stop(err error) error { return &stopError{err} }

type stopError struct{ err error }

func (e *stopError) Error() string { return e.err.Error() }
func (e *stopError) Unwrap() error { return e.err }

func poll(ctx context.Context, interval, timeout time.Duration, what string, cond Cond) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		var stop *stopError
		if errors.As(err, &stop) {
			return fmt.Errorf("waiting for %s: %w", what, stop.err)
		}
		select {
		case <-ctx.Done():
			if err == nil {
				return fmt.Errorf("waiting for %s: not done within %s", what, timeout)
			}
			return fmt.Errorf("waiting for %s: not done within %s: %w", what, timeout, err)
		case <-tick.C:
		}
	}
}
