// Package state keeps rollbot's durable state in Redis: incident records,
// each incident's timeline (a Redis Stream), the per-service rollback lock,
// idempotency keys for clicks and redelivered envelopes, approvals with
// expiry, and the versions marked DO_NOT_DEPLOY.
//
// Keys (all under a configurable prefix p, default "rollbot"; the braces
// are a Redis Cluster hash tag, see below):
//
//	{p}:incident:<id>            JSON incident record
//	{p}:incidents                zset of incident ids by creation time
//	{p}:incidents:<service>      zset of a service's incident ids
//	{p}:active                   set of incidents not yet finished
//	{p}:timeline:<id>            stream: time, actor, step, detail
//	{p}:lock:<service>           JSON lock holder, with expiry
//	{p}:lease:<id>               "<owner>|<fence>" of a working incident, with expiry
//	{p}:once:<key>               idempotency marker, with expiry
//	{p}:approvals:<id>:<step>    zset approver -> expiry (unix ms)
//	{p}:dnd:<service>            hash artifact -> JSON mark
//	{p}:deployed:<service>       zset artifact by time seen deployed
//	{p}:deployed:<service>:rev   hash artifact -> JSON revision
//	{p}:schema:<service>         zset of JSON applied-migration records
//	{p}:scrape:<service>         list of scrape samples (platforms/scrape), capped
//	{p}:scrape:<service>:layouts hash of their latency bucket layouts
//	{p}:scrape:<service>:owner   the replica that scrapes the service, with expiry
//	{p}:seq                      incident counter
//
// Redis can be one server, Sentinel or Cluster; REDIS_URL says which
// (ParseRedisURL, Connect):
//
//	redis://[:pass@]host:6379/0, rediss://…, unix:///path.sock     one server
//	redis://sentinel1:26379/0?master_name=NAME&addr=sentinel2:26379  Sentinel
//	redis+cluster://node1:6379?addr=node2:6379&addr=node3:6379       Cluster
//
// On Cluster, a transaction or script may only touch keys of one hash
// slot; the {p} hash tag puts every rollbot key in the same slot, so all
// of them (an incident and its indexes, a lock and its incident) can be
// written atomically together. rollbot's state is small (kilobytes per
// incident), so one slot, on one master, is plenty; Cluster buys
// availability here, not capacity.
package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"rollbot/platforms"
)

// Store is the Redis-backed state. It is safe for concurrent use.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	now    func() time.Time
	lease  time.Duration // owner lease of an incident created in a working status
	dur    Durability    // replicas every write waits for (Sentinel)
}

// New returns a Store using rdb; prefix namespaces every key.
func New(rdb redis.UniversalClient, prefix string) *Store {
	if prefix == "" {
		prefix = "rollbot"
	}
	return &Store{rdb: rdb, prefix: prefix, now: time.Now, lease: 15 * time.Second}
}

// Prefix is the prefix of every key of the store.
func (s *Store) Prefix() string { return s.prefix }

// SetLease sets the owner lease that Create gives an incident created in a
// working status (assessing); default 15s.
func (s *Store) SetLease(d time.Duration) {
	if d > 0 {
		s.lease = d
	}
}

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping redis: %w", err)
	}
	return nil
}

// key builds "{<prefix>}:part:part". The braces are a Redis Cluster hash
// tag: every key of rollbot hashes to one slot, so the multi-key
// transactions and scripts work on Cluster (see hashTag).
func (s *Store) key(parts ...string) string {
	k := hashTag(s.prefix)
	for _, p := range parts {
		k += ":" + p
	}
	return k
}

// Status is where an incident stands in the runbook.
type Status string

const (
	Assessing         Status = "assessing"
	AwaitingConfirm   Status = "awaiting_confirmation"
	AwaitingDBApprove Status = "awaiting_db_approval"
	RollingBackDB     Status = "rolling_back_database"
	// SwitchingEndpoint: after a restore, rollbot points the app at the
	// restored data (an RDS instance rename or a Kubernetes Secret).
	SwitchingEndpoint Status = "switching_endpoint"
	// AwaitingSwitch: after a restore, a DB approver switches the app's
	// database endpoint by hand and says so with a button.
	AwaitingSwitch Status = "awaiting_endpoint_switch"
	Stopping       Status = "stopping"
	RollingBack    Status = "rolling_back"
	Verifying      Status = "verifying"
	// DrillRestoring: a drill that ended before its rollback (cancelled,
	// expired, no version to roll back to, the assessment failed) puts
	// back the version it found, then ends cancelled.
	DrillRestoring Status = "drill_restoring"
	RollbackFailed Status = "rollback_failed"
	Completed      Status = "completed"
	VerifyFailed   Status = "verification_failed"
	Cancelled      Status = "cancelled"
	Planned        Status = "dry_run"
	Interrupted    Status = "interrupted"
	Closed         Status = "closed" // ended by a person after a failed rollback or verification
)

