package state

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// alertKey is the key of an alert group's incident (group keys are long
// label sets: hashed).
func (s *Store) alertKey(groupKey string) string {
	h := sha256.Sum256([]byte(groupKey))
	return s.key("alert", hex.EncodeToString(h[:12]))
}

// alertPending marks a group whose incident is being opened.
const alertPending = "pending"

// ClaimAlertGroup makes this caller the one that opens the incident of an
// alert group, across replicas: it returns ok when the group had no
// incident yet (or only a closed one whose alert was resolved since), and
// else the incident it has ("" while another replica is opening it).
func (s *Store) ClaimAlertGroup(ctx context.Context, groupKey string, ttl time.Duration) (ok bool, incident string, err error) {
	k := s.alertKey(groupKey)
	for range 3 {
		set, err := s.rdb.SetNX(ctx, k, alertPending, ttl).Result()
		if err != nil {
			return false, "", fmt.Errorf("claim alert group: %w", err)
		}
		if set {
			return true, "", nil
		}
		v, err := s.rdb.Get(ctx, k).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return false, "", fmt.Errorf("read alert group: %w", err)
		}
		id, resolved := strings.CutSuffix(v, "|resolved")
		if id == alertPending {
			return false, "", nil
		}
		if resolved {
			if in, err := s.Get(ctx, id); err == nil && in.Status.Final() {
				// The alert fired again after its incident ended: a new one.
				if s.rdb.Del(ctx, k).Err() == nil {
					continue
				}
			}
		}
		return false, id, nil
	}
	return false, "", fmt.Errorf("claim alert group: %w", ErrStale)
}

// SetAlertGroup records the incident of a claimed alert group; an empty
// incident gives the claim up.
func (s *Store) SetAlertGroup(ctx context.Context, groupKey, incident string, ttl time.Duration) error {
	k := s.alertKey(groupKey)
	var err error
	if incident == "" {
		err = s.rdb.Del(ctx, k).Err()
	} else {
		err = s.rdb.Set(ctx, k, incident, ttl).Err()
	}
	if err != nil {
		return fmt.Errorf("record alert group: %w", err)
	}
	return nil
}

// ResolveAlertGroup marks the group's alert resolved and returns its
// incident ("" when it has none).
func (s *Store) ResolveAlertGroup(ctx context.Context, groupKey string, ttl time.Duration) (string, error) {
	k := s.alertKey(groupKey)
	v, err := s.rdb.Get(ctx, k).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read alert group: %w", err)
	}
	id, _ := strings.CutSuffix(v, "|resolved")
	if id == alertPending {
		return "", nil
	}
	if err := s.rdb.Set(ctx, k, id+"|resolved", ttl).Err(); err != nil {
		return "", fmt.Errorf("record alert resolved: %w", err)
	}
	return id, nil
}
