// Package dbtest starts real database servers for tests: PostgreSQL from
// Debian's postgresql package (/usr/lib/postgresql/<ver>/bin/initdb and
// postgres) and MariaDB from Debian's mariadb-server (mariadb-install-db and
// mariadbd). Each server gets a temporary data directory, a unix socket in
// it and a random free loopback port, real password authentication, and is
// stopped and removed by Stop (or t.Cleanup with the Start* helpers).
//
// Servers refuse to run as root, so when the test runs as root (as CI
// does) the server processes run as the postgres / mysql system user that
// the Debian packages create (falling back to nobody), with their
// temporary directory chowned to it; no runuser or sudo is involved. Run
// as any other user they run as that user.
//
// A missing binary is an error (and t.Fatal in the Start* helpers), never
// a skip: install them with the Debian packages listed in .ci/apt-packages.
package dbtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"rollbot/testkit/wait"

	"rollbot/testkit/nettest"
)

// Database is one database with an owner role that can do anything in it.
type Database struct {
	Name     string
	User     string
	Password string
	Host     string
	Port     int
	// DSN is the form the Go driver takes: a postgres:// URL for pgx, the
	// user:pass@tcp(host:port)/db form for go-sql-driver/mysql.
	DSN string
	// URL is the form golang-migrate's CLI takes (postgres://… or
	// mysql://user:pass@tcp(host:port)/db).
	URL string
}

// server is what both kinds share: a process, its directory and port.
type server struct {
	name    string
	dir     string
	port    int
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	logPath string
	stopSig syscall.Signal
}

// runAs returns credentials for the account the server runs as when we
// are root, and that account's uid/gid for chown.
func runAs(account string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{account, "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
	}
	return nil, fmt.Errorf("running as root and neither %s nor nobody exists to run the server as", account)
}

func chownAll(dir string, cred *syscall.Credential) error {
	if cred == nil {
		return nil
	}
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(cred.Uid), int(cred.Gid))
	})
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	ports, err := nettest.FreePorts(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// command prepares a server-side command that runs as cred with a minimal
// environment and dies with the test process.
func command(cred *syscall.Credential, home, bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG=C", "LC_ALL=C", "HOME=" + home, "TZ=UTC"}
	cmd.Dir = home
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL, Setpgid: true}
	return cmd
}

// run runs a setup command and returns its output in the error.
func run(cmd *exec.Cmd) error {
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w\n%s", filepath.Base(cmd.Path), err, tail(buf.String(), 3000))
	}
	return nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// start launches the server process; its output goes to logPath.
func (s *server) start(cmd *exec.Cmd) error {
	f, err := os.Create(s.logPath)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", s.name, err)
	}
	f.Close()
	s.cmd = cmd
	s.exited = make(chan struct{})
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	return nil
}

// waitReady polls ping until it succeeds, the process exits, or 60s pass.
func (s *server) waitReady(ping func(context.Context) error) error {
	err := wait.UntilEvery(context.Background(), 100*time.Millisecond, 60*time.Second, s.name+" to be ready", func() (bool, error) {
		select {
		case <-s.exited:
			return false, wait.Stop(fmt.Errorf("%s exited during start (%v)", s.name, s.waitErr))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err := ping(ctx)
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("%w; log:\n%s", err, s.log())
	}
	return nil
}

func (s *server) log() string {
	b, _ := os.ReadFile(s.logPath)
	return tail(string(b), 4000)
}

// stop signals the server, waits up to 30s, then kills its process group,
// and removes its directory.
func (s *server) stop() error {
	var errs []error
	if s.cmd != nil && s.cmd.Process != nil {
		select {
		case <-s.exited:
		default:
			_ = s.cmd.Process.Signal(s.stopSig)
			select {
			case <-s.exited:
			case <-time.After(30 * time.Second):
				_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
				<-s.exited
				errs = append(errs, fmt.Errorf("%s did not stop within 30s; killed", s.name))
			}
		}
	}
	if s.dir != "" {
		if err := os.RemoveAll(s.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// findBin returns the first existing executable among candidates (absolute
// paths or names looked up on PATH).
func findBin(candidates ...string) string {
	for _, c := range candidates {
		if strings.Contains(c, "/") {
			if matches, _ := filepath.Glob(c); len(matches) > 0 {
				// Highest version directory sorts last.
				m := matches[len(matches)-1]
				if st, err := os.Stat(m); err == nil && st.Mode()&0o111 != 0 {
					return m
				}
			}
			continue
		}
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	return ""
}

// ErrMissing is wrapped when a server binary is not installed.
var ErrMissing = errors.New("not installed")

func ident(prefix string) string { return prefix + randomHex(4) }
