package bot

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"rollbot/handlers"
	"rollbot/state"
	"rollbot/testkit/dbtest"
	"rollbot/testkit/redistest"
	"rollbot/testkit/slackemu"
)

// The database step with a REAL Rails app (Debian's ruby-rails and
// ruby-pg) on a real PostgreSQL: the test creates the app with `rails new`,
// migrates it up with its own bin/rails as the releases' deploys would, and
// rollbot rolls the bad release's migration back through the local Slack
// server with `bin/rails db:rollback STEP=$(ROLLBOT_STEPS)`.
//
// Rails records no applied time, so, as for golang-migrate, what ran since
// the last good deploy is what schema_migrations holds beyond rollbot's
// record of the versions applied while the last good release ran.

// railsMigrations are the app's db/migrate: the last good release's two
// migrations and the bad release's two, which add a column with an index
// and a table.
var railsMigrations = map[string]string{
	"db/migrate/20240101000000_create_products.rb": `class CreateProducts < ActiveRecord::Migration[6.1]
  def change
    create_table :products do |t|
      t.string :name, null: false
      t.string :legacy_code, null: false, default: ""
    end
  end
end
`,
	"db/migrate/20240201000000_add_price_cents_to_products.rb": `class AddPriceCentsToProducts < ActiveRecord::Migration[6.1]
  def change
    add_column :products, :price_cents, :integer, null: false, default: 0
  end
end
`,
	"db/migrate/20241201000000_add_sku_to_products.rb": `class AddSkuToProducts < ActiveRecord::Migration[6.1]
  def change
    add_column :products, :sku, :string
    add_index :products, :sku
  end
end
`,
	"db/migrate/20241201000100_create_suppliers.rb": `class CreateSuppliers < ActiveRecord::Migration[6.1]
  def change
    create_table :suppliers do |t|
      t.string :name, null: false
    end
  end
end
`,
}

const (
	railsGoodVersion = "20240201000000" // the last good release's newest migration
	railsBadVersion  = "20241201000000" // the bad release's: products.sku
	railsBadVersion2 = "20241201000100" // and suppliers
)

// railsCommand is Debian's rails, checked to load Rails and the pg driver.
func railsCommand(t *testing.T) string {
	t.Helper()
	const rails = "/usr/bin/rails"
	out, err := exec.Command("/usr/bin/ruby", "-e", `require "rails"; require "pg"; print Rails.version`).CombinedOutput()
	if _, serr := os.Stat(rails); serr != nil || err != nil {
		t.Fatalf("Debian's Rails with the pg driver is not installed (%v, %v): apt-get install ruby-rails ruby-pg (listed in .ci/apt-packages)\n%s", serr, err, out)
	}
	return rails
}

// railsEnv is the environment the app's commands run with here and in
// the down command: Debian's ruby on PATH, production, the DSN in
// DATABASE_URL (never in a file).
func railsEnv(home, dsn string) []string {
	return []string{"PATH=/usr/bin:/bin", "HOME=" + home, "LANG=C.UTF-8", "RAILS_ENV=production", "DATABASE_URL=" + dsn}
}

// newRailsApp creates a Rails app with `rails new` (no bundle install, no
// network), keeps only rails and pg in its Gemfile (Debian's gems, which
// Bundler resolves locally), and writes the migrations.
func newRailsApp(t *testing.T, migrations map[string]string) string {
	t.Helper()
	rails := railsCommand(t)
	home := t.TempDir()
	app := filepath.Join(home, "shop")
	runIn(t, home, []string{"PATH=/usr/bin:/bin", "HOME=" + home, "LANG=C.UTF-8"}, rails, "new", app, "--database=postgresql",
		"--minimal", "--api", "--skip-bundle", "--skip-git", "--skip-bootsnap", "--skip-test", "--skip-keeps", "--quiet")
	writeFiles(t, app, map[string]string{"Gemfile": "source \"https://rubygems.org\"\ngem \"rails\"\ngem \"pg\"\n"}, migrations)
	return app
}

