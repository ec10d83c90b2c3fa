package swarm

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"rollbot/platforms"
	"rollbot/testkit/dockertest"
	"rollbot/testkit/wait"
)

// A service whose image crashes on start: its failed tasks' errors and
// the service log (the app's own output) are kept.
func TestCaptureCrashingService(t *testing.T) {
	crashing := dockertest.Variant{Tag: "v2-crash", Version: "v2", CrashOnStart: true, NoHealthcheck: true}
	dockertest.MustImage(t, cli, crashing)
	name := createService(t, crashing.Ref(), 1)
	wait.For(t, 90*time.Second, "two failed tasks", func() (bool, error) {
		tasks, err := cli.TaskList(context.Background(), client.TaskListOptions{Filters: make(client.Filters).Add("service", name)})
		if err != nil {
			return false, err
		}
		n := 0
		for _, tk := range tasks.Items {
			if tk.Status.State == swarm.TaskStateFailed {
				n++
			}
		}
		return n >= 2, nil
	})
	a := newTestAdapter(t, Config{Service: name})
	ev, err := a.Capture(context.Background(), platforms.CaptureLimits{Lines: 100})
	if err != nil {
		t.Fatalf("Capture: %v", err)
	}
	text := ev.Text("")
	if len(ev.Sources) != 2 {
		t.Fatalf("sources:\n%s", text)
	}
	errs, log := ev.Sources[0], ev.Sources[1]
	if errs.Kind != "errors" || !strings.Contains(errs.Text, "failed (desired") || !strings.Contains(errs.Text, "exit code 1") || !strings.Contains(errs.Text, "task: non-zero exit (1)") {
		t.Errorf("task errors:\n%s", errs.Text)
	}
	if log.Kind != "log" || !strings.Contains(log.Text, "version v2 crashes on start (crash-on-start=true)") {
		t.Errorf("service log:\n%s", log.Text)
	}
	if len(ev.Missing) != 0 {
		t.Errorf("missing: %q", ev.Missing)
	}
}
