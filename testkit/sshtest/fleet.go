package sshtest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"rollbot/testkit/wait"
	"sort"
	"strings"
	"testing"
	"time"

	"rollbot/testkit/nettest"
)

// BuildSampleApp builds rollbot's sample service (examples/sampleapp) as a
// static binary (CGO_ENABLED=0) at dir/name, with the given main package
// variables set through -ldflags -X, e.g.
// {"version": "v2", "errorRatio": "0.3"}. It must run inside the rollbot
// module (any package directory of it); the Go build cache makes repeated
// builds cheap.
func BuildSampleApp(t testing.TB, dir, name string, vars map[string]string) string {
	t.Helper()
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var ldflags []string
	for _, k := range keys {
		ldflags = append(ldflags, "-X", "main."+k+"="+vars[k])
	}
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, "-ldflags", strings.Join(ldflags, " "), "rollbot/examples/sampleapp")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sshtest: build sampleapp %s: %v\n%s", name, err, b)
	}
	return out
}

// Release is one version of the service's binary on the hosts.
type Release struct {
	Version string // directory name under BackupDir, and what -version prints
	Binary  string // the built binary on the test machine
	// Time is the file's (and the backup directory's) mtime; zero means now.
	// The VM adapter reads the installed binary's mtime as the deploy time.
	Time time.Time
}

// BackupLayout describes a service installed by the VM adapter's "backup"
// strategy: the running binary at InstallPath, earlier versions at
// BackupDir/<version>/<base name of InstallPath>.
type BackupLayout struct {
	Unit        string // systemd unit, e.g. "myapp"
	InstallPath string // e.g. /opt/myapp/bin/myapp (under /opt: each host has its own)
	BackupDir   string // e.g. /opt/myapp/backup
	Running     Release
	Backups     []Release
	// Args are passed to the service after "-listen 127.0.0.1:<port>"
	// (e.g. "-self-load", "50").
	Args []string
}

// Fleet is a set of hosts running one service, started through the
// systemctl stand-in, each listening on its own loopback port.
type Fleet struct {
	Dir        string
	Key        Key    // the user key every host accepts for root
	KnownHosts string // known_hosts listing every host's key
	Hosts      []*Host
	Ports      []int // the service's port on host i (127.0.0.1)
	Layout     BackupLayout
}

// StartBackupFleet starts one sshd per name, installs the layout on each
// host and starts the unit there through the stand-in, then waits until
// every host's service answers /version with Running.Version. Everything
// is stopped on t.Cleanup.
func StartBackupFleet(t testing.TB, names []string, l BackupLayout) *Fleet {
	t.Helper()
	for _, p := range []string{l.InstallPath, l.BackupDir} {
		if !strings.HasPrefix(p, "/opt/") {
			t.Fatalf("sshtest: %q must be under /opt (the only directory private to each host)", p)
		}
	}
	f := &Fleet{Dir: t.TempDir(), Layout: l}
	f.Key = NewKey(t, f.Dir, "id_rollbot")
	for _, name := range names {
		f.Hosts = append(f.Hosts, Start(t, f.Dir, name, f.Key.Public))
		f.Ports = append(f.Ports, nettest.FreePort(t))
	}
	f.KnownHosts = KnownHosts(t, filepath.Join(f.Dir, "known_hosts"), f.Hosts...)
	bin := path.Base(l.InstallPath)
	for i, h := range f.Hosts {
		for _, r := range l.Backups {
			Install(t, r.Binary, h.Path(path.Join(l.BackupDir, r.Version, bin)), r.Time)
			if !r.Time.IsZero() {
				if err := os.Chtimes(h.Path(path.Join(l.BackupDir, r.Version)), r.Time, r.Time); err != nil {
					t.Fatal(err)
				}
			}
		}
		Install(t, l.Running.Binary, h.Path(l.InstallPath), l.Running.Time)
		args := append([]string{"-listen", fmt.Sprintf("127.0.0.1:%d", f.Ports[i])}, l.Args...)
		h.Unit(t, l.Unit, l.InstallPath, args...)
		h.Run(t, f.Key, Systemctl+" start "+l.Unit)
	}
	for i := range f.Hosts {
		f.WaitVersion(t, i, l.Running.Version)
	}
	return f
}

// Install copies the executable src to dst (a path in the test's view,
// e.g. h.Path("/opt/myapp/bin/myapp")), creating its directory, and sets
// its mtime when mtime is not zero.
func Install(t testing.TB, src, dst string, mtime time.Time) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if !mtime.IsZero() {
		if err := os.Chtimes(dst, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
}

// URL is http://127.0.0.1:<port of host i><p>.
func (f *Fleet) URL(i int, p string) string {
	return "http://" + net.JoinHostPort("127.0.0.1", fmt.Sprint(f.Ports[i])) + p
}

// Version asks host i's service for its /version ("" when it does not answer).
func (f *Fleet) Version(i int) string {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(f.URL(i, "/version"))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

// WaitVersion polls host i's /version until it is want (15s at most).
func (f *Fleet) WaitVersion(t testing.TB, i int, want string) {
	t.Helper()
	err := wait.Until(context.Background(), 15*time.Second, f.Hosts[i].Name+" to serve "+want, func() (bool, error) {
		got := f.Version(i)
		return got == want, fmt.Errorf("/version = %q", got)
	})
	if err != nil {
		t.Fatalf("sshtest: %v\nservice log:\n%s", err, f.Hosts[i].ServiceLog(f.Layout.Unit))
	}
}
