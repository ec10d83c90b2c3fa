package bot

import (
	"context"
	"strings"
	"testing"
	"time"

	"rollbot/handlers"
	"rollbot/platforms"
	"rollbot/platforms/sim"
	"rollbot/state"
	"rollbot/testkit/slackemu"
)

// hangingCapture is the simulated platform with a capture that reads one
// source and then hangs (a log stream that never ends, an API server
// that stops answering) until its context ends.
type hangingCapture struct {
	*sim.Sim
	calls chan struct{}
}

func (h hangingCapture) Capture(ctx context.Context, lim platforms.CaptureLimits) (platforms.Evidence, error) {
	h.calls <- struct{}{}
	var ev platforms.Evidence
	ev.Add(lim, "pod prod/myapp-1 container app", "log", "panic: nil map\ngoroutine 1 [running]", false)
	<-ctx.Done()
	ev.Missed("pod prod/myapp-2 container app: log not readable (the capture ran out of time)")
	return ev, nil
}

// The capture has its own budget: a capture that hangs holds the
// rollback up for at most that long, what it read is kept, what it could
// not read is said, and a failed upload is reported in the thread without
// stopping the rollback.
func TestFlowCaptureBudgetNeverBlocksTheRollback(t *testing.T) {
	light(t)
	svc, s := simService(t, "myapp", 20*time.Millisecond)
	hc := hangingCapture{Sim: s, calls: make(chan struct{}, 4)}
	svc.Platform = hc
	eng := fastEngine()
	eng.Budgets.Capture = 1500 * time.Millisecond
	h := newHarness(t, []*handlers.Service{svc}, eng)
	h.emu.FailMethod("files.completeUploadExternal", "internal_error", 1)

	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	h.waitFor("upload failure said in the thread", textHas("the evidence file could not be uploaded to this thread"))
	h.waitFor("verified", textHas("Rollback verified"))
	h.waitStatus("RB-1", state.Completed)
	if got := current(t, s); got != "app:v2" {
		t.Errorf("after the rollback the service runs %s, want app:v2", got)
	}
	if len(hc.calls) != 1 {
		t.Errorf("Capture called %d times, want once", len(hc.calls))
	}
	evs := h.wantSteps("RB-1", "request", "assess", "confirm", "capture", "stop", "rollback", "verify", "postactions")
	var start, end time.Time
	var detail string
	for _, e := range evs {
		if e.Step == "capture" {
			if start.IsZero() {
				start = e.Time
			}
			end, detail = e.Time, e.Detail
		}
	}
	if took := end.Sub(start); took < time.Second || took > 5*time.Second {
		t.Errorf("the capture took %s; want about its 1.5s budget", took)
	}
	wantAll(t, "capture record", detail, "kept 1 sources", "kept with the incident", "the upload to the thread failed",
		"the capture stopped at its budget of 1s", "pod prod/myapp-2 container app: log not readable (the capture ran out of time)")
	ev, kept, err := h.store.Evidence(context.Background(), "RB-1")
	if err != nil || !kept || len(ev.Sources) != 1 || !strings.Contains(ev.Sources[0].Text, "panic: nil map") || len(ev.Missing) != 2 {
		t.Errorf("stored evidence %+v, %v, %v", ev, kept, err)
	}
	if len(h.emu.Files()) != 0 {
		t.Errorf("files shared although the upload failed: %+v", h.emu.Files())
	}
}
