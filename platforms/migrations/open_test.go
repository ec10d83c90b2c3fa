package migrations

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"

	"rollbot/platforms"
)

// TestReadOnlySession opens the owner's DSN (a role that may write) the
// way the bot does and checks that every write fails because the session
// is read-only, on each pooled connection, while reads work.
func TestReadOnlySession(t *testing.T) {
	ctx := context.Background()
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			db := newTestDB(t, driver)
			db.exec(`CREATE TABLE notes (id int PRIMARY KEY, body varchar(20))`, `INSERT INTO notes VALUES (1, 'kept')`)
			ro := db.open(db.cfg)
			// Two connections held at once: both come from the pool's connector.
			c1, err := ro.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer c1.Close()
			c2, err := ro.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer c2.Close()
			writes := []string{
				`INSERT INTO notes VALUES (2, 'sneaky')`,
				`UPDATE notes SET body = 'changed'`,
				`DELETE FROM notes`,
				`CREATE TABLE evil (id int)`,
				`DROP TABLE notes`,
			}
			for i, conn := range []*sql.Conn{c1, c2} {
				for _, q := range writes {
					_, err := conn.ExecContext(ctx, q)
					if err == nil {
						t.Fatalf("conn %d: %q succeeded on the read-only session", i, q)
					}
					if !isReadOnlyError(err) {
						t.Errorf("conn %d: %q failed, but not for read-only: %v", i, q, err)
					}
				}
			}
			var body string
			if err := c2.QueryRowContext(ctx, `SELECT body FROM notes WHERE id = 1`).Scan(&body); err != nil || body != "kept" {
				t.Errorf("read = %q, %v", body, err)
			}
			// The same statements work for the owner: the refusal is the session's.
			db.exec(`INSERT INTO notes VALUES (3, 'owner')`)
		})
	}
}

func isReadOnlyError(err error) bool {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code == "25006" // read_only_sql_transaction
	}
	var my *mysql.MySQLError
	if errors.As(err, &my) {
		return my.Number == 1792 // ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
	}
	return false
}

// TestSecretsNeverLeak triggers connection errors whose driver text could
// carry the DSN (wrong password, malformed DSN, unreachable server) and
// checks that neither the password nor the DSN is in the error, its user
// message, or the adapter's log.
func TestSecretsNeverLeak(t *testing.T) {
	const pw = "Sup3r-S3cret-pw"
	ctx := context.Background()
	type tc struct {
		name, driver, dsn string
	}
	var tests []tc
	for _, driver := range drivers {
		db := newTestDB(t, driver)
		var wrong, malformed, unreachable string
		if driver == DriverPostgres {
			wrong = pgSrv.URL(db.User, pw, db.Name)
			malformed = fmt.Sprintf("postgres://%s:%s@127.0.0.1:notaport/%s?sslmode=disable", db.User, pw, db.Name)
			unreachable = fmt.Sprintf("host=127.0.0.1 port=1 user=%s password=%s dbname=%s sslmode=disable connect_timeout=2", db.User, pw, db.Name)
		} else {
			wrong = mySrv.DSN(db.User, pw, db.Name)
			malformed = fmt.Sprintf("%s:%s@tcp(127.0.0.1:%d/%s", db.User, pw, db.Port, db.Name)
			unreachable = fmt.Sprintf("%s:%s@tcp(127.0.0.1:1)/%s?timeout=2s", db.User, pw, db.Name)
		}
		tests = append(tests,
			tc{"wrong password", driver, wrong},
			tc{"malformed", driver, malformed},
			tc{"unreachable", driver, unreachable},
		)
	}
	for _, tt := range tests {
		t.Run(tt.driver+"/"+tt.name, func(t *testing.T) {
			env := "ROLLBOT_TEST_LEAK_DSN"
			t.Setenv(env, tt.dsn)
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			cfg := Config{Driver: tt.driver, DSNEnv: env}
			cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			a, err := New(cctx, cfg, log)
			if err == nil {
				a.Close()
				t.Fatal("New succeeded with a bad DSN")
			}
			log.Error("open failed", "err", err)
			msg, ok := platforms.UserMessage(err)
			if !ok || !strings.Contains(msg, "$"+env) {
				t.Errorf("user message %q should name the variable", msg)
			}
			for what, s := range map[string]string{"error": err.Error(), "user message": msg, "log": logs.String()} {
				if strings.Contains(s, pw) || strings.Contains(s, tt.dsn) {
					t.Errorf("%s leaks the secret: %s", what, s)
				}
			}
			t.Logf("error: %v", err)
		})
	}
}

