package vm

import (
	"context"
	"errors"
	"strconv"
	"strings"

	"rollbot/platforms"
)

var _ platforms.Capturer = (*Adapter)(nil)

// DefaultLogCommand is LogCommand's default.
const DefaultLogCommand = "journalctl -u {unit} -n {lines} --no-pager -o short-iso"

func (a *Adapter) logCommand(lines int) string {
	cmd := a.cfg.LogCommand
	if cmd == "" {
		cmd = DefaultLogCommand
	}
	return strings.NewReplacer("{unit}", shellQuote(a.cfg.Unit), "{lines}", strconv.Itoa(lines)).Replace(cmd)
}

// Capture implements platforms.Capturer: the unit's recent log (log_command,
// by default journalctl -u <unit> -n <lines>) on up to lim.Units hosts, in
// their configured order, each kept within lim.SourceBytes.
func (a *Adapter) Capture(ctx context.Context, lim platforms.CaptureLimits) (platforms.Evidence, error) {
	lim = lim.WithDefaults()
	var ev platforms.Evidence
	hosts := a.cfg.Hosts
	if len(hosts) > lim.Units {
		ev.Missed("%d more hosts not captured (limit: %d hosts)", len(hosts)-lim.Units, lim.Units)
		hosts = hosts[:lim.Units]
	}
	cmd := a.logCommand(lim.Lines)
	for _, h := range hosts {
		name := "host " + h.Name + " unit " + a.cfg.Unit
		if ctx.Err() != nil {
			ev.Missed("%s: the capture ran out of time", name)
			continue
		}
		c, err := a.dial(ctx, h)
		if err != nil {
			msg, ok := platforms.UserMessage(err)
			if ok {
				a.log.WarnContext(ctx, "capture: connect", "op", "capture", "host", h.Name, "err", err)
			} else {
				msg = "cannot connect, " + platforms.SeeLog(ctx, a.log, "capture: connect", err, "op", "capture", "host", h.Name)
			}
			ev.Missed("%s: log not read (%s)", name, msg)
			continue
		}
		tb := &platforms.TailBuffer{Max: lim.SourceBytes}
		err = a.runTo(ctx, c, cmd, true, tb)
		c.Close()
		if err != nil {
			var ce *cmdError
			switch {
			case errors.As(err, &ce):
				a.log.WarnContext(ctx, "capture: log command", "op", "capture", "host", h.Name, "err", err)
				ev.Missed("%s: `%s` failed: %s", name, cmd, ce.tail())
			case ctx.Err() != nil:
				a.log.WarnContext(ctx, "capture: log command", "op", "capture", "host", h.Name, "err", err)
				ev.Missed("%s: the capture ran out of time", name)
			default:
				ev.Missed("%s: log not read (%s)", name, platforms.SeeLog(ctx, a.log, "capture: log command", err, "op", "capture", "host", h.Name))
			}
			if tb.String() == "" {
				continue
			}
		}
		ev.Add(lim, name, "log", tb.String(), tb.Dropped() || platforms.AtLineLimit(tb.String(), lim.Lines))
	}
	ev.Cap(lim.TotalBytes)
	return ev, nil
}
