package database

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"rollbot/platforms"
	"rollbot/platforms/migrations"
	"rollbot/platforms/rds"
	"rollbot/platforms/sim"
	"rollbot/state"
	"rollbot/testkit/awstest"
	"rollbot/testkit/dbtest"
	"rollbot/testkit/kubetest"
	"rollbot/testkit/redistest"
)

// shop is a service whose bad release (shop:v2) migrated a REAL
// PostgreSQL's golang-migrate table from 2 (recorded in a REAL Redis while
// shop:v1 ran) to 4, with the down files of 3 and 4.
type shop struct {
	db    *DB
	owner *sql.DB
	dsn   string // the owner's
	since time.Time
	bad   platforms.Revision
}

func newShop(t *testing.T, down migrations.DownConfig) *shop {
	t.Helper()
	ctx := context.Background()
	pg := dbtest.StartPostgres(t, dbtest.PostgresOptions{})
	d := pg.CreateDatabase(t)
	// The down commands' run directories are the test's own, whatever
	// else runs on the machine with the same incident ids.
	t.Setenv("TMPDIR", t.TempDir())
	owner, err := sql.Open("pgx", d.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { owner.Close() })
	for _, q := range []string{
		`CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)`,
		`INSERT INTO schema_migrations VALUES (4, false)`,
	} {
		if _, err := owner.Exec(q); err != nil {
			t.Fatalf("fixture %q: %v", q, err)
		}
	}
	dir := t.TempDir()
	for name, body := range map[string]string{
		"3_email.up.sql":     "ALTER TABLE users ADD COLUMN email text;",
		"3_email.down.sql":   "ALTER TABLE users DROP COLUMN email;",
		"4_index.up.sql":     "CREATE INDEX users_email ON users (email);",
		"4_index.down.sql":   "DROP INDEX users_email;",
		"2_users.up.sql":     "CREATE TABLE users (id int);",
		"2_users.down.sql":   "DROP TABLE users;",
		"1_nothing.up.sql":   "SELECT 1;",
		"1_nothing.down.sql": "SELECT 1;",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := "ROLLBOT_TEST_DSN_" + strings.ToUpper(d.Name)
	t.Setenv(env, d.DSN)
	mig, err := migrations.New(ctx, migrations.Config{Driver: migrations.DriverPostgres, DSNEnv: env, Tool: migrations.ToolGolangMigrate, MigrationsDir: dir, Down: down}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mig.Close() })
	rdb, prefix := redistest.Client(t)
	history := state.New(rdb, prefix)
	svc, err := sim.New("shop", sim.Config{Versions: []sim.Version{{Artifact: "shop:v1"}, {Artifact: "shop:v2"}}})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := svc.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := history.RecordSchema(ctx, "shop", state.SchemaRecord{At: snap.DeployedAt.Add(-time.Hour), Artifact: "shop:v1", Tool: migrations.ToolGolangMigrate, Versions: []string{"2"}}); err != nil {
		t.Fatal(err)
	}
	db := New(Parts{Service: "shop", Platform: svc, Migrations: mig, Down: down, History: history}, slog.New(slog.DiscardHandler))
	return &shop{db: db, owner: owner, dsn: d.DSN, since: snap.DeployedAt, bad: snap.Current}
}

func (s *shop) setVersion(t *testing.T, v int) {
	t.Helper()
	if _, err := s.owner.Exec(`UPDATE schema_migrations SET version = $1`, v); err != nil {
		t.Fatal(err)
	}
}

