package bot

import (
	"context"
	"time"
)

// httpProber runs the §5 probes: health URLs (2xx expected) and the
// smoke-test command. (Wired to platforms/probe.)
type httpProber struct {
	urls         []string
	smoke        []string
	smokeTimeout time.Duration
}

func (p *httpProber) Health(ctx context.Context) (bool, string, error) { return false, "pending", nil }
func (p *httpProber) Smoke(ctx context.Context) (bool, string, error)  { return false, "pending", nil }
