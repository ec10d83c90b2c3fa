package database

import (
	"context"
	"database/sql"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"rollbot/platforms"
	"rollbot/platforms/migrations"
	"rollbot/platforms/sim"
	"rollbot/state"
	"rollbot/testkit/dbtest"
	"rollbot/testkit/redistest"
)

// TestDetectAgainstTheRecord runs a service's database the way the bot
// builds it, on a REAL PostgreSQL whose golang-migrate table stores no
// applied time, with rollbot's record in a REAL Redis and the simulated
// platform's history: the migrations past the record taken while the last
// good release ran are the ones reported, in the runbook's terms.
func TestDetectAgainstTheRecord(t *testing.T) {
	ctx := context.Background()
	pg := dbtest.StartPostgres(t, dbtest.PostgresOptions{})
	d := pg.CreateDatabase(t)
	owner, err := sql.Open("pgx", d.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { owner.Close() })
	for _, q := range []string{
		`CREATE TABLE users (id int, name text, email text)`,
		`CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)`,
		`INSERT INTO schema_migrations VALUES (4, false)`,
	} {
		if _, err := owner.Exec(q); err != nil {
			t.Fatalf("fixture %q: %v", q, err)
		}
	}
	dir := t.TempDir()
	for name, body := range map[string]string{
		"1_users.up.sql":       "CREATE TABLE users (id int, name text);",
		"1_users.down.sql":     "DROP TABLE users;",
		"2_index.up.sql":       "CREATE INDEX users_id ON users (id);",
		"2_index.down.sql":     "DROP INDEX users_id;",
		"3_email.up.sql":       "ALTER TABLE users ADD COLUMN email text;",
		"3_email.down.sql":     "ALTER TABLE users DROP COLUMN email;",
		"4_drop_name.up.sql":   "ALTER TABLE users DROP COLUMN name;",
		"4_drop_name.down.sql": "ALTER TABLE users ADD COLUMN name text;",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := "ROLLBOT_TEST_DSN_" + strings.ToUpper(d.Name)
	t.Setenv(env, d.DSN)
	mig, err := migrations.New(ctx, migrations.Config{Driver: migrations.DriverPostgres, DSNEnv: env, Tool: migrations.ToolGolangMigrate, MigrationsDir: dir}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mig.Close() })
	rdb, prefix := redistest.Client(t)
	history := state.New(rdb, prefix)
	shop, err := sim.New("shop", sim.Config{Versions: []sim.Version{{Artifact: "shop:v1"}, {Artifact: "shop:v2"}}})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := shop.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	since := snap.DeployedAt // shop:v2 rolled out then
	db := New(Parts{Service: "shop", Platform: shop, Migrations: mig, History: history}, slog.New(slog.DiscardHandler))

	// No record yet: rollbot cannot tell, and says so to users.
	_, err = db.Detect(ctx, since)
	if msg, ok := platforms.UserMessage(err); !ok || !strings.HasPrefix(msg, "cannot tell whether migrations ran: ") {
		t.Fatalf("Detect without a record = %v (user message %q)", err, msg)
	}

	// A record from shop:v1's time, at version 2.
	if err := history.RecordSchema(ctx, "shop", state.SchemaRecord{At: since.Add(-time.Hour), Artifact: "shop:v1", Tool: migrations.ToolGolangMigrate, Versions: []string{"2"}}); err != nil {
		t.Fatal(err)
	}
	rep, err := db.Detect(ctx, since)
	if err != nil {
		t.Fatalf("Detect: %v", err)
	}
	if rep.Tool != migrations.ToolGolangMigrate || rep.Source != "schema_migrations" || len(rep.Ran) != 2 ||
		rep.Ran[0].ID != "3" || rep.Ran[0].Destructive || !rep.Ran[0].Reversible ||
		rep.Ran[1].ID != "4" || !rep.Ran[1].Destructive || !strings.Contains(rep.Ran[1].Why, "DROP COLUMN name") {
		t.Fatalf("Detect = %+v", rep)
	}
	if !rep.Destructive() {
		t.Error("a report with a dropped column is not destructive")
	}
	if got, want := db.DownPlan(rep), "no down command is configured for this service: roll "+mig.Target()+" back by hand to before 3, 4, then approve"; got != want {
		t.Errorf("DownPlan = %q, want %q", got, want)
	}

	// RecordSchema stores what runs now: shop:v2 at version 4 (golang-migrate
	// keeps only the current version).
	if err := db.RecordSchema(ctx); err != nil {
		t.Fatal(err)
	}
	rec, ok, err := history.SchemaBefore(ctx, "shop", time.Now().Add(time.Second))
	if err != nil || !ok || rec.Artifact != "shop:v2" || strings.Join(rec.Versions, ",") != "4" {
		t.Fatalf("after RecordSchema: %+v, %v, %v", rec, ok, err)
	}
}

// Without a down command or a restore, the database step is the
// approvers' work by hand; the plans say so and running them changes nothing.
func TestByHand(t *testing.T) {
	ctx := context.Background()
	db := New(Parts{Service: "shop"}, nil)
	before := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	if got := db.RestorePlan(ctx, "RB-1", before); !strings.HasPrefix(got, "no RDS restore is configured for this service") {
		t.Errorf("RestorePlan = %q", got)
	}
	if got, err := db.Restore(ctx, platforms.DBRun{Incident: "RB-1"}, before, func(string) { t.Error("progress from a restore by hand") }); err != nil || !strings.HasPrefix(got, "restored by hand") {
		t.Errorf("Restore = %q, %v", got, err)
	}
	if got, err := db.RollBack(ctx, platforms.DBRun{Incident: "RB-1"}, before, platforms.Revision{ID: "2"}, nil); err != nil || !strings.HasPrefix(got, "rolled back by hand") {
		t.Errorf("RollBack = %q, %v", got, err)
	}
	if err := db.CheckAccess(ctx); err != nil {
		t.Errorf("CheckAccess without a down Job = %v", err)
	}
}

// TestRunKeyKeepsInstallationsApart: two rollbots on one host (Redis
// prefixes of their own) both have an RB-1; their down command run
// directories must not meet, and one installation always finds its own.
func TestRunKeyKeepsInstallationsApart(t *testing.T) {
	a := New(Parts{Service: "shop", RunScope: "rollbot"}, nil)
	b := New(Parts{Service: "shop", RunScope: "rollbot-staging"}, nil)
	if ka, kb := a.runKey("RB-1"), b.runKey("RB-1"); ka == kb {
		t.Errorf("both installations' RB-1 run in %q", ka)
	}
	if k1, k2 := a.runKey("RB-1"), a.runKey("RB-1"); k1 != k2 {
		t.Errorf("one installation's RB-1 is %q, then %q", k1, k2)
	}
	if k := a.runKey("RB-1"); !strings.HasPrefix(k, "RB-1.") {
		t.Errorf("run key %q does not start with the incident", k)
	}
	if k := New(Parts{Service: "shop"}, nil).runKey("RB-1"); k != "RB-1" {
		t.Errorf("without a scope the run key is %q, want the incident", k)
	}
}