// TestRollBackResumedCommand: a kind command down step resumed by another
// replica never runs the command again (it ran as a process of the replica
// that stopped). Without its run directory on this host (it ran on
// another replica's host): a table already back at the target is success,
// so the rollback continues; anything else says the command was
// interrupted and what to check. (On the same host the command is
// followed: TestRollBackFollowsCommandOnThisHost.)
func TestRollBackResumedCommand(t *testing.T) {
	ctx := context.Background()
	marker := filepath.Join(t.TempDir(), "down-ran")
	s := newShop(t, migrations.DownConfig{Kind: migrations.DownCommand, Command: []string{"touch", marker}, Timeout: 3 * time.Second})
	ran := func() bool { _, err := os.Stat(marker); return err == nil }
	resumed := platforms.DBRun{Incident: "RB-1", Resumed: true}

	t.Run("table back", func(t *testing.T) {
		s.setVersion(t, 2) // the command had finished when its replica stopped
		var out bytes.Buffer
		got, err := s.db.RollBack(ctx, resumed, s.since, s.bad, &out)
		if err != nil {
			t.Fatalf("RollBack: %v", err)
		}
		if !strings.Contains(got, "is back at 2 (checked in schema_migrations); the down command run by the replica that stopped had finished") {
			t.Errorf("result %q", got)
		}
		if ran() || out.Len() != 0 {
			t.Errorf("the down command ran again (marker %v, output %q)", ran(), out.String())
		}
	})

	// The command is still running on its own (its process group outlives
	// the replica): the table comes back while rollbot watches it.
	t.Run("table back while watching", func(t *testing.T) {
		s.setVersion(t, 3)
		done := make(chan error, 1)
		go func() {
			time.Sleep(1500 * time.Millisecond)
			_, err := s.owner.Exec(`UPDATE schema_migrations SET version = 2`)
			done <- err
		}()
		var out bytes.Buffer
		got, err := s.db.RollBack(ctx, resumed, s.since, s.bad, &out)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if err != nil {
			t.Fatalf("RollBack: %v", err)
		}
		if !strings.Contains(got, "is back at 2") || !strings.Contains(out.String(), "on another replica's host (rollbot finds no run of it on this one), and may still be running there; rollbot does not start it again. Watching schema_migrations for up to 3s") {
			t.Errorf("result %q, output %q", got, out.String())
		}
		if ran() {
			t.Error("the down command ran again")
		}
	})

	for _, v := range []int{4, 3} {
		t.Run("table at "+string(rune('0'+v)), func(t *testing.T) {
			s.setVersion(t, v)
			_, err := s.db.RollBack(ctx, resumed, s.since, s.bad, &bytes.Buffer{})
			msg, ok := platforms.UserMessage(err)
			if !ok || !strings.HasPrefix(msg, "the down command `touch` was interrupted: it ran on another replica's host, and that replica stopped") || !strings.Contains(msg, "After waiting 3s") ||
				!strings.Contains(msg, "does not run it a second time") || !strings.Contains(msg, "Check the migration table") {
				t.Errorf("RollBack = %v (message %q)", err, msg)
			}
			if strings.Contains(msg, marker) {
				t.Error("the message quotes the command's arguments")
			}
			if ran() {
				t.Error("the down command ran again")
			}
		})
	}

	// The same database, not resumed: the command does run (so the checks
	// above would see it).
	s.setVersion(t, 4)
	if _, err := s.db.RollBack(ctx, platforms.DBRun{Incident: "RB-2"}, s.since, s.bad, &bytes.Buffer{}); err == nil || !ran() {
		t.Errorf("a first attempt did not run the command: err %v, ran %v", err, ran())
	}
}

