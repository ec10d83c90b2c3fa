package vm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"rollbot/platforms"
	"rollbot/testkit/nettest"
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
