package migrations

import (
	"strings"
	"testing"
)

func TestDecide(t *testing.T) {
	rev := Migration{ID: "3", Reversible: true, ReversibleWhy: "down migration 3_x.down.sql", DownLosesData: "ALTER TABLE users DROP COLUMN email"}
	irr := Migration{ID: "4", ReversibleWhy: "def down raises ActiveRecord::IrreversibleMigration"}
	des := Migration{ID: "5", Reversible: true, Destructive: true, DestructiveWhy: "DROP TABLE sessions"}
	rep := Migration{ID: "R__views.sql", Repeatable: true, ReversibleWhy: "repeatable"}
	tests := []struct {
		name   string
		r      Report
		action Action
		reason []string
	}{
		{"nothing ran", Report{Tool: ToolFlyway, Current: "2"}, ActionNone, []string{"no flyway migration ran", "current 2"}},
		{"dirty wins", Report{Tool: ToolGolangMigrate, Current: "3", Dirty: true, Ran: []Migration{rev}}, ActionManual, []string{"half-applied", "at 3"}},
		{"uncertain", Report{Tool: ToolRails, Uncertain: "no record"}, ActionManual, []string{"cannot tell", "no record"}},
		{"reversible", Report{Tool: ToolGolangMigrate, Target: "2", Ran: []Migration{rev}}, ActionDown,
			[]string{"roll the database back to 2", "deletes data written since the deploy (3: ALTER TABLE users DROP COLUMN email)"}},
		{"irreversible", Report{Ran: []Migration{rev, irr}}, ActionRestore, []string{"4 (def down raises", "cannot be undone", "snapshot"}},
		{"destructive even with a down", Report{Ran: []Migration{rev, des}}, ActionRestore, []string{"5 (DROP TABLE sessions) lost data", "snapshot"}},
		{"repeatable only", Report{Tool: ToolFlyway, Current: "2", Ran: []Migration{rep}}, ActionNone, []string{"no versioned flyway migration", "R__views.sql"}},
		{"repeatable and reversible", Report{Tool: ToolFlyway, Target: "2", Ran: []Migration{rev, rep}}, ActionDown, []string{"back to 2", "re-applies its own"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.r.Decide()
			if d.Action != tt.action {
				t.Errorf("action %s (%s), want %s", d.Action, d.Reason, tt.action)
			}
			for _, s := range tt.reason {
				if !strings.Contains(d.Reason, s) {
					t.Errorf("reason %q lacks %q", d.Reason, s)
				}
			}
		})
	}
}
