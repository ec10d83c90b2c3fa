package bot

import (
	"context"
	"strings"
	"testing"
	"time"

	"rollbot/handlers"
	"rollbot/state"
	"rollbot/testkit/awstest"
	"rollbot/testkit/slackemu"
)

// The endpoint switch after a restore, end to end: the Django schema on a
// real PostgreSQL with a destructive migration, the restore and the
// instance renames through the real aws-sdk-go-v2 against awstest, and the
// app rollback on the simulated platform, all driven from the local Slack
// server.

// switchOrder returns "database", "endpoint" and "rollback" in the order
// the database step finished, the endpoint switch finished and the app
// rollback started.
func (s *dbService) switchOrder() string {
	s.t.Helper()
	evs, err := s.h.store.Timeline(context.Background(), "RB-1")
	if err != nil {
		s.t.Fatal(err)
	}
	var order []string
	for _, e := range evs {
		switch {
		case e.Step == "database" && strings.HasPrefix(e.Detail, "done"),
			e.Step == "endpoint" && (strings.HasPrefix(e.Detail, "done") || strings.HasPrefix(e.Detail, "switched the app's database endpoint")),
			e.Step == "rollback" && strings.HasPrefix(e.Detail, "rolling back"):
			order = append(order, e.Step)
		}
	}
	return strings.Join(order, ",")
}

// endpointEvents are the timeline's endpoint switch entries.
func (s *dbService) endpointEvents() []string {
	s.t.Helper()
	evs, err := s.h.store.Timeline(context.Background(), "RB-1")
	if err != nil {
		s.t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		if e.Step == "endpoint" {
			out = append(out, e.Detail)
		}
	}
	return out
}

// approveRestore walks the destructive path to the DB step: assessment,
// confirmation, two DB approvers.
func (s *dbService) approveRestore() slackemu.Message {
	s.t.Helper()
	h := s.h
	h.slash(slackemu.UserAlice, "shop")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	m := h.waitFor("DB approval request", inThread(a.TS, hasAction(handlers.ActDBApprove)))
	h.approve(slackemu.UserDana, m, "shop")
	h.waitFor("1 of 2", func(msg slackemu.Message) bool {
		return msg.TS == m.TS && strings.Contains(msg.PlainText(), "Approved so far (1 of 2)")
	})
	if ack := h.approve(slackemu.UserErin, m, "shop"); len(ack.Errors) != 0 {
		s.t.Fatalf("Erin's approval refused: %+v", ack)
	}
	return a
}

