package bot

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"rollbot/handlers"
	"rollbot/platforms"
	"rollbot/platforms/sim"
	"rollbot/state"
	"rollbot/testkit/redistest"
	"rollbot/testkit/slackemu"
	"rollbot/testkit/wait"

	"rollbot/testkit/logtest"
)

// harness is rollbot connected to the local Slack server and a real Redis.
type harness struct {
	t      testing.TB
	emu    *slackemu.Server
	store  *state.Store
	logs   *logtest.Buffer
	cancel context.CancelFunc
	done   chan error
	opts   Options
}

func fastEngine() handlers.Options {
	return handlers.Options{
		IncidentChannels: []string{slackemu.ChannelIncident},
		VerifyInterval:   100 * time.Millisecond,
		VerifyTimeout:    5 * time.Second,
		// Every check must hold this long; short so the flows are quick
		// (prom_e2e_test.go proves the soak itself).
		VerifySoak:     time.Second,
		UpdateInterval: 50 * time.Millisecond,
	}
}

func newHarness(t *testing.T, services []*handlers.Service, eng handlers.Options) *harness {
	t.Helper()
	return newHarnessOn(t, slackemu.Options{}, services, eng)
}

// newHarnessOn is newHarness on a local Slack server with options.
func newHarnessOn(t testing.TB, emuOpts slackemu.Options, services []*handlers.Service, eng handlers.Options) *harness {
	t.Helper()
	emu, err := slackemu.New(emuOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	rdb, prefix := redistest.Client(t)
	h := &harness{t: t, emu: emu, store: state.New(rdb, prefix), logs: &logtest.Buffer{}}
	h.opts = Options{
		Env:      Env{BotToken: slackemu.BotToken, AppToken: slackemu.AppToken, APIURL: emu.APIURL()},
		Redis:    rdb,
		Prefix:   prefix,
		Services: services,
		Engine:   eng,
		Log:      slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	h.start()
	return h
}

// start runs a bot process against the harness's Slack and Redis.
func (h *harness) start() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b, err := New(ctx, h.opts)
	if err != nil {
		cancel()
		h.t.Fatal(err)
	}
	h.cancel, h.done = cancel, make(chan error, 1)
	before := h.emu.ConnectionsAccepted()
	go func() { h.done <- b.Run(ctx) }()
	h.t.Cleanup(h.stop)
	wait.For(h.t, 10*time.Second, "the bot to connect to the local Slack server", func() (bool, error) {
		return h.emu.ConnectionsAccepted() > before, nil
	})
}

// stop ends the bot process (like a crash, background steps included).
func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	select {
	case <-h.done:
	case <-time.After(10 * time.Second):
		h.t.Error("bot did not stop within 10s")
	}
	h.cancel = nil
}

func (h *harness) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	h.t.Cleanup(cancel)
	return ctx
}

func (h *harness) slash(user, text string) {
	h.t.Helper()
	if err := h.emu.SlashCommand(h.ctx(), user, slackemu.ChannelIncident, "/rollback", text); err != nil {
		h.t.Fatalf("/rollback %s: %v", text, err)
	}
}

func (h *harness) waitFor(what string, pred func(slackemu.Message) bool) slackemu.Message {
	h.t.Helper()
	m, err := h.emu.WaitForMessage(h.ctx(), pred)
	if err != nil {
		h.t.Fatalf("waiting for %s: %v\nmessages:\n%s\nlog:\n%s", what, err, h.dump(), h.logs.String())
	}
	return m
}

// waitStatus waits until the incident reaches status (the final
// transition follows the last message by a few milliseconds).
func (h *harness) waitStatus(id string, want state.Status) *state.Incident {
	h.t.Helper()
	return h.waitStatusWithin(id, want, 10*time.Second)
}

// waitStatusWithin is waitStatus with a deadline of its own.
func (h *harness) waitStatusWithin(id string, want state.Status, within time.Duration) *state.Incident {
	h.t.Helper()
	var in *state.Incident
	wait.For(h.t, within, id+" reaching "+string(want), func() (bool, error) {
		var err error
		in, err = h.store.Get(context.Background(), id)
		if err != nil {
			return false, err
		}
		return in.Status == want, errors.New(string(in.Status))
	})
	return in
}

