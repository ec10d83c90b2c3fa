package dbtest

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"
)

// Postgres is a running PostgreSQL server.
type Postgres struct {
	server
	// Superuser "postgres" with a random password (scram-sha-256 over TCP).
	SuperPassword string
	SocketDir     string
	Version       string
	admin         *sql.DB
}

// PostgresOptions tune the server.
type PostgresOptions struct {
	// TimeZone is the server's TimeZone setting (IANA name), default UTC.
	// Tests set another to catch code that assumes UTC.
	TimeZone string
}

// StartPostgres starts a server for the test and stops it on cleanup. It
// fails the test when PostgreSQL is not installed.
func StartPostgres(tb testing.TB, opts PostgresOptions) *Postgres {
	tb.Helper()
	p, err := NewPostgres(opts)
	if err != nil {
		tb.Fatalf("start postgresql: %v", err)
	}
	tb.Cleanup(func() {
		if err := p.Stop(); err != nil {
			tb.Errorf("stop postgresql: %v", err)
		}
	})
	return p
}

// NewPostgres starts a server; the caller must Stop it (e.g. in TestMain).
func NewPostgres(opts PostgresOptions) (*Postgres, error) {
	bindir := os.Getenv("ROLLBOT_PG_BINDIR")
	var initdb, postgres string
	if bindir != "" {
		initdb, postgres = filepath.Join(bindir, "initdb"), filepath.Join(bindir, "postgres")
	} else {
		initdb = findBin("/usr/lib/postgresql/*/bin/initdb", "initdb")
		postgres = findBin("/usr/lib/postgresql/*/bin/postgres", "postgres")
	}
	if initdb == "" || postgres == "" {
		return nil, fmt.Errorf("postgresql server binaries (initdb, postgres) %w: looked in /usr/lib/postgresql/*/bin and PATH; apt-get install postgresql (it is in .ci/apt-packages)", ErrMissing)
	}
	if opts.TimeZone == "" {
		opts.TimeZone = "UTC"
	}
	cred, err := runAs("postgres")
	if err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		p, err := startPostgres(initdb, postgres, cred, opts)
		if err == nil {
			return p, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func startPostgres(initdb, postgres string, cred *syscall.Credential, opts PostgresOptions) (_ *Postgres, err error) {
	dir, err := os.MkdirTemp("", "rbpg")
	if err != nil {
		return nil, err
	}
	p := &Postgres{
		server:        server{name: "postgres", dir: dir, logPath: filepath.Join(dir, "server.log"), stopSig: syscall.SIGINT},
		SuperPassword: randomHex(12),
		SocketDir:     dir,
	}
	defer func() {
		if err != nil {
			p.Stop()
		}
	}()
	pwfile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwfile, []byte(p.SuperPassword+"\n"), 0o600); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, err
	}
	if err := chownAll(dir, cred); err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	if err := run(command(cred, dir, initdb, "-D", data, "-U", "postgres", "--pwfile="+pwfile,
		"--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync")); err != nil {
		return nil, err
	}
	os.Remove(pwfile)
	if p.port, err = freePort(); err != nil {
		return nil, err
	}
	if err := p.start(command(cred, dir, postgres, "-D", data, "-p", strconv.Itoa(p.port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "shared_buffers=16MB", "-c", "max_connections=60",
		"-c", "timezone="+opts.TimeZone, "-c", "log_timezone=UTC", "-c", "logging_collector=off")); err != nil {
		return nil, err
	}
	admin, err := sql.Open("pgx", p.URL("postgres", p.SuperPassword, "postgres"))
	if err != nil {
		return nil, err
	}
	p.admin = admin
	if err := p.waitReady(admin.PingContext); err != nil {
		return nil, err
	}
	if err := admin.QueryRow(`SHOW server_version`).Scan(&p.Version); err != nil {
		return nil, fmt.Errorf("postgres version: %w", err)
	}
	return p, nil
}

// Port is the TCP port on 127.0.0.1.
func (p *Postgres) Port() int { return p.port }

// URL is a postgres:// URL for user on db over TCP.
func (p *Postgres) URL(user, password, db string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, password),
		Host: fmt.Sprintf("127.0.0.1:%d", p.port), Path: "/" + db, RawQuery: "sslmode=disable"}
	return u.String()
}

// Admin is a superuser connection to the postgres database.
func (p *Postgres) Admin() *sql.DB { return p.admin }

// CreateDatabase creates a database owned by a new login role with a random
// password; both are dropped on cleanup.
func (p *Postgres) CreateDatabase(tb testing.TB) Database {
	tb.Helper()
	d, err := p.NewDatabase(context.Background())
	if err != nil {
		tb.Fatalf("create database: %v", err)
	}
	tb.Cleanup(func() {
		ctx := context.Background()
		_, _ = p.admin.ExecContext(ctx, `DROP DATABASE IF EXISTS `+d.Name+` WITH (FORCE)`)
		_, _ = p.admin.ExecContext(ctx, `DROP ROLE IF EXISTS `+d.User)
	})
	return d
}

// NewDatabase is CreateDatabase without a testing.TB.
func (p *Postgres) NewDatabase(ctx context.Context) (Database, error) {
	d := Database{Name: ident("db_"), User: ident("app_"), Password: randomHex(12), Host: "127.0.0.1", Port: p.port}
	if _, err := p.admin.ExecContext(ctx, fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD '%s'`, d.User, d.Password)); err != nil {
		return Database{}, fmt.Errorf("create role: %w", err)
	}
	if _, err := p.admin.ExecContext(ctx, fmt.Sprintf(`CREATE DATABASE %s OWNER %s`, d.Name, d.User)); err != nil {
		return Database{}, fmt.Errorf("create database: %w", err)
	}
	d.DSN = p.URL(d.User, d.Password, d.Name)
	d.URL = d.DSN
	return d, nil
}

// Stop stops the server and removes its files.
func (p *Postgres) Stop() error {
	if p.admin != nil {
		p.admin.Close()
	}
	return p.stop()
}
