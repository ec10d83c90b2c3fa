package bot

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"time"

	"rollbot/handlers"
	"rollbot/platforms"
	"rollbot/platforms/probe"
)

// stepSlack is what a step's budget keeps beyond the longest wait inside
// it, for rollbot's own records and messages before the wait (the
// timeline, the progress message). What it reports after a wait runs on a
// fresh context of its own.
const stepSlack = 30 * time.Second

// defaultQueryTimeout is query_timeout's default (handlers.Options).
const defaultQueryTimeout = 5 * time.Second

// budgetWait is a wait inside the step that budgets.<budget> bounds.
type budgetWait struct {
	budget string
	platforms.Wait
}

// waitBudget is the budget each adapter wait step runs in.
var waitBudget = map[platforms.WaitStep]string{
	platforms.WaitStop:     "rollout",
	platforms.WaitRollback: "rollout",
	platforms.WaitDBDown:   "db_down",
	platforms.WaitRestore:  "restore",
	platforms.WaitSwitch:   "switch",
}

// validateStepWaits checks every step budget against the waits that run
// inside the step: the adapters' own (rollout_timeout, the down run's
// timeout, the restore's wait_timeout, …), the evidence capture before the
// first write, and rollbot's own bounded reads. A budget shorter than a
// wait cuts the step before the adapter can end its wait with its own
// message; the error names both values and what to change.
func (c *Config) validateStepWaits(b handlers.Budgets) []error {
	var errs []error
	seen := map[string]bool{}
	add := func(w budgetWait) {
		have, need := budgetOf(b, w.budget), w.D+stepSlack
		if have <= 0 || have >= need {
			return
		}
		msg := fmt.Sprintf("%s is shorter than %s + %s for rollbot's own records and messages: raise budgets.%s to at least %s or %s",
			c.budgetText(w.budget, have), w.What, stepSlack, w.budget, need, w.Lower)
		if !seen[msg] {
			seen[msg] = true
			errs = append(errs, fmt.Errorf("%s", msg))
		}
	}
	// The stop step keeps the evidence before its write.
	add(budgetWait{"rollout", platforms.Wait{D: b.Capture, What: c.budgetText("capture", b.Capture) + " (the evidence kept before the first write)", Lower: "lower budgets.capture"}})

	names := make([]string, 0, len(c.Services))
	for n := range c.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		for _, w := range c.serviceWaits(name, c.Services[name], b.Capture) {
			add(w)
		}
	}
	errs = append(errs, c.validateVerifyWaits(b.Verify)...)
	return errs
}

// serviceWaits are one service's waits inside the runbook's steps, the
// longest per budget.
func (c *Config) serviceWaits(key string, s ServiceConfig, capture time.Duration) []budgetWait {
	p := s.path(key)
	var waits []platforms.Wait
	if a, ok := adapterNamed(s.Platform); ok && a.waits != nil {
		waits = append(waits, a.waits(s.PlatformSections, p+"."+s.Platform)...)
	}
	if d := s.Database; d != nil {
		waits = append(waits, d.Down.Waits(p+".database.down")...)
		if r := d.Restore; r != nil {
			for _, w := range r.Config.Waits(p + ".database.restore") {
				if w.Step != platforms.WaitSwitch || r.Switch == platforms.SwitchRename {
					waits = append(waits, w)
				}
			}
			if r.Switch == platforms.SwitchSecret && s.Kubernetes != nil {
				for _, w := range s.Kubernetes.Waits(p + ".kubernetes") {
					w.Step, w.What = platforms.WaitSwitch, "the restart's "+w.What
					waits = append(waits, w)
				}
			}
		}
	}
	captureText := c.budgetText("capture", capture)
	var out []budgetWait
	for _, w := range waits {
		switch w.Step {
		case platforms.WaitStop, platforms.WaitDBDown, platforms.WaitRestore:
			// The first write step keeps the evidence before it writes.
			w.D += capture
			w.What += " + " + captureText
		}
		out = append(out, budgetWait{waitBudget[w.Step], w})
	}
	out = append(out, c.assessWait(key, s))
	// The longest wait per budget is the one to report.
	slices.SortStableFunc(out, func(x, y budgetWait) int {
		return cmp.Or(cmp.Compare(x.budget, y.budget), cmp.Compare(y.D, x.D))
	})
	return slices.CompactFunc(out, func(x, y budgetWait) bool { return x.budget == y.budget })
}

