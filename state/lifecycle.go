package state

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The incident lifecycle. Every status, and the statuses it may move to,
// are in this table; Advance is the only way an incident's status changes
// after it was created, and it refuses any move the table does not list.
//
//	assessing ──► awaiting_confirmation ──► stopping ──► rolling_back ──► verifying ──► completed
//	    │                 │                    ▲   │          │   ▲           │
//	    ├► dry_run        ├► awaiting_db_approval ─► rolling_back_database    ├► verification_failed ─┐
//	    └► cancelled      └► cancelled             │          │   │           │        ▲   │          │
//	                                               ▼          ▼   │           ▼        │   ▼          │
//	                                          rollback_failed ─── fallback ───┘        │  closed ◄────┘
//
// After a restore the app is first pointed at the restored data:
// rolling_back_database ─► switching_endpoint (rollbot renames the
// instances or updates a Secret) or awaiting_endpoint_switch (a DB approver
// switches it by hand) ─► stopping; the app rollback waits for it.
//
// A drill (`/rollback drill`) that deployed its bad version and ends
// before its rollback goes through drill_restoring first (assessing,
// awaiting_confirmation or awaiting_db_approval ─► drill_restoring ─►
// cancelled): rollbot puts back the version the drill found, holding the
// service lock until that is done.
//
// Statuses fall in three kinds:
//   - working (assessing, rolling_back_database, switching_endpoint,
//     stopping, rolling_back, verifying, drill_restoring): a replica is acting on a system. The incident has an
//     owner and a lease; when the lease expires, another replica takes it
//     over (Takeover) and resumes from the recorded step.
//   - waiting (awaiting_confirmation, awaiting_db_approval,
//     awaiting_endpoint_switch, rollback_failed, verification_failed): nothing runs; a person's
//     click moves it on, and every replica can serve the click. Each wait
//     has a budget, after which the incident is closed (Expire). A wait
//     whose message (the buttons) is not on Slack yet is the one
//     exception: the move into it (Move.Show) gives the mover a lease
//     until it has shown the message, and when that lease expires
//     another replica takes the showing over.
//   - final: nothing more happens.
var lifecycle = map[Status][]Status{
	Assessing:         {AwaitingConfirm, Planned, Cancelled, DrillRestoring},
	AwaitingConfirm:   {Stopping, AwaitingDBApprove, Cancelled, DrillRestoring},
	AwaitingDBApprove: {RollingBackDB, Stopping, Cancelled, DrillRestoring},
	RollingBackDB:     {Stopping, SwitchingEndpoint, AwaitingSwitch, RollbackFailed},
	SwitchingEndpoint: {Stopping, RollbackFailed},
	AwaitingSwitch:    {Stopping, Closed},
	Stopping:          {RollingBack, RollbackFailed},
	RollingBack:       {Verifying, RollbackFailed, VerifyFailed},
	Verifying:         {Completed, VerifyFailed},
	RollbackFailed:    {RollingBack, Closed},
	VerifyFailed:      {RollingBack, Verifying, Closed},
	DrillRestoring:    {Cancelled},
}

// Allowed reports whether the lifecycle lets an incident move from one
// status to another.
func Allowed(from, to Status) bool { return slices.Contains(lifecycle[from], to) }

// Working reports whether a replica acts on a system in this status; such
// an incident has an owner holding a lease.
func (s Status) Working() bool {
	switch s {
	case Assessing, RollingBackDB, SwitchingEndpoint, Stopping, RollingBack, Verifying, DrillRestoring:
		return true
	}
	return false
}

// Waiting reports whether the incident waits for a person.
func (s Status) Waiting() bool {
	switch s {
	case AwaitingConfirm, AwaitingDBApprove, AwaitingSwitch, RollbackFailed, VerifyFailed:
		return true
	}
	return false
}

// Claim is a replica's ownership of a working incident: the owner's id and
// the fencing token it got with the incident. Every write an owner makes
// carries its claim; once another replica has taken the incident over
// (a higher token), the old owner's writes are refused with ErrFenced.
// The zero Claim is a person's click: it may only move a waiting incident.
type Claim struct {
	Owner string `json:"owner"`
	Fence int64  `json:"fence"`
}

