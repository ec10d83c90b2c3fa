package state

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Lock is the per-service rollback lock: one rollback per service at a time.
type Lock struct {
	Service  string    `json:"service"`
	Token    string    `json:"token"`
	Incident string    `json:"incident"`
	Holder   string    `json:"holder"` // Slack user who started it
	Since    time.Time `json:"since"`
}

// ErrLocked is returned with the current holder when the lock is taken.
var ErrLocked = errors.New("service locked")

// unlockSrc deletes the lock only if the caller still holds it (its
// token); unlockScript runs it on its own, a final move inside its
// transaction.
const unlockSrc = `
local v = redis.call("GET", KEYS[1])
if not v then return 0 end
local ok, l = pcall(cjson.decode, v)
if ok and l.token == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return -1`

var unlockScript = redis.NewScript(unlockSrc)

// refreshScript extends the lock only if the caller still holds it.
var refreshScript = redis.NewScript(`
local v = redis.call("GET", KEYS[1])
if not v then return 0 end
local ok, l = pcall(cjson.decode, v)
if ok and l.token == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end
return -1`)

// AcquireLock takes the service's lock for an incident. When someone else
// holds it, it returns ErrLocked and their Lock so the user can be told who.
func (s *Store) AcquireLock(ctx context.Context, service, incident, holder string, ttl time.Duration) (*Lock, error) {
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		return nil, err
	}
	l := &Lock{Service: service, Token: hex.EncodeToString(tok), Incident: incident, Holder: holder, Since: s.now()}
	b, _ := json.Marshal(l)
	var ok bool
	err := s.write(ctx, func(c redis.Cmdable) error {
		var err error
		ok, err = c.SetNX(ctx, s.key("lock", service), b, ttl).Result()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", service, err)
	}
	if ok {
		return l, nil
	}
	cur, err := s.LockHolder(ctx, service)
	if err != nil {
		return nil, err
	}
	if cur == nil { // expired in between: try once more
		return s.AcquireLock(ctx, service, incident, holder, ttl)
	}
	return cur, ErrLocked
}

// LockHolder returns the current lock of a service, or nil.
func (s *Store) LockHolder(ctx context.Context, service string) (*Lock, error) {
	b, err := s.rdb.Get(ctx, s.key("lock", service)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read lock %s: %w", service, err)
	}
	var l Lock
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("decode lock %s: %w", service, err)
	}
	return &l, nil
}

// RefreshLock extends a held lock; it fails if the token no longer holds it.
func (s *Store) RefreshLock(ctx context.Context, service, token string, ttl time.Duration) error {
	n, err := s.run(ctx, refreshScript, []string{s.key("lock", service)}, token, ttl.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("refresh lock %s: %w", service, err)
	}
	if n != 1 {
		return fmt.Errorf("refresh lock %s: %w", service, ErrLocked)
	}
	return nil
}

// ReleaseLock frees the lock if token still holds it; releasing a lock
// that expired or was taken over is not an error.
func (s *Store) ReleaseLock(ctx context.Context, service, token string) error {
	if token == "" {
		return nil
	}
	if err := s.run(ctx, unlockScript, []string{s.key("lock", service)}, token).Err(); err != nil {
		return fmt.Errorf("release lock %s: %w", service, err)
	}
	return nil
}

// Once reports true the first time key is seen within ttl, false after.
// It makes redelivered envelopes and double clicks act once.
func (s *Store) Once(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	var ok bool
	err := s.write(ctx, func(c redis.Cmdable) error {
		var err error
		ok, err = c.SetNX(ctx, s.key("once", key), s.now().UTC().Format(time.RFC3339), ttl).Result()
		return err
	})
	if err != nil {
		return false, fmt.Errorf("idempotency key: %w", err)
	}
	return ok, nil
}
