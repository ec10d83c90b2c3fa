package handlers

import (
	"fmt"
	"strings"
	"time"

	"rollbot/state"
)

// The runbook gives each step a time: assess ~2 min, stop the rollout
// ~30 s, roll back 1–3 min (Kubernetes, Docker, blue-green) or 5–15 min
// (VMs), the database 5–15 min, verify ~3 min. rollbot measures every
// step against it, live and in the timeline export: a step within it
// passes, one over it is slow. These are yardsticks, not limits (the
// limits are Budgets).

// StepTime is one runbook step of an incident, measured.
type StepTime struct {
	Step   string        // timing key: assess, database, stop, rollback, fallback, verify
	Label  string        // "Assess", "Roll back"…
	Budget time.Duration // the runbook's time (upper end of a range)
	Range  string        // as the runbook says it: "2 min", "1–3 min"
	Took   time.Duration // so far, while running
	State  string        // "pass", "slow", "failed", "running", "pending"
}

// runbookBudget is the runbook's time for a step on a platform kind.
func runbookBudget(step, kind string) (time.Duration, string) {
	switch step {
	case "assess":
		return 2 * time.Minute, "2 min"
	case "stop":
		return 30 * time.Second, "30 s"
	case "rollback", "fallback":
		if kind == "vm" {
			return 15 * time.Minute, "5–15 min"
		}
		return 3 * time.Minute, "1–3 min"
	case "database":
		return 15 * time.Minute, "5–15 min"
	case "verify":
		return 3 * time.Minute, "3 min"
	}
	return 0, ""
}

var stepLabels = map[string]string{"assess": "Assess", "database": "Database", "stop": "Stop", "rollback": "Roll back", "fallback": "Fallback", "verify": "Verify"}

// timingStep is the timing key of a working status.
func timingStep(s state.Status, fallback string) string {
	switch s {
	case state.Assessing:
		return "assess"
	case state.RollingBackDB:
		return "database"
	case state.Stopping:
		return "stop"
	case state.RollingBack:
		if fallback != "" {
			return "fallback"
		}
		return "rollback"
	case state.Verifying:
		return "verify"
	}
	return ""
}

func setTiming(in *state.Incident, step string, t state.StepTiming) {
	if in.Timings == nil {
		in.Timings = map[string]state.StepTiming{}
	}
	in.Timings[step] = t
}

// StepTimes measures an incident's runbook steps at now: the finished
// ones from their timings, the running one from when it started, the
// rest pending. A dry run measures the assessment only.
func StepTimes(in *state.Incident, now time.Time) []StepTime {
	steps := []string{"assess"}
	if !in.DryRun {
		if in.MigrationsRan {
			steps = append(steps, "database")
		}
		steps = append(steps, "stop", "rollback")
		if _, ok := in.Timings["fallback"]; ok || in.Fallback != "" {
			steps = append(steps, "fallback")
		}
		steps = append(steps, "verify")
	}
	running := ""
	if in.Status.Working() {
		running = timingStep(in.Status, in.Fallback)
	}
	var out []StepTime
	for _, s := range steps {
		b, r := runbookBudget(s, in.Platform)
		st := StepTime{Step: s, Label: stepLabels[s], Budget: b, Range: r, State: "pending"}
		t, ok := in.Timings[s]
		switch {
		case s == running && !in.StepStarted.IsZero() && (!ok || !t.Start.Equal(in.StepStarted) || t.End.IsZero()):
			st.Took, st.State = now.Sub(in.StepStarted), "running"
		case ok && !t.End.IsZero():
			st.Took = t.End.Sub(t.Start)
			switch {
			case t.Failed:
				st.State = "failed"
			case st.Took > b:
				st.State = "slow"
			default:
				st.State = "pass"
			}
		}
		out = append(out, st)
	}
	return out
}

// recovered is the time from the /rollback request to the verified
// rollback, and from the bad deploy when it is known.
func recovered(in *state.Incident) (fromRequest, fromDeploy time.Duration, ok bool) {
	v, done := in.Timings["verify"]
	if !done || v.End.IsZero() || v.Failed || in.Status != state.Completed {
		return 0, 0, false
	}
	fromRequest = v.End.Sub(in.CreatedAt)
	if !in.DeployedAt.IsZero() {
		fromDeploy = v.End.Sub(in.DeployedAt)
	}
	return fromRequest, fromDeploy, true
}

func short(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

var stateIcons = map[string]string{"pass": "✅", "slow": "🐢", "failed": "❌", "running": "⏳", "pending": "▫️"}

// budgetLine is the live "step: took / runbook" line of an incident.
func budgetLine(in *state.Incident, now time.Time) string {
	var parts []string
	for _, st := range StepTimes(in, now) {
		took := "–"
		if st.State != "pending" {
			took = short(st.Took)
		}
		word := ""
		if st.State == "slow" || st.State == "failed" {
			word = " " + st.State
		}
		parts = append(parts, fmt.Sprintf("%s %s %s / %s%s", stateIcons[st.State], st.Label, took, st.Range, word))
	}
	return "Runbook budgets: " + strings.Join(parts, " · ")
}

// withBudgets adds the budget line to a progress message.
func withBudgets(m Msg, in *state.Incident, now time.Time) Msg {
	m.Blocks = append(m.Blocks, contextBlock("budgets", budgetLine(in, now)))
	return m
}

// stepTimesMarkdown is the export's section of step times against the
// runbook, with the time to recovery.
func stepTimesMarkdown(in *state.Incident, now time.Time) string {
	var b strings.Builder
	b.WriteString("\n## Runbook step times\n\n| Step | Took | Runbook | Result |\n|---|---|---|---|\n")
	for _, st := range StepTimes(in, now) {
		took := "–"
		if st.State != "pending" {
			took = short(st.Took)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", st.Label, took, st.Range, st.State)
	}
	if req, dep, ok := recovered(in); ok {
		fmt.Fprintf(&b, "\n- Time to recovery: %s from the rollback request to the verified rollback", short(req))
		if dep > 0 {
			fmt.Fprintf(&b, " (%s from the bad deploy)", short(dep))
		}
		b.WriteString("\n")
	} else {
		fmt.Fprintf(&b, "\n- Time to recovery: not recovered (status: %s)\n", in.Status)
	}
	return b.String()
}