// assessWait is the assessment's longest chain of bounded reads: the
// platform state (2 × query_timeout), then whichever is longest of the
// baseline latency (query_timeout), the verdict (verdict.budget) and the
// migration check (2 × query_timeout).
func (c *Config) assessWait(key string, s ServiceConfig) budgetWait {
	qt := cmp.Or(c.QueryTimeout, defaultQueryTimeout)
	qtText := fmt.Sprintf("query_timeout (%s)", qt)
	if c.QueryTimeout <= 0 {
		qtText = fmt.Sprintf("query_timeout (%s, the default)", qt)
	}
	p := s.path(key)
	then, thenText, lower := qt, qtText+" for the baseline latency", "lower query_timeout"
	if vb := s.Verdict.Budget; vb > then {
		then, thenText, lower = vb, fmt.Sprintf("%s.verdict.budget (%s)", p, vb), "lower "+p+".verdict.budget"
	}
	if s.Database != nil && 2*qt > then {
		then, thenText, lower = 2*qt, "2 × "+qtText+" for the migration check of "+p, "lower query_timeout"
	}
	return budgetWait{"assess", platforms.Wait{D: 2*qt + then, What: "2 × " + qtText + " for the platform state, then " + thenText, Lower: lower}}
}

// validateVerifyWaits checks budgets.verify against each service's smoke
// test: every round of the verification runs it, and the last round,
// started just before the deadline, must end inside the budget.
func (c *Config) validateVerifyWaits(verify time.Duration) []error {
	var errs []error
	names := make([]string, 0, len(c.Services))
	for n, s := range c.Services {
		if len(s.SmokeTest.Command) > 0 {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	vt := c.verifyTimeout()
	for _, name := range names {
		s := c.Services[name]
		p := s.path(name)
		soak := cmp.Or(s.VerifySoak, c.VerifySoak, handlers.DefaultVerifySoak)
		smoke, smokeText := s.SmokeTest.Timeout, fmt.Sprintf("%s.smoke_test.timeout (%s)", p, s.SmokeTest.Timeout)
		if smoke <= 0 {
			smoke, smokeText = probe.DefaultSmokeTimeout, fmt.Sprintf("%s.smoke_test.timeout (%s, the default)", p, probe.DefaultSmokeTimeout)
		}
		if need := vt + soak + smoke + time.Minute; verify < need {
			errs = append(errs, fmt.Errorf("%s is shorter than verify_timeout (%s) + verify_soak (%s) + %s + 1m: the last round of checks runs the smoke test just before the deadline; raise budgets.verify to at least %s or lower %s.smoke_test.timeout",
				c.budgetText("verify", verify), vt, soak, smokeText, need, p))
		}
	}
	return errs
}

// budgetOf is the budget of a budgets field name.
func budgetOf(b handlers.Budgets, name string) time.Duration {
	switch name {
	case "assess":
		return b.Assess
	case "confirm":
		return b.Confirm
	case "db_down":
		return b.DBDown
	case "restore":
		return b.Restore
	case "switch":
		return b.Switch
	case "rollout":
		return b.Rollout
	case "verify":
		return b.Verify
	case "hold":
		return b.Hold
	case "capture":
		return b.Capture
	}
	return 0
}

// budgetText names a budget with its value and where the value comes from
// when the file does not set it.
func (c *Config) budgetText(name string, v time.Duration) string {
	switch {
	case budgetOf(c.Budgets, name) > 0:
		return fmt.Sprintf("budgets.%s (%s)", name, v)
	case name == "rollout" && c.StepTimeout > 0:
		return fmt.Sprintf("budgets.%s (%s, from step_timeout)", name, v)
	}
	return fmt.Sprintf("budgets.%s (%s, the default)", name, v)
}