func TestRedact(t *testing.T) {
	secrets := dsnSecrets(DriverPostgres, "postgres://app:p%40ss@db:5432/app")
	err := redact(fmt.Errorf("dial: %w", fmt.Errorf("bad password p@ss in postgres://app:p%%40ss@db:5432/app: %w", context.DeadlineExceeded)), secrets)
	if strings.Contains(err.Error(), "p@ss") || strings.Contains(err.Error(), "p%40ss") {
		t.Errorf("redact left the secret: %v", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Error("redact lost context.DeadlineExceeded")
	}
	plain := errors.New("connection refused")
	if redact(plain, secrets) != plain {
		t.Error("redact changed an error without secrets")
	}
	if got := secretParts("app:hunter2@tcp(127.0.0.1:3306)/db"); len(got) == 0 || got[0] != "hunter2" {
		t.Errorf("secretParts(mysql dsn) = %q", got)
	}
	if got := secretParts("host=x password=hunter2 user=y"); len(got) == 0 || got[len(got)-1] != "hunter2" {
		t.Errorf("secretParts(key=value) = %q", got)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Driver: DriverPostgres, DSNEnv: "MYAPP_DB_DSN", Tool: ToolGolangMigrate, MigrationsDir: "/m",
		Down: DownConfig{Kind: DownKubernetesJob, Namespace: "prod", Command: []string{"migrate", "down", "$(ROLLBOT_STEPS)"},
			SecretEnv: map[string]SecretRef{"DATABASE_URL": {Secret: "myapp-db", Key: "url"}}}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	tests := []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"no driver", func(c *Config) { c.Driver = "" }, "driver:"},
		{"bad driver", func(c *Config) { c.Driver = "oracle" }, "driver:"},
		{"dsn in dsn_env", func(c *Config) { c.DSNEnv = "postgres://u:p@h/db" }, "dsn_env:"},
		{"no dsn_env", func(c *Config) { c.DSNEnv = "" }, "dsn_env:"},
		{"tool", func(c *Config) { c.Tool = "alembic" }, "tool:"},
		{"table injection", func(c *Config) { c.Table = "x; DROP TABLE y" }, "table:"},
		{"table with auto", func(c *Config) { c.Tool, c.Table = "", "t" }, "table:"},
		{"time zone", func(c *Config) { c.TimeZone = "Mars/Olympus" }, "time_zone:"},
		{"down kind", func(c *Config) { c.Down.Kind = "ssh" }, "down.kind:"},
		{"down command", func(c *Config) { c.Down.Command = nil }, "down.command:"},
		{"job namespace", func(c *Config) { c.Down.Namespace = "" }, "down.namespace:"},
		{"job secret ref", func(c *Config) { c.Down.SecretEnv["X"] = SecretRef{Env: "X"} }, "down.secret_env.X"},
		{"fixed image", func(c *Config) { c.Down.ImageFrom = ImageFromFixed }, "down.image:"},
		{"command with job fields", func(c *Config) {
			c.Down.Kind = DownCommand
			c.Down.SecretEnv = map[string]SecretRef{"DATABASE_URL": {Env: "MYAPP_MIGRATE_DSN"}}
		}, "down.namespace/image"},
		{"command secret from secret", func(c *Config) {
			c.Down.Kind, c.Down.Namespace = DownCommand, ""
			c.Down.SecretEnv = map[string]SecretRef{"DATABASE_URL": {Secret: "s", Key: "k"}}
		}, "down.secret_env.DATABASE_URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			c.Down.SecretEnv = map[string]SecretRef{"DATABASE_URL": {Secret: "myapp-db", Key: "url"}}
			tt.edit(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.field) {
				t.Errorf("Validate = %v, want an error naming %s", err, tt.field)
			}
		})
	}
}