// IsZero reports whether c is a click's claim.
func (c Claim) IsZero() bool { return c.Fence == 0 }

func (c Claim) leaseValue() string { return c.Owner + "|" + strconv.FormatInt(c.Fence, 10) }

// ErrFenced is returned when a write's claim is no longer the incident's
// owner: another replica took it over.
var ErrFenced = errors.New("incident taken over by another replica")

// ErrNotAllowed is returned for a move the lifecycle does not list.
var ErrNotAllowed = errors.New("move not allowed by the incident lifecycle")

// Move is one status change.
type Move struct {
	// From narrows the statuses the move starts from (a click that
	// confirms acts only on awaiting_confirmation); empty: any status the
	// lifecycle allows to move To.
	From []Status
	To   Status
	// Claim is the mover's: an owner's claim for a working incident, zero
	// for a click on a waiting one.
	Claim Claim
	// Owner, for a move into a working status, is the replica that will do
	// the work: it gets a new claim (fence+1) and the lease, in the same
	// transaction. Empty for any other move.
	Owner string
	// Lease is the lease's time to live for Owner.
	Lease time.Duration
	// Show, for a move into a waiting status, names the message the wait
	// still owes the thread (the buttons a person clicks). Owner gets a
	// lease for showing it, in the same transaction, and keeps it until
	// Shown; should Owner stop before, another replica takes the showing
	// over (Takeover) once the lease expired. A person waiting for buttons
	// that never come is a wait nobody would end. The fence is raised
	// when the shower is not the owner already holding the claim.
	Show string
	// Mutate changes the record in the same transaction.
	Mutate func(*Incident)
	// Record, when set, gives the timeline events of the move, appended
	// in the same transaction: a decision and its record are one write
	// (never a move without its event after a crash, nor the event of a
	// move that lost its race).
	Record func(*Incident) []Event
}

// Advance moves an incident along the lifecycle, atomically: the current
// status must allow the move (and be one of From), the claim must be the
// current owner's, and Mutate applies in the same transaction. A move that
// lost a race returns ErrStale with the current record. A move out of a
// working status drops the lease; a move into one hands it to Owner.
func (s *Store) Advance(ctx context.Context, id string, m Move) (*Incident, error) {
	if m.To.Working() && m.Owner == "" {
		return nil, fmt.Errorf("advance %s to %s: %w: a working status needs an owner", id, m.To, ErrNotAllowed)
	}
	if m.Show != "" && (!m.To.Waiting() || m.Owner == "") {
		return nil, fmt.Errorf("advance %s to %s: %w: only a wait owes a message, shown by an owner", id, m.To, ErrNotAllowed)
	}
	return s.update(ctx, id, Claim{}, func(t *txn, in *Incident) error {
		if len(m.From) > 0 && !slices.Contains(m.From, in.Status) {
			return ErrStale
		}
		if !Allowed(in.Status, m.To) {
			if len(m.From) == 0 {
				return ErrStale
			}
			return fmt.Errorf("%w: %s → %s", ErrNotAllowed, in.Status, m.To)
		}
		if in.Status.Working() && !m.Claim.IsZero() && m.Claim.Fence != in.Fence {
			return ErrFenced
		}
		if in.Status.Working() && m.Claim.IsZero() {
			return fmt.Errorf("%w: %s is working; only its owner moves it", ErrNotAllowed, in.Status)
		}
		leaseKey := s.key("lease", id)
		if in.Status.Working() || in.Show != "" {
			// The owner's lease, or the lease for showing a wait's
			// message: a click that moved on before it was recorded shown
			// ends the showing too.
			t.queue(func(p redis.Pipeliner) { p.Del(ctx, leaseKey) })
		}
		in.Status = m.To
		in.StepStarted = s.now()
		in.Show = m.Show
		switch {
		case m.To.Working():
			in.Fence++
			in.Owner = m.Owner
			val := ClaimOf(in).leaseValue()
			t.queue(func(p redis.Pipeliner) { p.Set(ctx, leaseKey, val, m.Lease) })
		case m.Show != "":
			if m.Claim.IsZero() || m.Claim.Fence != in.Fence || m.Owner != in.Owner {
				in.Fence++
			}
			in.Owner = m.Owner
			val := ClaimOf(in).leaseValue()
			t.queue(func(p redis.Pipeliner) { p.Set(ctx, leaseKey, val, m.Lease) })
		}
		if m.Mutate != nil {
			m.Mutate(in)
		}
		if m.Record != nil {
			for _, ev := range m.Record(in) {
				args := s.eventArgs(id, ev)
				t.queue(func(p redis.Pipeliner) { p.XAdd(ctx, args) })
			}
		}
		return nil
	})
}

