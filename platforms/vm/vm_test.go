package vm

// The hosts in these tests are real OpenSSH servers (Debian's sshd, see
// sshtest) on loopback, each with its own /opt in a private mount
// namespace. The machines have no systemd: the adapter's `systemctl` is
// pointed at sshtest's stand-in script, which really starts and stops the
// sample service (examples/sampleapp, built here with -ldflags versions).

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"rollbot/platforms"
	"rollbot/testkit/sshtest"
	"rollbot/testkit/wait"

	"rollbot/testkit/nettest"

	"rollbot/testkit/platformtest"
)

// Sample service binaries, built once by TestMain.
var bins struct{ v1, v2, v3, crash string }

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vmtest-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	build := func(name, ldflags string) string {
		out := filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-o", out, "-ldflags", ldflags, "rollbot/examples/sampleapp")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build sampleapp %s: %v\n%s", name, err, b)
			os.RemoveAll(dir)
			os.Exit(1)
		}
		return out
	}
	bins.v1 = build("v1", "-X main.version=v1")
	bins.v2 = build("v2", "-X main.version=v2")
	bins.v3 = build("v3", "-X main.version=v3")
	bins.crash = build("v1-crash", "-X main.version=v1 -X main.crashOnStart=true")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type fleet struct {
	dir   string
	key   sshtest.Key
	hosts []*sshtest.Host
	ports []int
	cfg   Config
	logs  *bytes.Buffer
}

func chtimes(t *testing.T, p string, at time.Time) {
	t.Helper()
	if err := os.Chtimes(p, at, at); err != nil {
		t.Fatal(err)
	}
}

var (
	day1 = time.Date(2026, 6, 20, 10, 0, 0, 0, time.UTC)
	day2 = time.Date(2026, 6, 24, 10, 0, 0, 0, time.UTC)
	day3 = time.Date(2026, 6, 26, 10, 0, 0, 0, time.UTC)
)

