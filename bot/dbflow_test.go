package bot

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"rollbot/handlers"
	"rollbot/platforms"
	"rollbot/state"
	"rollbot/testkit/slackemu"
	"rollbot/testkit/wait"
)

// recordingDB is a database whose down migration and restore are recorded;
// the real ones are proven in platforms/migrations and platforms/rds. Here
// the subject is the gate and the approvals.
type recordingDB struct {
	destructive bool
	fail        error // RollBack's answer, when set
	block       bool  // RollBack runs until its context ends
	mu          sync.Mutex
	downs       int
	restores    int
}

func (d *recordingDB) Detect(ctx context.Context, since time.Time) (platforms.MigrationReport, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := platforms.MigrationReport{Tool: "golang-migrate", Source: "schema_migrations"}
	if d.downs == 0 && d.restores == 0 {
		r.Ran = []platforms.Migration{{ID: "20261125090000", Description: "drop_legacy_email", Reversible: !d.destructive, Destructive: d.destructive, Why: "DROP COLUMN email"}}
	}
	return r, nil
}

func (d *recordingDB) DownPlan(platforms.MigrationReport) string { return "run `migrate down 1`" }

func (d *recordingDB) RollBack(ctx context.Context, run platforms.DBRun, since time.Time, bad platforms.Revision, out io.Writer) (string, error) {
	d.mu.Lock()
	d.downs++
	fail, block := d.fail, d.block
	d.mu.Unlock()
	if block {
		io.WriteString(out, "migrating down 20261125090000/d drop_legacy_email (waiting for a table lock)\n")
		<-ctx.Done()
		return "", fmt.Errorf("migrate down: %w", ctx.Err())
	}
	if fail != nil {
		io.WriteString(out, "error: Dirty database version 20261125090000. Fix and force version.\n")
		return "", fail
	}
	io.WriteString(out, "20261125090000/d drop_legacy_email (3.1ms)\n")
	return "schema back at 20261124000000", nil
}

func (d *recordingDB) RestorePlan(ctx context.Context, incident string, before time.Time) string {
	return "restore the newest snapshot before the deploy"
}

func (d *recordingDB) Restore(ctx context.Context, run platforms.DBRun, before time.Time, progress func(string)) (string, error) {
	d.mu.Lock()
	d.restores++
	d.mu.Unlock()
	progress("restoring")
	return "New RDS instance payments-rb is available", nil
}

func dbHarness(t *testing.T, destructive bool, eng handlers.Options) (*harness, *recordingDB, slackemu.Message) {
	svc, _ := simService(t, "payments", time.Millisecond)
	db := &recordingDB{destructive: destructive}
	svc.Database, svc.DBApprovers = db, handlers.Access{Groups: []string{slackemu.GroupDBA}, Users: []string{slackemu.UserAlice}}
	h := newHarness(t, []*handlers.Service{svc}, eng)
	h.slash(slackemu.UserAlice, "payments")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	if !strings.Contains(a.PlainText(), "Decision gate: 1 migration(s) ran") {
		t.Fatalf("the decision gate is not shown:\n%s", a.PlainText())
	}
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	m := h.waitFor("DB approval request", hasAction(handlers.ActDBApprove))
	if !strings.Contains(m.PlainText(), handlers.DowntimeWarning) {
		t.Fatalf("the runbook's downtime warning is missing:\n%s", m.PlainText())
	}
	return h, db, m
}

// approve clicks Approve as user, then types the service name in the modal.
func (h *harness) approve(user string, dbMsg slackemu.Message, typed string) slackemu.ViewAck {
	h.t.Helper()
	h.click(user, dbMsg.TS, handlers.ActDBApprove)
	v, err := h.emu.WaitForView(h.ctx(), func(v slackemu.View) bool { return v.User == user && v.Open && v.CallbackID == "db_approve_modal" })
	if err != nil {
		h.t.Fatalf("no approval modal for %s: %v\n%s", user, err, h.dump())
	}
	ack, err := h.emu.SubmitView(h.ctx(), user, v.ID, map[string]map[string]string{"confirm": {"service": typed}})
	if err != nil {
		h.t.Fatalf("submit: %v", err)
	}
	return ack
}