func (h *harness) dump() string { return dumpMessages(h.emu) }

// dumpMessages is every message in the incident channel, for a failure.
func dumpMessages(emu *slackemu.Server) string {
	var b strings.Builder
	for _, m := range emu.Messages(slackemu.ChannelIncident) {
		b.WriteString("--- " + m.TS + " eph=" + m.EphemeralFor + "\n" + m.PlainText() + "\n")
	}
	return b.String()
}

// wantSteps checks that incident id's timeline went through the runbook's
// steps in this order (each step once, however many events it wrote) and
// returns the events.
func (h *harness) wantSteps(id string, want ...string) []state.Event {
	h.t.Helper()
	evs, err := h.store.Timeline(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	var steps []string
	for _, e := range evs {
		if len(steps) == 0 || steps[len(steps)-1] != e.Step {
			steps = append(steps, e.Step)
		}
	}
	if !slices.Equal(steps, want) {
		h.t.Errorf("timeline of %s: steps = %v, want %v", id, steps, want)
	}
	return evs
}

// dbThenRollback returns "database" and "rollback" in the order the
// database step finished and the app rollback started.
func dbThenRollback(evs []state.Event) string {
	var order []string
	for _, e := range evs {
		if e.Step == "database" && strings.HasPrefix(e.Detail, "done") || e.Step == "rollback" && strings.HasPrefix(e.Detail, "rolling back") {
			order = append(order, e.Step)
		}
	}
	return strings.Join(order, ",")
}

func wantAll(t *testing.T, what, text string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, text)
		}
	}
}

// wantProceed checks the assessment recommends the rollback and names
// every check in must as over its threshold; of the others it may name
// only those in loadMay (a saturated CI machine slows a sample service,
// and the latency check says so truthfully).
func wantProceed(t *testing.T, text string, must []string, loadMay ...string) {
	t.Helper()
	_, rest, ok := strings.Cut(text, "Proceed to rollback: ")
	named, _, over := strings.Cut(rest, " over threshold")
	if !ok || !over {
		t.Errorf("assessment does not recommend the rollback with the checks over threshold:\n%s", text)
		return
	}
	got := strings.Split(named, ", ")
	for _, m := range must {
		if !slices.Contains(got, m) {
			t.Errorf("recommendation names %q, want %q among them:\n%s", got, m, text)
		}
	}
	for _, g := range got {
		if !slices.Contains(must, g) && !slices.Contains(loadMay, g) {
			t.Errorf("recommendation names %q, which should not be over threshold:\n%s", g, text)
		} else if !slices.Contains(must, g) {
			t.Logf("the loaded machine put %s over threshold too", g)
		}
	}
}

