package swarm

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"rollbot/platforms"
	"rollbot/platforms/internal/docker"
)

var _ platforms.Capturer = (*Adapter)(nil)

// Capture implements platforms.Capturer: the service's task errors (the
// tasks that failed, were rejected or exited, newest first, and the ones
// not running as they should) and the last lim.Lines lines of the
// service's log (`docker service logs --tail`), kept within
// lim.SourceBytes.
func (a *Adapter) Capture(ctx context.Context, lim platforms.CaptureLimits) (platforms.Evidence, error) {
	lim = lim.WithDefaults()
	var ev platforms.Evidence
	svc, err := a.inspect(ctx)
	if err != nil {
		return ev, err
	}
	tasks, err := a.tasks(ctx, svc.ID)
	if err != nil {
		return ev, err
	}
	slices.SortStableFunc(tasks, func(x, y swarm.Task) int { return y.Status.Timestamp.Compare(x.Status.Timestamp) })
	var b strings.Builder
	for _, t := range tasks {
		bad := taskFailed(t) || (t.DesiredState == swarm.TaskStateRunning && t.Status.State != swarm.TaskStateRunning)
		if !bad {
			continue
		}
		fmt.Fprintf(&b, "%s task %s slot %d %s: %s (desired %s)", t.Status.Timestamp.UTC().Format(time.RFC3339), shortID(t.ID), t.Slot, taskImage(t), t.Status.State, t.DesiredState)
		if cs := t.Status.ContainerStatus; cs != nil && cs.ExitCode != 0 {
			fmt.Fprintf(&b, ", exit code %d", cs.ExitCode)
		}
		if e := taskErr(t); e != "" {
			b.WriteString(": " + e)
		}
		b.WriteByte('\n')
	}
	if b.Len() == 0 {
		b.WriteString("no failed tasks\n")
	}
	// Newest first: keep the first lines, not the last.
	text, cut := clipHead(b.String(), lim.Lines, lim.SourceBytes)
	ev.Sources = append(ev.Sources, platforms.EvidenceSource{Name: a.Target() + " task errors", Kind: "errors", Text: text, Truncated: cut})

	name := a.Target() + " log"
	rc, err := a.api.ServiceLogs(ctx, svc.ID, client.ServiceLogsOptions{ShowStdout: true, ShowStderr: true, Tail: strconv.Itoa(lim.Lines), Details: false})
	if err != nil {
		ev.Missed("%s: not readable (%s)", name, docker.CaptureErr(ctx, a.log, "capture service log", err))
	} else {
		defer rc.Close()
		tb := &platforms.TailBuffer{Max: lim.SourceBytes}
		tty := svc.Spec.TaskTemplate.ContainerSpec != nil && svc.Spec.TaskTemplate.ContainerSpec.TTY
		if tty {
			_, err = io.Copy(tb, rc)
		} else {
			_, err = stdcopy.StdCopy(tb, tb, rc)
		}
		if err != nil {
			ev.Missed("%s: read cut short (%s)", name, docker.CaptureErr(ctx, a.log, "capture service log: read", err))
		}
		ev.Add(lim, name, "log", tb.String(), tb.Dropped() || platforms.AtLineLimit(tb.String(), lim.Lines))
	}
	ev.Cap(lim.TotalBytes)
	return ev, nil
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// clipHead keeps the first lines lines and max bytes of s.
func clipHead(s string, lines, max int) (string, bool) {
	cut := false
	if ls := strings.SplitAfter(s, "\n"); len(ls) > lines+1 || (len(ls) == lines+1 && ls[lines] != "") {
		s, cut = strings.Join(ls[:lines], ""), true
	}
	if len(s) > max {
		s, cut = s[:max], true
	}
	return strings.TrimRight(s, "\n"), cut
}
