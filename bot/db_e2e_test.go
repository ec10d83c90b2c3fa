package bot

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"rollbot/handlers"
	"rollbot/platforms/sim"
	"rollbot/state"
	"rollbot/testkit/awstest"
	"rollbot/testkit/dbtest"
	"rollbot/testkit/redistest"
	"rollbot/testkit/slackemu"

	"rollbot/testkit/logtest"
)

// The database step end to end: /rollback in the local Slack server, a
// service built from YAML (ParseConfig + BuildServices) on the simulated
// platform, and a REAL PostgreSQL whose schema is managed by a REAL
// migration tool, Django (Debian's python3-django + python3-psycopg2).
//
// Django, not golang-migrate: the bot's database adapter (platforms/database)
// passes no record of the versions at the last good deploy, and
// golang-migrate stores no applied time, so for golang-migrate rollbot can
// only say "cannot tell" (see TestDBGolangMigrateUncertainThroughSlack).
// Django records when each migration was applied, which is what
// migrations.Detect compares with the deploy start.

// debianPython is Debian's interpreter, which has python3-django; a
// python3 earlier on PATH (pyenv, a venv) may not.
const debianPython = "/usr/bin/python3"

func djangoPython(t *testing.T) string {
	t.Helper()
	out, err := exec.Command(debianPython, "-c", "import django, psycopg2; print(django.get_version())").CombinedOutput()
	if err != nil {
		t.Fatalf("%s cannot import django and psycopg2 (%v): apt-get install python3-django python3-psycopg2 (listed in .ci/apt-packages)\n%s", debianPython, err, out)
	}
	return debianPython
}

// djangoFiles is a minimal Django project: app "shop", its database URL
// read from DATABASE_URL (never written to a file).
var djangoFiles = map[string]string{
	"manage.py": `import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
from django.core.management import execute_from_command_line
execute_from_command_line(sys.argv)
`,
	"proj/__init__.py": "",
	"proj/settings.py": `import os
from urllib.parse import urlsplit, unquote

_u = urlsplit(os.environ["DATABASE_URL"])
SECRET_KEY = "rollbot-e2e-test-only"
INSTALLED_APPS = ["shop"]
DATABASES = {"default": {
    "ENGINE": "django.db.backends.postgresql",
    "NAME": _u.path.lstrip("/"),
    "USER": unquote(_u.username),
    "PASSWORD": unquote(_u.password),
    "HOST": _u.hostname,
    "PORT": str(_u.port),
}}
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
`,
	"shop/__init__.py":            "",
	"shop/migrations/__init__.py": "",
	"shop/migrations/0001_initial.py": `from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True
    dependencies = []

    operations = [
        migrations.CreateModel(
            name='Product',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=100)),
                ('legacy_code', models.CharField(blank=True, default='', max_length=20)),
            ],
        ),
    ]
`,
	"shop/migrations/0002_product_price.py": `from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [('shop', '0001_initial')]

    operations = [
        migrations.AddField(
            model_name='product',
            name='price_cents',
            field=models.IntegerField(default=0),
        ),
    ]
`,
}

// The bad release's migration, one of:
var (
	// reversibleMigration adds a column: Django can unapply it.
	reversibleMigration = map[string]string{"shop/migrations/0003_product_sku.py": `from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [('shop', '0002_product_price')]

    operations = [
        migrations.AddField(
            model_name='product',
            name='sku',
            field=models.CharField(blank=True, default='', max_length=32),
        ),
    ]
`}
	// destructiveMigration drops a column with data in it.
	destructiveMigration = map[string]string{"shop/migrations/0003_remove_product_legacy_code.py": `from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [('shop', '0002_product_price')]

    operations = [
        migrations.RemoveField(
            model_name='product',
            name='legacy_code',
        ),
    ]
`}
)

// dbService is one test's world: PostgreSQL with the Django schema at the
// bad release, and the bot serving "shop" built from YAML.
type dbService struct {
	t        *testing.T
	db       dbtest.Database
	owner    *sql.DB
	dir      string // the Django project (migrations_dir and the down command's dir)
	h        *harness
	sim      *sim.Sim
	buildLog *logtest.Buffer
	roVar    string // the variable holding the read-only DSN (setenvFor)
}

// writeProject writes the Django project with the bad release's migration.
func writeProject(t *testing.T, bad map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	writeFiles(t, dir, djangoFiles, bad)
	return dir
}