// newFleet starts one sshd per name, lays out /opt on each for the
// strategy with v2 running and v1 available (previous), and starts the
// service through the stand-in.
func newFleet(t *testing.T, strategy Strategy, names ...string) *fleet {
	t.Helper()
	f := &fleet{dir: t.TempDir(), logs: &bytes.Buffer{}}
	f.key = sshtest.NewKey(t, f.dir, "id_rollbot")
	for _, name := range names {
		h := sshtest.Start(t, f.dir, name, f.key.Public)
		f.hosts = append(f.hosts, h)
		f.ports = append(f.ports, nettest.FreePort(t))
	}
	known := sshtest.KnownHosts(t, filepath.Join(f.dir, "known_hosts"), f.hosts...)
	debs := filepath.Join(f.dir, "debs")
	if strategy == Deb {
		buildDeb(t, bins.v1, "1.0.0", debs, day1)
		buildDeb(t, bins.v2, "2.0.0", debs, day2)
	}
	f.cfg = Config{
		User: "root", KnownHosts: known, KeyFile: f.key.File, Timeout: 20 * time.Second,
		Strategy: strategy, Unit: "myapp", Systemctl: sshtest.Systemctl, HealthTimeout: 8 * time.Second,
	}
	for i, h := range f.hosts {
		f.cfg.Hosts = append(f.cfg.Hosts, Host{Name: h.Name, Addr: h.Addr, HealthURL: fmt.Sprintf("http://127.0.0.1:%d/health", f.ports[i])})
		var exe string
		switch strategy {
		case Backup:
			f.cfg.InstallPath = "/opt/myapp/bin/myapp"
			sshtest.Install(t, bins.v1, h.Path("/opt/myapp/backup/v1/myapp"), day1)
			chtimes(t, h.Path("/opt/myapp/backup/v1"), day2)
			sshtest.Install(t, bins.v2, h.Path("/opt/myapp/bin/myapp"), day3)
			exe = "/opt/myapp/bin/myapp"
		case Symlink:
			sshtest.Install(t, bins.v1, h.Path("/opt/myapp/releases/v1/myapp"), time.Time{})
			sshtest.Install(t, bins.v2, h.Path("/opt/myapp/releases/v2/myapp"), time.Time{})
			chtimes(t, h.Path("/opt/myapp/releases/v1"), day1)
			chtimes(t, h.Path("/opt/myapp/releases/v2"), day2)
			if err := os.Symlink("/opt/myapp/releases/v2", h.Path("/opt/myapp/current")); err != nil {
				t.Fatal(err)
			}
			exe = "/opt/myapp/current/myapp"
		case Deb:
			f.cfg.DpkgRoot = "/opt/dpkgroot"
			for _, d := range []string{"info", "updates", "triggers"} {
				if err := os.MkdirAll(h.Path("/opt/dpkgroot/var/lib/dpkg/"+d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(h.Path("/opt/dpkgroot/var/lib/dpkg/status"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			for _, deb := range []struct {
				file string
				at   time.Time
			}{{"myapp_1.0.0_amd64.deb", day1}, {"myapp_2.0.0_amd64.deb", day2}} {
				sshtest.Install(t, filepath.Join(debs, deb.file), h.Path("/opt/myapp/packages/"+deb.file), deb.at)
			}
			h.Run(t, f.key, "dpkg --root=/opt/dpkgroot -i /opt/myapp/packages/myapp_2.0.0_amd64.deb")
			exe = "/opt/dpkgroot/usr/local/bin/myapp"
		}
		h.Unit(t, "myapp", exe, "-listen", fmt.Sprintf("127.0.0.1:%d", f.ports[i]))
		h.Run(t, f.key, sshtest.Systemctl+" start myapp")
	}
	for i := range f.hosts {
		f.waitVersion(t, i, "v2")
	}
	return f
}

// buildDeb packages bin as /usr/local/bin/myapp in myapp_<ver>_amd64.deb.
func buildDeb(t *testing.T, bin, ver, outDir string, mtime time.Time) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "pkg")
	sshtest.Install(t, bin, filepath.Join(root, "usr/local/bin/myapp"), time.Time{})
	control := fmt.Sprintf("Package: myapp\nVersion: %s\nArchitecture: amd64\nMaintainer: rollbot tests <tests@example.invalid>\nDescription: sample service %s\n", ver, ver)
	if err := os.MkdirAll(filepath.Join(root, "DEBIAN"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "DEBIAN/control"), []byte(control), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(outDir, "myapp_"+ver+"_amd64.deb")
	if b, err := exec.Command("dpkg-deb", "--root-owner-group", "-Znone", "-b", root, out).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb (Debian package dpkg): %v\n%s", err, b)
	}
	chtimes(t, out, mtime)
}

func (f *fleet) adapter(t *testing.T) *Adapter {
	t.Helper()
	a, err := New(f.cfg, slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

// version asks host i's service for its /version ("" when it does not answer).
func (f *fleet) version(i int) string {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/version", f.ports[i]))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

func (f *fleet) waitVersion(t *testing.T, i int, want string) {
	t.Helper()
	err := wait.Until(context.Background(), 15*time.Second, f.hosts[i].Name+" to serve "+want, func() (bool, error) {
		got := f.version(i)
		return got == want, fmt.Errorf("/version = %q", got)
	})
	if err != nil {
		t.Fatalf("%v\nservice log:\n%s", err, f.hosts[i].ServiceLog("myapp"))
	}
}

func starts(h *sshtest.Host) int { return strings.Count(h.Journal("myapp"), " start ") }

func ids(revs []platforms.Revision) []string {
	var out []string
	for _, r := range revs {
		out = append(out, r.ID)
	}
	return out
}

func TestSnapshotBackup(t *testing.T) {
	f := newFleet(t, Backup, "hostA", "hostB")
	snap, err := f.adapter(t).Snapshot(context.Background())
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if snap.Current.ID != "v2" {
		t.Errorf("Current = %+v, want v2", snap.Current)
	}
	if got := strings.Join(ids(snap.History), ","); got != "v2,v1" {
		t.Errorf("History = %s, want v2,v1", got)
	}
	if snap.History[1].Artifact != "/opt/myapp/backup/v1/myapp" || !snap.History[1].CreatedAt.Equal(day2) {
		t.Errorf("v1 revision = %+v", snap.History[1])
	}
	if lkg, ok := platforms.LastKnownGood(snap.History, snap.Current, nil); !ok || lkg.ID != "v1" {
		t.Errorf("LastKnownGood = %v,%v", lkg, ok)
	}
	if !snap.Health.Known || snap.Health.Desired != 2 || snap.Health.Ready != 2 || snap.RolloutInProgress {
		t.Errorf("Health = %+v, rollout = %v", snap.Health, snap.RolloutInProgress)
	}
	if !snap.DeployedAt.Equal(day3) {
		t.Errorf("DeployedAt = %s, want the install path's mtime %s", snap.DeployedAt, day3)
	}
}

func TestSnapshotShowsDisagreementAndUnhealthy(t *testing.T) {
	f := newFleet(t, Symlink, "hostA", "hostB")
	// hostB is still on v1 (a deploy stopped half way) and its service is down.
	b := f.hosts[1]
	if err := os.Remove(b.Path("/opt/myapp/current")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/opt/myapp/releases/v1", b.Path("/opt/myapp/current")); err != nil {
		t.Fatal(err)
	}
	b.Run(t, f.key, sshtest.Systemctl+" stop myapp")
	snap, err := f.adapter(t).Snapshot(context.Background())
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if snap.Current.ID != "v2" || !snap.RolloutInProgress {
		t.Errorf("Current = %s, rollout = %v; want v2 (newest running), true", snap.Current.ID, snap.RolloutInProgress)
	}
	if snap.Health.Ready != 1 {
		t.Errorf("Ready = %d, want 1", snap.Health.Ready)
	}
	for _, want := range []string{"1/2 hosts healthy", "hostB: GET http://127.0.0.1:", "hosts disagree: v2 on hostA; v1 on hostB"} {
		if !strings.Contains(snap.Health.Detail, want) {
			t.Errorf("Detail %q lacks %q", snap.Health.Detail, want)
		}
	}
}

func testRollback(t *testing.T, strategy Strategy) *fleet {
	f := newFleet(t, strategy, "hostA", "hostB")
	a := f.adapter(t)
	ctx := context.Background()
	snap, err := a.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	to, ok := platforms.LastKnownGood(snap.History, snap.Current, nil)
	if !ok {
		t.Fatalf("no last known good in %v", ids(snap.History))
	}
	var progress []platforms.Progress
	res, err := a.Rollback(ctx, to, false, func(p platforms.Progress) { progress = append(progress, p) })
	if err != nil {
		t.Fatalf("Rollback to %s: %v\nhostA log:\n%s\nhostB log:\n%s", to.ID, err, f.hosts[0].ServiceLog("myapp"), f.hosts[1].ServiceLog("myapp"))
	}
	if res.Outcome != platforms.Done || !strings.Contains(res.Detail, "hostA, hostB") {
		t.Errorf("Result = %+v", res)
	}
	for i, h := range f.hosts {
		if v := f.version(i); v != "v1" {
			t.Errorf("%s: /version = %q after rollback, want v1", h.Name, v)
		}
		if n := starts(h); n != 2 {
			t.Errorf("%s: %d starts in the stand-in's journal, want 2 (initial + restart)", h.Name, n)
		}
	}
	if len(progress) == 0 || !progress[len(progress)-1].Done || progress[len(progress)-1].Updated != 2 || !strings.Contains(progress[len(progress)-1].Message, "hostB") {
		t.Errorf("last progress = %+v", progress)
	}
	// The plan records what each host had, so it can be rolled forward again.
	if len(res.Plan) != 2 || !strings.HasPrefix(res.Plan[0], "hostA: ") || !strings.Contains(res.Plan[0], " -> "+to.ID) {
		t.Errorf("Plan = %q", res.Plan)
	}
	// Again: nothing to do.
	res, err = a.Rollback(ctx, to, false, nil)
	if err != nil || res.Outcome != platforms.Skipped {
		t.Errorf("second Rollback = %+v, %v; want Skipped", res, err)
	}
	snap, err = a.Snapshot(ctx)
	if err != nil || snap.Current.ID != to.ID || snap.Health.Ready != 2 {
		t.Errorf("Snapshot after rollback = %+v, %v", snap, err)
	}
	return f
}

func TestRollbackBackup(t *testing.T) {
	f := testRollback(t, Backup)
	// The previous binary was copied into place (same bytes as the backup).
	want, _ := os.ReadFile(bins.v1)
	got, _ := os.ReadFile(f.hosts[0].Path("/opt/myapp/bin/myapp"))
	if !bytes.Equal(got, want) {
		t.Error("install path does not hold the v1 binary")
	}
}

func TestRollbackSymlink(t *testing.T) {
	f := testRollback(t, Symlink)
	for _, h := range f.hosts {
		if target, err := os.Readlink(h.Path("/opt/myapp/current")); err != nil || target != "/opt/myapp/releases/v1" {
			t.Errorf("%s: current -> %q, %v", h.Name, target, err)
		}
	}
}

// With sudo: installs and systemctl go through `sudo -n sh -c '…'` (the
// Debian sudo package; root may sudo without a password).
func TestRollbackWithSudo(t *testing.T) {
	if _, err := exec.LookPath("sudo"); err != nil {
		t.Fatalf("sudo not found (Debian package sudo, listed in .ci/apt-packages): %v", err)
	}
	f := newFleet(t, Backup, "hostA")
	f.cfg.Sudo = true
	a := f.adapter(t)
	if res, err := a.Rollback(context.Background(), platforms.Revision{ID: "v1"}, true, nil); err != nil || res.Outcome != platforms.Planned ||
		!strings.Contains(res.Plan[0], "sudo cp /opt/myapp/backup/v1/myapp /opt/myapp/bin/myapp; sudo "+sshtest.Systemctl+" restart myapp") {
		t.Fatalf("dry run = %+v, %v", res, err)
	}
	if res, err := a.Rollback(context.Background(), platforms.Revision{ID: "v1"}, false, nil); err != nil || res.Outcome != platforms.Done {
		t.Fatalf("Rollback = %+v, %v", res, err)
	}
	if v := f.version(0); v != "v1" {
		t.Errorf("/version = %q", v)
	}
	j := f.hosts[0].Journal("myapp")
	if !strings.Contains(j, "start /opt/myapp/bin/myapp -listen") || strings.Count(j, "(via sudo by root)") != 2 {
		t.Errorf("journal does not show the restart (stop + start) through sudo:\n%s", j)
	}
}

func TestRollbackDeb(t *testing.T) {
	f := newFleet(t, Deb, "hostA", "hostB")
	a := f.adapter(t)
	ctx := context.Background()
	snap, err := a.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Current.ID != "2.0.0" || strings.Join(ids(snap.History), ",") != "2.0.0,1.0.0" || snap.Current.Artifact != "/opt/myapp/packages/myapp_2.0.0_amd64.deb" {
		t.Fatalf("Snapshot = current %+v, history %v", snap.Current, ids(snap.History))
	}
	res, err := a.Rollback(ctx, platforms.Revision{ID: "1.0.0"}, false, nil)
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("Rollback = %+v, %v", res, err)
	}
	for i, h := range f.hosts {
		if v := f.version(i); v != "v1" {
			t.Errorf("%s: /version = %q, want v1 (package 1.0.0)", h.Name, v)
		}
		out := h.Run(t, f.key, "dpkg-query --root=/opt/dpkgroot -W -f '${Version}' myapp")
		if out != "1.0.0" {
			t.Errorf("%s: dpkg says %q, want 1.0.0", h.Name, out)
		}
	}
}

// Rolling: host B's previous version crashes on start, so the rollback
// stops at B, says so, and never touches C.
func TestRollingStopsAtFirstFailure(t *testing.T) {
	f := newFleet(t, Backup, "hostA", "hostB", "hostC")
	sshtest.Install(t, bins.crash, f.hosts[1].Path("/opt/myapp/backup/v1/myapp"), day1)
	f.cfg.HealthTimeout = 3 * time.Second
	a := f.adapter(t)
	var last platforms.Progress
	_, err := a.Rollback(context.Background(), platforms.Revision{ID: "v1"}, false, func(p platforms.Progress) { last = p })
	if err == nil {
		t.Fatal("Rollback succeeded although hostB's v1 crashes")
	}
	msg := platformtest.UserMessage(t, err)
	for _, want := range []string{
		"rolled back hostA to v1",
		"hostB failed health after restart: GET http://127.0.0.1:",
		"hostB now has v1 installed but is not healthy (it was on v2)",
		"hosts not touched: hostC",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q:\n%s", want, msg)
		}
	}
	if !last.Done || last.Updated != 1 {
		t.Errorf("last progress = %+v", last)
	}
	if v := f.version(0); v != "v1" {
		t.Errorf("hostA: /version = %q, want v1", v)
	}
	if v := f.version(1); v != "" {
		t.Errorf("hostB answers %q; its v1 should have crashed", v)
	}
	if !strings.Contains(f.hosts[1].ServiceLog("myapp"), "crashes on start") {
		t.Errorf("hostB's service log does not show the crash:\n%s", f.hosts[1].ServiceLog("myapp"))
	}
	if v := f.version(2); v != "v2" || starts(f.hosts[2]) != 1 {
		t.Errorf("hostC: /version = %q, starts = %d; want untouched v2, 1 start", v, starts(f.hosts[2]))
	}
}

// Someone else changes host B between rollbot's read and its turn.
func TestRollbackConflict(t *testing.T) {
	f := newFleet(t, Backup, "hostA", "hostB")
	// hostA's systemctl restart also "deploys" v3 to hostB behind rollbot's back.
	a0, b := f.hosts[0], f.hosts[1]
	real := a0.Path(sshtest.Systemctl) + ".real"
	if err := os.Rename(a0.Path(sshtest.Systemctl), real); err != nil {
		t.Fatal(err)
	}
	sshtest.Install(t, bins.v3, b.Path("/opt/v3-staged"), time.Time{})
	wrapper := fmt.Sprintf("#!/bin/sh\n%s \"$@\"; rc=$?\nif [ \"$1\" = restart ]; then cp %s %s.tmp && mv -f %s.tmp %s; fi\nexit $rc\n",
		sshtest.Systemctl+".real", b.Path("/opt/v3-staged"), b.Path("/opt/myapp/bin/myapp"), b.Path("/opt/myapp/bin/myapp"), b.Path("/opt/myapp/bin/myapp"))
	if err := os.WriteFile(a0.Path(sshtest.Systemctl), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := f.adapter(t).Rollback(context.Background(), platforms.Revision{ID: "v1"}, false, nil)
	if !errors.Is(err, platforms.ErrConflict) {
		t.Fatalf("err = %v, want ErrConflict", err)
	}
	msg := platformtest.UserMessage(t, err)
	if !strings.Contains(msg, "rolled back hostA to v1") || !strings.Contains(msg, "hostB changed since rollbot read it") {
		t.Errorf("message = %q", msg)
	}
	got, _ := os.ReadFile(b.Path("/opt/myapp/bin/myapp"))
	want, _ := os.ReadFile(bins.v3)
	if !bytes.Equal(got, want) || starts(b) != 1 {
		t.Error("rollbot overwrote or restarted hostB after the concurrent change")
	}
}

func TestRollbackRefusesUnlistedVersions(t *testing.T) {
	f := newFleet(t, Backup, "hostA", "hostB")
	// v0 exists on hostA only.
	sshtest.Install(t, bins.v1, f.hosts[0].Path("/opt/myapp/backup/v0/myapp"), day1)
	a := f.adapter(t)
	tests := []struct{ id, want string }{
		{"v1; touch /tmp/pwned", "is not a version name"},
		{"../../etc", "is not a version name"},
		{"v9", "version v9 is not available on hostA"},
		{"v0", "version v0 is not available on hostB"},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			_, err := a.Rollback(context.Background(), platforms.Revision{ID: tt.id}, false, nil)
			if !errors.Is(err, platforms.ErrNotFound) {
				t.Fatalf("err = %v, want ErrNotFound", err)
			}
			if msg := platformtest.UserMessage(t, err); !strings.Contains(msg, tt.want) {
				t.Errorf("message %q lacks %q", msg, tt.want)
			}
		})
	}
	if _, err := os.Stat("/tmp/pwned"); err == nil {
		t.Error("/tmp/pwned exists: a version was interpolated into a command")
	}
	for i, h := range f.hosts {
		if v := f.version(i); v != "v2" || starts(h) != 1 {
			t.Errorf("%s changed: %q, %d starts", h.Name, v, starts(h))
		}
	}
}

func TestRollbackDryRun(t *testing.T) {
	f := newFleet(t, Symlink, "hostA", "hostB")
	res, err := f.adapter(t).Rollback(context.Background(), platforms.Revision{ID: "v1"}, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != platforms.Planned || len(res.Plan) != 2 ||
		res.Plan[1] != "hostB: v2 -> v1: ln -sfn /opt/myapp/releases/v1 /opt/myapp/current; "+sshtest.Systemctl+" restart myapp; wait for health" {
		t.Errorf("dry run = %+v", res)
	}
	for i, h := range f.hosts {
		if v := f.version(i); v != "v2" || starts(h) != 1 {
			t.Errorf("dry run changed %s: %q, %d starts", h.Name, v, starts(h))
		}
	}
}

func TestSetArtifact(t *testing.T) {
	f := newFleet(t, Symlink, "hostA")
	a := f.adapter(t)
	res, err := a.SetArtifact(context.Background(), "/opt/myapp/releases/v1", false, nil)
	if err != nil || res.Outcome != platforms.Done || f.version(0) != "v1" {
		t.Fatalf("SetArtifact(path) = %+v, %v; /version %q", res, err, f.version(0))
	}
	res, err = a.SetArtifact(context.Background(), "v2", false, nil)
	if err != nil || res.Outcome != platforms.Done || f.version(0) != "v2" {
		t.Fatalf("SetArtifact(v2) = %+v, %v; /version %q", res, err, f.version(0))
	}
	if _, err := a.SetArtifact(context.Background(), "/opt/elsewhere/v1", false, nil); !errors.Is(err, platforms.ErrNotFound) {
		t.Errorf("unlisted artifact: %v", err)
	}
}

func TestStopAndScaleToZero(t *testing.T) {
	f := newFleet(t, Backup, "hostA", "hostB")
	a := f.adapter(t)
	ctx := context.Background()
	res, err := a.Stop(ctx, false)
	if err != nil || res.Outcome != platforms.Skipped || !strings.Contains(res.Detail, "no rollout in progress to pause on VMs") {
		t.Fatalf("Stop = %+v, %v", res, err)
	}
	if f.version(0) != "v2" || f.version(1) != "v2" {
		t.Fatal("Stop stopped the service")
	}
	res, err = a.ScaleToZero(ctx, true)
	if err != nil || res.Outcome != platforms.Planned || f.version(0) != "v2" {
		t.Fatalf("ScaleToZero dry run = %+v, %v", res, err)
	}
	res, err = a.ScaleToZero(ctx, false)
	if err != nil || res.Outcome != platforms.Done || res.Detail != "stopped myapp on hostA, hostB" {
		t.Fatalf("ScaleToZero = %+v, %v", res, err)
	}
	if f.version(0) != "" || f.version(1) != "" {
		t.Error("service still answers after ScaleToZero")
	}
	res, err = a.ScaleToZero(ctx, false)
	if err != nil || res.Outcome != platforms.Skipped {
		t.Errorf("second ScaleToZero = %+v, %v", res, err)
	}

	// With stop_unit_on_pause, Stop does what the runbook says.
	f.hosts[0].Run(t, f.key, sshtest.Systemctl+" start myapp")
	f.waitVersion(t, 0, "v2")
	f.cfg.StopUnitOnPause = true
	res, err = f.adapter(t).Stop(ctx, false)
	if err != nil || res.Outcome != platforms.Done || res.Detail != "stopped myapp on hostA" {
		t.Errorf("Stop with stop_unit_on_pause = %+v, %v", res, err)
	}
}

func TestHostKeys(t *testing.T) {
	t.Run("unknown host refused", func(t *testing.T) {
		f := newFleet(t, Backup, "hostA", "hostB")
		sshtest.KnownHosts(t, f.cfg.KnownHosts, f.hosts[0]) // hostB missing
		a := f.adapter(t)
		_, err := a.Snapshot(context.Background())
		if err == nil {
			t.Fatal("Snapshot connected to a host missing from known_hosts")
		}
		msg := platformtest.UserMessage(t, err)
		for _, want := range []string{"refusing to connect to hostB (" + f.hosts[1].Addr + ")", "not in " + f.cfg.KnownHosts, ssh.FingerprintSHA256(f.hosts[1].HostKey), "ssh-ed25519"} {
			if !strings.Contains(msg, want) {
				t.Errorf("message lacks %q:\n%s", want, msg)
			}
		}
		_, err = a.Rollback(context.Background(), platforms.Revision{ID: "v1"}, false, nil)
		if err == nil || !strings.Contains(platformtest.UserMessage(t, err), "nothing was changed") {
			t.Fatalf("Rollback = %v", err)
		}
		if f.version(0) != "v2" || starts(f.hosts[0]) != 1 {
			t.Error("hostA was rolled back although hostB cannot be verified")
		}
	})
	t.Run("changed key refused", func(t *testing.T) {
		f := newFleet(t, Backup, "hostA")
		other := sshtest.NewKey(t, t.TempDir(), "impostor")
		line := fmt.Sprintf("[127.0.0.1]:%s %s", portOf(f.hosts[0].Addr), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(other.Public))))
		if err := os.WriteFile(f.cfg.KnownHosts, []byte(line+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := f.adapter(t).Snapshot(context.Background())
		if err == nil {
			t.Fatal("connected despite a changed host key")
		}
		msg := platformtest.UserMessage(t, err)
		if !strings.Contains(msg, "HOST KEY MISMATCH for hostA") || !strings.Contains(msg, ssh.FingerprintSHA256(f.hosts[0].HostKey)) || !strings.Contains(msg, ssh.FingerprintSHA256(other.Public)+" at line 1") {
			t.Errorf("message = %s", msg)
		}
	})
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func TestAuthFailures(t *testing.T) {
	f := newFleet(t, Backup, "hostA")
	t.Run("wrong key", func(t *testing.T) {
		wrong := sshtest.NewKey(t, t.TempDir(), "id_wrong")
		cfg := f.cfg
		cfg.KeyFile = wrong.File
		a, err := New(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = a.Snapshot(context.Background())
		if err == nil {
			t.Fatal("logged in with a key the host does not accept")
		}
		msg := platformtest.UserMessage(t, err)
		if !strings.Contains(msg, "SSH login to hostA as root was refused") || !strings.Contains(msg, ssh.FingerprintSHA256(wrong.Public)) {
			t.Errorf("message = %s", msg)
		}
	})
	t.Run("encrypted key with passphrase from env", func(t *testing.T) {
		const pass = "correct-horse-battery-staple-42"
		block, err := ssh.MarshalPrivateKeyWithPassphrase(f.key.Private, "rollbot", []byte(pass))
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(t.TempDir(), "id_enc")
		if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := f.cfg
		cfg.KeyFile, cfg.KeyPassphraseEnv = file, "ROLLBOT_TEST_SSH_PASSPHRASE"
		t.Setenv("ROLLBOT_TEST_SSH_PASSPHRASE", pass)
		var logs bytes.Buffer
		a, err := New(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		if _, err := a.Snapshot(context.Background()); err != nil {
			t.Fatalf("Snapshot with decrypted key: %v", err)
		}
		t.Setenv("ROLLBOT_TEST_SSH_PASSPHRASE", "wrong-"+pass)
		_, err = New(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
		if err == nil {
			t.Fatal("New accepted a wrong passphrase")
		}
		if strings.Contains(err.Error(), pass) || strings.Contains(logs.String(), pass) {
			t.Error("the passphrase leaked into the error or the log")
		}
	})
	t.Run("ssh agent", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "agent.sock")
		agentBin, err := exec.LookPath("ssh-agent")
		if err != nil {
			t.Fatalf("ssh-agent not found (Debian package openssh-client): %v", err)
		}
		cmd := exec.Command(agentBin, "-D", "-a", sock)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		conn := dialAgent(t, sock)
		if err := addToAgent(conn, f.key); err != nil {
			t.Fatal(err)
		}
		conn.Close()
		t.Setenv("SSH_AUTH_SOCK", sock)
		cfg := f.cfg
		cfg.KeyFile = ""
		a, err := New(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		if snap, err := a.Snapshot(context.Background()); err != nil || snap.Current.ID != "v2" {
			t.Fatalf("Snapshot through the agent = %v, %v", snap, err)
		}
	})
}

func dialAgent(t *testing.T, sock string) net.Conn {
	t.Helper()
	var c net.Conn
	wait.For(t, 10*time.Second, "ssh-agent to listen on "+sock, func() (ok bool, err error) {
		c, err = net.Dial("unix", sock)
		return err == nil, err
	})
	return c
}

func TestUnreachableHost(t *testing.T) {
	f := newFleet(t, Backup, "hostA", "hostB")
	f.hosts[1].Stop()
	snap, err := f.adapter(t).Snapshot(context.Background())
	if err != nil {
		t.Fatalf("Snapshot with one host down: %v", err)
	}
	if snap.Health.Ready != 1 || !strings.Contains(snap.Health.Detail, "cannot reach hostB") {
		t.Errorf("Health = %+v", snap.Health)
	}
	_, err = f.adapter(t).Rollback(context.Background(), platforms.Revision{ID: "v1"}, false, nil)
	if err == nil || !strings.Contains(platformtest.UserMessage(t, err), "cannot reach hostB ("+f.hosts[1].Addr+"): connection refused") || !strings.Contains(platformtest.UserMessage(t, err), "nothing was changed") {
		t.Fatalf("Rollback = %v", err)
	}
}

func TestValidate(t *testing.T) {
	good := Config{Hosts: []Host{{Name: "web1", Addr: "10.0.0.5"}}, KnownHosts: "/etc/rollbot/known_hosts", KeyFile: "/k", Strategy: Backup, Unit: "myapp"}
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"ok", func(*Config) {}, ""},
		{"no hosts", func(c *Config) { c.Hosts = nil }, "hosts: at least one"},
		{"dup host", func(c *Config) { c.Hosts = append(c.Hosts, c.Hosts[0]) }, `hosts[1].name: "web1" used twice`},
		{"bad addr", func(c *Config) { c.Hosts[0].Addr = "a:b:c:d]" }, "hosts[0].addr:"},
		{"no known_hosts", func(c *Config) { c.KnownHosts = "" }, "known_hosts: required"},
		{"strategy", func(c *Config) { c.Strategy = "rsync" }, "strategy:"},
		{"unit", func(c *Config) { c.Unit = "my app;rm" }, "unit:"},
		{"relative path", func(c *Config) { c.BackupDir = "backup" }, "backup_dir: must be an absolute path"},
		{"binary path", func(c *Config) { c.Binary = "bin/myapp" }, "binary:"},
		{"regexp", func(c *Config) { c.VersionRegexp = "myapp (" }, "version_regexp:"},
		{"regexp group", func(c *Config) { c.VersionRegexp = "myapp .*" }, "version_regexp: needs a capture group"},
		{"template", func(c *Config) { c.HealthURL = "http://{{.Host" }, "health_url:"},
		{"order", func(c *Config) { c.HistoryOrder = "alpha" }, "history_order:"},
		{"passphrase without key", func(c *Config) { c.KeyFile = ""; c.KeyPassphraseEnv = "X" }, "key_passphrase_env:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			c.Hosts = append([]Host(nil), good.Hosts...)
			tt.mod(&c)
			err := c.Validate()
			if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("Validate = %v, want %q", err, tt.want)
			}
		})
	}
	bad := good
	bad.HealthURL = "http://{{.Hots}}:8080/health"
	bad.KnownHosts = filepath.Join(t.TempDir(), "known_hosts")
	bad.KeyFile = sshtest.NewKey(t, t.TempDir(), "k").File
	if err := os.WriteFile(bad.KnownHosts, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(bad, nil); err == nil || !strings.Contains(err.Error(), "health_url: host web1") {
		t.Errorf("New with a health_url naming an unknown field = %v", err)
	}
	bad.HealthURL = "http://{{.Host}}:8080/health"
	a, err := New(bad, nil)
	if err != nil {
		t.Fatal(err)
	}
	if u, _ := a.healthURL(0); u != "http://10.0.0.5:8080/health" {
		t.Errorf("health URL = %q", u)
	}
	d := good.withDefaults()
	if d.Hosts[0].Addr != "10.0.0.5:22" || d.InstallPath != "/usr/local/bin/myapp" || d.BackupDir != "/opt/myapp/backup" || d.Binary != "myapp" || d.Hosts[0].User != "rollbot" {
		t.Errorf("defaults = %+v", d)
	}
}

func TestShellQuote(t *testing.T) {
	for _, s := range []string{"plain", "it's", `a"b`, "$(touch /tmp/x)", "`id`", "a b\tc\nd", "'", "''", `\`, "*", ""} {
		out, err := exec.Command("sh", "-c", "printf %s "+shellQuote(s)).Output()
		if err != nil || string(out) != s {
			t.Errorf("sh saw %q for %q (%v)", out, s, err)
		}
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"v1.10.0", "v1.9.0", 1}, {"1.2.3", "1.2.3", 0}, {"v2", "v10", -1}, {"1.0.0", "1.0.0a", -1},
		{"2026.06.26-1", "2026.06.26", 1}, {"v1.2", "1.2", 0},
	}
	for _, tt := range tests {
		if got := compareVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestParseRead(t *testing.T) {
	a := &Adapter{cfg: Config{Strategy: Deb, Package: "myapp", PackagesDir: "/opt/myapp/packages"}}
	r := a.parseRead("@@version\nii |1:2.0.0-1\n@@fingerprint\nii |1:2.0.0-1\n\n@@deployed\n1782468000\n@@listdir\nyes\n@@releases\n" +
		"1782000000.5 myapp_1%3a1.9.0-1_amd64.deb\n1782400000.0 myapp_1%3a2.0.0-1_amd64.deb\n1782400000.0 other_1.0_amd64.deb\n17 myapp_bad name_amd64.deb\n")
	if r.version != "1:2.0.0-1" || r.fingerprint != "ii |1:2.0.0-1" || r.deployed.Unix() != 1782468000 || !r.listDirOK {
		t.Errorf("read = %+v", r)
	}
	if len(r.releases) != 2 || r.releases["1:1.9.0-1"].artifact != "/opt/myapp/packages/myapp_1%3a1.9.0-1_amd64.deb" {
		t.Errorf("releases = %+v", r.releases)
	}
	r = a.parseRead("@@version\nrc |1.0\n@@releases\n")
	if r.version != "" {
		t.Errorf("removed package read as version %q", r.version)
	}
}

func addToAgent(conn net.Conn, key sshtest.Key) error {
	return agent.NewClient(conn).Add(agent.AddedKey{PrivateKey: key.Private, Comment: "rollbot test"})
}

// The do-not-deploy mark is a marker file beside the version's artifact
// on every host; rollbot reads it back and never chooses that version.
func TestMarkDoNotDeployMarker(t *testing.T) {
	for _, c := range []struct {
		strategy Strategy
		marker   string
	}{
		{Symlink, "/opt/myapp/releases/v1.DO_NOT_DEPLOY"},
		{Deb, "/opt/myapp/packages/1.0.0.DO_NOT_DEPLOY"},
	} {
		t.Run(string(c.strategy), func(t *testing.T) {
			f := newFleet(t, c.strategy, "hostA", "hostB")
			a := f.adapter(t)
			ctx := context.Background()
			snap, err := a.Snapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			bad := snap.History[1]
			res, err := a.MarkDoNotDeploy(ctx, bad, "U0BOB")
			if err != nil || res.Outcome != platforms.Done || !strings.Contains(res.Detail, c.marker+" on hostA, hostB") {
				t.Fatalf("MarkDoNotDeploy = %+v, %v", res, err)
			}
			for _, h := range f.hosts {
				b, err := os.ReadFile(h.Path(c.marker))
				if err != nil || !strings.Contains(string(b), "by=U0BOB\n") || !strings.Contains(string(b), "version="+bad.ID+"\n") {
					t.Errorf("%s marker: %q, %v", h.Name, b, err)
				}
			}
			snap, err = a.Snapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(ids(snap.History), ","); len(snap.History) != 2 {
				t.Fatalf("history after the mark = %s (the marker must not be listed as a version)", got)
			}
			if m := snap.History[1]; !m.DoNotDeploy || m.DoNotDeployBy != "U0BOB" || snap.History[0].DoNotDeploy {
				t.Errorf("history after the mark: %+v", snap.History)
			}
			if lkg, ok := platforms.LastKnownGood(snap.History, snap.Current, nil); ok {
				t.Errorf("the marked version is still chosen as last known good: %+v", lkg)
			}
			again, err := a.MarkDoNotDeploy(ctx, bad, "U0CAROL")
			if err != nil || again.Outcome != platforms.Skipped {
				t.Errorf("second mark = %+v, %v", again, err)
			}
		})
	}
}

// A host that is down does not stop the marker on the others, and the
// failure names it.
func TestMarkDoNotDeployHostDown(t *testing.T) {
	f := newFleet(t, Symlink, "hostA", "hostB")
	a := f.adapter(t)
	f.hosts[1].Stop()
	res, err := a.MarkDoNotDeploy(context.Background(), platforms.Revision{ID: "v1"}, "U0BOB")
	msg, ok := platforms.UserMessage(err)
	if !ok || !strings.Contains(msg, "hostB:") || !strings.Contains(msg, "written on hostA") {
		t.Fatalf("result %+v, error %v", res, err)
	}
	if _, err := os.Stat(f.hosts[0].Path("/opt/myapp/releases/v1.DO_NOT_DEPLOY")); err != nil {
		t.Errorf("hostA has no marker: %v", err)
	}
}
