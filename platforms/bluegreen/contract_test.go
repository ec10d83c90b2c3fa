package bluegreen

import (
	"testing"

	"rollbot/testkit/platformtest"
)

// TestContract runs the shared adapter contract with the real SDK against
// the local ELBv2 query-protocol server: blue is live (bad), green is the
// healthy standby.
func TestContract(t *testing.T) {
	e := setup(t)
	platformtest.Contract(t, platformtest.Env{Platform: e.adapter(t), Good: "myapp-green", Bad: "myapp-blue", StopMayBeSkipped: true})
}