// TestDBPointInTimeRestoreRenameSwitchThroughSlack: point-in-time restore
// to just before the deploy, then switch: rename — shop-db is renamed
// aside and the restored instance takes its identifier, so the app's
// endpoint keeps its DNS name. The app rollback starts only after both
// renames, each waited for; every sub-step is on the timeline.
func TestDBPointInTimeRestoreRenameSwitchThroughSlack(t *testing.T) {
	fake, _ := rdsFake(t, time.Hour)
	orig, _ := fake.DBInstance("shop-db")
	s := startDBService(t, destructiveMigration, &restoreConfig{endpoint: fake.URL, instance: "shop-db", method: "point_in_time", switchMode: "rename"})
	h := s.h
	// What the app runs when each rename is served.
	atRename := make(chan string, 2)
	for range 2 {
		fake.After("ModifyDBInstance", func() {
			snap, err := s.sim.Snapshot(context.Background())
			if err != nil {
				atRename <- "error: " + err.Error()
				return
			}
			atRename <- snap.Current.Artifact
		})
	}

	a := s.approveRestore()
	done := h.waitFor("database step done", inThread(a.TS, textHas("Database rollback* done:")))
	wantAll(t, "database step output", done.PlainText(), "(point in time) into a new instance shop-db-rb-1",
		"Next: rollbot renames shop-db aside and shop-db-rb-1 to shop-db, so the app's endpoint "+orig.Address+":5432 reaches the restored data")
	sw := h.waitFor("endpoint switch done", inThread(a.TS, textHas("Endpoint switch (rename)* done:")))
	h.waitFor("verified", inThread(a.TS, textHas("Rollback verified")))
	t.Logf("endpoint switch in the thread:\n%s", sw.PlainText())

	pitr := fake.Requests("RestoreDBInstanceToPointInTime")
	if len(pitr) != 1 || pitr[0].Params.Get("TargetDBInstanceIdentifier") != "shop-db-rb-1" || len(fake.Requests("RestoreDBInstanceFromDBSnapshot")) != 0 {
		t.Fatalf("point-in-time restores = %+v", pitr)
	}
	mods := fake.Requests("ModifyDBInstance")
	if len(mods) != 2 {
		t.Fatalf("ModifyDBInstance calls = %d, want 2", len(mods))
	}
	aside := mods[0].Params.Get("NewDBInstanceIdentifier")
	if mods[0].Params.Get("DBInstanceIdentifier") != "shop-db" || !strings.HasPrefix(aside, "shop-db-pre-rollback-") ||
		mods[1].Params.Get("DBInstanceIdentifier") != "shop-db-rb-1" || mods[1].Params.Get("NewDBInstanceIdentifier") != "shop-db" {
		t.Errorf("renames = %v then %v", mods[0].Params, mods[1].Params)
	}
	for _, m := range mods {
		if m.Params.Get("ApplyImmediately") != "true" {
			t.Errorf("a rename without ApplyImmediately waits for the maintenance window: %v", m.Params)
		}
	}
	for i := range 2 {
		if got := <-atRename; got != "shop:v3" {
			t.Errorf("the app ran %s at rename %d: the app rollback did not wait for the switch", got, i+1)
		}
	}
	now, _ := fake.DBInstance("shop-db")
	if now.Tags["rollbot:incident"] != "RB-1" || now.Address != orig.Address || now.Status != "available" {
		t.Errorf("shop-db after the switch: %+v; want the restored instance at the original address %s", now, orig.Address)
	}
	if old, ok := fake.DBInstance(aside); !ok || old.Tags["rollbot:incident"] != "" || old.Status != "available" {
		t.Errorf("the original, kept as %s: %+v (found %v)", aside, old, ok)
	}
	wantAll(t, "endpoint switch", sw.PlainText(), "renaming shop-db (the original) to "+aside, "renaming shop-db-rb-1 (the restored data) to shop-db",
		"shop-db now holds the restored data (endpoint "+orig.Address+":5432, unchanged for the app); the original instance is kept as "+aside)

	// Every sub-step on the timeline, in order.
	evs := strings.Join(s.endpointEvents(), "\n")
	var last int
	for _, w := range []string{"switching the app's database endpoint: rename shop-db (the original) to " + aside,
		"renaming shop-db (the original) to " + aside, "shop-db: renaming", aside + ": available",
		"renaming shop-db-rb-1 (the restored data) to shop-db", "shop-db-rb-1: renaming", "shop-db: available", "done: shop-db now holds the restored data"} {
		i := strings.Index(evs[last:], w)
		if i < 0 {
			t.Errorf("timeline lacks %q after position %d:\n%s", w, last, evs)
			continue
		}
		last += i
	}
	if got := s.switchOrder(); got != "database,endpoint,rollback" {
		t.Errorf("order on the timeline = %s, want database,endpoint,rollback", got)
	}
	if got := current(t, s.sim); got != "shop:v2" {
		t.Errorf("the app runs %s after the rollback, want shop:v2", got)
	}
	s.noSecretLeaked()
}

// TestDBRenameSwitchFailsThroughSlack: the second rename fails. rollbot
// stops before the app rollback, both instances stay under their names,
// and the thread says exactly what is where and what to do next.
func TestDBRenameSwitchFailsThroughSlack(t *testing.T) {
	fake, _ := rdsFake(t, time.Hour)
	s := startDBService(t, destructiveMigration, &restoreConfig{endpoint: fake.URL, instance: "shop-db", switchMode: "rename"})
	h := s.h
	fake.After("ModifyDBInstance", func() {
		fake.Inject(awstest.Fault{Action: "ModifyDBInstance", Code: "InvalidDBInstanceState", Times: -1})
	})
	a := s.approveRestore()
	failed := h.waitFor("switch failure", inThread(a.TS, textHas("The endpoint switch failed:")))
	in := h.waitStatus("RB-1", state.RollbackFailed)
	mods := fake.Requests("ModifyDBInstance")
	if len(mods) < 2 {
		t.Fatalf("ModifyDBInstance calls = %d", len(mods))
	}
	aside := mods[0].Params.Get("NewDBInstanceIdentifier")
	wantAll(t, "failure", failed.PlainText(),
		"shop-db was renamed to "+aside+", but renaming shop-db-rb-1 to shop-db failed",
		"both instances are kept under those names",
		"aws rds modify-db-instance --db-instance-identifier shop-db-rb-1 --new-db-instance-identifier shop-db --apply-immediately",
		"the app was *not* rolled back", "End this rollback")
	for _, id := range []string{aside, "shop-db-rb-1"} {
		if inst, ok := fake.DBInstance(id); !ok || inst.Status != "available" {
			t.Errorf("%s: %+v (found %v): both instances must stay named", id, inst, ok)
		}
	}
	if got := current(t, s.sim); got != "shop:v3" {
		t.Errorf("the app was rolled back to %s although the switch failed", got)
	}
	if in.Steps["endpoint"] != "started" {
		t.Errorf("steps = %v", in.Steps)
	}
	if got := s.switchOrder(); got != "database" {
		t.Errorf("order on the timeline = %s, want only database", got)
	}
	evs := strings.Join(s.endpointEvents(), "\n")
	wantAll(t, "timeline", evs, "renaming shop-db (the original) to "+aside, "renaming shop-db-rb-1 (the restored data) to shop-db", "failed: shop-db was renamed to "+aside)
}

