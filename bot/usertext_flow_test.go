package bot

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"rollbot/handlers"
	"rollbot/platforms"
	"rollbot/state"
	"rollbot/testkit/logtest"
	"rollbot/testkit/slackemu"
)

// panickingPlatform panics in the middle of the rollback, with a value
// that carries a secret.
type panickingPlatform struct{ brokenPlatform }

func (p panickingPlatform) Snapshot(ctx context.Context) (*platforms.Snapshot, error) {
	return p.Sim.Snapshot(ctx)
}

func (panickingPlatform) Rollback(context.Context, platforms.Revision, bool, platforms.ProgressFunc) (platforms.Result, error) {
	panic("rollback state corrupted, connected to " + leaked)
}

// A working step that panics is reported in the thread with the same
// reference id the handlers give every error without words for users,
// never with the panic's value; the log line with that reference holds
// the panic, redacted as `rollbot serve` redacts its log.
func TestLifecyclePanicIsReportedWithAReference(t *testing.T) {
	light(t)
	svc, s := simService(t, "myapp", time.Millisecond)
	svc.Platform = panickingPlatform{brokenPlatform{s}}
	h := newHarness(t, []*handlers.Service{svc}, lifecycleEngine(func(*handlers.Options) {}))
	h.stop()
	h.opts.Log = slog.New(NewRedactHandler(h.opts.Log.Handler(), leaked))
	h.start()
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	f := h.waitFor("failure report", textHas("an internal error stopped rollbot during rolling_back"))
	if f.ThreadTS != a.TS {
		t.Errorf("report outside the thread")
	}
	ref := logtest.Ref(t, f.PlainText())
	line := logtest.RefLine(t, h.logs.String(), ref)
	if !strings.Contains(line, `"msg":"panic in working step"`) || !strings.Contains(line, "rollback state corrupted") {
		t.Errorf("the referenced log line does not hold the panic: %s", line)
	}
	if strings.Contains(line, "s3cr3t") {
		t.Errorf("the log line carries the secret: %s", line)
	}
	for _, c := range h.emu.Calls() {
		for k, v := range c.Params {
			if strings.Contains(v, "s3cr3t") || strings.Contains(v, "rollback state corrupted") {
				t.Fatalf("the panic reached Slack in %s param %s", c.Method, k)
			}
		}
	}
	h.waitStatus("RB-1", state.RollbackFailed)
	if !hasEvent(h.events("RB-1"), "rollback", "failed: an internal error stopped rollbot during rolling_back (see the bot log, ref "+ref+")") {
		t.Errorf("timeline lacks the failure with its reference:\n%v", h.events("RB-1"))
	}
}
