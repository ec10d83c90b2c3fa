package bot

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"rollbot/handlers"
	"rollbot/platforms"
	"rollbot/platforms/sim"
	"rollbot/state"
	"rollbot/testkit/slackemu"
	"rollbot/testkit/wait"
)

func drillSim(t *testing.T, key string) (*handlers.Service, *sim.Sim) {
	t.Helper()
	s, err := sim.New(key, sim.Config{
		Versions:  []sim.Version{{Artifact: "app:v1"}, {Artifact: "app:drill-broken", Bad: true}, {Artifact: "app:v2"}},
		StepDelay: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	name, env, _ := strings.Cut(key, "@")
	return &handlers.Service{Name: handlers.ServiceKey(name, env), Env: env, Platform: s, Metrics: s, Health: s, HasHealth: true, HasSmoke: true,
		Approvers: handlers.Access{Groups: []string{slackemu.GroupOnCall}}}, s
}

// A drill through the local Slack server on the simulated platform: it
// deploys the bad version, the assessment sees it, the same buttons roll
// it back, the target ends as it started, the report has each step with
// its budget and the trend, the next drill is scheduled; refused on an
// environment without drills and while a real incident holds the service.
func TestDrillFlow(t *testing.T) {
	light(t)
	staging, st := drillSim(t, "myapp@staging")
	staging.Drill = &handlers.Drill{Bad: "app:drill-broken"}
	prod, _ := drillSim(t, "myapp@prod")
	h := newHarness(t, []*handlers.Service{staging, prod}, fastEngine())

	// The monthly reminder is scheduled at start, before any drill, for
	// the service marked for drills only.
	wait.For(t, 10*time.Second, "the monthly drill reminder", func() (bool, error) {
		sc := h.emu.Scheduled()
		return len(sc) == 1 && strings.Contains(sc[0].Text, "drill of *myapp@staging*") && sc[0].Channel == slackemu.ChannelIncident, fmt.Errorf("scheduled: %+v", sc)
	})
	h.slash(slackemu.UserAlice, "drill myapp --env prod")
	h.ephemeralIn(slackemu.ChannelIncident, slackemu.UserAlice, "No drill of `myapp@prod`: its environment is not marked for drills")

	for round := 1; round <= 2; round++ {
		h.slash(slackemu.UserAlice, "drill myapp --env staging")
		a := h.waitFor("drill assessment", func(m slackemu.Message) bool {
			return strings.Contains(m.PlainText(), "Drill: rollback of myapp@staging") && len(m.ActionIDs()) > 0 && !strings.Contains(m.PlainText(), "confirmed by")
		})
		wantAll(t, "drill assessment", a.PlainText(), "Bad version:* 2 (app:drill-broken)", "Proceed to rollback")
		h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
		r := h.waitFor("drill report", func(m slackemu.Message) bool {
			return m.ThreadTS == a.TS && strings.Contains(m.PlainText(), "Drill report")
		})
		wantAll(t, "drill report", r.PlainText(), "*Assess*", "of 2 min", "*Stop*", "of 30 s", "*Roll back*", "of 1–3 min", "*Verify*", "of 3 min",
			"pass", "back as the drill found it: 3 (app:v2), 3 units", "Next drill reminder")
		if round == 1 && !strings.Contains(r.PlainText(), "trend: first drill") {
			t.Errorf("first drill report:\n%s", r.PlainText())
		}
		if round == 2 && !strings.Contains(r.PlainText(), "→") {
			t.Errorf("second drill report has no trend:\n%s", r.PlainText())
		}
		h.waitStatus(fmt.Sprintf("RB-%d", round), state.Completed)
		if got := current(t, st); got != "app:v2" {
			t.Fatalf("after drill %d staging runs %s, want app:v2 as before", round, got)
		}
	}
	sched := h.emu.Scheduled()
	if len(sched) != 3 || !strings.Contains(sched[len(sched)-1].Text, "Monthly rollback drill of *myapp@staging* is due") {
		t.Fatalf("scheduled messages: %+v", sched)
	}
	if at := sched[len(sched)-1].PostAt; at.Before(time.Now().Add(29 * 24 * time.Hour)) {
		t.Errorf("the next drill reminder is at %s, want in about a month", at)
	}
	h.slash(slackemu.UserAlice, "drills myapp@staging")
	list := h.ephemeralIn(slackemu.ChannelIncident, slackemu.UserAlice, "Drills of myapp@staging")
	if n := strings.Count(list.PlainText(), "restored"); n != 2 {
		t.Errorf("drills list has %d drills, want 2:\n%s", n, list.PlainText())
	}

	// A real incident holds staging: the drill is refused, naming it.
	h.slash(slackemu.UserAlice, "myapp --env staging")
	real := h.waitFor("a real assessment", func(m slackemu.Message) bool {
		return strings.Contains(m.PlainText(), "Rollback of myapp@staging") && !strings.Contains(m.PlainText(), "Drill")
	})
	lock, _ := h.store.LockHolder(t.Context(), "myapp@staging")
	if lock == nil {
		t.Fatal("the real rollback holds no lock")
	}
	h.slash(slackemu.UserAlice, "drill myapp --env staging")
	h.ephemeralIn(slackemu.ChannelIncident, slackemu.UserAlice, "No drill of `myapp@staging`: rollback "+lock.Incident+" (started by <@"+slackemu.UserAlice+">")
	if in, _ := h.store.Get(t.Context(), lock.Incident); in.Drill != nil {
		t.Fatal("the real incident is a drill")
	}
	_ = real
}

// A drill whose rollback fails says in the thread exactly what it left on
// the target and how to put it back.
func TestDrillFailsMidway(t *testing.T) {
	light(t)
	staging, st := drillSim(t, "myapp@staging")
	staging.Drill = &handlers.Drill{Bad: "app:drill-broken"}
	h := newHarness(t, []*handlers.Service{staging}, fastEngine())
	h.slash(slackemu.UserAlice, "drill myapp")
	a := h.waitFor("drill assessment", func(m slackemu.Message) bool {
		return strings.Contains(m.PlainText(), "Drill: rollback of myapp@staging") && slices.Contains(m.ActionIDs(), handlers.ActConfirm)
	})
	st.FailNextRollback(platforms.Userf(nil, "image app:v1 cannot be pulled"))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	f := h.waitFor("the failure with what the drill left", textHas("The drill is NOT restored"))
	wantAll(t, "failure", f.PlainText(), "image app:v1 cannot be pulled", "it runs app:drill-broken, not app:v2", "it started on 3 (app:v2) with 3 units", "`/rollback myapp@staging`")
	if got := current(t, st); got != "app:drill-broken" {
		t.Fatalf("the platform runs %s; the message must match it", got)
	}
}

// A drill that ends before its rollback puts back the version it found,
// through the same adapter write that deployed its bad version, holding
// the service until that is done, and says so in the thread and on the
// timeline: one cancelled at the confirmation, one whose assessment finds
// no earlier version to roll back to (the drill's bad version is the
// oldest the platform knows), and one nobody decided within the wait's
// budget. A target someone changed by hand meanwhile is not overwritten:
// the message says what runs and what ran before the drill.
func TestDrillEndsBeforeRollback(t *testing.T) {
	light(t)
	three := []sim.Version{{Artifact: "app:v1"}, {Artifact: "app:drill-broken", Bad: true}, {Artifact: "app:v2"}}
	cancel := func(t *testing.T, h *harness, s *sim.Sim, a slackemu.Message) {
		h.click(slackemu.UserBob, a.TS, handlers.ActCancel)
	}
	for _, c := range []struct {
		name     string
		versions []sim.Version
		opts     handlers.Options
		// end ends the drill once its assessment is posted (nil: it ends by itself).
		end func(t *testing.T, h *harness, s *sim.Sim, a slackemu.Message)
		// first is what the drill says as it ends, outcome how it left the
		// target; after is what the target runs then.
		first, outcome []string
		not            string
		after          string
		left           bool
	}{
		{"cancelled", three, fastEngine(), cancel,
			[]string{"Drill RB-1 cancelled before its rollback: rollbot now puts back 3 (app:v2)"},
			[]string{"Drill RB-1: restored to 3 (app:v2): deployment myapp@staging (simulated) runs it with 3 units, as before the drill. myapp@staging is released."},
			"", "app:v2", false},
		{"no rollback possible", []sim.Version{{Artifact: "app:drill-broken", Bad: true}, {Artifact: "app:v2"}}, fastEngine(), nil,
			[]string{"Drill RB-1 stopped: no rollback possible. rollbot now puts back 2 (app:v2)"},
			[]string{"Drill RB-1: restored to 2 (app:v2): deployment myapp@staging (simulated) runs it with 3 units, as before the drill."},
			"`/rollback myapp@staging`", "app:v2", false},
		{"nobody decided", three, lifecycleEngine(func(o *handlers.Options) { o.Budgets.Confirm = 1500 * time.Millisecond }), nil,
			[]string{"Drill RB-1 expired: nobody decided within", "rollbot now puts back 3 (app:v2)"},
			[]string{"Drill RB-1: restored to 3 (app:v2)"},
			"Nothing was changed", "app:v2", false},
		{"changed by hand meanwhile", three, fastEngine(), func(t *testing.T, h *harness, s *sim.Sim, a slackemu.Message) {
			// Someone deploys v1 by hand while the drill waits for its decision.
			if _, err := s.Deploy(context.Background(), "app:v1", "", false); err != nil {
				t.Fatal(err)
			}
			cancel(t, h, s, a)
		},
			[]string{"Drill RB-1 cancelled before its rollback"},
			[]string{"Drill RB-1: not restored: deployment myapp@staging (simulated) runs 1 (app:v1), not the drill's bad version app:drill-broken: someone changed it during the drill, so rollbot did not overwrite it (before the drill it ran 3 (app:v2) with 3 units)"},
			"restored to", "app:v1", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := sim.New("myapp@staging", sim.Config{Versions: c.versions, StepDelay: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			svc := &handlers.Service{Name: "myapp@staging", Env: "staging", Platform: s, Metrics: s, Health: s, HasHealth: true, HasSmoke: true,
				Approvers: handlers.Access{Groups: []string{slackemu.GroupOnCall}}, Drill: &handlers.Drill{Bad: "app:drill-broken"}}
			h := newHarness(t, []*handlers.Service{svc}, c.opts)
			h.slash(slackemu.UserAlice, "drill myapp")
			a := h.waitFor("drill assessment", func(m slackemu.Message) bool {
				return strings.Contains(m.PlainText(), "Drill: rollback of myapp@staging") && (c.versions[0].Bad || slices.Contains(m.ActionIDs(), handlers.ActConfirm))
			})
			if c.end != nil {
				c.end(t, h, s, a)
			}
			first := h.waitFor("the drill's end", textHas(c.first[0]))
			wantAll(t, "the drill's end", first.PlainText(), c.first...)
			out := h.waitFor("how the drill left the target", textHas("Drill RB-1: "))
			wantAll(t, "the outcome", out.PlainText(), c.outcome...)
			if c.not != "" && (strings.Contains(first.PlainText(), c.not) || strings.Contains(out.PlainText(), c.not)) {
				t.Errorf("the drill's messages say %q:\n%s\n%s", c.not, first.PlainText(), out.PlainText())
			}
			in := h.waitStatus("RB-1", state.Cancelled)
			if got := current(t, s); got != c.after {
				t.Fatalf("the platform runs %s, want %s", got, c.after)
			}
			if (in.Drill.Left != "") != c.left {
				t.Errorf("the drill's record says it left %q", in.Drill.Left)
			}
			outcome := strings.TrimSuffix(strings.TrimPrefix(c.outcome[0], "Drill RB-1: "), ".")
			outcome, _, _ = strings.Cut(outcome, ". ")
			if !slices.ContainsFunc(h.events("RB-1"), func(e state.Event) bool { return e.Step == "drill" && strings.HasPrefix(e.Detail, outcome) }) {
				t.Errorf("%q is not on the timeline: %+v", outcome, h.events("RB-1"))
			}
			if l, _ := h.store.LockHolder(t.Context(), "myapp@staging"); l != nil {
				t.Errorf("the drill still holds the service: %+v", l)
			}
			// The assessment says how the drill ended, without buttons.
			m, _ := h.emu.Message(slackemu.ChannelIncident, a.TS)
			if len(m.ActionIDs()) != 0 {
				t.Errorf("buttons still on the drill's assessment: %v", m.ActionIDs())
			}
			want := "The drill is over: the target runs 3 (app:v2) again"
			if c.left {
				want = "The drill is NOT restored: it runs 1 (app:v1), not the drill's bad version"
			} else if c.versions[0].Bad {
				want = "The drill is over: the target runs 2 (app:v2) again"
			}
			wantAll(t, "the drill's assessment", m.PlainText(), want)
		})
	}
}

// A bot that stops while a cancelled drill puts its original back hands
// the restore over: the next bot on the same Redis takes it over, says so
// in the thread, and ends the drill restored. The monthly drill reminder
// the first bot scheduled at its start is not scheduled again by the
// second (once a month across restarts and replicas): the second bot
// checks it before it takes anything over.
func TestDrillRestoreResumesAfterRestart(t *testing.T) {
	light(t)
	s, err := sim.New("myapp@staging", sim.Config{Versions: []sim.Version{{Artifact: "app:v1"}, {Artifact: "app:drill-broken", Bad: true}, {Artifact: "app:v2"}},
		StepDelay: time.Second}) // slow: the bot stops mid-restore
	if err != nil {
		t.Fatal(err)
	}
	svc := &handlers.Service{Name: "myapp@staging", Env: "staging", Platform: s, Metrics: s, Health: s, HasHealth: true, HasSmoke: true,
		Approvers: handlers.Access{Groups: []string{slackemu.GroupOnCall}}, Drill: &handlers.Drill{Bad: "app:drill-broken"}}
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	wait.For(t, 10*time.Second, "the monthly drill reminder", func() (bool, error) {
		sc := h.emu.Scheduled()
		return len(sc) == 1, fmt.Errorf("scheduled: %+v", sc)
	})
	h.slash(slackemu.UserAlice, "drill myapp")
	a := h.waitFor("drill assessment", func(m slackemu.Message) bool {
		return strings.Contains(m.PlainText(), "Drill: rollback of myapp@staging") && slices.Contains(m.ActionIDs(), handlers.ActConfirm)
	})
	h.click(slackemu.UserBob, a.TS, handlers.ActCancel)
	wait.For(t, 10*time.Second, "the restore to start", func() (bool, error) {
		return hasEvent(h.events("RB-1"), "drill", "restoring deployment myapp@staging (simulated)"), nil
	})
	h.stop() // the bot stops mid-restore, holding the service
	if in, _ := h.store.Get(context.Background(), "RB-1"); in.Status != state.DrillRestoring {
		t.Fatalf("the bot stopped with RB-1 %s, want it mid-restore", in.Status)
	}
	h.start()
	m := h.waitFor("takeover report", textHas("RB-1 resumed by"))
	if m.ThreadTS != a.TS {
		t.Errorf("takeover reported outside the drill's thread (thread %q, want %q)", m.ThreadTS, a.TS)
	}
	h.waitFor("the drill's end", textHas("Drill RB-1: restored to 3 (app:v2)"))
	in := h.waitStatus("RB-1", state.Cancelled)
	if got := current(t, s); got != "app:v2" {
		t.Fatalf("after the resumed restore staging runs %s, want app:v2", got)
	}
	if len(in.TakenOver) != 1 || in.TakenOver[0].Status != state.DrillRestoring || in.Drill.Left != "" {
		t.Errorf("takeover %+v, drill %+v", in.TakenOver, in.Drill)
	}
	if l, _ := h.store.LockHolder(t.Context(), "myapp@staging"); l != nil {
		t.Errorf("the drill still holds the service: %+v", l)
	}
	if sc := h.emu.Scheduled(); len(sc) != 1 {
		var texts []string
		for _, m := range sc {
			texts = append(texts, m.PostAt.String()+" "+m.Text)
		}
		t.Errorf("%d drill reminders scheduled across the restart, want 1:\n%s", len(sc), strings.Join(texts, "\n"))
	}
}
