package migrations

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"rollbot/testkit/dbtest"
)

// One PostgreSQL and one MariaDB server for the package, started on first
// use, in time zones other than UTC so that zone handling is exercised;
// each test gets its own database.
var (
	pgOnce, myOnce sync.Once
	pgSrv          *dbtest.Postgres
	mySrv          *dbtest.MariaDB
	pgErr, myErr   error
)

const (
	pgZone = "America/New_York"
	myZone = "+05:30"
)

func TestMain(m *testing.M) {
	if os.Getenv(downStarterEnv) != "" {
		os.Exit(downStarter()) // a helper process of a test (down_orphan_test.go)
	}
	// The down commands' run directories (<TMPDIR>/rollbot-down/<incident>)
	// of this package's tests are their own, whatever else runs on the
	// machine (a CI run of the same tests, with the same incident ids).
	tmp, err := os.MkdirTemp("", "rbmig")
	if err == nil {
		// The database servers run as their own users, from directories
		// made in it.
		err = os.Chmod(tmp, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("TMPDIR", tmp)
	code := m.Run()
	if pgSrv != nil {
		pgSrv.Stop()
	}
	if mySrv != nil {
		mySrv.Stop()
	}
	if kubeCluster != nil {
		kubeCluster.Stop()
	}
	if migrateTmp != "" {
		os.RemoveAll(migrateTmp)
	}
	os.RemoveAll(tmp)
	os.Exit(code)
}

// testDB is a fresh database on the shared server of driver, with the
// owner's DSN in a new environment variable and an owner connection for
// setting up fixtures.
type testDB struct {
	dbtest.Database
	driver string
	env    string     // name of the variable holding DSN
	owner  *sql.DB    // read-write, for fixtures
	cfg    Config     // driver and dsn_env set
	t      *testing.T //
}

var drivers = []string{DriverPostgres, DriverMySQL}

func newTestDB(t *testing.T, driver string) *testDB {
	t.Helper()
	var d dbtest.Database
	var goDriver string
	switch driver {
	case DriverPostgres:
		pgOnce.Do(func() { pgSrv, pgErr = dbtest.NewPostgres(dbtest.PostgresOptions{TimeZone: pgZone}) })
		if pgErr != nil {
			t.Fatalf("postgresql: %v", pgErr)
		}
		d, goDriver = pgSrv.CreateDatabase(t), "pgx"
	case DriverMySQL:
		myOnce.Do(func() { mySrv, myErr = dbtest.NewMariaDB(dbtest.MariaDBOptions{TimeZone: myZone}) })
		if myErr != nil {
			t.Fatalf("mariadb: %v", myErr)
		}
		d, goDriver = mySrv.CreateDatabase(t), "mysql"
	default:
		t.Fatalf("driver %q", driver)
	}
	owner, err := sql.Open(goDriver, d.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { owner.Close() })
	env := "ROLLBOT_TEST_DSN_" + strings.ToUpper(d.Name)
	t.Setenv(env, d.DSN)
	return &testDB{Database: d, driver: driver, env: env, owner: owner, cfg: Config{Driver: driver, DSNEnv: env}, t: t}
}

// exec runs fixture statements as the owner.
func (db *testDB) exec(stmts ...string) {
	db.t.Helper()
	for _, q := range stmts {
		if _, err := db.owner.Exec(q); err != nil {
			db.t.Fatalf("fixture %q: %v", q, err)
		}
	}
}

// open opens the read-only connection the way the bot does.
func (db *testDB) open(cfg Config) *sql.DB {
	db.t.Helper()
	ro, err := Open(context.Background(), cfg)
	if err != nil {
		db.t.Fatalf("Open: %v", err)
	}
	db.t.Cleanup(func() { ro.Close() })
	return ro
}

// ago is a SQL expression for "n minutes before the server's now" in the
// way each tool writes its timestamps: local (the session's zone) or UTC.
func (db *testDB) ago(minutes int, utc bool) string {
	switch {
	case db.driver == DriverPostgres && utc:
		return fmt.Sprintf("(now() - interval '%d minutes')", minutes)
	case db.driver == DriverPostgres:
		return fmt.Sprintf("(localtimestamp - interval '%d minutes')", minutes)
	case utc:
		return fmt.Sprintf("(UTC_TIMESTAMP(6) - INTERVAL %d MINUTE)", minutes)
	default:
		return fmt.Sprintf("(NOW() - INTERVAL %d MINUTE)", minutes)
	}
}

func (db *testDB) quote(id string) string { return dialect(db.driver).quote(id) }