// storedAssessment is the assessment as the bot stored it with the incident.
func (h *harness) storedAssessment(id string) handlers.Assessment {
	h.t.Helper()
	in, err := h.store.Get(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	var a handlers.Assessment
	if err := json.Unmarshal(in.Assessment, &a); err != nil {
		h.t.Fatal(err)
	}
	return a
}

func hasAction(id string) func(slackemu.Message) bool {
	return func(m slackemu.Message) bool { return slices.Contains(m.ActionIDs(), id) }
}

func textHas(s string) func(slackemu.Message) bool {
	return func(m slackemu.Message) bool { return strings.Contains(m.PlainText(), s) }
}

func ephemeralFor(user, s string) func(slackemu.Message) bool {
	return func(m slackemu.Message) bool {
		return m.Ephemeral && m.EphemeralFor == user && strings.Contains(m.PlainText(), s)
	}
}

func (h *harness) click(user, ts, action string) {
	h.t.Helper()
	if err := h.emu.ClickButton(h.ctx(), user, slackemu.ChannelIncident, ts, action); err != nil {
		h.t.Fatalf("click %s as %s: %v", action, user, err)
	}
}

func simService(t testing.TB, name string, step time.Duration) (*handlers.Service, *sim.Sim) {
	t.Helper()
	s, err := sim.New(name, sim.Config{
		Versions:  []sim.Version{{Artifact: "app:v1"}, {Artifact: "app:v2"}, {Artifact: "app:v3", Bad: true}},
		StepDelay: step,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &handlers.Service{Name: name, Platform: s, Metrics: s, Health: s, HasHealth: true, HasSmoke: true,
		Approvers: handlers.Access{Groups: []string{slackemu.GroupOnCall}}}, s
}

func current(t *testing.T, s platforms.Platform) string {
	t.Helper()
	snap, err := s.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return snap.Current.Artifact
}

func TestFlowHappyPath(t *testing.T) {
	light(t)
	svc, s := simService(t, "myapp", 20*time.Millisecond)
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.slash(slackemu.UserAlice, `myapp --reason "5xx spike after deploy"`)

	a := h.waitFor("assessment with buttons", hasAction(handlers.ActConfirm))
	wantAll(t, "assessment", a.PlainText(), "Error rate", "7.40%", "❌ fail", "Pod restarts", "Failed readiness", "Latency p95",
		"Last known good:* 2 (app:v2)", "Bad version:* 3 (app:v3)", "Proceed to rollback", "5xx spike after deploy")
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)

	h.waitFor("verified", textHas("Rollback verified"))
	h.waitFor("post-rollback actions", textHas("Post-rollback actions"))
	if got := current(t, s); got != "app:v2" {
		t.Fatalf("after rollback the service runs %s, want app:v2", got)
	}
	decided, _ := h.emu.Message(slackemu.ChannelIncident, a.TS)
	if len(decided.ActionIDs()) != 0 || !strings.Contains(decided.PlainText(), "confirmed by <@"+slackemu.UserBob+">") {
		t.Errorf("assessment not edited to show the decision:\n%s\nactions %v", decided.PlainText(), decided.ActionIDs())
	}
	post := h.waitFor("post-rollback checklist", textHas("Post-rollback actions"))
	if !strings.Contains(post.PlainText(), "rollbot refuses rollbacks to it") || !slices.Contains(post.ActionIDs(), handlers.ActPostDone) {
		t.Errorf("post-rollback checklist:\n%s", post.PlainText())
	}
	sched := h.emu.Scheduled()
	if len(sched) != 1 || !strings.Contains(sched[0].Text+string(sched[0].Blocks), "Postmortem reminder") ||
		sched[0].PostAt.After(time.Now().Add(24*time.Hour)) || sched[0].PostAt.Before(time.Now()) {
		t.Errorf("postmortem reminder not scheduled within 24h: %+v", sched)
	}
	marks, err := h.store.Marks(context.Background(), "myapp")
	if err != nil || marks["app:v3"].Incident == "" {
		t.Errorf("bad version not marked DO_NOT_DEPLOY: %v %v", marks, err)
	}
	// The lock is free again and the timeline has every step, in order.
	h.waitStatus("RB-1", state.Completed)
	if l, _ := h.store.LockHolder(context.Background(), "myapp"); l != nil {
		t.Errorf("lock still held after the rollback: %+v", l)
	}
	h.wantSteps("RB-1", "request", "assess", "confirm", "stop", "rollback", "verify", "postactions")
	// A later rollback TO the bad version is refused.
	h.slash(slackemu.UserAlice, "myapp --to v3")
	h.waitFor("refusal to roll back to a DO_NOT_DEPLOY version", textHas("is marked DO_NOT_DEPLOY"))

	// Tick a §6 item by hand.
	h.click(slackemu.UserAlice, post.TS, handlers.ActPostDone)
	h.waitFor("ticked item", func(m slackemu.Message) bool {
		return m.TS == post.TS && strings.Contains(m.PlainText(), "done by <@"+slackemu.UserAlice+">")
	})
}

func TestFlowCancel(t *testing.T) {
	light(t)
	svc, s := simService(t, "myapp", time.Millisecond)
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActCancel))
	h.click(slackemu.UserAlice, a.TS, handlers.ActCancel)
	h.waitFor("cancelled", func(m slackemu.Message) bool { return m.TS == a.TS && strings.Contains(m.PlainText(), "Cancelled by") })
	if got := current(t, s); got != "app:v3" {
		t.Fatalf("cancel changed the service: runs %s", got)
	}
	if l, _ := h.store.LockHolder(context.Background(), "myapp"); l != nil {
		t.Fatalf("lock held after cancel: %+v", l)
	}
}

