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
	light(t)
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

// noneRecordedDB is a database whose migration table shows no migration
// since the deploy: the migration container's log says otherwise.
type noneRecordedDB struct{ recordingDB }

func (d *noneRecordedDB) Detect(ctx context.Context, since time.Time) (platforms.MigrationReport, error) {
	return platforms.MigrationReport{Tool: "golang-migrate", Source: "schema_migrations"}, nil
}

// A database is configured, but its migration table shows none since the
// deploy while the migration container's log shows one applied (another
// database, a table rollbot does not read, a record lost): rollbot cannot
// tell which is right, so the gate stays closed. The assessment says why
// and quotes the log; a DB approver (not the requester) confirms the
// database step by hand before the app rolls back, and rollbot runs no
// down migration of its own.
func TestFlowMigrationLogContradictsTheDatabase(t *testing.T) {
	light(t)
	svc, s := simService(t, "myapp", 20*time.Millisecond)
	svc.Platform = withMigrationLog{Sim: s, log: "1/u create_orders (4.1ms)\n2/u drop_legacy_email (2.3ms)"}
	db := &noneRecordedDB{}
	svc.Database, svc.DBApprovers = db, handlers.Access{Groups: []string{slackemu.GroupDBA}}
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	wantAll(t, "assessment", a.PlainText(), "*Database migrations:* could not check (the migration container's log shows migrations applied, but golang-migrate's migration table shows none since the deploy)",
		"a DB approver checks the migration table by hand", "2/u drop_legacy_email (2.3ms)")
	if strings.Contains(a.PlainText(), "none ran since the deploy") {
		t.Errorf("the assessment believes the migration table over the log:\n%s", a.PlainText())
	}
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	m := h.waitFor("the database step's approval", hasAction(handlers.ActDBApprove))
	in := h.waitStatus("RB-1", state.AwaitingDBApprove)
	if !in.MigrationsRan || !in.DBManual {
		t.Errorf("incident: migrations ran %v, by hand %v", in.MigrationsRan, in.DBManual)
	}
	if got := current(t, s); got != "app:v3" {
		t.Errorf("the app was rolled back (%s) before the database step", got)
	}
	h.click(slackemu.UserAlice, m.TS, handlers.ActDBApprove)
	h.waitFor("requester refused", ephemeralFor(slackemu.UserAlice, "DB approvers may approve"))
	if ack := h.approve(slackemu.UserDana, m, "myapp"); len(ack.Errors) != 0 {
		t.Fatalf("approval refused: %+v", ack)
	}
	h.waitFor("verified", textHas("Rollback verified"))
	if db.downs != 0 {
		t.Errorf("rollbot ran %d down migrations; the database step was by hand", db.downs)
	}
	evs, err := h.store.Timeline(context.Background(), "RB-1")
	if err != nil {
		t.Fatal(err)
	}
	if order := dbThenRollback(evs); order != "database,rollback" {
		t.Errorf("the app rollback did not wait for the database step: %v", order)
	}
}
