package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"rollbot/platforms"
)

// MaxEvidenceBytes bounds what SaveEvidence stores for one incident
// (encoded).
const MaxEvidenceBytes = 4 << 20

// SaveEvidence keeps the evidence captured before the rollback with the
// incident, as an owner's write: it fails with ErrFenced, storing
// nothing, once the incident has been taken over.
//
// The encoding is longer than the text (JSON escapes newlines, quotes,
// control characters), so evidence within capture.total_bytes may not
// fit MaxEvidenceBytes: then ev is cut, in place, as the capture's own
// total limit cuts it (sources in order, the newest lines of the last one
// kept), until it fits, and the cut is named in ev.Missing. The caller
// holds what was stored.
func (s *Store) SaveEvidence(ctx context.Context, incident string, c Claim, ev *platforms.Evidence) error {
	b, err := fitEvidence(ev)
	if err != nil {
		return fmt.Errorf("encode evidence %s: %w", incident, err)
	}
	n, err := s.run(ctx, fencedSetScript, []string{s.key("incident", incident), s.key("evidence", incident)}, c.Fence, b).Int()
	if err != nil {
		return fmt.Errorf("save evidence %s: %w", incident, err)
	}
	if n != 1 {
		return fmt.Errorf("save evidence %s: %w", incident, ErrFenced)
	}
	return nil
}

// fitEvidence encodes ev, cutting it until the encoding is at most
// MaxEvidenceBytes.
func fitEvidence(ev *platforms.Evidence) ([]byte, error) {
	b, err := encodeEvidence(*ev)
	if err != nil || len(b) <= MaxEvidenceBytes {
		return b, err
	}
	ev.Missed("rollbot's store keeps at most %s of evidence per incident (this capture encodes to %s): the last sources were cut or left out to fit",
		mib(MaxEvidenceBytes), mib(len(b)))
	for {
		if b, err = encodeEvidence(*ev); err != nil || len(b) <= MaxEvidenceBytes {
			return b, err
		}
		// Shrink the text in proportion to the encoding's excess, a little
		// more; a source too small to cut is left out (Cap names it).
		size := ev.Size()
		if size == 0 {
			return nil, fmt.Errorf("%d bytes without any source, over the %d limit", len(b), MaxEvidenceBytes)
		}
		ev.Cap(max(int(float64(size)*float64(MaxEvidenceBytes)/float64(len(b))*0.97), 1))
	}
}

// encodeEvidence is JSON without HTML escaping (a log's <, > and & stay
// one byte each).
func encodeEvidence(ev platforms.Evidence) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(ev); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func mib(n int) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

var fencedSetScript = redis.NewScript(`
local v = redis.call("GET", KEYS[1])
if not v then return -1 end
local ok, inc = pcall(cjson.decode, v)
if not ok or tostring(inc.fence) ~= ARGV[1] then return -1 end
redis.call("SET", KEYS[2], ARGV[2])
return 1`)

// Evidence returns the evidence kept for the incident; ok is false when
// none was.
func (s *Store) Evidence(ctx context.Context, incident string) (ev platforms.Evidence, ok bool, err error) {
	b, err := s.rdb.Get(ctx, s.key("evidence", incident)).Bytes()
	if errors.Is(err, redis.Nil) {
		return ev, false, nil
	}
	if err != nil {
		return ev, false, fmt.Errorf("read evidence %s: %w", incident, err)
	}
	if err := json.Unmarshal(b, &ev); err != nil {
		return ev, false, fmt.Errorf("decode evidence %s: %w", incident, err)
	}
	return ev, true, nil
}

// EvidenceMarkdown renders kept evidence as a section of the Markdown
// timeline export.
func EvidenceMarkdown(ev platforms.Evidence) string {
	var b strings.Builder
	b.WriteString("\n## Evidence kept before the rollback\n\n")
	if len(ev.Sources) == 0 {
		b.WriteString("Nothing could be captured.\n")
	}
	for _, s := range ev.Sources {
		fmt.Fprintf(&b, "### %s (%s", s.Name, s.Kind)
		if s.Truncated {
			b.WriteString(", older lines cut")
		}
		b.WriteString(")\n\n")
		fence := "```"
		for strings.Contains(s.Text, fence) {
			fence += "`"
		}
		fmt.Fprintf(&b, "%s\n%s\n%s\n\n", fence, s.Text, fence)
	}
	if len(ev.Missing) > 0 {
		b.WriteString("### Not captured\n\n")
		for _, m := range ev.Missing {
			b.WriteString("- " + m + "\n")
		}
	}
	return b.String()
}