func TestFlowUnauthorizedUser(t *testing.T) {
	light(t)
	svc, s := simService(t, "myapp", time.Millisecond)
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserEve, a.TS, handlers.ActConfirm)
	h.waitFor("refusal for eve", ephemeralFor(slackemu.UserEve, "not allowed to roll back"))
	if got := current(t, s); got != "app:v3" {
		t.Fatalf("an unauthorized click changed the service: runs %s", got)
	}
	cur, _ := h.emu.Message(slackemu.ChannelIncident, a.TS)
	if !slices.Contains(cur.ActionIDs(), handlers.ActConfirm) {
		t.Fatal("the buttons disappeared after an unauthorized click")
	}
	evs, _ := h.store.Timeline(context.Background(), "RB-1")
	if !slices.ContainsFunc(evs, func(e state.Event) bool { return e.Actor == slackemu.UserEve && strings.Contains(e.Detail, "refused") }) {
		t.Errorf("refusal not on the timeline: %+v", evs)
	}
}

func TestFlowSecondRollbackRefusedWithHolder(t *testing.T) {
	light(t)
	svc, _ := simService(t, "myapp", time.Millisecond)
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.slash(slackemu.UserAlice, "myapp")
	h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.slash(slackemu.UserBob, "myapp")
	m := h.waitFor("refusal naming the holder", ephemeralFor(slackemu.UserBob, "already running"))
	if !strings.Contains(m.PlainText(), "RB-1") || !strings.Contains(m.PlainText(), "<@"+slackemu.UserAlice+">") {
		t.Fatalf("refusal does not name the holder:\n%s", m.PlainText())
	}
}

// countingPlatform counts rollbacks, to prove a double click acts once.
type countingPlatform struct {
	*sim.Sim
	mu        sync.Mutex
	rollbacks int
}

func (c *countingPlatform) Rollback(ctx context.Context, to platforms.Revision, dryRun bool, p platforms.ProgressFunc) (platforms.Result, error) {
	if !dryRun {
		c.mu.Lock()
		c.rollbacks++
		c.mu.Unlock()
	}
	return c.Sim.Rollback(ctx, to, dryRun, p)
}

func TestFlowDoubleClickExecutesOnce(t *testing.T) {
	light(t)
	svc, s := simService(t, "myapp", 10*time.Millisecond)
	cp := &countingPlatform{Sim: s}
	svc.Platform = cp
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	var wg sync.WaitGroup
	for _, u := range []string{slackemu.UserBob, slackemu.UserBob, slackemu.UserAlice} {
		wg.Go(func() { h.emu.ClickButton(h.ctx(), u, slackemu.ChannelIncident, a.TS, handlers.ActConfirm) })
	}
	wg.Wait()
	h.waitFor("verified", textHas("Rollback verified"))
	cp.mu.Lock()
	n := cp.rollbacks
	cp.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d rollbacks ran for three clicks, want 1", n)
	}
}