// ClaimOf is the claim an incident's current owner holds.
func ClaimOf(in *Incident) Claim { return Claim{Owner: in.Owner, Fence: in.Fence} }

// Heartbeat extends the owner's lease; it fails with ErrFenced once the
// lease is someone else's (or gone and taken).
func (s *Store) Heartbeat(ctx context.Context, id string, c Claim, ttl time.Duration) error {
	n, err := s.run(ctx, heartbeatScript, []string{s.key("lease", id)}, c.leaseValue(), ttl.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("heartbeat %s: %w", id, err)
	}
	if n != 1 {
		return fmt.Errorf("heartbeat %s: %w", id, ErrFenced)
	}
	return nil
}

// heartbeatScript extends the lease if it still holds the caller's claim;
// an expired lease that nobody took yet is taken back.
var heartbeatScript = redis.NewScript(`
local v = redis.call("GET", KEYS[1])
if v == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end
if not v then
  redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2], "NX")
  return 1
end
return -1`)

// LeaseHolder returns who holds an incident's lease ("" when it expired).
func (s *Store) LeaseHolder(ctx context.Context, id string) (string, error) {
	v, err := s.rdb.Get(ctx, s.key("lease", id)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read lease %s: %w", id, err)
	}
	owner, _, _ := strings.Cut(v, "|")
	return owner, nil
}

// Takeover makes owner the owner of a working incident whose lease has
// expired: a new claim (fence+1) and the lease, atomically. A wait whose
// message was never shown (Show) is taken over alike, for showing it. It
// returns ErrStale when the lease is live (the owner is alive) or the
// incident is no longer working (or owes no message), or another replica
// took it first.
func (s *Store) Takeover(ctx context.Context, id, owner string, lease time.Duration) (*Incident, Claim, error) {
	leaseKey := s.key("lease", id)
	in, err := s.update(ctx, id, Claim{}, func(t *txn, in *Incident) error {
		if !in.Status.Working() && (!in.Status.Waiting() || in.Show == "") {
			return ErrStale
		}
		n, err := t.tx.Exists(ctx, leaseKey).Result()
		if err != nil {
			return err
		}
		if n > 0 {
			return ErrStale
		}
		prev := ClaimOf(in)
		in.Fence++
		in.Owner = owner
		in.TakenOver = append(in.TakenOver, Takeover{From: prev.Owner, To: owner, At: s.now(), Status: in.Status})
		val := ClaimOf(in).leaseValue()
		t.queue(func(p redis.Pipeliner) { p.Set(ctx, leaseKey, val, lease) })
		return nil
	}, leaseKey)
	if errors.Is(err, ErrNotReplicated) && in != nil && in.Owner == owner {
		// The takeover is on the master but no replica confirmed it yet
		// (a failover under way): go on with it rather than leave an
		// owner that does not work the incident. If a failover loses it,
		// the fence refuses this replica's next write.
		return in, ClaimOf(in), nil
	}
	if err != nil {
		return in, Claim{}, err
	}
	return in, ClaimOf(in), nil
}

// Takeover records one change of owner.
type Takeover struct {
	From   string    `json:"from"`
	To     string    `json:"to"`
	At     time.Time `json:"at"`
	Status Status    `json:"status"`
}

