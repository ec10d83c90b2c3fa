package compose

import (
	"context"
	"fmt"
	"slices"

	"github.com/moby/moby/api/types/container"

	"rollbot/platforms"
	"rollbot/platforms/internal/docker"
)

var _ platforms.Capturer = (*Adapter)(nil)

// Capture implements platforms.Capturer: the state and the last
// lim.Lines lines of the output of up to lim.Units containers of the
// service, the unhealthy ones (exited, restarting, unhealthy) and those
// running the current image first.
func (a *Adapter) Capture(ctx context.Context, lim platforms.CaptureLimits) (platforms.Evidence, error) {
	lim = lim.WithDefaults()
	var ev platforms.Evidence
	st, err := a.read(ctx)
	if err != nil {
		return ev, err
	}
	type cand struct {
		c   container.InspectResponse
		why error
	}
	var cands []cand
	for _, c := range st.containers {
		cands = append(cands, cand{c: c, why: a.containerReady(ctx, c)})
	}
	rank := func(x cand) int {
		switch {
		case x.why != nil:
			return 0
		case x.c.RestartCount > 0:
			return 1
		case docker.SameImage(x.c.Config.Image, st.current):
			return 2
		}
		return 3
	}
	slices.SortStableFunc(cands, func(x, y cand) int { return rank(x) - rank(y) })
	if len(cands) > lim.Units {
		ev.Missed("%d more containers not captured (limit: %d containers)", len(cands)-lim.Units, lim.Units)
		cands = cands[:lim.Units]
	}
	for _, x := range cands {
		n := name(x.c)
		if ctx.Err() != nil {
			ev.Missed("container %s: the capture ran out of time", n)
			continue
		}
		s := x.c.State
		line := fmt.Sprintf("image %s, restarts %d", x.c.Config.Image, x.c.RestartCount)
		if s != nil {
			line += fmt.Sprintf(", status %s, exit code %d, started %s, finished %s", s.Status, s.ExitCode, s.StartedAt, s.FinishedAt)
			if s.Error != "" {
				line += ", error: " + s.Error
			}
			if s.OOMKilled {
				line += ", OOM killed"
			}
		}
		if x.why != nil {
			line += "\nnot ready: " + x.why.Error()
		}
		ev.Add(lim, "container "+n+" state", "errors", line, false)
		tty := x.c.Config != nil && x.c.Config.Tty
		text, dropped, err := docker.TailLog(ctx, a.api, x.c.ID, tty, lim)
		if err != nil {
			ev.Missed("container %s: log not readable (%s)", n, docker.CaptureErr(ctx, a.log, "capture log", err, "container", n))
			if text == "" {
				continue
			}
		}
		ev.Add(lim, "container "+n, "log", text, dropped)
	}
	ev.Cap(lim.TotalBytes)
	return ev, nil
}
