package probe

import (
	"context"
	"fmt"
	"strings"
	"time"

	"rollbot/platforms"
)

// Probes are one service's §5 probes as the runbook steps run them
// (platforms.Prober): every health URL must answer 2xx, and the smoke-test
// command must exit 0 in time.
type Probes struct {
	HealthURLs []string
	// SmokeCommand is argv; empty: no smoke test configured.
	SmokeCommand []string
	// SmokeTimeout bounds the smoke test; default DefaultSmokeTimeout.
	SmokeTimeout time.Duration
}

var _ platforms.Prober = (*Probes)(nil)

// Health checks every health URL; the detail names each that failed.
func (p *Probes) Health(ctx context.Context) (bool, string, error) {
	var failed []string
	for _, u := range p.HealthURLs {
		r := HealthCheck(ctx, u)
		if !r.OK {
			failed = append(failed, r.Target+": "+r.Detail)
		}
	}
	if len(failed) > 0 {
		return false, strings.Join(failed, "; "), nil
	}
	return true, fmt.Sprintf("%d/%d health URLs answer 2xx", len(p.HealthURLs), len(p.HealthURLs)), nil
}

// Smoke runs the smoke test; a failure's detail carries its output tail.
func (p *Probes) Smoke(ctx context.Context) (bool, string, error) {
	r := SmokeTest(ctx, p.SmokeCommand, p.SmokeTimeout)
	detail := r.Detail
	if !r.OK && r.Output != "" {
		detail += "\n```" + r.Output + "```"
	}
	return r.OK, detail, nil
}
