package migrations

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"rollbot/platforms"
)

// golang-migrate's CLI, as built by .ci/setup.d/migrate.sh (which exports
// ROLLBOT_MIGRATE_BIN), found in $ROLLBOT_CACHE/bin, or built here once
// from the Go module proxy.
const migrateModule = "github.com/golang-migrate/migrate/v4/cmd/migrate@v4.20.1"

var (
	migrateOnce sync.Once
	migratePath string
	migrateErr  error
	migrateTmp  string // removed by TestMain
)

func migrateBin(t *testing.T) string {
	t.Helper()
	migrateOnce.Do(func() {
		if p := os.Getenv("ROLLBOT_MIGRATE_BIN"); p != "" {
			migratePath = p
			return
		}
		cache := os.Getenv("ROLLBOT_CACHE")
		if cache == "" {
			cache = "/var/cache/rollbot"
		}
		if m, _ := filepath.Glob(filepath.Join(cache, "bin", "migrate-v*")); len(m) > 0 {
			migratePath = m[len(m)-1]
			return
		}
		dir, err := os.MkdirTemp("", "rbmigrate")
		if err != nil {
			migrateErr = err
			return
		}
		migrateTmp = dir
		cmd := exec.Command("go", "install", "-tags", "postgres mysql", migrateModule)
		cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			migrateErr = err
			migratePath = string(out)
			return
		}
		migratePath = filepath.Join(dir, "migrate")
	})
	if migrateErr != nil {
		t.Fatalf("golang-migrate CLI: not in ROLLBOT_MIGRATE_BIN or $ROLLBOT_CACHE/bin, and go install %s failed: %v\n%s", migrateModule, migrateErr, migratePath)
	}
	return migratePath
}

// runMigrate runs the real migrate CLI as the database owner.
func runMigrate(t *testing.T, db *testDB, dir string, args ...string) {
	t.Helper()
	argv := append([]string{"-path", dir, "-database", db.URL}, args...)
	out, err := exec.Command(migrateBin(t), argv...).CombinedOutput()
	if err != nil {
		t.Fatalf("migrate %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func columnExists(t *testing.T, db *testDB, table, column string) bool {
	t.Helper()
	schema := "current_schema()"
	if db.driver == DriverMySQL {
		schema = "DATABASE()"
	}
	var n int
	err := db.owner.QueryRow(`SELECT count(*) FROM information_schema.columns WHERE table_schema = ` + schema +
		` AND table_name = '` + table + `' AND column_name = '` + column + `'`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// lines records what RunDown writes, one Write per line.
type lines struct {
	mu sync.Mutex
	l  []string
	on func(string)
}

func (w *lines) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.l = append(w.l, string(p))
	on := w.on
	w.mu.Unlock()
	if on != nil {
		on(string(p))
	}
	return len(p), nil
}

func (w *lines) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.l, "")
}

// TestGolangMigrateRollback is the whole reversible path with the real
// golang-migrate CLI on PostgreSQL and MariaDB: the last good deploy is at
// version 2 (recorded with AppliedVersions), the bad deploy runs 3 (adds
// users.email), Detect says "down", RunDown runs `migrate down
// $(ROLLBOT_STEPS)` with the DSN from a secret variable, the column really
// disappears, and Verify sees version 2.
func TestGolangMigrateRollback(t *testing.T) {
	ctx := context.Background()
	dir, err := filepath.Abs("testdata/golang-migrate")
	if err != nil {
		t.Fatal(err)
	}
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			db := newTestDB(t, driver)
			cfg := db.cfg
			cfg.MigrationsDir = dir
			runMigrate(t, db, dir, "up", "2")
			ro := db.open(cfg)
			tool, known, err := AppliedVersions(ctx, ro, cfg)
			if err != nil || tool != ToolGolangMigrate || len(known) != 1 || known[0] != "2" {
				t.Fatalf("AppliedVersions = %s %q %v", tool, known, err)
			}
			runMigrate(t, db, dir, "up", "1") // the bad deploy
			if !columnExists(t, db, "users", "email") {
				t.Fatal("migration 3 did not add users.email")
			}

			rep, err := Detect(ctx, ro, cfg, time.Time{}, known)
			if err != nil {
				t.Fatal(err)
			}
			d := rep.Decide()
			if d.Action != ActionDown || rep.Steps != 1 || rep.Target != "2" || rep.Current != "3" {
				t.Fatalf("report %+v decision %+v", rep, d)
			}
			if !strings.Contains(d.Reason, "users DROP COLUMN email") {
				t.Errorf("decision does not warn that the down drops users.email: %s", d.Reason)
			}
			// Read with the database's own grammar: adding a nullable column only expands.
			if m := rep.Ran[0]; m.Compat != "expand" || m.CompatWhy != "" {
				t.Errorf("compat of migration 3 = %q (%s), want expand", m.Compat, m.CompatWhy)
			}

			secretVar := "ROLLBOT_TEST_MIGRATE_URL_" + strings.ToUpper(db.Name)
			t.Setenv(secretVar, db.URL)
			cfg.Down = DownConfig{
				Kind:      DownCommand,
				Command:   []string{migrateBin(t), "-path", dir, "-database", "$(DATABASE_URL)", "down", "$(ROLLBOT_STEPS)"},
				SecretEnv: map[string]SecretRef{"DATABASE_URL": {Env: secretVar}},
				Timeout:   2 * time.Minute,
			}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			var out lines
			if err := RunDown(ctx, cfg.Down, "RB-1", rep.DownVars(), &out); err != nil {
				t.Fatalf("RunDown: %v\noutput:\n%s", err, out.String())
			}
			t.Logf("migrate down output:\n%s", out.String())
			if !strings.Contains(out.String(), "3/d add_user_email") {
				t.Errorf("output lacks migrate's line for the down migration: %q", out.String())
			}
			if strings.Contains(out.String(), db.Password) {
				t.Error("the output holds the database password")
			}
			if columnExists(t, db, "users", "email") {
				t.Error("users.email still exists after migrate down")
			}
			if !columnExists(t, db, "users", "legacy_notes") {
				t.Error("migrate down went too far: users.legacy_notes (migration 1) is gone")
			}
			if err := Verify(ctx, ro, cfg, rep.Target); err != nil {
				t.Errorf("Verify(%s): %v", rep.Target, err)
			}
			if err := Verify(ctx, ro, cfg, "3"); err == nil {
				t.Error("Verify(3) passed after the rollback")
			}
			rep, err = Detect(ctx, ro, cfg, time.Time{}, known)
			if err != nil || rep.Decide().Action != ActionNone {
				t.Errorf("after rollback: %+v %v", rep, err)
			}
		})
	}
}