// Guard is checked right before a write step acts on a system: the claim
// still owns the incident (lease and fence), and the incident still holds
// its service lock; both are refreshed. It returns ErrFenced when the
// incident was taken over, and ErrLocked with the holder when the service
// lock is gone or someone else's.
func (s *Store) Guard(ctx context.Context, in *Incident, c Claim, lease, lockTTL time.Duration) (*Lock, error) {
	n, err := s.run(ctx, guardScript,
		[]string{s.key("lease", in.ID), s.key("incident", in.ID), s.key("lock", in.Service)},
		c.leaseValue(), c.Fence, lease.Milliseconds(), in.Lock, lockTTL.Milliseconds()).Int()
	if err != nil {
		return nil, fmt.Errorf("guard %s: %w", in.ID, err)
	}
	switch n {
	case 1:
		return nil, nil
	case -1, -2:
		return nil, fmt.Errorf("guard %s: %w", in.ID, ErrFenced)
	default:
		holder, err := s.LockHolder(ctx, in.Service)
		if err != nil {
			return nil, err
		}
		return holder, fmt.Errorf("guard %s: %w", in.ID, ErrLocked)
	}
}

// guardScript: -1 lease not ours, -2 fence moved on (or the incident is a
// wait owing its message: the owner moved on, its lease is only for
// showing it, and the service lock keeps the wait's TTL), -3 lock not
// ours; 1 ok.
var guardScript = redis.NewScript(`
local lease = redis.call("GET", KEYS[1])
if lease ~= ARGV[1] then return -1 end
local v = redis.call("GET", KEYS[2])
if not v then return -2 end
local ok, inc = pcall(cjson.decode, v)
if not ok or tostring(inc.fence) ~= ARGV[2] then return -2 end
if inc.show and inc.show ~= "" then return -2 end
if ARGV[4] ~= "" then
  local l = redis.call("GET", KEYS[3])
  if not l then return -3 end
  local ok2, lk = pcall(cjson.decode, l)
  if not ok2 or lk.token ~= ARGV[4] then return -3 end
  redis.call("PEXPIRE", KEYS[3], ARGV[5])
end
redis.call("PEXPIRE", KEYS[1], ARGV[3])
return 1`)

// HoldLock sets the service lock's time to live, if the incident still
// holds it (a wait's budget, or how long a failed rollback keeps the
// service for its fallbacks).
func (s *Store) HoldLock(ctx context.Context, in *Incident, ttl time.Duration) error {
	return s.RefreshLock(ctx, in.Service, in.Lock, ttl)
}

// Shown records that the wait's message show is on Slack, by the claim
// that showed it, and drops the lease for showing it. It returns ErrStale
// once the incident moved on (a click may decide as soon as the buttons
// are up, and a move into a working status raises the fence) or the
// message was recorded shown already, and ErrFenced once another replica
// took the showing over.
func (s *Store) Shown(ctx context.Context, id string, c Claim, show string) error {
	leaseKey := s.key("lease", id)
	_, err := s.update(ctx, id, Claim{}, func(t *txn, in *Incident) error {
		if in.Show != show || !in.Status.Waiting() {
			return ErrStale
		}
		if c.Fence != in.Fence {
			return ErrFenced
		}
		in.Show = ""
		t.queue(func(p redis.Pipeliner) { p.Del(ctx, leaseKey) })
		return nil
	}, leaseKey)
	if err != nil {
		return fmt.Errorf("record %s shown on %s: %w", show, id, err)
	}
	return nil
}

// ReleaseLease gives up an owner's lease at once (a replica shutting
// down), so that another replica takes the incident over without waiting
// for the lease to run out.
func (s *Store) ReleaseLease(ctx context.Context, id string, c Claim) error {
	if err := s.run(ctx, releaseLeaseScript, []string{s.key("lease", id)}, c.leaseValue()).Err(); err != nil {
		return fmt.Errorf("release lease %s: %w", id, err)
	}
	return nil
}

var releaseLeaseScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return 0`)
