package sshtest

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

// A fleet of two hosts, each with its own copy of the layout and its own
// running service on its own port.
func TestStartBackupFleet(t *testing.T) {
	bin := t.TempDir()
	v1 := BuildSampleApp(t, bin, "v1", map[string]string{"version": "v1"})
	v2 := BuildSampleApp(t, bin, "v2", map[string]string{"version": "v2", "errorRatio": "0.3"})
	deployed := time.Date(2026, 6, 26, 10, 0, 0, 0, time.UTC)
	f := StartBackupFleet(t, []string{"web1", "web2"}, BackupLayout{
		Unit: "myapp", InstallPath: "/opt/myapp/bin/myapp", BackupDir: "/opt/myapp/backup",
		Running: Release{Version: "v2", Binary: v2, Time: deployed},
		Backups: []Release{{Version: "v1", Binary: v1, Time: deployed.Add(-time.Hour)}},
	})
	if len(f.Hosts) != 2 || f.Ports[0] == f.Ports[1] {
		t.Fatalf("hosts %d, ports %v", len(f.Hosts), f.Ports)
	}
	want, _ := os.ReadFile(v1)
	for i, h := range f.Hosts {
		if v := f.Version(i); v != "v2" {
			t.Errorf("%s: /version = %q, want v2", h.Name, v)
		}
		got, err := os.ReadFile(h.Path("/opt/myapp/backup/v1/myapp"))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: backup v1 missing or different: %v", h.Name, err)
		}
		st, err := os.Stat(h.Path("/opt/myapp/bin/myapp"))
		if err != nil || !st.ModTime().Equal(deployed) {
			t.Errorf("%s: install path mtime = %v, %v; want %s", h.Name, st.ModTime(), err, deployed)
		}
		// Over SSH the host sees its own /opt.
		if out := h.Run(t, f.Key, "/opt/myapp/bin/myapp -version"); strings.TrimSpace(out) != "v2" {
			t.Errorf("%s: -version over ssh = %q", h.Name, out)
		}
		if j := h.Journal("myapp"); !strings.Contains(j, "start /opt/myapp/bin/myapp -listen 127.0.0.1:") {
			t.Errorf("%s: journal = %q", h.Name, j)
		}
	}
	if !strings.Contains(readFile(t, f.KnownHosts), f.Hosts[1].Addr[len("127.0.0.1:"):]) {
		t.Error("known_hosts does not list the second host")
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
