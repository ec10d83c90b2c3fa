package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"rollbot/platforms"
	"rollbot/testkit/logtest"
	"rollbot/testkit/nettest"
	"rollbot/testkit/sshtest"
)

// TestHostTextPolicy: a failed step on a host is shown to users in
// rollbot's words (remote stderr, a user message, a network phrase) or not
// at all — never as the raw error, never as "see the bot log" without the
// reference the handlers add to errors without a user message.
func TestHostTextPolicy(t *testing.T) {
	_, refused := net.Dial("tcp", nettest.ClosedAddr(t))
	if refused == nil {
		t.Fatal("dial a closed address succeeded")
	}
	tests := []struct {
		name string
		err  error
		text string
		ok   bool
	}{
		{"remote stderr", &cmdError{host: "web1", code: 1, stderr: "dpkg: error processing\n"}, "dpkg: error processing", true},
		{"user message", platforms.Userf(errors.New("x"), "cannot reach web1"), "cannot reach web1", true},
		{"network", fmt.Errorf("session: %w", refused), "connection refused", true},
		{"deadline", fmt.Errorf("command on web1: %w", context.DeadlineExceeded), "timed out", true},
		{"anything else", errors.New("ssh: unexpected packet in response to channel open: <nil>"), "an unexpected error", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text, ok := hostText(tt.err)
			if text != tt.text || ok != tt.ok {
				t.Fatalf("hostText = %q, %v; want %q, %v", text, ok, tt.text, tt.ok)
			}
			if strings.Contains(text, "bot log") {
				t.Fatalf("hostText points to the log without a reference: %q", text)
			}
		})
	}
}

// TestFailureMessageWithoutWords: when the failing host's error has no
// words for users, the message says so without the raw text and reports
// that it is not curated (rollTo then returns the plain error).
func TestFailureMessageWithoutWords(t *testing.T) {
	raw := errors.New("ssh: handshake internals 10.0.0.5")
	msg, curated := failureMessage([]string{"web1"}, "web2", "to install v1", raw, "v1", "v2", []string{"web3"})
	if curated || strings.Contains(msg, "10.0.0.5") || strings.Contains(msg, "bot log") {
		t.Fatalf("failureMessage = %q, curated %v", msg, curated)
	}
	want := "rolled back web1 to v1; web2 failed to install v1: an unexpected error; hosts not touched: web3"
	if msg != want {
		t.Fatalf("failureMessage = %q, want %q", msg, want)
	}
	msg, curated = failureMessage(nil, "web1", "to restart", &cmdError{host: "web1", code: 1, stderr: "unit not found"}, "v1", "v2", nil)
	if !curated || !strings.Contains(msg, "web1 failed to restart: unit not found") {
		t.Fatalf("failureMessage = %q, curated %v", msg, curated)
	}
}

// TestCaptureUnknownErrorHasAReference: a host that answers like an SSH
// server and then with bytes no SSH server sends fails the capture with an
// error rollbot has no words for. The evidence file says so with a
// reference into the log, never the raw error; the log line with that
// reference holds the cause.
func TestCaptureUnknownErrorHasAReference(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Write([]byte("SSH-2.0-OpenSSH_9.6\r\n\xff\xff\xff\xffnot a packet"))
				io.Copy(io.Discard, c) // until the client gives up
			}()
		}
	}()
	dir := t.TempDir()
	key := sshtest.NewKey(t, dir, "id_rollbot")
	known := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(known, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &logtest.Buffer{}
	a, err := New(Config{Hosts: []Host{{Name: "web1", Addr: ln.Addr().String()}}, KnownHosts: known, KeyFile: key.File,
		Timeout: 5 * time.Second, Strategy: Backup, Unit: "myapp"}, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := a.Capture(context.Background(), platforms.CaptureLimits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Missing) != 1 {
		t.Fatalf("missing = %q", ev.Missing)
	}
	text := ev.Missing[0]
	if !strings.HasPrefix(text, "host web1 unit myapp: log not read (cannot connect, see the bot log, ref ") {
		t.Errorf("evidence text = %q", text)
	}
	for _, raw := range []string{ln.Addr().String(), "ssh:", "handshake"} {
		if strings.Contains(text, raw) {
			t.Errorf("the evidence shows the raw error (%q): %q", raw, text)
		}
	}
	line := logtest.RefLine(t, logs.String(), logtest.Ref(t, text))
	if !strings.Contains(line, `"msg":"capture: connect"`) || !strings.Contains(line, "SSH handshake with web1") {
		t.Errorf("the referenced log line does not hold the cause: %s", line)
	}
}
