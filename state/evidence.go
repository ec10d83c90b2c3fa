package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"rollbot/platforms"
)

// MaxEvidenceBytes bounds what SaveEvidence stores for one incident.
const MaxEvidenceBytes = 4 << 20

// SaveEvidence keeps the evidence captured before the rollback with the
// incident, as an owner's write: it fails with ErrFenced, storing
// nothing, once the incident has been taken over. Evidence larger than
// MaxEvidenceBytes (encoded) is refused.
func (s *Store) SaveEvidence(ctx context.Context, incident string, c Claim, ev platforms.Evidence) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode evidence %s: %w", incident, err)
	}
	if len(b) > MaxEvidenceBytes {
		return fmt.Errorf("evidence of %s is %d bytes, over the %d limit", incident, len(b), MaxEvidenceBytes)
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