// Final reports whether nothing more will happen to the incident.
func (s Status) Final() bool {
	switch s {
	case Completed, Cancelled, Planned, Interrupted, Closed:
		return true
	}
	return false
}

// Incident is one /rollback run.
type Incident struct {
	ID          string             `json:"id"`
	Service     string             `json:"service"`
	Channel     string             `json:"channel"`
	ThreadTS    string             `json:"thread_ts,omitempty"` // the assessment message, root of the thread
	RequestedBy string             `json:"requested_by"`
	Reason      string             `json:"reason,omitempty"`
	DryRun      bool               `json:"dry_run,omitempty"`
	To          string             `json:"to,omitempty"` // the --to the user asked for
	Status      Status             `json:"status"`
	CreatedAt   time.Time          `json:"created_at"`
	UpdatedAt   time.Time          `json:"updated_at"`
	Bad         platforms.Revision `json:"bad"`
	Target      platforms.Revision `json:"target"`
	DeployedAt  time.Time          `json:"deployed_at,omitzero"`
	Platform    string             `json:"platform"`
	PlatformTgt string             `json:"platform_target"`
	// MigrationsRan is the decision gate: the DB step comes first.
	MigrationsRan bool `json:"migrations_ran,omitempty"`
	DBDestructive bool `json:"db_destructive,omitempty"`
	// DBManual: rollbot could not tell whether migrations ran, so the DB
	// step is a DB approver's confirmation that it was checked by hand.
	DBManual bool `json:"db_manual,omitempty"`
	// DBOptional: every migration only expanded the schema, so the old
	// release runs on it; a DB approver may roll back the app only.
	DBOptional bool   `json:"db_optional,omitempty"`
	DBPlan     string `json:"db_plan,omitempty"`
	DecidedBy  string `json:"decided_by,omitempty"`
	// Messages maps a role ("assessment", "progress", "verify", "db",
	// "postactions") to the ts of the message that shows it.
	Messages map[string]string `json:"messages,omitempty"`
	// Lock is the token of the service lock this incident holds.
	Lock string `json:"lock,omitempty"`
	// Assessment is the step-1 result as rendered, so the message can be
	// re-rendered with the decision after a restart.
	Assessment json.RawMessage `json:"assessment,omitempty"`
	// Done lists post-rollback checklist items ticked off, by key.
	Done map[string]string `json:"done,omitempty"`
	// PostPlan is what the post-rollback actions will write besides
	// rollbot's own state (the registry mark, a deleted tag, the deploy
	// lock), shown with the confirmation so the approver confirms it too.
	PostPlan string `json:"post_plan,omitempty"`
	// Notes are lines about checklist items rollbot tried and could not
	// do (a registry that is down), by key; the item stays open.
	Notes map[string]string `json:"notes,omitempty"`

	// Owner is the replica doing the incident's current working step, and
	// Fence the fencing token of its claim (see Claim); TakenOver lists
	// every change of owner after a replica stopped.
	Owner     string     `json:"owner,omitempty"`
	Fence     int64      `json:"fence"`
	TakenOver []Takeover `json:"taken_over,omitempty"`
	// Show is the message a move into a wait still owes the thread (the
	// decision buttons, the DB approval request), until the replica that
	// made the move, or one that took the showing over (see Move.Show),
	// has put it on Slack; "" once shown.
	Show string `json:"show,omitempty"`
	// Steps records, per write step ("stop", "rollback", "database",
	// "fallback", "verify"), "started" before it acts and "done" after,
	// so a replica that takes the incident over knows where it stopped.
	Steps map[string]string `json:"steps,omitempty"`
	// Fallback is the fallback being run ("set_image", "scale_zero").
	Fallback string `json:"fallback,omitempty"`
	// DBApprovedBy are the DB approvers whose approvals started the database step.
	DBApprovedBy []string `json:"db_approved_by,omitempty"`
	// Switch is how the app is pointed at restored data after a restore
	// ("rename", "secret", "manual"); empty when no switch is needed.
	Switch string `json:"switch,omitempty"`
	// SwitchAt names the renamed original instance
	// (<id>-pre-rollback-<time>): set once when the switch step starts, so
	// a replica that takes it over uses the same name.
	SwitchAt time.Time `json:"switch_at,omitzero"`
	// StopLine is what stopping the rollout did, shown above the progress.
	StopLine string `json:"stop_line,omitempty"`
	// HeldUntil is when a failed rollback that offers fallbacks gives the
	// service lock up (and is closed) if nobody acts.
	HeldUntil time.Time `json:"held_until,omitzero"`
	// StepStarted is when the current working step started (its budget
	// counts from here, across takeovers).
	StepStarted time.Time `json:"step_started,omitzero"`
	// Checks are the verification items a person answers by hand, by
	// key, with who answered and when (see ManualCheck).
	Checks map[string]ManualCheck `json:"checks,omitempty"`
	// Timings are the measured runbook steps ("assess", "database",
	// "stop", "rollback", "fallback", "verify"): when each started and
	// ended, for the budgets shown live and in the timeline export.
	Timings map[string]StepTiming `json:"timings,omitempty"`
	// Drill is set for a practice rollback (`/rollback drill`).
	Drill *DrillRun `json:"drill,omitempty"`
	// OwnerPause is what pausing the workload's GitOps owner changed
	// (Argo CD auto-sync, Flux suspend), so `/rollback resume-sync`
	// restores it exactly.
	OwnerPause *platforms.OwnerPause `json:"owner_pause,omitempty"`
	// GitChange is what must change in Git so that the rollback sticks,
	// read from the owner after the verification.
	GitChange *platforms.GitChange `json:"git_change,omitempty"`
	// Alert is the Alertmanager alert group that opened the incident (nil
	// for a /rollback).
	Alert *AlertRef `json:"alert,omitempty"`
}

