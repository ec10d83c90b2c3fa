package bot

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"
)

// The bot package's tests are most of CI's time, and most of that is
// waiting: for a soak, a lease to lapse, a pod to be replaced. They run
// beside each other (t.Parallel), so the waits overlap; `.ci/run` passes
// -parallel to allow more than one per core.
//
// Tests that set process-wide environment variables (t.Setenv) stay
// serial: Go runs them first, one at a time, before the parallel ones.

// heavySlots bounds the tests that start a Kubernetes control plane,
// containers or rollbot processes: each of those takes a core for a while
// as it starts, and more at once than the machine has cores only makes
// every wait inside them late.
var heavySlots = make(chan struct{}, 3)

// light marks t as a test that runs beside others: a rollbot in the test
// process against the local Slack server, a Redis prefix of its own and
// simulated or local platforms.
func light(t *testing.T) { t.Parallel() }

// heavy marks t as a test that runs beside light ones and holds one of
// heavySlots while it runs.
func heavy(t *testing.T) {
	t.Parallel()
	heavySlots <- struct{}{}
	t.Cleanup(func() { <-heavySlots })
}

var envSeq atomic.Int64

// setenvFor sets a variable whose name no other test uses (base and a
// sequence number) for t's lifetime and returns that name: unlike
// t.Setenv it lets t run in parallel, since no other test reads it. The
// configuration under test names the returned variable.
func setenvFor(t *testing.T, base, value string) string {
	t.Helper()
	name := fmt.Sprintf("%s_%d", base, envSeq.Add(1))
	if err := os.Setenv(name, value); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Unsetenv(name) })
	return name
}