// TestGolangMigrateDirty makes the real CLI fail halfway through a
// migration and checks the dirty flag stops everything.
func TestGolangMigrateDirty(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, f := range []string{"000001_create_users.up.sql", "000001_create_users.down.sql"} {
		b, err := os.ReadFile(filepath.Join("testdata/golang-migrate", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "000002_broken.up.sql"), []byte("ALTER TABLE users ADD COLUMN x int;\nALTER TABLE no_such_table ADD COLUMN y int;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "000002_broken.down.sql"), []byte("ALTER TABLE users DROP COLUMN x;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	db := newTestDB(t, DriverPostgres)
	runMigrate(t, db, dir, "up", "1")
	out, err := exec.Command(migrateBin(t), "-path", dir, "-database", db.URL, "up").CombinedOutput()
	if err == nil {
		t.Fatalf("the broken migration succeeded: %s", out)
	}
	cfg := db.cfg
	cfg.MigrationsDir = dir
	ro := db.open(cfg)
	rep, err := Detect(ctx, ro, cfg, time.Time{}, []string{"1"})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Dirty || rep.Current != "2" || rep.Decide().Action != ActionManual || len(rep.Ran) != 1 || !rep.Ran[0].Failed {
		t.Errorf("dirty report %+v decision %+v", rep, rep.Decide())
	}
	err = Verify(ctx, ro, cfg, "1")
	if msg, _ := platforms.UserMessage(err); !strings.Contains(msg, "dirty") {
		t.Errorf("Verify on a dirty table: %v", err)
	}
}

// TestGolangMigrateBadInput: SQL the parser cannot read, and a
// migrations_dir that is not there. Neither may open the gate: the first
// says it cannot tell the schema's compatibility, the second that it
// cannot tell what ran.
func TestGolangMigrateBadInput(t *testing.T) {
	ctx := context.Background()
	src, err := filepath.Abs("testdata/golang-migrate")
	if err != nil {
		t.Fatal(err)
	}
	db := newTestDB(t, DriverPostgres)
	runMigrate(t, db, src, "up", "3")
	dir := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(e.Name(), "000003_") && strings.HasSuffix(e.Name(), ".up.sql") {
			b = []byte("ALTER TABLE users ADDD COLUMN email varchar(255);\n")
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := db.cfg
	cfg.MigrationsDir = dir
	ro := db.open(cfg)
	rep, err := Detect(ctx, ro, cfg, time.Time{}, []string{"2"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Ran) != 1 || rep.Ran[0].Compat != "unknown" || !strings.Contains(rep.Ran[0].CompatWhy, "000003_add_user_email.up.sql cannot be read as postgres SQL") {
		t.Fatalf("unreadable SQL: %+v", rep.Ran)
	}
	if d := rep.Decide(); d.Action == ActionNone {
		t.Errorf("unreadable SQL opened the gate: %+v", d)
	}

	cfg.MigrationsDir = filepath.Join(dir, "no-such-dir")
	rep, err = Detect(ctx, ro, cfg, time.Time{}, []string{"2"})
	if err != nil {
		t.Fatal(err)
	}
	d := rep.Decide()
	if d.Action != ActionManual || !strings.Contains(d.Reason, "has no up file for it: check migrations_dir in the config") {
		t.Errorf("missing migrations_dir: %+v", d)
	}
}
