package state

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"rollbot/platforms"
)

// DrillRun is what a drill incident knows besides the runbook: the bad
// version it deploys and the target as it found it, to restore and to
// compare with at the end.
type DrillRun struct {
	Bad      string             `json:"bad"`
	Original platforms.Revision `json:"original"`
	Replicas int                `json:"replicas"`
	// Left says what the drill could not put back, when it could not.
	Left string `json:"left,omitempty"`
}

// DrillRecord is one finished drill of a service, for the trend.
type DrillRecord struct {
	Incident string                   `json:"incident"`
	At       time.Time                `json:"at"`
	Passed   bool                     `json:"passed"`
	Steps    map[string]time.Duration `json:"steps"`
	Total    time.Duration            `json:"total"`
	Restored bool                     `json:"restored"`
}

// RecordDrill keeps a finished drill (the newest 50 per service).
func (s *Store) RecordDrill(ctx context.Context, service string, r DrillRecord) error {
	b, _ := json.Marshal(r)
	k := s.key("drills", service)
	if err := s.write(ctx, func(c redis.Cmdable) error {
		if err := c.LPush(ctx, k, b).Err(); err != nil {
			return err
		}
		return c.LTrim(ctx, k, 0, 49).Err()
	}); err != nil {
		return fmt.Errorf("record drill of %s: %w", service, err)
	}
	return nil
}

// Drills returns a service's newest drills, newest first.
func (s *Store) Drills(ctx context.Context, service string, n int) ([]DrillRecord, error) {
	raw, err := s.rdb.LRange(ctx, s.key("drills", service), 0, int64(n-1)).Result()
	if err != nil {
		return nil, fmt.Errorf("read drills of %s: %w", service, err)
	}
	var out []DrillRecord
	for _, v := range raw {
		var r DrillRecord
		if json.Unmarshal([]byte(v), &r) == nil {
			out = append(out, r)
		}
	}
	return out, nil
}
