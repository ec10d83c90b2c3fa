package compat

import (
	"context"
	"database/sql"
	"strings"
	"testing"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"

	"rollbot/testkit/dbtest"
)

// The verdict checked against the real thing: the previous release's
// queries run on the schema a migration leaves, on a real PostgreSQL and
// a real MariaDB. Expand-only must leave them working; a contracting
// migration must break them (and be named).

// oldQueries are what the previous release of the sample app sends.
var oldQueries = []string{
	`INSERT INTO users (name, email) VALUES ('ada', 'ada@example.org')`,
	`SELECT id, name, email FROM users WHERE name = 'ada'`,
	`UPDATE users SET email = 'ada@example.com' WHERE name = 'ada'`,
}

type dialectCase struct {
	dialect  Dialect
	driver   string
	schema   string // the last good release's schema
	expand   string
	contract string
	open     func(t *testing.T) string // a fresh database's DSN
}

func dialectCases() []dialectCase {
	return []dialectCase{
		{
			dialect: Postgres, driver: "pgx",
			schema: `CREATE TABLE users (id serial PRIMARY KEY, name varchar(100) NOT NULL, email varchar(200))`,
			expand: `CREATE TABLE audit_log (id bigserial PRIMARY KEY, what text);
ALTER TABLE users ADD COLUMN nickname varchar(50);
ALTER TABLE users ADD COLUMN score integer NOT NULL DEFAULT 0;
CREATE INDEX users_name_idx ON users (name);
ALTER TABLE users ALTER COLUMN name DROP NOT NULL`,
			contract: `ALTER TABLE users RENAME COLUMN email TO email_address;
ALTER TABLE users ADD COLUMN tenant_id integer NOT NULL`,
			open: func(t *testing.T) string {
				return dbtest.StartPostgres(t, dbtest.PostgresOptions{}).CreateDatabase(t).DSN
			},
		},
		{
			dialect: MySQL, driver: "mysql",
			schema: `CREATE TABLE users (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL, email VARCHAR(200))`,
			expand: `CREATE TABLE audit_log (id BIGINT AUTO_INCREMENT PRIMARY KEY, what TEXT);
ALTER TABLE users ADD COLUMN nickname VARCHAR(50) NULL;
ALTER TABLE users ADD COLUMN score INT NOT NULL DEFAULT 0;
CREATE INDEX users_name_idx ON users (name)`,
			contract: `ALTER TABLE users RENAME COLUMN email TO email_address;
ALTER TABLE users ADD COLUMN tenant_id INT NOT NULL`,
			open: func(t *testing.T) string {
				return dbtest.StartMariaDB(t, dbtest.MariaDBOptions{}).CreateDatabase(t).DSN
			},
		},
	}
}

func execAll(t *testing.T, db *sql.DB, src string) {
	t.Helper()
	for _, q := range strings.Split(src, ";\n") {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func TestVerdictOnRealDatabases(t *testing.T) {
	for _, dc := range dialectCases() {
		t.Run(string(dc.dialect), func(t *testing.T) {
			dsn := dc.open(t)
			for _, mig := range []struct {
				name string
				sql  string
				want Kind
			}{{"expand", dc.expand, Expand}, {"contract", dc.contract, Contract}} {
				t.Run(mig.name, func(t *testing.T) {
					db, err := sql.Open(dc.driver, dsn)
					if err != nil {
						t.Fatal(err)
					}
					defer db.Close()
					ctx := context.Background()
					db.ExecContext(ctx, `DROP TABLE IF EXISTS audit_log`)
					db.ExecContext(ctx, `DROP TABLE IF EXISTS users`)
					execAll(t, db, dc.schema)
					// The old release works on its own schema.
					for _, q := range oldQueries {
						if _, err := db.Exec(q); err != nil {
							t.Fatalf("the old release's %q fails on its own schema: %v", q, err)
						}
					}
					fs, err := Classify(dc.dialect, mig.sql)
					if err != nil {
						t.Fatal(err)
					}
					verdict, decisive := Verdict(fs)
					if verdict != mig.want {
						t.Fatalf("verdict %s, want %s: %+v", verdict, mig.want, fs)
					}
					// The database accepts the migration as classified (on an
					// empty table: PostgreSQL refuses a NOT NULL column without
					// a default on rows that exist).
					if _, err := db.Exec(`DELETE FROM users`); err != nil {
						t.Fatal(err)
					}
					execAll(t, db, mig.sql)
					var failed []string
					for _, q := range oldQueries {
						if _, err := db.Exec(q); err != nil {
							failed = append(failed, q+": "+err.Error())
						}
					}
					switch mig.want {
					case Expand:
						if len(failed) > 0 {
							t.Errorf("classified expand-only, but the old release's queries fail on the new schema:\n%s", strings.Join(failed, "\n"))
						}
					case Contract:
						if len(failed) == 0 {
							t.Error("classified contracting, but every old query still works")
						}
						names := Names(decisive)
						for _, w := range []string{"ALTER TABLE users RENAME COLUMN email TO email_address", "ALTER TABLE users ADD COLUMN tenant_id NOT NULL"} {
							if !strings.Contains(names, w) {
								t.Errorf("the verdict does not name %q: %s", w, names)
							}
						}
						t.Logf("old queries failing on the contracted schema:\n%s", strings.Join(failed, "\n"))
					}
				})
			}
		})
	}
}