// writeFiles writes each set of files (path relative to dir -> content).
func writeFiles(t *testing.T, dir string, sets ...map[string]string) {
	t.Helper()
	for _, files := range sets {
		for name, body := range files {
			p := filepath.Join(dir, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// manage runs manage.py as the release's deploy would.
func manage(t *testing.T, dir, dsn string, args ...string) string {
	t.Helper()
	return runIn(t, dir, []string{"PATH=/usr/bin:/bin", "HOME=" + dir, "LANG=C.UTF-8", "DATABASE_URL=" + dsn},
		djangoPython(t), append([]string{"manage.py"}, args...)...)
}

// runIn runs a release's own tool in dir with exactly env, failing the
// test with its output when it fails.
func runIn(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// restoreConfig is the database.restore block, or "".
type restoreConfig struct {
	endpoint, instance string
	method             string // default snapshot
	switchMode         string // default: unset (manual)
}

// startDBService prepares PostgreSQL (the last good release's migrations
// applied two hours ago, the bad release's one just now), then builds the
// service from YAML and starts the bot. The simulated bad deploy started
// an hour ago, so the bad release's migration ran after it started and
// the earlier ones before.
func startDBService(t *testing.T, bad map[string]string, restore *restoreConfig) *dbService {
	t.Helper()
	s := newDBService(t, dbtest.PostgresOptions{TimeZone: "Europe/Berlin"})
	s.dir = writeProject(t, bad)

	// The last good release: 0001 and 0002, two hours ago, with data.
	manage(t, s.dir, s.db.DSN, "migrate", "shop", "0002", "--no-input")
	s.exec(`INSERT INTO shop_product (name, legacy_code, price_cents) VALUES ('kettle', 'K-17', 2599), ('teapot', 'T-03', 1850)`)
	s.exec(`UPDATE django_migrations SET applied = applied - interval '2 hours' WHERE app = 'shop'`)
	// The bad release's migration, run by its deploy.
	manage(t, s.dir, s.db.DSN, "migrate", "shop", "--no-input")

	// The bot's read-only DSN and the down command's DSN: two variables,
	// as a real deployment would set them.
	roVar, rwVar := setenvFor(t, "SHOP_E2E_DB_RO_DSN", s.db.DSN), setenvFor(t, "SHOP_E2E_DB_MIGRATE_DSN", s.db.DSN)
	s.roVar = roVar

	restoreYAML := ""
	if restore != nil {
		method := restore.method
		if method == "" {
			method = "snapshot"
		}
		restoreYAML = fmt.Sprintf(`
      restore:
        endpoint: %q
        region: eu-west-1
        instance: %s
        method: %s
        poll_interval: 20ms
        wait_timeout: 1m
        max_attempts: 3
        max_backoff: 50ms`, restore.endpoint, restore.instance, method)
		if restore.switchMode != "" {
			restoreYAML += "\n        switch: " + restore.switchMode
		}
	}
	s.serve(fmt.Sprintf(`
      driver: postgres
      dsn_env: %s
      tool: django
      migrations_dir: %q
      down:
        kind: command
        command: [%s, manage.py, migrate, shop, $(ROLLBOT_TARGET_SHOP), --no-input]
        dir: %q
        env:
          PYTHONUNBUFFERED: "1"
        secret_env:
          DATABASE_URL: {env: %s}
        timeout: 2m
      approvers:
        users: [%s]
        groups: [%s]%s`, roVar, s.dir, djangoPython(t), s.dir, rwVar, slackemu.UserAlice, slackemu.GroupDBA, restoreYAML), nil)
	return s
}

// newDBService starts PostgreSQL with a database for the test and an
// owner connection to it, for setting up and checking the schema.
func newDBService(t *testing.T, opts dbtest.PostgresOptions) *dbService {
	t.Helper()
	pg := dbtest.StartPostgres(t, opts)
	s := &dbService{t: t, db: pg.CreateDatabase(t), buildLog: &logtest.Buffer{}}
	var err error
	if s.owner, err = sql.Open("pgx", s.db.DSN); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.owner.Close() })
	return s
}

// serve builds the simulated service shop (v3 is bad, deployed an hour
// ago; on-call approves) with database, the YAML of its database block
// (indented six spaces), as `rollbot serve` does (ParseConfig, Validate,
// BuildServices), with history as rollbot's record of applied versions
// (nil: none), and starts the bot on the local Slack server.
func (s *dbService) serve(database string, history *state.Store) {
	t := s.t
	t.Helper()
	yml := fmt.Sprintf(`
incident_channels: [%s]
services:
  shop:
    platform: simulated
    simulated:
      versions: [{artifact: "shop:v1"}, {artifact: "shop:v2"}, {artifact: "shop:v3", bad: true}]
      deployed_ago: 1h
      step_delay: 1ms
    metrics: {simulated: true}
    approvers: {groups: [%s]}
    database:%s
`, slackemu.ChannelIncident, slackemu.GroupOnCall, database)
	cfg, err := ParseConfig([]byte(yml))
	if err != nil {
		t.Fatalf("parse config: %v\n%s", err, yml)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config invalid: %v\n%s", err, yml)
	}
	log := slog.New(slog.NewJSONHandler(s.buildLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
	services, err := BuildServices(context.Background(), cfg, history, log)
	if err != nil {
		t.Fatalf("build services: %v", err)
	}
	if len(services) != 1 || services[0].Database == nil {
		t.Fatalf("built %d services, database %v", len(services), services)
	}
	var ok bool
	if s.sim, ok = services[0].Platform.(*sim.Sim); !ok {
		t.Fatalf("platform is %T, want *sim.Sim", services[0].Platform)
	}
	s.h = newHarness(t, services, fastEngine())
}

func (s *dbService) exec(q string) {
	s.t.Helper()
	if _, err := s.owner.Exec(q); err != nil {
		s.t.Fatalf("%s: %v", q, err)
	}
}

func (s *dbService) columnExists(table, column string) bool {
	s.t.Helper()
	var n int
	err := s.owner.QueryRow(`SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2`,
		table, column).Scan(&n)
	if err != nil {
		s.t.Fatal(err)
	}
	return n == 1
}

// shopMigrations lists the applied shop migrations, oldest first.
func (s *dbService) shopMigrations() []string {
	s.t.Helper()
	return s.column(`SELECT name FROM django_migrations WHERE app = 'shop' ORDER BY id`)
}

// column is the one column of text that q selects, in order.
func (s *dbService) column(q string) []string {
	s.t.Helper()
	rows, err := s.owner.Query(q)
	if err != nil {
		s.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			s.t.Fatal(err)
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		s.t.Fatal(err)
	}
	return out
}

// noSecretLeaked checks every Slack API call the bot made and every log
// line for the DSN and its password.
func (s *dbService) noSecretLeaked() {
	s.t.Helper()
	secrets := map[string]string{"DSN": s.db.DSN, "password": s.db.Password}
	calls := s.h.emu.Calls()
	if len(calls) == 0 {
		s.t.Fatal("no Slack calls recorded")
	}
	for _, c := range calls {
		for k, v := range c.Params {
			for what, sec := range secrets {
				if strings.Contains(v, sec) {
					s.t.Errorf("the database %s is in Slack call %s (param %s)", what, c.Method, k)
				}
			}
		}
	}
	for name, log := range map[string]string{"bot log": s.h.logs.String(), "build log": s.buildLog.String()} {
		for what, sec := range secrets {
			if strings.Contains(log, sec) {
				s.t.Errorf("the database %s is in the %s", what, name)
			}
		}
	}
}

// timelineOrder returns "database" and "rollback" in the order the
// database step finished and the app rollback started.
func (s *dbService) timelineOrder() string {
	s.t.Helper()
	evs, err := s.h.store.Timeline(context.Background(), "RB-1")
	if err != nil {
		s.t.Fatal(err)
	}
	return dbThenRollback(evs)
}

func inThread(thread string, pred func(slackemu.Message) bool) func(slackemu.Message) bool {
	return func(m slackemu.Message) bool { return m.ThreadTS == thread && pred(m) }
}

// TestDBReversibleRollbackThroughSlack: a migration that added a column
// ran after the bad deploy started. Alice asks, Bob confirms, Dana (a DBA)
// approves in the modal; Django's own `manage.py migrate shop 0002…`
// really removes the column, its output lands in the thread, the
// migration table is back at 0002, and only then the app rolls back.
func TestDBReversibleRollbackThroughSlack(t *testing.T) {
	light(t)
	s := startDBService(t, reversibleMigration, nil)
	h := s.h
	if !s.columnExists("shop_product", "sku") {
		t.Fatal("setup: the bad release's migration did not add shop_product.sku")
	}

	h.slash(slackemu.UserAlice, `shop --reason "checkout 500s after v3"`)
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	wantAll(t, "assessment", a.PlainText(), "Decision gate: 1 migration(s) ran since the deploy", "(django)",
		"shop.0003_product_sku", "reversible", "Bad version:* 3 (shop:v3)", "Last known good:* 2 (shop:v2)")
	for _, old := range []string{"0001_initial", "0002_product_price"} {
		if strings.Contains(a.PlainText(), old) {
			t.Errorf("the assessment lists %s, which ran before the deploy:\n%s", old, a.PlainText())
		}
	}

	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	m := h.waitFor("DB approval request", inThread(a.TS, hasAction(handlers.ActDBApprove)))
	wantAll(t, "DB approval request", m.PlainText(), handlers.DowntimeWarning, "reversible: run the down migration",
		"manage.py migrate shop $(ROLLBOT_TARGET_SHOP)", "$"+s.roVar, "shop.0003_product_sku", "Needs 1 distinct DB approver(s)")
	if !s.columnExists("shop_product", "sku") || current(t, s.sim) != "shop:v3" {
		t.Fatal("something changed before the DB approval")
	}

	if ack := h.approve(slackemu.UserDana, m, "shop"); len(ack.Errors) != 0 {
		t.Fatalf("Dana's approval refused: %+v", ack)
	}
	done := h.waitFor("database step done", inThread(a.TS, textHas("Database rollback* done:")))
	wantAll(t, "database step output", done.PlainText(),
		"Unapplying shop.0003_product_sku... OK", // Django's own output, streamed from the command
		"is back at shop.0002_product_price (checked in django_migrations)")
	t.Logf("database step in the thread:\n%s", done.PlainText())
	h.waitFor("verified", inThread(a.TS, textHas("Rollback verified")))
	h.waitFor("post-rollback actions", textHas("Post-rollback actions"))

	if s.columnExists("shop_product", "sku") {
		t.Error("shop_product.sku still exists: the down migration did not run")
	}
	if !s.columnExists("shop_product", "price_cents") {
		t.Error("shop_product.price_cents is gone: the down migration went too far")
	}
	if got := strings.Join(s.shopMigrations(), ","); got != "0001_initial,0002_product_price" {
		t.Errorf("django_migrations for shop = %s, want 0001_initial,0002_product_price", got)
	}
	var n int
	if err := s.owner.QueryRow(`SELECT count(*) FROM shop_product`).Scan(&n); err != nil || n != 2 {
		t.Errorf("shop_product rows = %d (%v), want the 2 rows of before the deploy", n, err)
	}
	if got := current(t, s.sim); got != "shop:v2" {
		t.Errorf("the app runs %s after the rollback, want shop:v2", got)
	}
	if got := s.timelineOrder(); got != "database,rollback" {
		t.Errorf("the app rollback did not wait for the database step: %s", got)
	}
	s.noSecretLeaked()
}

// rdsFake is the RDS side of the destructive path: the source instance,
// an automated snapshot from before the deploy and a manual one from after
// it (which must not be chosen).
func rdsFake(t *testing.T, deployedAgo time.Duration) (*awstest.Server, time.Time) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDROLLBOTE2E")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "rollbot-e2e-aws-secret-value")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	f := awstest.New()
	t.Cleanup(f.Close)
	now := time.Now()
	f.AddDBInstance(awstest.DBInstance{ID: "shop-db", Engine: "postgres", EngineVersion: "15.4", Class: "db.t4g.medium",
		SubnetGroup: "shop-private", SecurityGroups: []string{"sg-0shopdb"}, ParameterGroup: "shop-pg15",
		Address: "shop-db.c0fake0abcde.eu-west-1.rds.amazonaws.com", Port: 5432, CreatedAt: now.AddDate(-1, 0, 0),
		BackupRetentionDays: 7, LatestRestorableTime: now.Add(-2 * time.Minute)})
	before := now.Add(-deployedAgo - 40*time.Minute).UTC().Truncate(time.Second)
	f.AddDBSnapshot(awstest.DBSnapshot{ID: "rds:shop-db-before", Instance: "shop-db", Type: "automated", Created: before, Engine: "postgres", Port: 5432})
	f.AddDBSnapshot(awstest.DBSnapshot{ID: "rds:shop-db-older", Instance: "shop-db", Type: "automated", Created: before.Add(-24 * time.Hour), Engine: "postgres", Port: 5432})
	f.AddDBSnapshot(awstest.DBSnapshot{ID: "shop-db-after-deploy", Instance: "shop-db", Type: "manual", Created: now.Add(-deployedAgo / 2), Engine: "postgres", Port: 5432})
	f.SetRestoreDescribes(2)
	return f, before
}

// TestDBDestructiveRestoreThroughSlack: the bad release dropped a column
// that held data. The gate says destructive, two DB approvers must approve
// (one approving twice does not count), and rollbot restores the newest
// snapshot from before the deploy into a new RDS instance through the real
// aws-sdk-go-v2 against awstest, then posts the new instance, the endpoint
// switch and the data-loss window before rolling back the app. The down
// command does not run: it cannot bring dropped data back.
func TestDBDestructiveRestoreThroughSlack(t *testing.T) {
	fake, snapAt := rdsFake(t, time.Hour)
	s := startDBService(t, destructiveMigration, &restoreConfig{endpoint: fake.URL, instance: "shop-db"})
	h := s.h
	if s.columnExists("shop_product", "legacy_code") {
		t.Fatal("setup: the bad release's migration did not drop shop_product.legacy_code")
	}

	h.slash(slackemu.UserAlice, "shop")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	wantAll(t, "assessment", a.PlainText(), "Decision gate: 1 migration(s) ran since the deploy",
		"shop.0003_remove_product_legacy_code", "*destructive*", "RemoveField product.legacy_code",
		"A destructive migration cannot be undone by a down migration")

	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	m := h.waitFor("DB approval request", inThread(a.TS, hasAction(handlers.ActDBApprove)))
	wantAll(t, "DB approval request", m.PlainText(), "destructive: restore from a snapshot / point in time",
		handlers.DowntimeWarning, "Needs 2 distinct DB approver(s)",
		// The approvers see the exact restore before they approve: the snapshot and the data-loss window.
		"restore snapshot rds:shop-db-before of shop-db", "is not in the new instance (data-loss window)",
		// ...and how the app will then be pointed at it.
		"Then, before the app rollback: a DB approver switches the app to shop-db-rb-1 by hand and presses Endpoint switched")

	// One DBA, even twice, is not enough; the requester may not approve.
	h.approve(slackemu.UserDana, m, "shop")
	h.waitFor("1 of 2", func(msg slackemu.Message) bool {
		return msg.TS == m.TS && strings.Contains(msg.PlainText(), "Approved so far (1 of 2)")
	})
	h.approve(slackemu.UserDana, m, "shop")
	h.click(slackemu.UserAlice, m.TS, handlers.ActDBApprove)
	h.waitFor("requester refused", ephemeralFor(slackemu.UserAlice, "requester ≠ approver"))
	if n := len(fake.Requests("RestoreDBInstanceFromDBSnapshot")); n != 0 {
		t.Fatalf("%d restore calls with one distinct approver", n)
	}

	if ack := h.approve(slackemu.UserErin, m, "shop"); len(ack.Errors) != 0 {
		t.Fatalf("Erin's approval refused: %+v", ack)
	}
	done := h.waitFor("database step done", inThread(a.TS, textHas("Database rollback* done:")))

	// The endpoint switch (manual, the default) comes before the app
	// rollback: only a DB approver's "Endpoint switched" lets it start.
	sw := h.waitFor("endpoint switch request", inThread(a.TS, hasAction(handlers.ActSwitched)))
	wantAll(t, "endpoint switch request", sw.PlainText(), "Switch the app's database endpoint", "point the app at the restored instance shop-db-rb-1 by hand")
	h.waitStatus("RB-1", state.AwaitingSwitch)
	if got := current(t, s.sim); got != "shop:v3" {
		t.Fatalf("the app was rolled back (%s) before the endpoint switch", got)
	}
	h.click(slackemu.UserBob, sw.TS, handlers.ActSwitched)
	h.waitFor("non-DBA refused", ephemeralFor(slackemu.UserBob, "confirm the endpoint switch"))
	if in, _ := h.store.Get(context.Background(), "RB-1"); in.Status != state.AwaitingSwitch || current(t, s.sim) != "shop:v3" {
		t.Fatalf("a non-DB approver's click moved the incident on: %s", in.Status)
	}
	h.click(slackemu.UserDana, sw.TS, handlers.ActSwitched)
	h.waitFor("switch confirmed", func(m slackemu.Message) bool {
		return m.TS == sw.TS && strings.Contains(m.PlainText(), "Endpoint switched* by hand, confirmed by <@"+slackemu.UserDana+">")
	})
	h.waitFor("verified", inThread(a.TS, textHas("Rollback verified")))

	restores := fake.Requests("RestoreDBInstanceFromDBSnapshot")
	if len(restores) != 1 {
		t.Fatalf("RestoreDBInstanceFromDBSnapshot calls = %d, want 1", len(restores))
	}
	r := restores[0]
	newID := r.Params.Get("DBInstanceIdentifier")
	if got := r.Params.Get("DBSnapshotIdentifier"); got != "rds:shop-db-before" {
		t.Errorf("restored snapshot %s, want rds:shop-db-before (the newest before the deploy)", got)
	}
	if r.AccessKeyID != "AKIDROLLBOTE2E" {
		t.Errorf("restore signed with key %q", r.AccessKeyID)
	}
	newInst, ok := fake.DBInstance(newID)
	if !ok || newInst.Status != "available" || newInst.SubnetGroup != "shop-private" || newInst.ParameterGroup != "shop-pg15" {
		t.Fatalf("new instance %q: %+v (found %v); want available with the source's subnet and parameter groups", newID, newInst, ok)
	}
	if src, _ := fake.DBInstance("shop-db"); src.Status != "available" || src.RestoredFromSnapshot != "" {
		t.Errorf("the source instance was touched: %+v", src)
	}
	if !strings.HasPrefix(newID, "shop-db-rb-") {
		t.Errorf("new instance name %q", newID)
	}
	t.Logf("database step in the thread:\n%s", done.PlainText())
	newEndpoint := fmt.Sprintf("%s:%d", newInst.Address, newInst.Port)
	wantAll(t, "database step output", done.PlainText(),
		"restore snapshot rds:shop-db-before of shop-db (taken "+snapAt.Format("2006-01-02 15:04:05 UTC")+") into a new instance "+newID,
		newID+": creating",
		"New RDS instance "+newID+" is available at "+newEndpoint,
		"Next: switch the app's database endpoint from shop-db.c0fake0abcde.eu-west-1.rds.amazonaws.com:5432 to "+newEndpoint+" by hand",
		"Data loss: everything written to shop-db after "+snapAt.Format("2006-01-02 15:04:05 UTC")+" is not in "+newID)

	// The down command did not run: the local schema is as the bad release left it.
	if got := strings.Join(s.shopMigrations(), ","); got != "0001_initial,0002_product_price,0003_remove_product_legacy_code" {
		t.Errorf("django_migrations for shop = %s; the restore path must not run the down command", got)
	}
	if got := current(t, s.sim); got != "shop:v2" {
		t.Errorf("the app runs %s after the rollback, want shop:v2", got)
	}
	if got := s.switchOrder(); got != "database,endpoint,rollback" {
		t.Errorf("the app rollback did not wait for the restore and the endpoint switch: %s", got)
	}
	if len(fake.Requests("ModifyDBInstance")) != 0 {
		t.Error("a manual switch renamed an instance")
	}
	s.noSecretLeaked()
	for _, c := range h.emu.Calls() {
		for k, v := range c.Params {
			if strings.Contains(v, "rollbot-e2e-aws-secret-value") {
				t.Errorf("the AWS secret key is in Slack call %s (param %s)", c.Method, k)
			}
		}
	}
}

// migrateBin is golang-migrate's CLI as .ci/setup.d/migrate.sh builds it
// (ROLLBOT_MIGRATE_BIN, or the cache it fills).
func migrateBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("ROLLBOT_MIGRATE_BIN"); p != "" {
		return p
	}
	cache := os.Getenv("ROLLBOT_CACHE")
	if cache == "" {
		cache = "/var/cache/rollbot"
	}
	if m, _ := filepath.Glob(filepath.Join(cache, "bin", "migrate-v*")); len(m) > 0 {
		return m[len(m)-1]
	}
	t.Fatalf("golang-migrate CLI not found: set ROLLBOT_MIGRATE_BIN or run .ci/setup.d/migrate.sh (it caches it in %s/bin)", cache)
	return ""
}

// gmService is a golang-migrate schema at the bad release (version 3 of
// platforms/migrations/testdata/golang-migrate, which adds users.email;
// version 2 was the last good deploy's), served by the bot from YAML.
func gmService(t *testing.T, history *state.Store) (*dbService, string) {
	t.Helper()
	return gmServiceUp(t, history, "2", "1")
}

// gmServiceUp is gmService with the schema migrated by each `migrate up n`
// of ups in turn (the last one is the bad release's).
func gmServiceUp(t *testing.T, history *state.Store, ups ...string) (*dbService, string) {
	t.Helper()
	s := newDBService(t, dbtest.PostgresOptions{})
	var err error
	if s.dir, err = filepath.Abs("../platforms/migrations/testdata/golang-migrate"); err != nil {
		t.Fatal(err)
	}
	bin := migrateBin(t)
	for _, n := range ups { // the good deploy, then the bad one's migration
		if out, err := exec.Command(bin, "-path", s.dir, "-database", s.db.URL, "up", n).CombinedOutput(); err != nil {
			t.Fatalf("migrate up %s: %v\n%s", n, err, out)
		}
	}
	s.roVar = setenvFor(t, "SHOP_E2E_GM_RO_DSN", s.db.DSN)
	urlVar := setenvFor(t, "SHOP_E2E_GM_MIGRATE_URL", s.db.URL)
	s.serve(fmt.Sprintf(`
      driver: postgres
      dsn_env: %s
      tool: golang-migrate
      migrations_dir: %q
      down:
        kind: command
        command: [%q, -path, %q, -database, $(DATABASE_URL), down, $(ROLLBOT_STEPS)]
        secret_env:
          DATABASE_URL: {env: %s}
        timeout: 2m
      approvers: {groups: [%s]}`, s.roVar, s.dir, bin, s.dir, urlVar, slackemu.GroupDBA), history)
	return s, bin
}

func (s *dbService) gmVersion() string {
	s.t.Helper()
	var v int64
	var dirty bool
	if err := s.owner.QueryRow(`SELECT version, dirty FROM schema_migrations`).Scan(&v, &dirty); err != nil {
		s.t.Fatal(err)
	}
	return fmt.Sprintf("%d dirty=%v", v, dirty)
}

// TestDBGolangMigrateWithoutRecordGates: without a record rollbot cannot
// tell whether the bad release migrated, so the database step (by hand)
// still comes first: a DB approver confirms before the app rolls back.
func TestDBGolangMigrateWithoutRecordGates(t *testing.T) {
	light(t)
	s, _ := gmService(t, nil)
	h := s.h
	h.slash(slackemu.UserAlice, "shop")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	wantAll(t, "assessment", a.PlainText(), ":warning: *Database migrations:* could not check",
		"rollbot has no record of the versions applied at the last good deploy, and golang-migrate records no times",
		"The database step comes first")
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	m := h.waitFor("DB approval request", inThread(a.TS, hasAction(handlers.ActDBApprove)))
	wantAll(t, "DB approval request", m.PlainText(), "rollbot could not tell whether migrations ran", handlers.DowntimeWarning)
	if got := current(t, s.sim); got != "shop:v3" {
		t.Fatalf("the app was rolled back to %s before the database step", got)
	}
	h.approve(slackemu.UserDana, m, "shop")
	h.waitFor("done by hand", inThread(a.TS, textHas("approved as done by hand by <@"+slackemu.UserDana+">")))
	h.waitFor("verified", textHas("Rollback verified"))
	if got := s.gmVersion(); got != "3 dirty=false" {
		t.Errorf("rollbot ran something on the database: %s", got)
	}
	s.noSecretLeaked()
}

// TestDBGolangMigrateRollbackThroughSlack: with rollbot's record of the
// versions applied while the last good release ran, the real migrate CLI
// rolls version 3 back through Slack.
func TestDBGolangMigrateRollbackThroughSlack(t *testing.T) {
	light(t)
	rdb, prefix := redistest.Client(t)
	history := state.New(rdb, prefix)
	ctx := context.Background()
	// What the bot's recorder wrote two hours ago while shop:v2 ran, and a
	// record from an older release before it (not the one to compare with).
	for _, rec := range []state.SchemaRecord{
		{At: time.Now().Add(-30 * time.Hour), Artifact: "shop:v1", Tool: "golang-migrate", Versions: []string{"1"}},
		{At: time.Now().Add(-2 * time.Hour), Artifact: "shop:v2", Tool: "golang-migrate", Versions: []string{"2"}},
	} {
		if err := history.RecordSchema(ctx, "shop", rec); err != nil {
			t.Fatal(err)
		}
	}
	s, _ := gmService(t, history)
	h := s.h
	h.slash(slackemu.UserAlice, "shop")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	wantAll(t, "assessment", a.PlainText(), "Decision gate: 1 migration(s) ran since the deploy", "(golang-migrate)", "`3` add user email: reversible; schema: expand-only",
		"Schema compatibility: expand-only.* Recommendation: roll back the app only; the old version runs on the new schema")
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	m := h.waitFor("DB approval request", inThread(a.TS, hasAction(handlers.ActDBApprove)))
	wantAll(t, "DB approval request", m.PlainText(), "reversible: run the down migration", "down $(ROLLBOT_STEPS)", "Roll back the app only")
	h.approve(slackemu.UserDana, m, "shop")
	done := h.waitFor("database step done", inThread(a.TS, textHas("Database rollback* done:")))
	t.Logf("database step in the thread:\n%s", done.PlainText())
	wantAll(t, "database step output", done.PlainText(), "3/d add_user_email", "is back at 2 (checked in schema_migrations)")
	h.waitFor("verified", inThread(a.TS, textHas("Rollback verified")))
	if got := s.gmVersion(); got != "2 dirty=false" {
		t.Errorf("schema_migrations = %s, want 2 dirty=false", got)
	}
	if s.columnExists("users", "email") {
		t.Error("users.email still exists after the rollback")
	}
	if got := s.timelineOrder(); got != "database,rollback" {
		t.Errorf("the app rollback did not wait for the database step: %s", got)
	}
	// The bot's own recorder ran at start: version 3 while shop:v3 ran.
	rec, ok, err := history.SchemaBefore(ctx, "shop", time.Now().Add(time.Minute))
	if err != nil || !ok || rec.Tool != "golang-migrate" || len(rec.Versions) != 1 || rec.At.Before(time.Now().Add(-time.Hour)) {
		t.Errorf("the bot recorded no applied versions: %+v %v %v", rec, ok, err)
	}
	s.noSecretLeaked()
}

// TestDBDestructiveWithoutRestoreConfigured: with no database.restore the
// approvers are asked to restore by hand, then approve; their approval
// completes the step and the app rolls back.
func TestDBDestructiveWithoutRestoreConfigured(t *testing.T) {
	light(t)
	s := startDBService(t, destructiveMigration, nil)
	h := s.h
	h.slash(slackemu.UserAlice, "shop")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	m := h.waitFor("DB approval request", inThread(a.TS, hasAction(handlers.ActDBApprove)))
	wantAll(t, "DB approval request", m.PlainText(), "restore the pre-deploy snapshot by hand", "Needs 2 distinct DB approver(s)")
	h.approve(slackemu.UserDana, m, "shop")
	h.approve(slackemu.UserErin, m, "shop")
	h.waitFor("database step done", inThread(a.TS, textHas("restored by hand before the approvals")))
	h.waitFor("verified", inThread(a.TS, textHas("Rollback verified")))
	if got := current(t, s.sim); got != "shop:v2" {
		t.Errorf("the app runs %s, want shop:v2", got)
	}
}

// TestDBExpandOnlyAppOnlyThroughSlack: the bad release's only migration
// adds a nullable column (golang-migrate 3, read by PostgreSQL's own
// parser), so the assessment recommends rolling back the app only and the
// database step becomes a DB approver's choice. Dana picks "Roll back the
// app only": the schema stays at 3, the app goes back to shop:v2, and the
// old version's queries run on the new schema.
func TestDBExpandOnlyAppOnlyThroughSlack(t *testing.T) {
	light(t)
	rdb, prefix := redistest.Client(t)
	history := state.New(rdb, prefix)
	ctx := context.Background()
	if err := history.RecordSchema(ctx, "shop", state.SchemaRecord{At: time.Now().Add(-2 * time.Hour), Artifact: "shop:v2", Tool: "golang-migrate", Versions: []string{"2"}}); err != nil {
		t.Fatal(err)
	}
	s, _ := gmService(t, history)
	h := s.h
	h.slash(slackemu.UserAlice, "shop")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	wantAll(t, "assessment", a.PlainText(), "`3` add user email: reversible; schema: expand-only",
		"Recommendation: roll back the app only; the old version runs on the new schema. The database step is a DB approver's choice")
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	m := h.waitFor("DB approval request", inThread(a.TS, hasAction(handlers.ActDBSkip)))
	wantAll(t, "DB approval request", m.PlainText(), "the old version runs on the new schema")
	// Only a DB approver may choose.
	h.click(slackemu.UserBob, m.TS, handlers.ActDBSkip)
	h.waitFor("non-DBA refused", ephemeralFor(slackemu.UserBob, "DB approvers may approve"))
	if got := current(t, s.sim); got != "shop:v3" {
		t.Fatalf("the app was rolled back (%s) by a refused click", got)
	}
	h.click(slackemu.UserDana, m.TS, handlers.ActDBSkip)
	h.waitFor("choice shown", func(msg slackemu.Message) bool {
		return msg.TS == m.TS && strings.Contains(msg.PlainText(), "chose to roll back the app only")
	})
	h.waitFor("verified", inThread(a.TS, textHas("Rollback verified")))
	if got := s.gmVersion(); got != "3 dirty=false" {
		t.Errorf("schema_migrations = %s, want 3: the database must be left as it is", got)
	}
	if got := current(t, s.sim); got != "shop:v2" {
		t.Errorf("the app runs %s, want shop:v2", got)
	}
	// The old version's queries on the new schema.
	for _, q := range []string{`INSERT INTO users (id, name) VALUES (42, 'ada')`, `SELECT id, name, legacy_notes FROM users WHERE id = 42`, `UPDATE users SET name = 'ada l.' WHERE id = 42`} {
		if _, err := s.owner.Exec(q); err != nil {
			t.Errorf("the old version's %q fails on the new schema: %v", q, err)
		}
	}
	evs, err := h.store.Timeline(ctx, "RB-1")
	if err != nil {
		t.Fatal(err)
	}
	var chose bool
	for _, e := range evs {
		if e.Step == "database" && strings.HasPrefix(e.Detail, "chose to roll back the app only") && e.Actor == slackemu.UserDana {
			chose = true
		}
		if e.Step == "database" && strings.HasPrefix(e.Detail, "done") {
			t.Error("the database step ran")
		}
	}
	if !chose {
		t.Error("the choice is not on the timeline")
	}
}

// TestDBContractingKeepsTheGateThroughSlack: the bad release's migration
// (golang-migrate 4) drops users.legacy_notes. The assessment names the
// contracting statement, the database step is required (no app-only
// choice), and the old version's queries
// indeed fail on the new schema.
func TestDBContractingKeepsTheGateThroughSlack(t *testing.T) {
	light(t)
	rdb, prefix := redistest.Client(t)
	history := state.New(rdb, prefix)
	ctx := context.Background()
	if err := history.RecordSchema(ctx, "shop", state.SchemaRecord{At: time.Now().Add(-2 * time.Hour), Artifact: "shop:v2", Tool: "golang-migrate", Versions: []string{"3"}}); err != nil {
		t.Fatal(err)
	}
	s, _ := gmServiceUp(t, history, "3", "1")
	h := s.h
	h.slash(slackemu.UserAlice, "shop")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	wantAll(t, "assessment", a.PlainText(), "`4` drop legacy notes",
		"schema: *contracting*: ALTER TABLE users DROP COLUMN legacy_notes (the old release reads or writes it)")
	if strings.Contains(a.PlainText(), "roll back the app only") {
		t.Errorf("a contracting migration was called expand-only:\n%s", a.PlainText())
	}
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	m := h.waitFor("DB approval request", inThread(a.TS, hasAction(handlers.ActDBApprove)))
	if hasAction(handlers.ActDBSkip)(m) {
		t.Fatalf("the app-only choice is offered for a contracting migration:\n%s", m.PlainText())
	}
	wantAll(t, "DB approval request", m.PlainText(), "destructive: restore from a snapshot / point in time")
	if in, _ := h.store.Get(ctx, "RB-1"); in.Status != state.AwaitingDBApprove || in.DBOptional || current(t, s.sim) != "shop:v3" {
		t.Fatalf("gate: status %s, optional %v, app %s", in.Status, in.DBOptional, current(t, s.sim))
	}
	// The old version reads users.legacy_notes: it fails on the new schema.
	if _, err := s.owner.Exec(`SELECT id, name, legacy_notes FROM users`); err == nil {
		t.Error("the old version's query works on the contracted schema")
	}
}
