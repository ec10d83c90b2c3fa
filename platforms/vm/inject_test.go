package vm

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"rollbot/testkit/platformtest"
	"rollbot/testkit/sshtest"
	"strings"
	"testing"

	"rollbot/platforms"
)

// hostileName is an artifact file name that runs `touch rollbot-pwned` in
// /opt when a shell evaluates it (a file name cannot hold a slash, so it
// walks up from the working directory first).
const hostileName = "myapp_1.5.0_$(cd ..;cd ..;cd ..;cd ..;cd opt;touch rollbot-pwned).deb"

// TestInstallScriptQuotesArtifact: the install script of every strategy,
// run by sh for an artifact that is gone, reports it missing and never
// evaluates the artifact's name.
func TestInstallScriptQuotesArtifact(t *testing.T) {
	for _, strategy := range []Strategy{Backup, Symlink, Deb} {
		t.Run(string(strategy), func(t *testing.T) {
			dir := t.TempDir()
			marker := filepath.Join(dir, "pwned")
			evil := "v1$(touch " + marker + ")`touch " + marker + "`'$(touch " + marker + ")'"
			a := &Adapter{cfg: Config{Strategy: strategy, Package: "myapp", Systemctl: "systemctl", Unit: "myapp",
				InstallPath: filepath.Join(dir, "bin/myapp"), CurrentLink: filepath.Join(dir, "current"),
				BackupDir: dir, ReleasesDir: dir, PackagesDir: dir, Binary: "myapp"}}
			// The host as read: an installed binary, a current link, an
			// installed package (dpkg itself, on this machine).
			if strategy == Deb {
				a.cfg.Package = "dpkg"
			}
			if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(a.cfg.InstallPath, []byte("v0"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Join(dir, "bin"), a.cfg.CurrentLink); err != nil {
				t.Fatal(err)
			}
			fp, err := exec.Command("sh", "-c", a.fingerprintCmd()).Output()
			if err != nil {
				t.Fatalf("fingerprint: %v", err)
			}
			rel := release{version: "1.0", artifact: filepath.Join(dir, evil)}
			script := a.installScript(rel, strings.TrimSuffix(string(fp), "\n"))
			cmd := exec.Command("sh", "-c", script)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if _, serr := os.Stat(marker); serr == nil {
				t.Fatalf("the artifact's name ran as a command; script:\n%s", script)
			}
			if !errors.As(err, &ee) || ee.ExitCode() != exitMissing {
				t.Fatalf("script exit = %v, output %s", err, out)
			}
			if !strings.Contains(string(out), "missing "+rel.artifact) {
				t.Errorf("missing message = %q, want the name as written", out)
			}
		})
	}
}

// TestPreflightQuotesSystemctl: the dry-run check echoes the configured
// systemctl path as text.
func TestPreflightScriptQuotesSystemctl(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "pwned")
	a := &Adapter{cfg: Config{Systemctl: "/nonexistent/sys'$(touch " + marker + ")'ctl"}}
	out, err := exec.Command("sh", "-c", a.preflightScript()).CombinedOutput()
	if _, serr := os.Stat(marker); serr == nil {
		t.Fatal("the systemctl path ran as a command")
	}
	if err == nil || !strings.Contains(string(out), "no "+a.cfg.Systemctl+" command") {
		t.Errorf("preflight = %v, %q", err, out)
	}
}

// TestHostileArtifactNameOverSSH: a real host lists a package whose file
// name holds a command substitution; the file disappears between the read
// and the install (the case where the script echoes its name). The root
// shell on the host must not run the name: no marker file appears.
func TestHostileArtifactNameOverSSH(t *testing.T) {
	f := newFleet(t, Deb, "hostA")
	h := f.hosts[0]
	evil := h.Path("/opt/myapp/packages/" + hostileName)
	sshtest.Install(t, h.Path("/opt/myapp/packages/myapp_1.0.0_amd64.deb"), evil, day3)
	marker := h.Path("/opt/rollbot-pwned")
	a := f.adapter(t)
	snap, err := a.Snapshot(context.Background())
	if err != nil || !strings.Contains(strings.Join(ids(snap.History), ","), "1.5.0") {
		t.Fatalf("Snapshot = %v, %v: the hostile package is not listed", ids(snap.History), err)
	}
	removed := false
	_, err = a.Rollback(context.Background(), platforms.Revision{ID: "1.5.0"}, false, func(p platforms.Progress) {
		if strings.Contains(p.Message, "installing") && !removed {
			removed = true
			if err := os.Remove(evil); err != nil {
				t.Errorf("remove the artifact: %v", err)
			}
		}
	})
	if !removed {
		t.Fatalf("the rollback never reached the install (%v)", err)
	}
	if _, serr := os.Stat(marker); serr == nil {
		t.Fatal("the artifact's file name ran as a command in the host's root shell")
	}
	if err == nil || !strings.Contains(platformtest.UserMessage(t, err), "disappeared before install") {
		t.Errorf("Rollback err = %v, want the artifact reported missing", err)
	}
}