// TestDBRestoreUnknownInstanceThroughSlack: database.restore.instance names
// an instance that does not exist. The approvers see it in the plan, the
// restore stops with the same clear message, and the app is not rolled back.
func TestDBRestoreUnknownInstanceThroughSlack(t *testing.T) {
	fake, _ := rdsFake(t, time.Hour)
	s := startDBService(t, destructiveMigration, &restoreConfig{endpoint: fake.URL, instance: "shop-db-typo", switchMode: "rename"})
	h := s.h
	h.slash(slackemu.UserAlice, "shop")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	m := h.waitFor("DB approval request", inThread(a.TS, hasAction(handlers.ActDBApprove)))
	wantAll(t, "DB approval request", m.PlainText(), "rollbot could not prepare the exact plan yet (RDS instance shop-db-typo not found; check the database instance in the config)")
	h.approve(slackemu.UserDana, m, "shop")
	h.waitFor("1 of 2", func(msg slackemu.Message) bool {
		return msg.TS == m.TS && strings.Contains(msg.PlainText(), "Approved so far (1 of 2)")
	})
	h.approve(slackemu.UserErin, m, "shop")
	f := h.waitFor("DB step failure", inThread(a.TS, textHas("The database step failed:")))
	wantAll(t, "failure", f.PlainText(), "RDS instance shop-db-typo not found; check the database instance in the config", "the app was not rolled back")
	h.waitStatus("RB-1", state.RollbackFailed)
	if n := len(fake.Requests("RestoreDBInstanceFromDBSnapshot")) + len(fake.Requests("ModifyDBInstance")); n != 0 {
		t.Errorf("%d restore/rename calls for an unknown instance", n)
	}
	if got := current(t, s.sim); got != "shop:v3" {
		t.Errorf("the app was rolled back to %s", got)
	}
}

// TestDBRenameSwitchResumedAfterRestart: the bot stops right after the
// first rename (the original is being renamed aside). The next bot process
// takes the incident over, reads the instance names, and makes only the
// second rename: the original is renamed once, never twice.
func TestDBRenameSwitchResumedAfterRestart(t *testing.T) {
	fake, _ := rdsFake(t, time.Hour)
	fake.SetRenameDescribes(60) // the first rename stays "renaming" for a while
	s := startDBService(t, destructiveMigration, &restoreConfig{endpoint: fake.URL, instance: "shop-db", switchMode: "rename"})
	h := s.h
	renamed := make(chan struct{}, 1)
	fake.After("ModifyDBInstance", func() { renamed <- struct{}{} })
	a := s.approveRestore()
	select {
	case <-renamed:
	case <-time.After(30 * time.Second):
		t.Fatalf("no rename\n%s", h.dump())
	}
	h.stop()
	if in, _ := h.store.Get(context.Background(), "RB-1"); in.Status != state.SwitchingEndpoint || in.Steps["endpoint"] != "started" {
		t.Fatalf("after the stop: %s %v", in.Status, in.Steps)
	}
	h.start()
	h.waitFor("endpoint switch done", inThread(a.TS, textHas("Endpoint switch (rename)* done:")))
	h.waitFor("verified", inThread(a.TS, textHas("Rollback verified")))
	var ok []string
	for _, r := range fake.Requests("ModifyDBInstance") {
		if r.Failed == "" {
			ok = append(ok, r.Params.Get("DBInstanceIdentifier")+"->"+r.Params.Get("NewDBInstanceIdentifier"))
		}
	}
	if len(ok) != 2 || !strings.HasPrefix(ok[0], "shop-db->shop-db-pre-rollback-") || ok[1] != "shop-db-rb-1->shop-db" {
		t.Errorf("renames = %q, want the original once, then the restored instance", ok)
	}
	evs := strings.Join(s.endpointEvents(), "\n")
	wantAll(t, "timeline", evs, "resuming the endpoint switch: reading the current state first")
	if n := strings.Count(evs, "renaming shop-db (the original)"); n != 1 {
		t.Errorf("the original's rename announced %d times:\n%s", n, evs)
	}
	if got := s.switchOrder(); got != "database,endpoint,rollback" {
		t.Errorf("order = %s", got)
	}
}
