package bot

import (
	"context"
	"fmt"
	"strings"
	"time"

	"rollbot/platforms/probe"
)

// httpProber runs the §5 probes: health URLs (2xx expected) and the
// smoke-test command.
type httpProber struct {
	urls         []string
	smoke        []string
	smokeTimeout time.Duration
}

func (p *httpProber) Health(ctx context.Context) (bool, string, error) {
	var failed []string
	for _, u := range p.urls {
		r := probe.HealthCheck(ctx, u)
		if !r.OK {
			failed = append(failed, r.Target+": "+r.Detail)
		}
	}
	if len(failed) > 0 {
		return false, strings.Join(failed, "; "), nil
	}
	return true, fmt.Sprintf("%d/%d health URLs answer 2xx", len(p.urls), len(p.urls)), nil
}

func (p *httpProber) Smoke(ctx context.Context) (bool, string, error) {
	timeout := p.smokeTimeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	r := probe.SmokeTest(ctx, p.smoke, timeout)
	detail := r.Detail
	if !r.OK && r.Output != "" {
		detail += "\n```" + r.Output + "```"
	}
	return r.OK, detail, nil
}