// A bot that stops mid-rollback hands the incident over: the next bot on
// the same Redis takes it over, says so in the thread, finishes the
// rollback without a second write, and verifies it.
func TestFlowRestartMidRollbackResumes(t *testing.T) {
	light(t)
	svc, s := simService(t, "myapp", 2*time.Second) // slow: the bot stops mid-rollback
	cp := &countingPlatform{Sim: s}
	svc.Platform = cp
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	h.waitFor("rollback in progress", textHas("Rolling back"))
	h.stop() // the bot stops mid-rollback
	h.start()
	m := h.waitFor("takeover report", textHas("RB-1 resumed by"))
	if m.ThreadTS != a.TS {
		t.Errorf("takeover reported outside the incident thread (thread %q, want %q)", m.ThreadTS, a.TS)
	}
	h.waitFor("verified", textHas("Rollback verified"))
	in := h.waitStatus("RB-1", state.Completed)
	if len(in.TakenOver) != 1 || in.Fence < 2 {
		t.Errorf("takeover not recorded: %+v (fence %d)", in.TakenOver, in.Fence)
	}
	if got := current(t, s); got != "app:v2" {
		t.Fatalf("after the resumed rollback the service runs %s, want app:v2", got)
	}
	evs, err := h.store.Timeline(context.Background(), "RB-1")
	if err != nil {
		t.Fatal(err)
	}
	takeovers := 0
	for _, ev := range evs {
		if ev.Step == "takeover" {
			takeovers++
		}
	}
	if takeovers != 1 {
		t.Errorf("%d takeover events, want 1:\n%v", takeovers, evs)
	}
	// The lock was released at the end, so the team can start again.
	h.slash(slackemu.UserAlice, "myapp")
	h.waitFor("new assessment", func(m slackemu.Message) bool {
		return slices.Contains(m.ActionIDs(), handlers.ActConfirm) && strings.Contains(m.PlainText(), "RB-2")
	})
}

func TestFlowMalformedCommands(t *testing.T) {
	light(t)
	svc, _ := simService(t, "myapp", time.Millisecond)
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	for _, tc := range []struct{ text, want string }{
		{"myap", "Did you mean `myapp`?"},
		{"myapp --force", "unknown option `--force`"},
		{`myapp --reason "unterminated`, "a quote is not closed"},
		{"myapp --to", "`--to` needs a value"},
		{"history", "usage: `/rollback history <service>`"},
	} {
		h.slash(slackemu.UserAlice, tc.text)
		h.waitFor("answer to "+tc.text, ephemeralFor(slackemu.UserAlice, tc.want))
	}
	if err := h.emu.SlashCommand(h.ctx(), slackemu.UserAlice, slackemu.ChannelGeneral, "/rollback", "myapp"); err != nil {
		t.Fatal(err)
	}
	h.waitFor("not an incident channel", func(m slackemu.Message) bool {
		return m.Channel == slackemu.ChannelGeneral && m.Ephemeral && strings.Contains(m.PlainText(), "only acts in incident channels")
	})
	if l, _ := h.store.LockHolder(context.Background(), "myapp"); l != nil {
		t.Fatalf("a malformed command took the lock: %+v", l)
	}
}

func TestFlowRollbackFailureOffersFallbacks(t *testing.T) {
	light(t)
	svc, s := simService(t, "myapp", time.Millisecond)
	s.FailNextRollback(platforms.Userf(errors.New("ImagePullBackOff"), "image app:v2 cannot be pulled on the nodes"))
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	f := h.waitFor("failure with fallbacks", hasAction(handlers.ActFallbackImage))
	if !strings.Contains(f.PlainText(), "image app:v2 cannot be pulled") || !slices.Contains(f.ActionIDs(), handlers.ActFallbackZero) {
		t.Fatalf("failure message:\n%s", f.PlainText())
	}
	h.click(slackemu.UserBob, f.TS, handlers.ActFallbackImage)
	h.waitFor("verified after fallback", textHas("Rollback verified"))
	if got := current(t, s); got != "app:v2" {
		t.Fatalf("after the fallback the service runs %s", got)
	}
}

func TestFlowDryRunChangesNothing(t *testing.T) {
	light(t)
	svc, s := simService(t, "myapp", time.Millisecond)
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.slash(slackemu.UserAlice, "myapp --dry-run")
	m := h.waitFor("plan", textHas("Plan (dry run: nothing was changed)"))
	wantAll(t, "plan", m.PlainText(), "rollback: deployment myapp (simulated): template app:v3 -> app:v2", "stop: deployment myapp (simulated): pause the rollout")
	if len(m.ActionIDs()) != 0 {
		t.Errorf("a dry run offers buttons: %v", m.ActionIDs())
	}
	if got := current(t, s); got != "app:v3" {
		t.Fatalf("dry run changed the service: %s", got)
	}
	snap, _ := s.Snapshot(context.Background())
	if snap.Paused {
		t.Fatal("dry run paused the rollout")
	}
}

