package vm

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"rollbot/platforms"
)

// The test hosts have no systemd, so no journal: the unit's output is the
// systemctl stand-in's log file, read with a configured log_command over
// real SSH. The default command is journalctl's.
func TestCaptureUnitLogOverSSH(t *testing.T) {
	f := newFleet(t, Backup, "vm1", "vm2")
	f.cfg.LogCommand = "tail -n {lines} /opt/.sshtest/systemd/{unit}.log"
	// vm2's log is 50 MB: the capture keeps its last lines within the limit.
	logFile := filepath.Join(f.hosts[1].SystemdDir, "myapp.log")
	fh, err := os.OpenFile(logFile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(fh, 1<<20)
	for i, n := 0, 0; n < 50<<20; i++ {
		k, _ := fmt.Fprintf(w, "flood %09d %s\n", i, strings.Repeat("y", 100))
		n += k
	}
	fmt.Fprintln(w, "panic: the newest line")
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	fh.Close()

	a := f.adapter(t)
	lim := platforms.CaptureLimits{Lines: 5000, SourceBytes: 32 << 10}
	ev, err := a.Capture(context.Background(), lim)
	if err != nil {
		t.Fatalf("Capture: %v", err)
	}
	if len(ev.Sources) != 2 || len(ev.Missing) != 0 {
		t.Fatalf("sources %d, missing %q:\n%.2000s", len(ev.Sources), ev.Missing, ev.Text(""))
	}
	if s := ev.Sources[0]; s.Name != "host vm1 unit myapp" || !strings.Contains(s.Text, "sampleapp listening") || s.Truncated {
		t.Errorf("vm1: %s (truncated %v):\n%s", s.Name, s.Truncated, s.Text)
	}
	s := ev.Sources[1]
	if s.Name != "host vm2 unit myapp" || len(s.Text) > lim.SourceBytes || !s.Truncated || !strings.HasSuffix(s.Text, "panic: the newest line") {
		t.Errorf("vm2: %s, %d bytes (limit %d), truncated %v, ends %q", s.Name, len(s.Text), lim.SourceBytes, s.Truncated, s.Text[max(0, len(s.Text)-60):])
	}

	// A command that fails is said, with its error, and the rest goes on.
	f.cfg.LogCommand = "cat /opt/nonexistent/{unit}.log"
	ev, err = f.adapter(t).Capture(context.Background(), platforms.CaptureLimits{Units: 1})
	if err != nil {
		t.Fatalf("Capture: %v", err)
	}
	if len(ev.Sources) != 0 || len(ev.Missing) != 2 || !strings.Contains(ev.Missing[0], "1 more hosts not captured") ||
		!strings.Contains(ev.Missing[1], "host vm1 unit myapp: `cat /opt/nonexistent/'myapp'.log` failed: ") || !strings.Contains(ev.Missing[1], "No such file") {
		t.Errorf("failing command: sources %d, missing %q", len(ev.Sources), ev.Missing)
	}
}

func TestDefaultLogCommand(t *testing.T) {
	a := &Adapter{cfg: Config{Unit: "my-app.service"}}
	if got := a.logCommand(200); got != "journalctl -u 'my-app.service' -n 200 --no-pager -o short-iso" {
		t.Errorf("default log command = %q", got)
	}
}
