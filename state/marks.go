package state

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"rollbot/platforms"
)

// Mark records that an artifact must not be deployed again.
type Mark struct {
	Artifact string    `json:"artifact"`
	Revision string    `json:"revision"`
	By       string    `json:"by"`
	Incident string    `json:"incident"`
	At       time.Time `json:"at"`
	Reason   string    `json:"reason,omitempty"`
	// Digest is the image's manifest digest, once the registry mark
	// resolved it.
	Digest string `json:"digest,omitempty"`
	// Registry is the mark rollbot made in the image's OCI registry.
	Registry *RegistryMark `json:"registry,omitempty"`
}

// RegistryMark is a DO_NOT_DEPLOY mark made in an OCI registry: an
// artifact whose subject is the bad image's manifest.
type RegistryMark struct {
	Repository string `json:"repository"` // "registry.example.com/team/app"
	Digest     string `json:"digest"`     // the bad image's manifest digest
	Referrer   string `json:"referrer"`   // the mark artifact's manifest digest
	// Via says how registries find it: "referrers API" or the fallback
	// tag ("sha256-…") for registries without that API.
	Via string `json:"via"`
	// TagDeleted is the tag rollbot deleted (registry.delete_tag).
	TagDeleted string    `json:"tag_deleted,omitempty"`
	At         time.Time `json:"at"`
}

// SetRegistryMark records the registry mark of a marked artifact.
func (s *Store) SetRegistryMark(ctx context.Context, service, artifact string, rm RegistryMark) error {
	marks, err := s.Marks(ctx, service)
	if err != nil {
		return err
	}
	m, ok := marks[artifact]
	if !ok {
		return fmt.Errorf("record registry mark of %s %s: no DO_NOT_DEPLOY mark", service, artifact)
	}
	if rm.At.IsZero() {
		rm.At = s.now()
	}
	m.Digest, m.Registry = rm.Digest, &rm
	return s.MarkDoNotDeploy(ctx, service, m)
}

// MarkDoNotDeploy records a DO_NOT_DEPLOY mark for a service's artifact.
func (s *Store) MarkDoNotDeploy(ctx context.Context, service string, m Mark) error {
	if m.At.IsZero() {
		m.At = s.now()
	}
	b, _ := json.Marshal(m)
	if err := s.write(ctx, func(c redis.Cmdable) error { return c.HSet(ctx, s.key("dnd", service), m.Artifact, b).Err() }); err != nil {
		return fmt.Errorf("mark %s %s DO_NOT_DEPLOY: %w", service, m.Artifact, err)
	}
	return nil
}

// Marks returns the service's DO_NOT_DEPLOY marks by artifact.
func (s *Store) Marks(ctx context.Context, service string) (map[string]Mark, error) {
	raw, err := s.rdb.HGetAll(ctx, s.key("dnd", service)).Result()
	if err != nil {
		return nil, fmt.Errorf("read DO_NOT_DEPLOY marks of %s: %w", service, err)
	}
	out := make(map[string]Mark, len(raw))
	for k, v := range raw {
		var m Mark
		if json.Unmarshal([]byte(v), &m) == nil {
			out[k] = m
		}
	}
	return out, nil
}

// Approve records user's approval of an incident's step, valid for ttl,
// and returns the approvers whose approval is still valid, oldest first.
func (s *Store) Approve(ctx context.Context, incident, step, user string, ttl time.Duration) ([]string, error) {
	k := s.key("approvals", incident, step)
	now := s.now()
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, k, redis.Z{Score: float64(now.Add(ttl).UnixMilli()), Member: user})
		p.Expire(ctx, k, 24*time.Hour)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("record approval: %w", err)
	}
	return s.Approvals(ctx, incident, step)
}

// Approvals returns the approvers of a step whose approval has not expired.
func (s *Store) Approvals(ctx context.Context, incident, step string) ([]string, error) {
	min := strconv.FormatInt(s.now().UnixMilli(), 10)
	out, err := s.rdb.ZRangeByScore(ctx, s.key("approvals", incident, step), &redis.ZRangeBy{Min: "(" + min, Max: "+inf"}).Result()
	if err != nil {
		return nil, fmt.Errorf("read approvals: %w", err)
	}
	return out, nil
}

// ClearApprovals removes every approval of a step (after it ran, or on refusal).
func (s *Store) ClearApprovals(ctx context.Context, incident, step string) error {
	return s.rdb.Del(ctx, s.key("approvals", incident, step)).Err()
}

// SetClock replaces the store's clock (tests of expiry).
func (s *Store) SetClock(now func() time.Time) { s.now = now }

// RecordDeployed remembers that a service ran rev, as rollbot saw it (at an
// assessment, after a rollback). It is rollbot's own deploy record: the
// Docker adapters use it to know previous images when the engine has
// forgotten them. The newest 50 distinct artifacts are kept.
func (s *Store) RecordDeployed(ctx context.Context, service string, rev platforms.Revision) error {
	if rev.Artifact == "" {
		return nil
	}
	if rev.CreatedAt.IsZero() {
		rev.CreatedAt = s.now()
	}
	b, _ := json.Marshal(rev)
	k := s.key("deployed", service)
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, k+":rev", rev.Artifact, b)
		p.ZAdd(ctx, k, redis.Z{Score: float64(rev.CreatedAt.UnixMilli()), Member: rev.Artifact})
		p.ZRemRangeByRank(ctx, k, 0, -51)
		return nil
	})
	if err != nil {
		return fmt.Errorf("record deployed %s: %w", service, err)
	}
	return nil
}

// Deployed returns the revisions recorded by RecordDeployed, newest first.
func (s *Store) Deployed(ctx context.Context, service string) ([]platforms.Revision, error) {
	k := s.key("deployed", service)
	arts, err := s.rdb.ZRevRange(ctx, k, 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("read deployed %s: %w", service, err)
	}
	if len(arts) == 0 {
		return nil, nil
	}
	raw, err := s.rdb.HMGet(ctx, k+":rev", arts...).Result()
	if err != nil {
		return nil, fmt.Errorf("read deployed %s: %w", service, err)
	}
	out := make([]platforms.Revision, 0, len(arts))
	for i, r := range raw {
		var rev platforms.Revision
		if str, ok := r.(string); ok && json.Unmarshal([]byte(str), &rev) == nil {
			out = append(out, rev)
		} else {
			out = append(out, platforms.Revision{ID: arts[i], Artifact: arts[i]})
		}
	}
	return out, nil
}