func TestFlowTimelineAndMarkdown(t *testing.T) {
	light(t)
	svc, _ := simService(t, "myapp", time.Millisecond)
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	h.waitFor("verified", textHas("Rollback verified"))
	h.slash(slackemu.UserAlice, "timeline")
	h.waitFor("timeline", textHas("Timeline RB-1: myapp"))
	h.slash(slackemu.UserAlice, "timeline RB-1 --markdown")
	m := h.waitFor("markdown export", textHas("# Incident timeline RB-1"))
	if !strings.Contains(m.PlainText(), "| Time (UTC) | Actor | Step | Detail |") {
		t.Fatalf("markdown export:\n%s", m.PlainText())
	}
}

// brokenPlatform fails to read with an SDK-style error carrying a secret.
type brokenPlatform struct{ *sim.Sim }

const leaked = "postgres://rollbot:s3cr3t-pass@db.internal/prod"

func (brokenPlatform) Snapshot(context.Context) (*platforms.Snapshot, error) {
	return nil, errors.New("dial " + leaked + ": connection refused")
}

func TestFlowNeverPostsSecrets(t *testing.T) {
	light(t)
	svc, s := simService(t, "myapp", time.Millisecond)
	svc.Platform = brokenPlatform{s}
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.slash(slackemu.UserAlice, "myapp")
	m := h.waitFor("assessment", textHas("Could not read the platform"))
	if !strings.Contains(m.PlainText(), "see the bot log, ref ") {
		t.Errorf("the user is not pointed at the log:\n%s", m.PlainText())
	}
	for _, c := range h.emu.Calls() {
		for k, v := range c.Params {
			if strings.Contains(v, "s3cr3t") {
				t.Fatalf("secret posted to Slack in %s param %s", c.Method, k)
			}
		}
	}
	if strings.Contains(h.logs.String(), slackemu.BotToken) || strings.Contains(h.logs.String(), slackemu.AppToken) {
		t.Fatal("a Slack token reached the log")
	}
}

// Slack answers 429 to some updates and posts: rollbot waits Retry-After
// and the flow still completes, with every message in its final state.
func TestFlowSurvivesRateLimits(t *testing.T) {
	light(t)
	svc, s := simService(t, "myapp", 20*time.Millisecond)
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.emu.RateLimit("chat.update", time.Second, 2)
	h.emu.RateLimit("chat.postMessage", time.Second, 1)
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	h.waitFor("verified", textHas("Rollback verified"))
	if got := current(t, s); got != "app:v2" {
		t.Fatalf("runs %s", got)
	}
	limited := 0
	for _, c := range h.emu.Calls() {
		if c.Error == "ratelimited" {
			limited++
		}
	}
	if limited != 3 {
		t.Fatalf("%d rate-limited calls, want the 3 injected", limited)
	}
}