// StepTiming is when a runbook step ran; End is zero while it runs.
type StepTiming struct {
	Start  time.Time `json:"start"`
	End    time.Time `json:"end,omitzero"`
	Failed bool      `json:"failed,omitempty"`
}

// AlertRef is the alert group an incident was opened for.
type AlertRef struct {
	GroupKey   string    `json:"group_key"`
	Name       string    `json:"name"`              // alertname
	Summary    string    `json:"summary,omitempty"` // the summary annotation
	StartsAt   time.Time `json:"starts_at,omitzero"`
	ResolvedAt time.Time `json:"resolved_at,omitzero"`
	URL        string    `json:"url,omitempty"` // where the alert comes from (generatorURL)
}

// ErrNotFound is returned for a missing incident.
var ErrNotFound = errors.New("not found")

// NextID allocates an incident id like "RB-42".
func (s *Store) NextID(ctx context.Context) (string, error) {
	var n int64
	err := s.write(ctx, func(c redis.Cmdable) error {
		var err error
		n, err = c.Incr(ctx, s.key("seq")).Result()
		return err
	})
	if err != nil {
		return "", fmt.Errorf("allocate incident id: %w", err)
	}
	return "RB-" + strconv.FormatInt(n, 10), nil
}

// Create writes a new incident record and its indexes, with the first
// events of its timeline (the request) in the same transaction: a replica
// killed right after it leaves an incident whose timeline says who asked
// for what. It is the only write that does not go through the lifecycle:
// afterwards, Advance changes the status and Update the rest.
func (s *Store) Create(ctx context.Context, in *Incident, first ...Event) error {
	in.UpdatedAt = s.now()
	if in.CreatedAt.IsZero() {
		in.CreatedAt = in.UpdatedAt
	}
	b, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encode incident %s: %w", in.ID, err)
	}
	score := float64(in.CreatedAt.UnixMilli())
	err = s.write(ctx, func(c redis.Cmdable) error {
		_, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for _, ev := range first {
				p.XAdd(ctx, s.eventArgs(in.ID, ev))
			}
			return s.createOps(ctx, p, in, b, score)
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("save incident %s: %w", in.ID, err)
	}
	return nil
}

func (s *Store) createOps(ctx context.Context, p redis.Pipeliner, in *Incident, b []byte, score float64) error {
	p.SetNX(ctx, s.key("incident", in.ID), b, 0)
	p.ZAdd(ctx, s.key("incidents"), redis.Z{Score: score, Member: in.ID})
	p.ZAdd(ctx, s.key("incidents", in.Service), redis.Z{Score: score, Member: in.ID})
	if in.Status.Final() {
		p.SRem(ctx, s.key("active"), in.ID)
	} else {
		p.SAdd(ctx, s.key("active"), in.ID)
	}
	if in.Status.Working() {
		p.Set(ctx, s.key("lease", in.ID), ClaimOf(in).leaseValue(), s.lease)
	}
	return nil
}

