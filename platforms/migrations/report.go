package migrations

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Migration is one migration that ran since the bad deploy started.
type Migration struct {
	// ID is what the tool calls it: Flyway's version, Liquibase's changeset
	// id, Django's "app.name", the Rails or golang-migrate version.
	ID          string `json:"id"`
	Description string `json:"description,omitempty"`
	// Script is the file the tool recorded (Flyway script, Liquibase
	// FILENAME) or that rollbot found for it.
	Script string `json:"script,omitempty"`
	// AppliedAt is zero where the tool records no time (Rails, golang-migrate).
	AppliedAt time.Time `json:"applied_at,omitzero"`
	// Failed is set when the tool recorded the migration as failed (it may
	// have left the schema half changed).
	Failed bool `json:"failed,omitempty"`
	// Repeatable is a Flyway R__ migration (views, procedures): it has no
	// undo, and the last good release's own version is re-applied when that
	// release runs flyway migrate. It does not count as a down step.
	Repeatable bool `json:"repeatable,omitempty"`

	// Reversible is true when an undo/down/rollback is known to exist.
	Reversible    bool   `json:"reversible"`
	ReversibleWhy string `json:"reversible_why"`
	// Destructive is true when the migration's own change lost data
	// (DROP TABLE/COLUMN, DELETE, TRUNCATE, UPDATE without WHERE, ...): a
	// down migration cannot bring it back; restore from a snapshot.
	Destructive    bool   `json:"destructive"`
	DestructiveWhy string `json:"destructive_why,omitempty"` // the matched statements, e.g. "ALTER TABLE users DROP COLUMN email"
	// SourceRead is true when rollbot read the migration's source, so
	// Destructive is based on its SQL/code; false means "not known".
	SourceRead bool   `json:"source_read"`
	Source     string `json:"source,omitempty"` // the file read
	// DownLosesData names what running the down migration deletes (e.g. it
	// drops a column the bad release added: the values written since are
	// lost). Empty when not known or nothing.
	DownLosesData string `json:"down_loses_data,omitempty"`
	// Compat says whether the previous release runs on the schema this
	// migration left (package compat): "expand", "contract", or
	// "unknown"/"" when its SQL could not be read. CompatWhy names the
	// contracting statements, or why it could not be read.
	Compat    string `json:"compat,omitempty"`
	CompatWhy string `json:"compat_why,omitempty"`
}

// Report is what Detect found.
type Report struct {
	Tool  string `json:"tool"`
	Table string `json:"table"`
	// Ran lists the migrations applied since the bad deploy started (by
	// applied time where the tool records it, else against the versions at
	// the last good deploy), oldest first.
	Ran []Migration `json:"ran"`
	// Current is the tool's current version: Flyway's highest applied
	// version, Liquibase's last changeset id, Django's newest "app.name",
	// the Rails or golang-migrate version ("" when nothing is applied).
	Current string `json:"current"`
	// Target is what Verify must see after every migration in Ran is rolled
	// back. For Django it is "app.name" per app, comma separated ("app.zero"
	// when the app had none before).
	Target string `json:"target"`
	// Steps is the number of down steps (len(Ran) without failed and
	// repeatable ones).
	Steps int `json:"steps"`
	// Dirty is set when the tool recorded a failed, half-applied migration
	// (golang-migrate dirty flag, Flyway success=false). Fix by hand first.
	Dirty bool `json:"dirty,omitempty"`
	// Uncertain says why rollbot cannot tell which migrations ran (e.g. no
	// record of the versions at the last good deploy). The gate treats an
	// uncertain report as "migrations may have run".
	Uncertain string `json:"uncertain,omitempty"`
	// ByHand says why the down command must not run although rollbot
	// knows what ran (a Rails migration applied out of version order, a
	// migrations_dir it cannot read), and what to do instead. The gate
	// treats it like an uncertain report: the database step by hand.
	ByHand string   `json:"by_hand,omitempty"`
	Notes  []string `json:"notes,omitempty"`
}

// Action is the decision gate's verdict (runbook §1: "if database
// migrations ran, proceed to database rollback section before application
// rollback").
type Action string