// Slack delivers the same interaction twice (a redelivery): it acts once.
func TestFlowDuplicateEnvelopeActsOnce(t *testing.T) {
	light(t)
	svc, _ := simService(t, "myapp", time.Millisecond)
	cp := &countingPlatform{Sim: svc.Platform.(*sim.Sim)}
	svc.Platform = cp
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.emu.DuplicateNextEnvelope()
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.emu.DuplicateNextEnvelope()
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	h.waitFor("post-rollback actions", textHas("Post-rollback actions"))
	h.waitStatus("RB-1", state.Completed)
	for _, m := range h.emu.Messages(slackemu.ChannelIncident) {
		if m.Ephemeral {
			t.Fatalf("a duplicate delivery was answered: %s", m.PlainText())
		}
	}
	if l, _ := h.store.LockHolder(context.Background(), "myapp"); l != nil {
		t.Fatalf("lock held: %+v", l)
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.rollbacks != 1 {
		t.Fatalf("%d rollbacks for a duplicated click, want 1", cp.rollbacks)
	}
}

// A restart while the buttons wait loses nothing: the state is in Redis,
// so the confirmation after the restart carries on.
func TestFlowRestartWhileAwaitingConfirmation(t *testing.T) {
	light(t)
	svc, s := simService(t, "myapp", time.Millisecond)
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.stop()
	h.start()
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	h.waitFor("post-rollback actions", textHas("Post-rollback actions"))
	if got := current(t, s); got != "app:v2" {
		t.Fatalf("runs %s after a confirmation across a restart", got)
	}
	for _, m := range h.emu.Messages(slackemu.ChannelIncident) {
		if strings.Contains(m.PlainText(), "rollbot restarted") {
			t.Fatalf("a waiting incident was reported as interrupted: %s", m.PlainText())
		}
	}
}

// plainPlatform hides the simulated platform's fallbacks.
type plainPlatform struct{ platforms.Platform }

func TestFlowFailureWithoutFallbacksReleasesTheService(t *testing.T) {
	light(t)
	svc, s := simService(t, "myapp", time.Millisecond)
	s.FailNextRollback(platforms.Userf(nil, "refusing to switch to green: 0/1 targets healthy"))
	svc.Platform = plainPlatform{s}
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	f := h.waitFor("failure", textHas("The rollback failed"))
	if slices.Contains(f.ActionIDs(), handlers.ActFallbackImage) || !strings.Contains(f.PlainText(), "run `/rollback myapp` again") {
		t.Fatalf("failure message:\n%s\nactions %v", f.PlainText(), f.ActionIDs())
	}
	// The team fixes the cause and tries again at once.
	h.slash(slackemu.UserAlice, "myapp")
	b := h.waitFor("second assessment", func(m slackemu.Message) bool {
		return slices.Contains(m.ActionIDs(), handlers.ActConfirm) && strings.Contains(m.PlainText(), "RB-2")
	})
	h.click(slackemu.UserBob, b.TS, handlers.ActConfirm)
	h.waitFor("post-rollback actions", textHas("Post-rollback actions"))
	if got := current(t, s); got != "app:v2" {
		t.Fatalf("runs %s", got)
	}
}

func TestFlowEndAfterFailure(t *testing.T) {
	light(t)
	svc, s := simService(t, "myapp", time.Millisecond)
	s.FailNextRollback(platforms.Userf(nil, "image app:v2 cannot be pulled"))
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	f := h.waitFor("failure with fallbacks", hasAction(handlers.ActEnd))
	if l, _ := h.store.LockHolder(context.Background(), "myapp"); l == nil {
		t.Fatal("the lock was released while fallbacks are on offer")
	}
	h.click(slackemu.UserEve, f.TS, handlers.ActEnd)
	h.waitFor("eve refused", ephemeralFor(slackemu.UserEve, "not allowed to end this rollback"))
	h.click(slackemu.UserAlice, f.TS, handlers.ActEnd)
	h.waitFor("ended", func(m slackemu.Message) bool { return m.TS == f.TS && strings.Contains(m.PlainText(), "ended RB-1") })
	if l, _ := h.store.LockHolder(context.Background(), "myapp"); l != nil {
		t.Fatalf("lock still held after ending: %+v", l)
	}
	in, _ := h.store.Get(context.Background(), "RB-1")
	if in.Status != state.Closed {
		t.Fatalf("status %s, want closed", in.Status)
	}
	if got := current(t, s); got != "app:v3" {
		t.Fatalf("ending changed the service: %s", got)
	}
}

// blipMetrics fails the second baseline query (the first one the
// verification makes), like a Prometheus blip.
type blipMetrics struct {
	*sim.Sim
	mu        sync.Mutex
	baselines int
}

func (b *blipMetrics) LatencyP95(ctx context.Context, from, to time.Time) (platforms.Measurement, error) {
	if time.Since(to) > time.Minute {
		b.mu.Lock()
		b.baselines++
		n := b.baselines
		b.mu.Unlock()
		if n == 2 {
			return platforms.Measurement{}, platforms.Userf(errors.New("i/o timeout"), "Prometheus at prom:9090 did not answer within 5s")
		}
	}
	return b.Sim.LatencyP95(ctx, from, to)
}

func TestFlowVerificationSurvivesABaselineBlip(t *testing.T) {
	light(t)
	svc, s := simService(t, "myapp", time.Millisecond)
	svc.Metrics = &blipMetrics{Sim: s}
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	h.waitFor("verified", textHas("Rollback verified"))
}