func TestDBGateReversibleRunsBeforeApp(t *testing.T) {
	light(t)
	h, db, m := dbHarness(t, false, fastEngine())
	// The requester may not approve the DB step, even though she is a DB approver.
	h.click(slackemu.UserAlice, m.TS, handlers.ActDBApprove)
	h.waitFor("requester refused", ephemeralFor(slackemu.UserAlice, "requester ≠ approver"))
	// Not a DB approver.
	h.click(slackemu.UserBob, m.TS, handlers.ActDBApprove)
	h.waitFor("non-DBA refused", ephemeralFor(slackemu.UserBob, "DB approvers may approve"))
	// The wrong name is an inline error in the modal.
	if ack := h.approve(slackemu.UserDana, m, "paymets"); ack.Errors["confirm"] == "" {
		t.Fatalf("a mistyped service name was accepted: %+v", ack)
	}
	if ack := h.approve(slackemu.UserDana, m, "payments"); len(ack.Errors) != 0 {
		t.Fatalf("approval refused: %+v", ack)
	}
	h.waitFor("verified", textHas("Rollback verified"))
	if db.downs != 1 {
		t.Fatalf("down migrations run: %d, want 1", db.downs)
	}
	evs, err := h.store.Timeline(context.Background(), "RB-1")
	if err != nil {
		t.Fatal(err)
	}
	if order := dbThenRollback(evs); order != "database,rollback" {
		t.Fatalf("the app rollback did not wait for the database step: %v", order)
	}
}

func TestDBDestructiveNeedsTwoApprovers(t *testing.T) {
	light(t)
	h, db, m := dbHarness(t, true, fastEngine())
	if !strings.Contains(m.PlainText(), "Needs 2 distinct DB approver(s)") {
		t.Fatalf("the 2-of-N rule is not stated:\n%s", m.PlainText())
	}
	h.approve(slackemu.UserDana, m, "payments")
	h.waitFor("1 of 2", textHas("Approved so far (1 of 2)"))
	// The same approver twice does not count twice.
	h.approve(slackemu.UserDana, m, "payments")
	if db.restores != 0 {
		t.Fatal("one approver (twice) started a destructive restore")
	}
	h.approve(slackemu.UserErin, m, "payments")
	h.waitFor("verified", textHas("Rollback verified"))
	if db.restores != 1 || db.downs != 0 {
		t.Fatalf("restores=%d downs=%d, want 1 and 0", db.restores, db.downs)
	}
}

func TestDBApprovalExpires(t *testing.T) {
	light(t)
	eng := fastEngine()
	eng.ApprovalTTL = 300 * time.Millisecond
	h, db, m := dbHarness(t, true, eng)
	h.approve(slackemu.UserDana, m, "payments")
	h.waitFor("1 of 2", textHas("Approved so far (1 of 2)"))
	// Wait, on the stored approvals themselves, until dana's has expired.
	wait.For(t, 10*time.Second, "dana's approval to expire", func() (bool, error) {
		valid, err := h.store.Approvals(context.Background(), "RB-1", "database")
		if err != nil {
			t.Fatal(err)
		}
		return len(valid) == 0, fmt.Errorf("still valid: %v", valid)
	})
	h.approve(slackemu.UserErin, m, "payments")
	h.waitFor("still 1 of 2", func(msg slackemu.Message) bool {
		return msg.TS == m.TS && strings.Contains(msg.PlainText(), "Approved so far (1 of 2): <@"+slackemu.UserErin+">")
	})
	if db.restores != 0 {
		t.Fatal("an expired approval counted")
	}
}

func TestDBRefusalStopsEverything(t *testing.T) {
	light(t)
	h, db, m := dbHarness(t, false, fastEngine())
	h.click(slackemu.UserDana, m.TS, handlers.ActDBRefuse)
	h.waitFor("refused", textHas("Refused by <@"+slackemu.UserDana+">"))
	in, _ := h.store.Get(context.Background(), "RB-1")
	if in.Status != state.Cancelled || db.downs != 0 {
		t.Fatalf("after refusal: status %s, downs %d", in.Status, db.downs)
	}
	if l, _ := h.store.LockHolder(context.Background(), "payments"); l != nil {
		t.Fatal("lock still held after refusal")
	}
}