const (
	// ActionNone: no migration ran since the deploy started; roll back the app.
	ActionNone Action = "none"
	// ActionDown: roll the database back with the down command first.
	ActionDown Action = "down"
	// ActionRestore: a migration lost data or has no down; restore the
	// pre-deploy snapshot (or point in time) first.
	ActionRestore Action = "restore"
	// ActionManual: rollbot cannot tell (dirty table, unknown history); a
	// human must look at the database before the app rollback.
	ActionManual Action = "manual"
)

// Decision is the gate's verdict with the reason shown to users.
type Decision struct {
	Action Action `json:"action"`
	Reason string `json:"reason"`
}

// Decide applies the decision gate to the report.
func (r Report) Decide() Decision {
	switch {
	case r.Dirty:
		return Decision{ActionManual, fmt.Sprintf("%s records a failed, half-applied migration (at %s): fix the schema by hand before any rollback", r.Tool, orNone(r.Current))}
	case r.Uncertain != "":
		return Decision{ActionManual, "cannot tell whether migrations ran: " + r.Uncertain}
	case r.ByHand != "":
		return Decision{ActionManual, r.ByHand}
	case len(r.Ran) == 0:
		return Decision{ActionNone, fmt.Sprintf("no %s migration ran since the deploy started (current %s)", r.Tool, orNone(r.Current))}
	}
	var destructive, irreversible, repeatable []string
	for _, m := range r.Ran {
		if m.Destructive {
			destructive = append(destructive, m.ID+" ("+m.DestructiveWhy+")")
		}
		switch {
		case m.Repeatable:
			repeatable = append(repeatable, m.ID)
		case !m.Reversible:
			irreversible = append(irreversible, m.ID+" ("+m.ReversibleWhy+")")
		}
	}
	ids := r.ranIDs()
	again := ""
	if len(repeatable) > 0 {
		again = "; repeatable migrations re-ran (" + strings.Join(repeatable, ", ") + "): the last good release re-applies its own versions when it runs flyway migrate"
	}
	switch {
	case len(destructive) == 0 && len(repeatable) == len(r.Ran):
		return Decision{ActionNone, fmt.Sprintf("no versioned %s migration ran since the deploy started (current %s)%s", r.Tool, orNone(r.Current), again)}
	case len(destructive) > 0:
		return Decision{ActionRestore, fmt.Sprintf("migrations ran (%s) and %s lost data: a down migration cannot bring it back; restore the database from the pre-deploy snapshot before the app rollback",
			ids, strings.Join(destructive, ", "))}
	case len(irreversible) > 0:
		return Decision{ActionRestore, fmt.Sprintf("migrations ran (%s) and %s cannot be undone: restore the database from the pre-deploy snapshot before the app rollback",
			ids, strings.Join(irreversible, ", "))}
	}
	reason := fmt.Sprintf("migrations ran (%s): roll the database back to %s with the down command before the app rollback%s", ids, orNone(r.Target), again)
	var loses []string
	for _, m := range r.Ran {
		if m.DownLosesData != "" {
			loses = append(loses, m.ID+": "+m.DownLosesData)
		}
	}
	if len(loses) > 0 {
		reason += "; the down migration deletes data written since the deploy (" + strings.Join(loses, "; ") + ")"
	}
	return Decision{ActionDown, reason}
}

// DownVars are the variables the down command can use as $(NAME):
// ROLLBOT_STEPS (how many to roll back), ROLLBOT_TARGET (Report.Target),
// ROLLBOT_CURRENT, and for Django ROLLBOT_TARGET_<APP> (upper-cased app
// label, e.g. ROLLBOT_TARGET_ORDERS=0003_previous or "zero").
func (r Report) DownVars() map[string]string {
	v := map[string]string{
		"ROLLBOT_STEPS":   strconv.Itoa(r.Steps),
		"ROLLBOT_TARGET":  r.Target,
		"ROLLBOT_CURRENT": r.Current,
	}
	if r.Tool == ToolDjango {
		for _, t := range strings.Split(r.Target, ",") {
			if app, name, ok := strings.Cut(t, "."); ok {
				v["ROLLBOT_TARGET_"+strings.ToUpper(app)] = name
			}
		}
	}
	return v
}

func (r Report) ranIDs() string {
	ids := make([]string, len(r.Ran))
	for i, m := range r.Ran {
		ids[i] = m.ID
	}
	return strings.Join(ids, ", ")
}

func orNone(s string) string {
	if s == "" {
		return "no version"
	}
	return s
}
