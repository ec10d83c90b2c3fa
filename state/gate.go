package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DeployLock stops pipelines from deploying a service after a rollback
// (services.<name>.deploy_lock), until an approver lifts it with
// `/rollback unlock <service>`. The deploy gate (`rollbot deployable`,
// GET /v1/deployable) refuses every version while it is set.
type DeployLock struct {
	Service  string    `json:"service"`
	Incident string    `json:"incident"`
	By       string    `json:"by"` // the Slack user who confirmed the rollback
	Reason   string    `json:"reason,omitempty"`
	At       time.Time `json:"at"`
}

// LockDeploys sets the service's deploy lock (a newer rollback's lock
// replaces an older one).
func (s *Store) LockDeploys(ctx context.Context, l DeployLock) error {
	if l.At.IsZero() {
		l.At = s.now()
	}
	b, _ := json.Marshal(l)
	if err := s.write(ctx, func(c redis.Cmdable) error { return c.Set(ctx, s.key("deploylock", l.Service), b, 0).Err() }); err != nil {
		return fmt.Errorf("lock deploys of %s: %w", l.Service, err)
	}
	return nil
}

// DeployLockOf returns the service's deploy lock, or nil.
func (s *Store) DeployLockOf(ctx context.Context, service string) (*DeployLock, error) {
	b, err := s.rdb.Get(ctx, s.key("deploylock", service)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read deploy lock of %s: %w", service, err)
	}
	var l DeployLock
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("decode deploy lock of %s: %w", service, err)
	}
	return &l, nil
}

// unlockDeploysScript deletes the deploy lock only if it is still the
// one of the given incident (a newer rollback's lock stays).
var unlockDeploysScript = redis.NewScript(`
local v = redis.call("GET", KEYS[1])
if not v then return 0 end
local ok, l = pcall(cjson.decode, v)
if ok and l.incident == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return -1`)

// ErrLockChanged is returned by UnlockDeploys when the deploy lock is no
// longer the one the caller read (a newer rollback set its own).
var ErrLockChanged = errors.New("the deploy lock changed")

// UnlockDeploys lifts the deploy lock set by incident. Lifting a lock that
// is already gone is not an error.
func (s *Store) UnlockDeploys(ctx context.Context, service, incident string) error {
	n, err := s.run(ctx, unlockDeploysScript, []string{s.key("deploylock", service)}, incident).Int()
	if err != nil {
		return fmt.Errorf("unlock deploys of %s: %w", service, err)
	}
	if n < 0 {
		return fmt.Errorf("unlock deploys of %s: %w", service, ErrLockChanged)
	}
	return nil
}

// DeployLocks returns the deploy locks of the given services that have one.
func (s *Store) DeployLocks(ctx context.Context, services []string) (map[string]*DeployLock, error) {
	out := map[string]*DeployLock{}
	for _, name := range services {
		l, err := s.DeployLockOf(ctx, name)
		if err != nil {
			return nil, err
		}
		if l != nil {
			out[name] = l
		}
	}
	return out, nil
}

// Verdict is the deploy gate's answer for one version of a service.
type Verdict struct {
	Service    string `json:"service"`
	Version    string `json:"version"`
	Deployable bool   `json:"deployable"`
	// Reasons say why not, one line each (empty when deployable).
	Reasons []string `json:"reasons,omitempty"`
	// Mark is the DO_NOT_DEPLOY mark the version matched.
	Mark *Mark `json:"mark,omitempty"`
	// DeployLock is the service's post-rollback deploy lock.
	DeployLock *DeployLock `json:"deploy_lock,omitempty"`
	// Rollback is the lock of a rollback in progress on the service.
	Rollback *Lock `json:"rollback,omitempty"`
}

// Deployable answers the deploy gate: version is not deployable when it is
// marked DO_NOT_DEPLOY, when the service has a post-rollback deploy lock,
// or while a rollback of the service is in progress.
func (s *Store) Deployable(ctx context.Context, service, version string) (Verdict, error) {
	v := Verdict{Service: service, Version: version}
	marks, err := s.Marks(ctx, service)
	if err != nil {
		return v, err
	}
	for _, m := range marks {
		if MarkMatches(m, version) {
			m := m
			v.Mark = &m
			break
		}
	}
	if v.DeployLock, err = s.DeployLockOf(ctx, service); err != nil {
		return v, err
	}
	if v.Rollback, err = s.LockHolder(ctx, service); err != nil {
		return v, err
	}
	if m := v.Mark; m != nil {
		r := fmt.Sprintf("%s of %s is marked DO_NOT_DEPLOY (%s, by %s, %s)", version, service, m.Incident, m.By, m.At.UTC().Format(time.RFC3339))
		if m.Reason != "" {
			r += ": " + m.Reason
		}
		v.Reasons = append(v.Reasons, r)
	}
	if l := v.DeployLock; l != nil {
		r := fmt.Sprintf("deploys of %s are locked since %s after rollback %s (by %s); an approver lifts it with /rollback unlock %s", service, l.At.UTC().Format(time.RFC3339), l.Incident, l.By, service)
		v.Reasons = append(v.Reasons, r)
	}
	if l := v.Rollback; l != nil {
		v.Reasons = append(v.Reasons, fmt.Sprintf("a rollback of %s is in progress: %s (started by %s at %s)", service, l.Incident, l.Holder, l.Since.UTC().Format(time.RFC3339)))
	}
	v.Deployable = len(v.Reasons) == 0
	return v, nil
}

// MarkMatches reports whether a version as a pipeline names it matches a
// DO_NOT_DEPLOY mark: the marked artifact itself ("registry/app:v3"), the
// platform's revision id ("3"), the artifact's tag ("v3"), or its image
// digest ("sha256:…", recorded when the registry mark resolved it).
func MarkMatches(m Mark, version string) bool {
	version = strings.TrimSpace(version)
	if version == "" {
		return false
	}
	if version == m.Artifact || version == m.Revision {
		return true
	}
	if t := ImageTag(m.Artifact); t != "" && t == version {
		return true
	}
	d := m.Digest
	if d == "" {
		_, d, _ = strings.Cut(m.Artifact, "@")
	}
	if d != "" && (version == d || strings.HasSuffix(version, "@"+d)) {
		return true
	}
	return false
}

// ImageTag is the tag of an image reference ("v3" of "reg:5000/app:v3"),
// "" when it has none.
func ImageTag(ref string) string {
	ref, _, _ = strings.Cut(ref, "@")
	i := strings.LastIndex(ref, ":")
	if i < 0 || strings.Contains(ref[i+1:], "/") {
		return ""
	}
	return ref[i+1:]
}