// Get reads one incident.
func (s *Store) Get(ctx context.Context, id string) (*Incident, error) {
	b, err := s.rdb.Get(ctx, s.key("incident", id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("incident %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read incident %s: %w", id, err)
	}
	var in Incident
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, fmt.Errorf("decode incident %s: %w", id, err)
	}
	return &in, nil
}

// ErrStale is returned by Advance when the incident is not in any of
// the expected states (someone else moved it first).
var ErrStale = errors.New("incident changed concurrently")

// Update applies mutate to the incident atomically. It never changes the
// status (that is Advance's). With a non-zero claim it is an owner's write
// and fails with ErrFenced once the incident has been taken over.
func (s *Store) Update(ctx context.Context, id string, c Claim, mutate func(*Incident)) (*Incident, error) {
	return s.update(ctx, id, c, func(_ *txn, in *Incident) error {
		st := in.Status
		mutate(in)
		in.Status = st
		return nil
	})
}

// txn is one optimistic transaction over an incident record: apply reads
// through tx and queues its extra writes, which run in the same MULTI.
type txn struct {
	tx  *redis.Tx
	ops []func(redis.Pipeliner)
}

func (t *txn) queue(f func(redis.Pipeliner)) { t.ops = append(t.ops, f) }

func (s *Store) update(ctx context.Context, id string, c Claim, apply func(*txn, *Incident) error, watch ...string) (*Incident, error) {
	key := s.key("incident", id)
	var out *Incident
	txf := func(tx *redis.Tx) error {
		b, err := tx.Get(ctx, key).Bytes()
		if errors.Is(err, redis.Nil) {
			return fmt.Errorf("incident %s: %w", id, ErrNotFound)
		}
		if err != nil {
			return err
		}
		var in Incident
		if err := json.Unmarshal(b, &in); err != nil {
			return fmt.Errorf("decode incident %s: %w", id, err)
		}
		out = &in
		if !c.IsZero() && c.Fence != in.Fence {
			return ErrFenced
		}
		cp := in
		t := &txn{tx: tx}
		if err := apply(t, &cp); err != nil {
			return err
		}
		cp.UpdatedAt = s.now()
		out = &cp
		nb, err := json.Marshal(&cp)
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, key, nb, 0)
			if cp.Status.Final() {
				p.SRem(ctx, s.key("active"), id)
				if !in.Status.Final() && cp.Lock != "" {
					// A finished incident gives its service back in the
					// same transaction: a crash right after the final
					// move cannot leave the service locked until the
					// lock's TTL.
					p.Eval(ctx, unlockSrc, []string{s.key("lock", cp.Service)}, cp.Lock)
				}
			} else {
				p.SAdd(ctx, s.key("active"), id)
			}
			for _, op := range t.ops {
				op(p)
			}
			return nil
		})
		if err != nil {
			return err
		}
		return s.dur.Wait(ctx, tx)
	}
	keys := append([]string{key}, watch...)
	for range 20 {
		err := s.rdb.Watch(ctx, txf, keys...)
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		if err != nil {
			return out, err
		}
		return out, nil
	}
	return out, fmt.Errorf("update incident %s: too much contention", id)
}

// Active lists incidents that have not reached a final status.
func (s *Store) Active(ctx context.Context) ([]*Incident, error) {
	ids, err := s.rdb.SMembers(ctx, s.key("active")).Result()
	if err != nil {
		return nil, fmt.Errorf("list active incidents: %w", err)
	}
	return s.getAll(ctx, ids)
}

// Recent lists up to n incidents, newest first; service "" means all.
func (s *Store) Recent(ctx context.Context, service string, n int) ([]*Incident, error) {
	k := s.key("incidents")
	if service != "" {
		k = s.key("incidents", service)
	}
	ids, err := s.rdb.ZRevRange(ctx, k, 0, int64(n-1)).Result()
	if err != nil {
		return nil, fmt.Errorf("list incidents: %w", err)
	}
	return s.getAll(ctx, ids)
}

func (s *Store) getAll(ctx context.Context, ids []string) ([]*Incident, error) {
	out := make([]*Incident, 0, len(ids))
	for _, id := range ids {
		in, err := s.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, in)
	}
	return out, nil
}