// binRails runs the app's bin/rails as a release's deploy would.
func binRails(t *testing.T, app, dsn string, args ...string) string {
	t.Helper()
	return runIn(t, app, railsEnv(filepath.Dir(app), dsn), "bin/rails", args...)
}

// railsService is the Rails app migrated to the bad release on
// PostgreSQL, with rollbot's record of the versions applied while the
// last good release (shop:v2) ran, served by the bot from YAML.
// migrationsDir overrides database.migrations_dir ("": the app's
// db/migrate).
func railsService(t *testing.T, migrationsDir string) *dbService {
	t.Helper()
	s := newDBService(t, dbtest.PostgresOptions{TimeZone: "Europe/Berlin"})
	s.dir = newRailsApp(t, railsMigrations)
	if migrationsDir == "" {
		migrationsDir = filepath.Join(s.dir, "db", "migrate")
	}

	// The last good release's deploy, with data, then the bad one's.
	binRails(t, s.dir, s.db.DSN, "db:migrate", "VERSION="+railsGoodVersion)
	s.exec(`INSERT INTO products (name, legacy_code, price_cents) VALUES ('kettle', 'K-17', 2599), ('teapot', 'T-03', 1850)`)
	rdb, prefix := redistest.Client(t)
	history := state.New(rdb, prefix)
	// What the bot's recorder wrote while shop:v2 ran (and an older record
	// of shop:v1, which must not be the one compared with).
	for _, rec := range []state.SchemaRecord{
		{At: time.Now().Add(-30 * time.Hour), Artifact: "shop:v1", Tool: "rails", Versions: []string{"20240101000000"}},
		{At: time.Now().Add(-2 * time.Hour), Artifact: "shop:v2", Tool: "rails", Versions: s.railsVersions()},
	} {
		if err := history.RecordSchema(context.Background(), "shop", rec); err != nil {
			t.Fatal(err)
		}
	}
	if out := binRails(t, s.dir, s.db.DSN, "db:migrate"); !strings.Contains(out, "AddSkuToProducts: migrated") || !strings.Contains(out, "CreateSuppliers: migrated") {
		t.Fatalf("the bad release's migration did not run:\n%s", out)
	}

	s.roVar = setenvFor(t, "SHOP_E2E_RAILS_RO_DSN", s.db.DSN)
	migrateVar := setenvFor(t, "SHOP_E2E_RAILS_MIGRATE_DSN", s.db.DSN)
	s.serve(fmt.Sprintf(`
      driver: postgres
      dsn_env: %s
      tool: rails
      migrations_dir: %q
      down:
        kind: command
        command: [bin/rails, db:rollback, STEP=$(ROLLBOT_STEPS)]
        dir: %q
        env: {RAILS_ENV: production}
        secret_env:
          DATABASE_URL: {env: %s}
        timeout: 2m
      approvers: {groups: [%s]}`, s.roVar, migrationsDir, s.dir, migrateVar, slackemu.GroupDBA), history)
	return s
}

// railsVersions lists schema_migrations, oldest first.
func (s *dbService) railsVersions() []string {
	s.t.Helper()
	return s.column(`SELECT version FROM schema_migrations ORDER BY version`)
}

