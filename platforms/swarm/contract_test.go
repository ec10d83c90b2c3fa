package swarm

import (
	"testing"

	dswarm "github.com/moby/moby/api/types/swarm"

	"rollbot/testkit/platformtest"
)

// TestContract runs the shared adapter contract against a real Swarm
// service whose v2 update failed its health checks and was paused.
func TestContract(t *testing.T) {
	parallel(t)
	v1, v2 := good.Ref(), bad.Ref()
	name := createService(t, v1, 2)
	deploy(t, name, v2)
	waitUpdateState(t, name, dswarm.UpdateStatePaused)
	a := newTestAdapter(t, Config{Service: name, HealthPath: "/health"})
	platformtest.Contract(t, platformtest.Env{Platform: a, Good: v1, Bad: v2, StopMayBeSkipped: true})
}
