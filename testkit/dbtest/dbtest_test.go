package dbtest

import (
	"database/sql"
	"strings"
	"testing"
)

// TestServers starts each server, creates a database and checks that its
// owner logs in over TCP with the password and not with a wrong one.
func TestServers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		driver string
		db     func(t *testing.T) (Database, func(user, pw, db string) string)
	}{
		{"postgres", "pgx", func(t *testing.T) (Database, func(string, string, string) string) {
			p := StartPostgres(t, PostgresOptions{TimeZone: "America/New_York"})
			return p.CreateDatabase(t), p.URL
		}},
		{"mariadb", "mysql", func(t *testing.T) (Database, func(string, string, string) string) {
			m := StartMariaDB(t, MariaDBOptions{TimeZone: "+05:30"})
			return m.CreateDatabase(t), m.DSN
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, dsn := tt.db(t)
			db, err := sql.Open(tt.driver, d.DSN)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Exec(`CREATE TABLE t (id int primary key)`); err != nil {
				t.Fatalf("owner cannot create a table: %v", err)
			}
			var n int
			if err := db.QueryRow(`SELECT count(*) FROM t`).Scan(&n); err != nil || n != 0 {
				t.Fatalf("count = %d, %v", n, err)
			}
			bad, _ := sql.Open(tt.driver, dsn(d.User, "wrong-password", d.Name))
			defer bad.Close()
			err = bad.Ping()
			if err == nil {
				t.Fatal("a wrong password was accepted: the server does not check passwords")
			}
			if !strings.Contains(strings.ToLower(err.Error()), "password") && !strings.Contains(err.Error(), "Access denied") {
				t.Errorf("wrong password error = %v", err)
			}
		})
	}
}
