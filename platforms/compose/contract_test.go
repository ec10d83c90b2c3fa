package compose

import (
	"context"
	"testing"
	"time"

	"rollbot/platforms"
	"rollbot/testkit/platformtest"
)

// deployRecord stands for rollbot's own record of what was deployed
// (state.Store in production), which outranks local image build times.
type deployRecord []platforms.Revision

func (d deployRecord) Deployed(context.Context, string) ([]platforms.Revision, error) { return d, nil }

// TestContract runs the shared adapter contract against a real compose
// project: web went from v1 to v2, as rollbot's deploy record says.
func TestContract(t *testing.T) {
	parallel(t)
	p := newProject(t, twoServices)
	p.Compose([]string{"WEB_TAG=v1"}, "up", "-d")
	p.Compose([]string{"WEB_TAG=v2"}, "up", "-d")
	now := time.Now()
	rec := deployRecord{
		{ID: "v2", Artifact: "rollbot-sampleapp:v2", CreatedAt: now},
		{ID: "v1", Artifact: "rollbot-sampleapp:v1", CreatedAt: now.Add(-time.Hour)},
	}
	a := p.adapter(Config{Service: "web"}, WithHistory(rec, "web"))
	platformtest.Contract(t, platformtest.Env{Platform: a, Good: "rollbot-sampleapp:v1", Bad: "rollbot-sampleapp:v2", StopMayBeSkipped: true})
}
