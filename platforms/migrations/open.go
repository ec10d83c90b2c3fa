package migrations

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"rollbot/platforms"
)

// Open connects with the DSN held in the variable cfg.DSNEnv and makes every
// session of the pool read-only (PostgreSQL: default_transaction_read_only=on
// as a startup parameter; MySQL/MariaDB: SET SESSION TRANSACTION READ ONLY on
// each new connection). It pings before returning. Errors never contain the
// DSN or its password.
func Open(ctx context.Context, cfg Config) (*sql.DB, error) {
	if cfg.DSNEnv == "" {
		return nil, platforms.Userf(errors.New("dsn_env: empty"), "the database of this service has no dsn_env configured")
	}
	dsn := os.Getenv(cfg.DSNEnv)
	if dsn == "" {
		return nil, platforms.Userf(fmt.Errorf("open database: variable %s is not set", cfg.DSNEnv),
			"the bot has no database DSN for this service: set the variable %s on the bot", cfg.DSNEnv)
	}
	db, err := openDSN(ctx, cfg.Driver, dsn)
	if err != nil {
		return nil, platforms.Userf(fmt.Errorf("open %s database (dsn from $%s): %w", cfg.Driver, cfg.DSNEnv, err),
			"cannot connect to the %s database with the DSN in $%s: check that DSN and that the database is reachable from the bot", cfg.Driver, cfg.DSNEnv)
	}
	return db, nil
}

// openDSN returns errors already redacted of dsn.
func openDSN(ctx context.Context, drv, dsn string) (*sql.DB, error) {
	secrets := dsnSecrets(drv, dsn)
	var db *sql.DB
	switch drv {
	case DriverPostgres:
		pc, err := pgx.ParseConfig(dsn)
		if err != nil {
			return nil, redact(fmt.Errorf("parse dsn: %w", err), secrets)
		}
		if pc.RuntimeParams == nil {
			pc.RuntimeParams = map[string]string{}
		}
		// A startup parameter: the server applies it to the session before
		// any statement, and it survives a DISCARD ALL / RESET ALL.
		pc.RuntimeParams["default_transaction_read_only"] = "on"
		pc.RuntimeParams["application_name"] = "rollbot"
		db = stdlib.OpenDB(*pc)
	case DriverMySQL:
		mc, err := mysql.ParseDSN(strings.TrimPrefix(dsn, "mysql://"))
		if err != nil {
			return nil, redact(fmt.Errorf("parse dsn: %w", err), secrets)
		}
		mc.ParseTime = true
		mc.Loc = time.UTC
		conn, err := mysql.NewConnector(mc)
		if err != nil {
			return nil, redact(fmt.Errorf("dsn: %w", err), secrets)
		}
		db = sql.OpenDB(sessionInit{conn, []string{
			"SET SESSION TRANSACTION READ ONLY",
			// TIMESTAMP columns then read as UTC; DATETIME ones are
			// converted with the configured or server zone (see zones).
			"SET time_zone = '+00:00'",
		}})
	default:
		return nil, fmt.Errorf("driver %q: not postgres or mysql", drv)
	}
	db.SetMaxOpenConns(2)
	db.SetMaxIdleConns(1)
	db.SetConnMaxIdleTime(time.Minute)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, redact(fmt.Errorf("ping: %w", err), secrets)
	}
	return db, nil
}

// sessionInit runs statements on every new connection before the pool hands
// it out.
type sessionInit struct {
	driver.Connector
	stmts []string
}

func (s sessionInit) Connect(ctx context.Context) (driver.Conn, error) {
	c, err := s.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	ex, ok := c.(driver.ExecerContext)
	if !ok {
		c.Close()
		return nil, errors.New("driver connection cannot execute statements")
	}
	for _, q := range s.stmts {
		if _, err := ex.ExecContext(ctx, q, nil); err != nil {
			c.Close()
			return nil, fmt.Errorf("%s: %w", q, err)
		}
	}
	return c, nil
}

// dsnSecrets lists the strings that must never leave the package: the DSN
// and its password, plain and escaped.
func dsnSecrets(drv, dsn string) []string {
	out := []string{dsn}
	var pw []string
	switch drv {
	case DriverPostgres:
		if pc, err := pgx.ParseConfig(dsn); err == nil {
			pw = append(pw, pc.Password)
		}
	case DriverMySQL:
		if mc, err := mysql.ParseDSN(strings.TrimPrefix(dsn, "mysql://")); err == nil {
			pw = append(pw, mc.Passwd)
		}
	}
	pw = append(pw, secretParts(dsn)...)
	for _, p := range pw {
		if p == "" {
			continue
		}
		out = append(out, p, url.QueryEscape(p), url.PathEscape(p), url.UserPassword("u", p).String()[2:])
	}
	return out
}

// secretParts finds a password inside a URL-like or key=value secret
// without knowing its driver.
func secretParts(s string) []string {
	var out []string
	if u, err := url.Parse(s); err == nil && u.User != nil {
		if p, ok := u.User.Password(); ok {
			out = append(out, p)
		}
	}
	// user:pass@tcp(...) and user:pass@host forms that url.Parse refuses.
	if at := strings.LastIndex(s, "@"); at > 0 {
		head := s[:at]
		if i := strings.Index(head, "://"); i >= 0 {
			head = head[i+3:]
		}
		if i := strings.Index(head, ":"); i >= 0 && i+1 < len(head) {
			out = append(out, head[i+1:])
		}
	}
	for _, f := range strings.Fields(s) {
		if v, ok := strings.CutPrefix(f, "password="); ok && v != "" {
			out = append(out, strings.Trim(v, `'`))
		}
	}
	for _, kv := range strings.Split(s, "?") {
		if q, err := url.ParseQuery(kv); err == nil {
			for _, k := range []string{"password", "passwd", "pass"} {
				if v := q.Get(k); v != "" {
					out = append(out, v)
				}
			}
		}
	}
	return out
}

// redactedError replaces an error whose text held a secret. It deliberately
// does not unwrap to the original, whose text still holds it; it keeps
// errors.Is for context errors.
type redactedError struct {
	msg   string
	cause error // only context.Canceled / DeadlineExceeded, or nil
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.cause }

const redactedMark = "[REDACTED]"

// redact returns err unchanged when its text holds none of secrets, else a
// copy of its text with each secret replaced.
func redact(err error, secrets []string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	changed := false
	for _, s := range secrets {
		if len(s) < 1 || !strings.Contains(msg, s) {
			continue
		}
		msg = strings.ReplaceAll(msg, s, redactedMark)
		changed = true
	}
	if !changed {
		return err
	}
	var cause error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		cause = context.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		cause = context.Canceled
	}
	return &redactedError{msg: msg, cause: cause}
}