// TestRestoreResumed: DB.Restore against the RDS query API (awstest) with
// the real SDK. The first attempt starts the restore and stops while the
// instance is still being created; the resumed attempt makes no second
// restore call (counted on the fake's side), waits for the same instance
// and returns it. The plan shown to approvers names that instance.
func TestRestoreResumed(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": "AKIAROLLBOTDBTEST001", "AWS_SECRET_ACCESS_KEY": "db/Test+Secret/0123456789abcdefghijklmnop",
		"AWS_SESSION_TOKEN": "", "AWS_PROFILE": "", "AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "",
		"AWS_CONFIG_FILE": dir + "/config", "AWS_SHARED_CREDENTIALS_FILE": dir + "/credentials", "AWS_EC2_METADATA_DISABLED": "true",
	} {
		t.Setenv(k, v)
	}
	before := time.Date(2026, 6, 26, 9, 0, 0, 0, time.UTC)
	f := awstest.New()
	t.Cleanup(f.Close)
	f.SetRestoreDescribes(5)
	f.AddDBInstance(awstest.DBInstance{ID: "shop-db", Engine: "postgres", Class: "db.t4g.medium", Address: "shop-db.c0fake0abcde.eu-west-1.rds.amazonaws.com", Port: 5432,
		CreatedAt: before.AddDate(-1, 0, 0), BackupRetentionDays: 7, LatestRestorableTime: before.Add(time.Hour)})
	f.AddDBSnapshot(awstest.DBSnapshot{ID: "shop-pre-deploy", Instance: "shop-db", Type: "manual", Created: before.Add(-10 * time.Minute), Engine: "postgres", Port: 5432})
	a, err := rds.New(ctx, rds.Config{Endpoint: f.URL, Instance: "shop-db", PollInterval: 5 * time.Millisecond, MaxAttempts: 2, MaxBackoff: 10 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	db := New(Parts{Service: "shop", Restore: a}, nil)

	if plan := db.RestorePlan(ctx, "RB-1", before); !strings.Contains(plan, "restore snapshot shop-pre-deploy of shop-db (taken 2026-06-26 08:50:00 UTC) into a new instance shop-db-rb-1") {
		t.Errorf("RestorePlan = %q", plan)
	}

	// The first attempt: its replica stops while the instance is creating.
	first, stop := context.WithCancel(ctx)
	_, err = db.Restore(first, platforms.DBRun{Incident: "RB-1"}, before, func(p string) {
		if strings.Contains(p, "shop-db-rb-1: creating") {
			stop()
		}
	})
	if err == nil {
		t.Fatal("the first attempt did not stop")
	}
	if in, ok := f.DBInstance("shop-db-rb-1"); !ok || in.Status != "creating" {
		t.Fatalf("after the first attempt: %+v, %v; want the instance still creating", in, ok)
	}

	var progress []string
	got, err := db.Restore(ctx, platforms.DBRun{Incident: "RB-1", Resumed: true}, before, func(p string) { progress = append(progress, p) })
	if err != nil {
		t.Fatalf("resumed Restore: %v", err)
	}
	if n := len(f.Requests("RestoreDBInstanceFromDBSnapshot")); n != 1 {
		t.Errorf("%d RestoreDBInstanceFromDBSnapshot calls, want 1", n)
	}
	if len(progress) == 0 || !strings.HasPrefix(progress[0], "attached to the restore of shop-db-rb-1 started by an earlier attempt for RB-1") {
		t.Errorf("progress %q", progress)
	}
	if !strings.Contains(got, "New RDS instance shop-db-rb-1 is available at shop-db-rb-1.") || !strings.Contains(got, "snapshot shop-pre-deploy") {
		t.Errorf("result %q", got)
	}

	// A same-named instance that is not this incident's is refused.
	f.AddDBInstance(awstest.DBInstance{ID: "shop-db-rb-2", Engine: "postgres", Address: "shop-db-rb-2.x", Port: 5432, CreatedAt: before})
	_, err = db.Restore(ctx, platforms.DBRun{Incident: "RB-2", Resumed: true}, before, func(string) {})
	if !errors.Is(err, platforms.ErrConflict) {
		t.Errorf("Restore over another instance = %v", err)
	}
	if n := len(f.Requests("RestoreDBInstanceFromDBSnapshot")); n != 1 {
		t.Errorf("%d RestoreDBInstanceFromDBSnapshot calls, want 1", n)
	}
}

// TestRollBackAttachesToJob: a kind kubernetes_job down step resumed by
// another replica, on a real control plane (testkit/kubetest; kwok
// completes the pod and serves the log the test sets) with the table on a
// real PostgreSQL. The Job the stopped replica created is followed, not
// created again, and the table already showing the migrations reverted
// (by that Job) is not refused by the re-check: the step is done. A Job
// that completed while the table is not back is reported.
func TestRollBackAttachesToJob(t *testing.T) {
	ctx := context.Background()
	c, err := kubetest.StartCluster(ctx, kubetest.Options{Logf: t.Logf})
	if err != nil {
		t.Fatalf("kubernetes control plane: %v", err)
	}
	t.Cleanup(c.Stop)
	ns := kubetest.CreateNamespace(t, c.AdminClient, "dbattach")
	down := migrations.DownConfig{Kind: migrations.DownKubernetesJob, Namespace: ns, Timeout: 2 * time.Minute,
		Command: []string{"migrate", "-path", "/migrations", "-database", "$(DATABASE_URL)", "down", "$(ROLLBOT_STEPS)"}}
	s := newShop(t, down)
	s.db.jobs = migrations.NewJobRunner(c.AdminClient, nil)
	log := []string{"4/d index (3.2ms)", "3/d email (2.9ms)"}
	if err := c.SetContainerLog(log...); err != nil {
		t.Fatal(err)
	}
	jobs := func(incident string) int {
		l, err := c.AdminClient.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{LabelSelector: migrations.LabelIncident + "=" + incident})
		if err != nil {
			t.Fatal(err)
		}
		return len(l.Items)
	}
	// What the stopped replica had done: created the Job, which ran.
	started := func(incident string) string {
		j, err := c.AdminClient.BatchV1().Jobs(ns).Create(ctx, migrations.DownJob(down, incident, s.bad.Artifact, map[string]string{"ROLLBOT_STEPS": "2"}), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return j.Name
	}

	t.Run("table back", func(t *testing.T) {
		name := started("RB-1")
		s.setVersion(t, 2) // what the Job's migrate down did
		var out bytes.Buffer
		got, err := s.db.RollBack(ctx, platforms.DBRun{Incident: "RB-1", Resumed: true}, s.since, s.bad, &out)
		if err != nil {
			t.Fatalf("RollBack: %v\n%s", err, out.String())
		}
		want := "is back at 2 (checked in schema_migrations); attached to the down Job " + ns + "/" + name + " (shop:v2) started by an earlier attempt"
		if !strings.Contains(got, want) {
			t.Errorf("result %q\nwant it to contain %q", got, want)
		}
		wantOut := "attached to job " + ns + "/" + name + " started by an earlier attempt (image shop:v2)\n" + strings.Join(log, "\n") + "\n"
		if out.String() != wantOut {
			t.Errorf("output %q, want %q", out.String(), wantOut)
		}
		if n := jobs("RB-1"); n != 1 {
			t.Errorf("%d Jobs for RB-1, want 1", n)
		}
	})

	t.Run("table not back", func(t *testing.T) {
		name := started("RB-2")
		s.setVersion(t, 4)
		_, err := s.db.RollBack(ctx, platforms.DBRun{Incident: "RB-2", Resumed: true}, s.since, s.bad, &bytes.Buffer{})
		msg, _ := platforms.UserMessage(err)
		if !strings.HasPrefix(msg, "the down Job "+ns+"/"+name+" started by an earlier attempt completed, but the migration table is not back: migrations ran (3, 4)") {
			t.Errorf("RollBack = %v (message %q)", err, msg)
		}
		if n := jobs("RB-2"); n != 1 {
			t.Errorf("%d Jobs for RB-2, want 1", n)
		}
	})

	t.Run("no job and nothing to undo", func(t *testing.T) {
		// No earlier Job: the re-check refuses as before, and creates none.
		s.setVersion(t, 2)
		_, err := s.db.RollBack(ctx, platforms.DBRun{Incident: "RB-3"}, s.since, s.bad, &bytes.Buffer{})
		if msg, _ := platforms.UserMessage(err); !strings.HasPrefix(msg, "the down migration was not run: no golang-migrate migration ran since the deploy started") {
			t.Errorf("RollBack = %v", err)
		}
		if n := jobs("RB-3"); n != 0 {
			t.Errorf("%d Jobs for RB-3, want 0", n)
		}
	})
}
