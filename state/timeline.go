package state

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Event is one timeline entry.
type Event struct {
	ID     string    `json:"id"` // stream entry id
	Time   time.Time `json:"time"`
	Actor  string    `json:"actor"` // Slack user id, or "rollbot"
	Step   string    `json:"step"`  // assess, confirm, stop, rollback, database, verify, postactions, ...
	Detail string    `json:"detail"`
}

// Append adds an event to the incident's timeline. rollbot appends before
// each step acts, so a crash mid-step still leaves its trace.
func (s *Store) Append(ctx context.Context, incident string, ev Event) error {
	if ev.Time.IsZero() {
		ev.Time = s.now()
	}
	err := s.write(ctx, func(c redis.Cmdable) error {
		return c.XAdd(ctx, s.eventArgs(incident, ev)).Err()
	})
	if err != nil {
		return fmt.Errorf("append timeline %s: %w", incident, err)
	}
	return nil
}

// eventArgs is the stream entry of one timeline event.
func (s *Store) eventArgs(incident string, ev Event) *redis.XAddArgs {
	if ev.Time.IsZero() {
		ev.Time = s.now()
	}
	return &redis.XAddArgs{
		Stream: s.key("timeline", incident),
		Values: map[string]any{
			"time":   ev.Time.UTC().Format(time.RFC3339Nano),
			"actor":  ev.Actor,
			"step":   ev.Step,
			"detail": ev.Detail,
		},
	}
}

// AppendOwned is Append for an owner's step: it fails with ErrFenced,
// writing nothing, once the incident has been taken over, so a replica that
// wakes up from a pause cannot add to a timeline that is no longer its own.
func (s *Store) AppendOwned(ctx context.Context, incident string, c Claim, ev Event) error {
	if c.IsZero() {
		return s.Append(ctx, incident, ev)
	}
	if ev.Time.IsZero() {
		ev.Time = s.now()
	}
	n, err := s.run(ctx, fencedAppendScript, []string{s.key("incident", incident), s.key("timeline", incident)},
		c.Fence, ev.Time.UTC().Format(time.RFC3339Nano), ev.Actor, ev.Step, ev.Detail).Int()
	if err != nil {
		return fmt.Errorf("append timeline %s: %w", incident, err)
	}
	if n != 1 {
		return fmt.Errorf("append timeline %s: %w", incident, ErrFenced)
	}
	return nil
}

var fencedAppendScript = redis.NewScript(`
local v = redis.call("GET", KEYS[1])
if not v then return -1 end
local ok, inc = pcall(cjson.decode, v)
if not ok or tostring(inc.fence) ~= ARGV[1] then return -1 end
redis.call("XADD", KEYS[2], "*", "time", ARGV[2], "actor", ARGV[3], "step", ARGV[4], "detail", ARGV[5])
return 1`)

// Timeline returns the incident's events, oldest first.
func (s *Store) Timeline(ctx context.Context, incident string) ([]Event, error) {
	msgs, err := s.rdb.XRange(ctx, s.key("timeline", incident), "-", "+").Result()
	if err != nil {
		return nil, fmt.Errorf("read timeline %s: %w", incident, err)
	}
	out := make([]Event, 0, len(msgs))
	for _, m := range msgs {
		ev := Event{ID: m.ID}
		ev.Actor, _ = m.Values["actor"].(string)
		ev.Step, _ = m.Values["step"].(string)
		ev.Detail, _ = m.Values["detail"].(string)
		if ts, ok := m.Values["time"].(string); ok {
			ev.Time, _ = time.Parse(time.RFC3339Nano, ts)
		}
		out = append(out, ev)
	}
	return out, nil
}

// Markdown renders a timeline as a Markdown document for a postmortem.
func Markdown(in *Incident, events []Event, name func(actor string) string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Incident timeline %s: rollback of %s\n\n", in.ID, in.Service)
	fmt.Fprintf(&b, "- Requested by: %s\n", name(in.RequestedBy))
	if in.Reason != "" {
		fmt.Fprintf(&b, "- Reason: %s\n", in.Reason)
	}
	if in.Bad.ID != "" {
		fmt.Fprintf(&b, "- Bad version: %s\n", in.Bad.Label())
	}
	if in.Target.ID != "" {
		fmt.Fprintf(&b, "- Rolled back to: %s\n", in.Target.Label())
	}
	if !in.DeployedAt.IsZero() {
		fmt.Fprintf(&b, "- Bad deploy started: %s\n", in.DeployedAt.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(&b, "- Status: %s\n\n", in.Status)
	b.WriteString("| Time (UTC) | Actor | Step | Detail |\n|---|---|---|---|\n")
	size := 0
	for _, ev := range events {
		size += 32 + len(ev.Actor) + len(ev.Step) + len(ev.Detail)
	}
	b.Grow(size)
	var ts [32]byte
	names := map[string]string{} // a timeline has few actors
	for _, ev := range events {
		n, ok := names[ev.Actor]
		if !ok {
			n = name(ev.Actor)
			names[ev.Actor] = n
		}
		b.WriteString("| ")
		b.Write(ev.Time.UTC().AppendFormat(ts[:0], "2006-01-02 15:04:05"))
		b.WriteString(" | ")
		writeCell(&b, n)
		b.WriteString(" | ")
		writeCell(&b, ev.Step)
		b.WriteString(" | ")
		writeCell(&b, ev.Detail)
		b.WriteString(" |\n")
	}
	return b.String()
}

// writeCell writes s as one Markdown table cell: '|' escaped, line
// breaks as <br>.
func writeCell(b *strings.Builder, s string) {
	for {
		i := strings.IndexAny(s, "|\n")
		if i < 0 {
			b.WriteString(s)
			return
		}
		b.WriteString(s[:i])
		if s[i] == '|' {
			b.WriteString(`\|`)
		} else {
			b.WriteString("<br>")
		}
		s = s[i+1:]
	}
}
