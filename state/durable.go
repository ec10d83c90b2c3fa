package state

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Durability is how many replicas must have a write before the store
// reports it done.
//
// Redis replicates asynchronously, and SENTINEL FAILOVER (or a master
// that dies) promotes the replica without waiting for it to catch up:
// a write the old master acknowledged after the replica's last sync, or
// after the promotion but before the client switched, is gone once the
// old master rejoins as a replica. WAIT n after the write, on the same
// connection, returns how many replicas have it; a write that fewer
// than Replicas confirmed within Timeout is reported as failed
// (ErrNotReplicated), so what rollbot reports as done survives a
// failover. It does not undo the write: a failed write may still be
// there, as with any timeout.
type Durability struct {
	Replicas int           // 0: do not wait (one server, Cluster)
	Timeout  time.Duration // how long WAIT blocks
}

// ErrNotReplicated is returned when fewer replicas than required
// confirmed a write in time (no replica up, or a failover under way).
var ErrNotReplicated = errors.New("write not confirmed by a replica in time")

// Durability is what rollbot asks of the deployment a REDIS_URL names:
// on Sentinel, one replica within a second; elsewhere nothing (one
// server has no replica to wait for; rollbot's Cluster keys live on one
// master, whose replicas WAIT on a cluster client cannot target).
func (r *RedisURL) Durability() Durability {
	if r.Mode == Sentinel {
		return Durability{Replicas: 1, Timeout: time.Second}
	}
	return Durability{}
}

// Wait runs WAIT on c, which must be the connection that made the write:
// the *redis.Tx inside Watch, or the *redis.Conn of Do. WAIT counts
// only the writes of its own connection.
func (d Durability) Wait(ctx context.Context, c waiter) error {
	if d.Replicas <= 0 {
		return nil
	}
	n, err := c.Wait(ctx, d.Replicas, d.Timeout).Result()
	if err != nil {
		return fmt.Errorf("wait for %d replica(s): %w", d.Replicas, err)
	}
	if n < int64(d.Replicas) {
		return fmt.Errorf("%d of %d replica(s) in %s: %w", n, d.Replicas, d.Timeout, ErrNotReplicated)
	}
	return nil
}

// waiter is the one command Wait needs; *redis.Tx and *redis.Conn have it.
type waiter interface {
	Wait(ctx context.Context, numReplicas int, timeout time.Duration) *redis.IntCmd
}

// The connections a write can be made on: Watch's, and Do's.
var (
	_ waiter = (*redis.Tx)(nil)
	_ waiter = (*redis.Conn)(nil)
)

// Do runs write on one connection of rdb (write may use TxPipelined,
// scripts, single commands), then Wait on that connection.
func (d Durability) Do(ctx context.Context, rdb redis.UniversalClient, write func(c redis.Cmdable) error) error {
	if d.Replicas <= 0 {
		return write(rdb)
	}
	cl, ok := rdb.(*redis.Client)
	if !ok {
		return fmt.Errorf("wait for replicas: needs a single-master client, got %T", rdb)
	}
	conn := cl.Conn()
	defer conn.Close()
	if err := write(conn); err != nil {
		return err
	}
	return d.Wait(ctx, conn)
}

// SetDurability makes every state write wait for d's replicas
// (ParseRedisURL's Durability for the deployment REDIS_URL names).
func (s *Store) SetDurability(d Durability) { s.dur = d }

// write runs one durable write (see Durability).
func (s *Store) write(ctx context.Context, f func(c redis.Cmdable) error) error {
	return s.dur.Do(ctx, s.rdb, f)
}

// run runs a script as one durable write.
func (s *Store) run(ctx context.Context, sc *redis.Script, keys []string, args ...any) *redis.Cmd {
	var cmd *redis.Cmd
	err := s.write(ctx, func(c redis.Cmdable) error {
		cmd = sc.Run(ctx, c, keys, args...)
		if err := cmd.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		return nil
	})
	if cmd == nil {
		cmd = redis.NewCmd(ctx)
	}
	if err != nil && cmd.Err() == nil {
		cmd.SetErr(err)
	}
	return cmd
}
