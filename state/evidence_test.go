package state_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"rollbot/platforms"
	"rollbot/state"
)

// javaLog is n bytes of a log whose JSON encoding is longer than itself:
// newlines, quotes, angle brackets and a tab all need escaping.
func javaLog(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "\tat com.example.orders.internal.RequestHandler.<init>(RequestHandler.java:%d) \"GET /orders\" & <nil>\n", i)
	}
	return b.String()
}

// Evidence captured within the largest limits the config allows
// (capture.total_bytes 4 MiB) is kept with the incident, even though its
// JSON encoding is longer than the text: the stored copy is cut to fit
// the store's limit and says so, instead of the whole evidence being
// refused. The copy is an owner's write: a fenced claim stores nothing.
func TestSaveEvidenceWithinTheStoreLimit(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	in := newWorking(t, s, "RB-1")
	lim := platforms.CaptureLimits{Units: 50, Lines: 10000, SourceBytes: 1 << 20, TotalBytes: 4 << 20}
	if err := lim.Validate(); err != nil {
		t.Fatal(err)
	}
	var ev platforms.Evidence
	for i := range 5 {
		ev.Add(lim, fmt.Sprintf("pod prod/myapp-%d container app", i), "log", javaLog(1<<20), false)
	}
	ev.Cap(lim.TotalBytes)
	if ev.Size() > lim.TotalBytes || ev.Size() < lim.TotalBytes-1024 {
		t.Fatalf("capture of %d bytes; want just under the %d limit", ev.Size(), lim.TotalBytes)
	}

	if err := s.SaveEvidence(ctx, "RB-1", state.ClaimOf(in), &ev); err != nil {
		t.Fatalf("SaveEvidence of a capture within the config's limits: %v", err)
	}
	got, ok, err := s.Evidence(ctx, "RB-1")
	if err != nil || !ok {
		t.Fatalf("Evidence = %v, %v", ok, err)
	}
	t.Logf("captured %d bytes; kept %d sources, %d bytes; missing %q", lim.TotalBytes, len(got.Sources), got.Size(), got.Missing)
	if len(got.Sources) == 0 || got.Size() < 2<<20 {
		t.Errorf("kept %d sources, %d bytes; want most of the capture", len(got.Sources), got.Size())
	}
	if !slices.ContainsFunc(got.Missing, func(m string) bool { return strings.Contains(m, "rollbot's store keeps at most 4.0 MiB") }) {
		t.Errorf("the cut is not said: %q", got.Missing)
	}
	// What was stored is what the caller holds (and uploads).
	if got.Size() != ev.Size() || len(got.Missing) != len(ev.Missing) {
		t.Errorf("stored %d bytes, %d missing; the caller holds %d bytes, %d missing", got.Size(), len(got.Missing), ev.Size(), len(ev.Missing))
	}
	// The newest lines of a cut source are kept.
	last := got.Sources[len(got.Sources)-1]
	if !last.Truncated || !strings.HasSuffix(last.Text, ") \"GET /orders\" & <nil>") {
		t.Errorf("%s: truncated %v, ends %q", last.Name, last.Truncated, last.Text[max(0, len(last.Text)-60):])
	}

	// Small evidence is kept as it is.
	var small platforms.Evidence
	small.Add(lim, "host vm1 unit myapp", "log", "panic: <nil> & \"x\"", false)
	if err := s.SaveEvidence(ctx, "RB-1", state.ClaimOf(in), &small); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := s.Evidence(ctx, "RB-1"); len(got.Sources) != 1 || got.Sources[0].Text != "panic: <nil> & \"x\"" || len(got.Missing) != 0 {
		t.Errorf("small evidence stored as %+v", got)
	}

	// After a takeover the old owner's copy is refused and nothing changes.
	takeoverOnceExpired(t, s, "RB-1", "r2")
	if err := s.SaveEvidence(ctx, "RB-1", state.ClaimOf(in), &ev); !errors.Is(err, state.ErrFenced) {
		t.Fatalf("old owner's SaveEvidence: %v, want ErrFenced", err)
	}
	if got, _, _ := s.Evidence(ctx, "RB-1"); len(got.Sources) != 1 {
		t.Errorf("the fenced write changed the evidence: %d sources", len(got.Sources))
	}
}