// TestDBRailsRollbackThroughSlack: the bad release's Rails migrations
// added products.sku and the suppliers table. Alice asks, Bob confirms,
// Dana approves; Rails' own `bin/rails db:rollback STEP=2` runs in the
// app's directory with its environment, its output lands in the thread,
// schema_migrations is back at the last good release's version, and only
// then the app rolls back.
func TestDBRailsRollbackThroughSlack(t *testing.T) {
	heavy(t) // Rails boots for a while on every command
	s := railsService(t, "")
	h := s.h
	if !s.columnExists("products", "sku") {
		t.Fatal("setup: the bad release's migration did not add products.sku")
	}

	h.slash(slackemu.UserAlice, `shop --reason "checkout 500s after v3"`)
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	wantAll(t, "assessment", a.PlainText(), "Decision gate: 2 migration(s) ran since the deploy", "(rails)",
		railsBadVersion, "add sku to products", railsBadVersion2, "create suppliers", "reversible", "rails migrations are code")
	for _, old := range []string{"20240101000000", railsGoodVersion} {
		if strings.Contains(a.PlainText(), old) {
			t.Errorf("the assessment lists %s, which ran before the deploy:\n%s", old, a.PlainText())
		}
	}

	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	m := h.waitFor("DB approval request", inThread(a.TS, hasAction(handlers.ActDBApprove)))
	wantAll(t, "DB approval request", m.PlainText(), handlers.DowntimeWarning, "reversible: run the down migration",
		"bin/rails db:rollback STEP=$(ROLLBOT_STEPS)", "$"+s.roVar, railsBadVersion+", "+railsBadVersion2, "Needs 1 distinct DB approver(s)")
	if !s.columnExists("products", "sku") || current(t, s.sim) != "shop:v3" {
		t.Fatal("something changed before the DB approval")
	}

	if ack := h.approve(slackemu.UserDana, m, "shop"); len(ack.Errors) != 0 {
		t.Fatalf("Dana's approval refused: %+v", ack)
	}
	done := h.waitFor("database step done", inThread(a.TS, textHas("Database rollback* done:")))
	t.Logf("database step in the thread:\n%s", done.PlainText())
	wantAll(t, "database step output", done.PlainText(),
		// Rails' own output, newest first, streamed from the command.
		"== "+railsBadVersion2+" CreateSuppliers: reverting", "-- drop_table(:suppliers",
		"== "+railsBadVersion+" AddSkuToProducts: reverting", "-- remove_index(:products, :sku)", "-- remove_column(:products, :sku, :string)",
		"is back at "+railsGoodVersion+" (checked in schema_migrations)")
	h.waitFor("verified", inThread(a.TS, textHas("Rollback verified")))

	if got, want := strings.Join(s.railsVersions(), ","), "20240101000000,"+railsGoodVersion; got != want {
		t.Errorf("schema_migrations = %s, want %s", got, want)
	}
	if s.columnExists("products", "sku") || s.columnExists("suppliers", "name") {
		t.Error("products.sku or suppliers still exists: the down migrations did not run")
	}
	if !s.columnExists("products", "price_cents") {
		t.Error("products.price_cents is gone: STEP went too far")
	}
	var n int
	if err := s.owner.QueryRow(`SELECT count(*) FROM products WHERE price_cents > 0`).Scan(&n); err != nil || n != 2 {
		t.Errorf("products rows = %d (%v), want the 2 rows of before the deploy", n, err)
	}
	if got := current(t, s.sim); got != "shop:v2" {
		t.Errorf("the app runs %s after the rollback, want shop:v2", got)
	}
	if got := s.timelineOrder(); got != "database,rollback" {
		t.Errorf("the app rollback did not wait for the database step: %s", got)
	}
	evs := h.events("RB-1")
	if !hasEvent(evs, "database", "running the down migration: run `bin/rails db:rollback STEP=$(ROLLBOT_STEPS)`") ||
		!hasEvent(evs, "database", "done: postgres database ($"+s.roVar+", tool rails) is back at "+railsGoodVersion) {
		t.Errorf("the timeline lacks the database step:\n%v", evs)
	}
	s.noSecretLeaked()
}

