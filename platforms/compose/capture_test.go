package compose

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"

	"rollbot/platforms"
	"rollbot/testkit/dockertest"
	"rollbot/testkit/wait"
)

// crashing is the sample app built to exit 1 right after start, from scratch.
var crashing = dockertest.Variant{Tag: "v2-crash", Version: "v2", CrashOnStart: true, NoHealthcheck: true}

const crashLoop = `version: "3.7"
services:
  web:
    image: rollbot-sampleapp:v2-crash
    restart: ${RESTART:-always}
    environment:
      SAMPLEAPP_LOG_FLOOD: "${FLOOD:-0}"
`

// startCrashLoop brings up the crash-looping service and waits for its
// container to have restarted at least once.
func startCrashLoop(t *testing.T, flood int) (*project, *Adapter) {
	t.Helper()
	p := upCrashing(t, flood, "always")
	wait.For(t, 2*time.Minute, "the container to restart", func() (bool, error) {
		c := p.Container("web")
		return c.RestartCount >= 1, nil
	})
	return p, p.adapter(Config{Service: "web"})
}

func upCrashing(t *testing.T, flood int, restart string) *project {
	t.Helper()
	dockertest.MustImage(t, cli, crashing)
	p := newProject(t, crashLoop)
	p.Compose([]string{fmt.Sprintf("FLOOD=%d", flood), "RESTART=" + restart}, "up", "-d")
	return p
}

// The crash-looping container's real output is kept with its state.
func TestCaptureCrashLoopingContainer(t *testing.T) {
	_, a := startCrashLoop(t, 0)
	ev, err := a.Capture(context.Background(), platforms.CaptureLimits{})
	if err != nil {
		t.Fatalf("Capture: %v", err)
	}
	text := ev.Text("")
	if len(ev.Sources) != 2 || ev.Sources[0].Kind != "errors" || ev.Sources[1].Kind != "log" {
		t.Fatalf("sources:\n%s", text)
	}
	if !strings.Contains(ev.Sources[1].Text, "version v2 crashes on start (crash-on-start=true)") {
		t.Errorf("the log lacks the app's own crash message:\n%s", text)
	}
	if st := ev.Sources[0].Text; !strings.Contains(st, "image rollbot-sampleapp:v2-crash") || strings.Contains(st, "restarts 0,") {
		t.Errorf("state: %s", st)
	}
	if len(ev.Missing) != 0 {
		t.Errorf("missing: %q", ev.Missing)
	}
}

// A container that wrote 50 MB of log (and crashes after it): the engine
// sends only the last lines asked for, and the capture keeps at most
// source_bytes of it, the newest lines. It restarts once only: under
// restart: always its next run floods again, so the newest lines at the
// capture could be any flood line, not the crash.
func TestCaptureCapsA50MBLog(t *testing.T) {
	p := upCrashing(t, 50<<20, "on-failure:1")
	wait.For(t, 2*time.Minute, "the container to crash twice, 50 MB each", func() (bool, error) {
		c := p.Container("web")
		return c.RestartCount >= 1 && c.State.Status == container.StateExited, fmt.Errorf("restarts %d, %s", c.RestartCount, c.State.Status)
	})
	a := p.adapter(Config{Service: "web"})
	lim := platforms.CaptureLimits{Lines: 2000, SourceBytes: 64 << 10, TotalBytes: 100 << 10}
	ev, err := a.Capture(context.Background(), lim)
	if err != nil {
		t.Fatalf("Capture: %v", err)
	}
	if ev.Size() > lim.TotalBytes {
		t.Errorf("captured %d bytes, over the total limit %d", ev.Size(), lim.TotalBytes)
	}
	var log *platforms.EvidenceSource
	for i, s := range ev.Sources {
		if s.Kind == "log" {
			log = &ev.Sources[i]
		}
	}
	if log == nil {
		t.Fatalf("no log kept:\n%.3000s", ev.Text(""))
	}
	if len(log.Text) > lim.SourceBytes || !log.Truncated {
		t.Errorf("log: %d bytes (limit %d), truncated %v", len(log.Text), lim.SourceBytes, log.Truncated)
	}
	if !strings.HasSuffix(strings.TrimSpace(log.Text), "crashes on start (crash-on-start=true)") || !strings.Contains(log.Text, "flood line ") {
		t.Errorf("the log does not end with the newest lines:\n...%s", log.Text[max(0, len(log.Text)-500):])
	}
}
