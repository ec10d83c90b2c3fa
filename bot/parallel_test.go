package bot

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"rollbot/testkit/kubetest"
)

// TestMain stops the Kubernetes control plane the tests that need only a
// namespace share (kubetest.Shared).
func TestMain(m *testing.M) {
	code := m.Run()
	kubetest.StopShared()
	os.Exit(code)
}

// The bot package's tests are most of CI's time, and most of that is
// waiting: for a soak, a lease to lapse, a pod to be replaced. They run
// beside each other (t.Parallel), so the waits overlap; `.ci/run` passes
// a -parallel high enough that every one of them is released at once,
// and the gates below decide how many run and in what order.
//
// Tests that set process-wide environment variables (t.Setenv) stay
// serial: Go runs them first, one at a time, before the parallel ones.

// testGate lets at most its slots' worth of tests run at once; a test marked
// long goes before any other that waits, so the longest start first and
// the package ends soon after them.
type testGate struct {
	mu          sync.Mutex
	cond        *sync.Cond
	free        int
	longWaiting int
}

func newTestGate(slots int) *testGate {
	g := &testGate{free: slots}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// enter marks t parallel and waits for a slot, which t holds until it ends.
func (g *testGate) enter(t *testing.T, long bool) {
	t.Parallel()
	asked := time.Now()
	g.mu.Lock()
	if long {
		g.longWaiting++
	}
	for g.free == 0 || (!long && g.longWaiting > 0) {
		g.cond.Wait()
	}
	g.free--
	if long {
		g.longWaiting--
	}
	g.mu.Unlock()
	// CI's summary lists the slowest tests by the time they ran, not by
	// the time they waited here (.ci/testsummary reads this line).
	t.Logf("gate: waited %s for a slot", time.Since(asked).Round(time.Millisecond))
	t.Cleanup(func() {
		g.mu.Lock()
		g.free++
		g.cond.Broadcast()
		g.mu.Unlock()
	})
}

var (
	// heavyGate: tests that start a Kubernetes control plane, containers
	// or rollbot processes take a core for a while as they start; more
	// at once than this only makes every wait inside them late.
	heavyGate = newTestGate(3)
	// lightGate: a rollbot in the test process against the local Slack
	// server, a Redis prefix of its own, simulated or local platforms.
	lightGate = newTestGate(6)
)

// light marks t as a test that runs beside others in lightGate.
func light(t *testing.T) { lightGate.enter(t, false) }

// lightLong is light for a test that waits for long (a soak).
func lightLong(t *testing.T) { lightGate.enter(t, true) }

// heavy marks t as a test that runs beside others in heavyGate.
func heavy(t *testing.T) { heavyGate.enter(t, false) }

// heavyLong is heavy for one of the longest tests: it starts first.
func heavyLong(t *testing.T) { heavyGate.enter(t, true) }

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
