package dbtest

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/go-sql-driver/mysql"
)

// MariaDB is a running MariaDB server.
type MariaDB struct {
	server
	Socket  string
	Version string
	admin   *sql.DB // root over the unix socket
}

// MariaDBOptions tune the server.
type MariaDBOptions struct {
	// TimeZone is --default-time-zone as an offset ("+05:30"), default
	// "+00:00". Named zones need the zone tables, which a fresh data
	// directory lacks.
	TimeZone string
}

// StartMariaDB starts a server for the test and stops it on cleanup. It
// fails the test when MariaDB is not installed.
func StartMariaDB(tb testing.TB, opts MariaDBOptions) *MariaDB {
	tb.Helper()
	m, err := NewMariaDB(opts)
	if err != nil {
		tb.Fatalf("start mariadb: %v", err)
	}
	tb.Cleanup(func() {
		if err := m.Stop(); err != nil {
			tb.Errorf("stop mariadb: %v", err)
		}
	})
	return m
}

// NewMariaDB starts a server; the caller must Stop it (e.g. in TestMain).
func NewMariaDB(opts MariaDBOptions) (*MariaDB, error) {
	mariadbd := findBin("mariadbd", "/usr/sbin/mariadbd", "mysqld", "/usr/sbin/mysqld")
	install := findBin("mariadb-install-db", "/usr/bin/mariadb-install-db", "mysql_install_db")
	if mariadbd == "" || install == "" {
		return nil, fmt.Errorf("mariadb server binaries (mariadbd, mariadb-install-db) %w: apt-get install mariadb-server (it is in .ci/apt-packages)", ErrMissing)
	}
	if opts.TimeZone == "" {
		opts.TimeZone = "+00:00"
	}
	cred, err := runAs("mysql")
	if err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		m, err := startMariaDB(install, mariadbd, cred, opts)
		if err == nil {
			return m, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func startMariaDB(install, mariadbd string, cred *syscall.Credential, opts MariaDBOptions) (_ *MariaDB, err error) {
	dir, err := os.MkdirTemp("", "rbmy")
	if err != nil {
		return nil, err
	}
	m := &MariaDB{
		server: server{name: "mariadb", dir: dir, logPath: filepath.Join(dir, "server.log"), stopSig: syscall.SIGTERM},
		Socket: filepath.Join(dir, "sock"),
	}
	defer func() {
		if err != nil {
			m.Stop()
		}
	}()
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, err
	}
	if err := chownAll(dir, cred); err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	// --no-defaults must come first: never read /etc/mysql.
	if err := run(command(cred, dir, install, "--no-defaults", "--datadir="+data,
		"--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve")); err != nil {
		return nil, err
	}
	if m.port, err = freePort(); err != nil {
		return nil, err
	}
	if err := m.start(command(cred, dir, mariadbd, "--no-defaults", "--datadir="+data,
		"--socket="+m.Socket, "--port="+strconv.Itoa(m.port), "--bind-address=127.0.0.1",
		"--pid-file="+filepath.Join(dir, "pid"), "--skip-name-resolve", "--skip-log-bin",
		"--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M", "--innodb-flush-log-at-trx-commit=0",
		"--innodb-doublewrite=0", "--character-set-server=utf8mb4", "--default-time-zone="+opts.TimeZone,
		"--max-connections=100", "--performance-schema=OFF")); err != nil {
		return nil, err
	}
	cfg := mysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr = "root", "unix", m.Socket
	cfg.MultiStatements = true
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	m.admin = sql.OpenDB(conn)
	if err := m.waitReady(m.admin.PingContext); err != nil {
		return nil, err
	}
	if err := m.admin.QueryRow(`SELECT VERSION()`).Scan(&m.Version); err != nil {
		return nil, fmt.Errorf("mariadb version: %w", err)
	}
	// Anonymous accounts would shadow the test users for local logins.
	rows, err := m.admin.Query(`SELECT Host FROM mysql.user WHERE User = ''`)
	if err != nil {
		return nil, fmt.Errorf("list anonymous users: %w", err)
	}
	var hosts []string
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			rows.Close()
			return nil, err
		}
		hosts = append(hosts, h)
	}
	rows.Close()
	for _, h := range hosts {
		if _, err := m.admin.Exec("DROP USER ''@'" + h + "'"); err != nil {
			return nil, fmt.Errorf("drop anonymous user: %w", err)
		}
	}
	return m, nil
}

// Port is the TCP port on 127.0.0.1.
func (m *MariaDB) Port() int { return m.port }

// Admin is a root connection over the unix socket.
func (m *MariaDB) Admin() *sql.DB { return m.admin }

// DSN is the go-sql-driver DSN for user on db over TCP.
func (m *MariaDB) DSN(user, password, db string) string {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = user, password, "tcp", fmt.Sprintf("127.0.0.1:%d", m.port), db
	cfg.ParseTime = true
	return cfg.FormatDSN()
}

// CreateDatabase creates a database and a user with every privilege on
// it (password auth over TCP); both are dropped on cleanup.
func (m *MariaDB) CreateDatabase(tb testing.TB) Database {
	tb.Helper()
	d, err := m.NewDatabase(context.Background())
	if err != nil {
		tb.Fatalf("create database: %v", err)
	}
	tb.Cleanup(func() {
		ctx := context.Background()
		_, _ = m.admin.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+d.Name+"`")
		_, _ = m.admin.ExecContext(ctx, "DROP USER IF EXISTS '"+d.User+"'@'%'")
	})
	return d
}

// NewDatabase is CreateDatabase without a testing.TB.
func (m *MariaDB) NewDatabase(ctx context.Context) (Database, error) {
	d := Database{Name: ident("db_"), User: ident("app_"), Password: randomHex(12), Host: "127.0.0.1", Port: m.port}
	for _, q := range []string{
		"CREATE DATABASE `" + d.Name + "` CHARACTER SET utf8mb4",
		"CREATE USER '" + d.User + "'@'%' IDENTIFIED BY '" + d.Password + "'",
		"GRANT ALL PRIVILEGES ON `" + d.Name + "`.* TO '" + d.User + "'@'%'",
	} {
		if _, err := m.admin.ExecContext(ctx, q); err != nil {
			return Database{}, fmt.Errorf("%s: %w", q[:20], err)
		}
	}
	d.DSN = m.DSN(d.User, d.Password, d.Name)
	d.URL = fmt.Sprintf("mysql://%s:%s@tcp(127.0.0.1:%d)/%s?multiStatements=true", d.User, d.Password, m.port, d.Name)
	return d, nil
}

// Stop stops the server and removes its files.
func (m *MariaDB) Stop() error {
	if m.admin != nil {
		m.admin.Close()
	}
	return m.stop()
}
