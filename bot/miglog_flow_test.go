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

// withMigrationLog is the simulated platform with an init-migrate
// container whose log is log (as kube's Snapshot reads it).
type withMigrationLog struct {
	*sim.Sim
	log string
}

func (w withMigrationLog) Snapshot(ctx context.Context) (*platforms.Snapshot, error) {
	s, err := w.Sim.Snapshot(ctx)
	if s != nil {
		s.MigrationLog = w.log
	}
	return s, err
}

// A service with no database configured whose migration container logged
// migrations being applied: the log feeds the decision gate, so the
// database step (checked by hand by an approver other than the requester)
// comes before the app rollback.
func TestFlowMigrationLogFeedsTheGate(t *testing.T) {
	svc, s := simService(t, "myapp", 20*time.Millisecond)
	svc.Platform = withMigrationLog{Sim: s, log: "Flyway Community Edition 10.1\nMigrating schema `app` to version \"7 - drop legacy\"\nSuccessfully applied 1 migration to schema `app`, now at version v7"}
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	wantAll(t, "assessment", a.PlainText(), "Decision gate: the migration container's log shows migrations applied",
		"Successfully applied 1 migration to schema `app`, now at version v7")
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	db := h.waitFor("the database step's approval", textHas("Database step first"))
	if !strings.Contains(db.PlainText(), "not the requester <@"+slackemu.UserAlice+">") || !strings.Contains(db.PlainText(), "<!subteam^"+slackemu.GroupOnCall+">") {
		t.Errorf("approval message:\n%s", db.PlainText())
	}
	in := h.waitStatus("RB-1", state.AwaitingDBApprove)
	if !in.MigrationsRan || !in.DBManual {
		t.Errorf("incident: migrations ran %v, by hand %v", in.MigrationsRan, in.DBManual)
	}
	if got := current(t, s); got != "app:v3" {
		t.Errorf("the app was rolled back (%s) before the database step", got)
	}
}
