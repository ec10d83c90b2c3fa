package swarm

import "testing"

// dockerSlots bounds how many of this package's tests drive the Docker
// engine at once: CI runs tests with a -parallel above the core count (for
// the bot package's tests, which mostly wait), and more containers
// starting at once than the machine has cores only makes every health
// wait late.
var dockerSlots = make(chan struct{}, 2)

// parallel is t.Parallel holding one of dockerSlots while t runs.
func parallel(t *testing.T) {
	t.Parallel()
	dockerSlots <- struct{}{}
	t.Cleanup(func() { <-dockerSlots })
}
