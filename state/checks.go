package state

import (
	"context"
	"fmt"
	"time"
)

// ManualCheck is a verification item rollbot cannot check itself (no
// metrics source, no health URL, no smoke test): one of the service's
// approvers answers it in the thread. The owner of the verification
// writes the unanswered checks when it starts; a click answers one.
type ManualCheck struct {
	Name   string    `json:"name"`
	Answer string    `json:"answer,omitempty"` // CheckOK or CheckNotOK; empty until answered
	By     string    `json:"by,omitempty"`     // the Slack user who answered
	At     time.Time `json:"at,omitzero"`
}

// Answers of a ManualCheck.
const (
	CheckOK    = "ok"
	CheckNotOK = "not_ok"
)

// Answered reports whether somebody answered the check.
func (c ManualCheck) Answered() bool { return c.Answer != "" }

// AnswerCheck records a person's answer to one check of an incident that
// is verifying, atomically: the check must exist and be unanswered, and
// the incident must still be verifying. Otherwise it returns ErrStale with
// the current record (someone answered first, or the verification ended).
// A click carries no claim: it works on whichever replica receives it,
// while another replica owns the verification.
func (s *Store) AnswerCheck(ctx context.Context, id, key string, c ManualCheck) (*Incident, error) {
	if c.Answer != CheckOK && c.Answer != CheckNotOK {
		return nil, fmt.Errorf("answer check %s/%s: unknown answer %q", id, key, c.Answer)
	}
	return s.update(ctx, id, Claim{}, func(_ *txn, in *Incident) error {
		cur, ok := in.Checks[key]
		if in.Status != Verifying || !ok || cur.Answered() {
			return ErrStale
		}
		cur.Answer, cur.By, cur.At = c.Answer, c.By, c.At
		if cur.At.IsZero() {
			cur.At = s.now()
		}
		checks := make(map[string]ManualCheck, len(in.Checks))
		for k, v := range in.Checks {
			checks[k] = v
		}
		checks[key] = cur
		in.Checks = checks
		return nil
	})
}