// TestDBRailsFailingRollbackThroughSlack: the down command fails — a view
// created after the deploy depends on products.sku, so PostgreSQL refuses
// Rails' remove_column. The thread shows Rails' error and says the app
// was not rolled back; the app stays on the bad release, and the timeline
// records the failure. The database is left as Rails leaves it: each
// migration's down in its own transaction, so suppliers (the newest) is
// rolled back and products.sku is not.
func TestDBRailsFailingRollbackThroughSlack(t *testing.T) {
	heavy(t) // Rails boots for a while on every command
	s := railsService(t, "")
	h := s.h
	s.exec(`CREATE VIEW product_skus AS SELECT id, sku FROM products`)

	h.slash(slackemu.UserAlice, "shop")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	m := h.waitFor("DB approval request", inThread(a.TS, hasAction(handlers.ActDBApprove)))
	h.approve(slackemu.UserDana, m, "shop")

	out := h.waitFor("database step failed", inThread(a.TS, textHas("Database rollback* failed:")))
	t.Logf("database step in the thread:\n%s", out.PlainText())
	wantAll(t, "database step output", out.PlainText(),
		"the down command bin/rails failed (exit status 1): see its output above",
		"PG::DependentObjectsStillExist", "The app was *not* rolled back")
	f := h.waitFor("failure", inThread(a.TS, textHas("The database step failed")))
	wantAll(t, "failure", f.PlainText(), "the app was not rolled back", "End this rollback")
	h.waitStatus("RB-1", state.RollbackFailed)

	if got := current(t, s.sim); got != "shop:v3" {
		t.Errorf("the app was rolled back to %s although the database step failed", got)
	}
	if got, want := strings.Join(s.railsVersions(), ","), "20240101000000,"+railsGoodVersion+","+railsBadVersion; got != want {
		t.Errorf("schema_migrations = %s, want %s", got, want)
	}
	if !s.columnExists("products", "sku") || s.columnExists("suppliers", "name") {
		t.Error("want products.sku kept (its rollback failed) and suppliers gone (rolled back first)")
	}
	evs := h.events("RB-1")
	if !hasEvent(evs, "database", "failed: the database rollback failed: the down command bin/rails failed (exit status 1)") {
		t.Errorf("the timeline lacks the failure:\n%v", evs)
	}
	if hasEvent(evs, "rollback", "rolling back") {
		t.Errorf("the app rollback started:\n%v", evs)
	}
	s.noSecretLeaked()
}

// TestDBRailsMissingMigrationsDirThroughSlack: database.migrations_dir
// names a directory that is not on the bot's host. rollbot knows which
// version ran but cannot tell whether it can be undone, so it does not run
// db:rollback: the assessment says what to fix, the database step is by
// hand (a DB approver confirms it before the app rolls back), and the
// reason is on the timeline.
func TestDBRailsMissingMigrationsDirThroughSlack(t *testing.T) {
	heavy(t) // Rails boots for a while on every command
	missing := filepath.Join(t.TempDir(), "release-v3", "db", "migrate")
	s := railsService(t, missing)
	h := s.h

	h.slash(slackemu.UserAlice, "shop")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	want := "migrations ran (" + railsBadVersion + ", " + railsBadVersion2 + "), but migrations_dir " + missing + " does not exist on the bot's host"
	wantAll(t, "assessment", a.PlainText(), ":warning: *Database migrations:* could not check", want,
		"check migrations_dir (the release's db/migrate) in the config", "The database step comes first")
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	m := h.waitFor("DB approval request", inThread(a.TS, hasAction(handlers.ActDBApprove)))
	wantAll(t, "DB approval request", m.PlainText(), "whether its down command can undo them ("+want, handlers.DowntimeWarning)
	if in, _ := h.store.Get(context.Background(), "RB-1"); in.Status != state.AwaitingDBApprove || current(t, s.sim) != "shop:v3" {
		t.Fatalf("gate not kept: status %s, app %s", in.Status, current(t, s.sim))
	}
	if evs := h.events("RB-1"); !hasEvent(evs, "assess", "could not check migrations ("+want) || !hasEvent(evs, "database", want) {
		t.Errorf("the timeline lacks why the database step is by hand:\n%v", h.events("RB-1"))
	}
	h.approve(slackemu.UserDana, m, "shop")
	h.waitFor("done by hand", inThread(a.TS, textHas("approved as done by hand by <@"+slackemu.UserDana+">")))
	h.waitFor("verified", inThread(a.TS, textHas("Rollback verified")))
	if got := s.railsVersions(); len(got) != 4 || !s.columnExists("products", "sku") {
		t.Errorf("rollbot ran something on the database: schema_migrations %v", got)
	}
	s.noSecretLeaked()
}
