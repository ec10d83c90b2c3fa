package state_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"rollbot/state"
	"rollbot/testkit/redistest"
)

// writeStream runs write from four goroutines, each with its own
// sequence, until stop is closed, and returns the names of the writes
// that reported success and how many failed.
func writeStream(stop <-chan struct{}, write func(name string) error) (acked []string, failed int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("RB-%d-%d", w, i)
				err := write(name)
				mu.Lock()
				if err == nil {
					acked = append(acked, name)
				} else {
					failed++
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(10 * time.Millisecond) // no busy loop while Redis switches
				}
			}
		})
	}
	wg.Wait()
	return acked, failed
}

// acrossFailover runs the write stream, forces a Sentinel failover in
// the middle of it, keeps writing on the new master for a while, and
// returns the acknowledged writes and a client of the new master alone.
func acrossFailover(t *testing.T, s *redistest.Sentinels, write func(name string) error) ([]string, *redis.Client) {
	stop := make(chan struct{})
	type result struct {
		acked  []string
		failed int
	}
	done := make(chan result)
	go func() {
		a, f := writeStream(stop, write)
		done <- result{a, f}
	}()
	time.Sleep(300 * time.Millisecond) // writes before the failover
	old := s.Master(t)
	now := s.Failover(t)
	time.Sleep(time.Second) // and after it, while clients switch
	close(stop)
	r := <-done
	t.Logf("failover %s -> %s: %d writes acknowledged, %d failed", old, now, len(r.acked), r.failed)
	if len(r.acked) == 0 {
		t.Fatal("no write succeeded")
	}
	direct := redis.NewClient(&redis.Options{Addr: now})
	t.Cleanup(func() { direct.Close() })
	return r.acked, direct
}

// TestAcknowledgedWritesSurviveSentinelFailover writes incidents and
// timeline events across SENTINEL FAILOVER, in the shape of Store.Save
// plus Append (one MULTI over the record, an index and the timeline
// stream), then reads every acknowledged one back from the new master
// alone. With Durability.Do (WAIT 1 after each write, as on Sentinel)
// none is lost. The control runs the same writes without WAIT and must
// lose some: it proves the check can see a loss, and it is why the
// store's writes need Durability on Sentinel.
func TestAcknowledgedWritesSurviveSentinelFailover(t *testing.T) {
	t.Run("with WAIT 1 none is lost", func(t *testing.T) {
		lost, acked := failoverLoss(t, true)
		if lost > 0 {
			t.Fatalf("%d of %d acknowledged writes lost across the failover", lost, acked)
		}
	})
	t.Run("control: without WAIT some are lost", func(t *testing.T) {
		lost, acked := failoverLoss(t, false)
		if lost == 0 {
			t.Fatalf("no loss among %d acknowledged writes without WAIT: the check cannot see a lost write (or Redis now fails over without loss; then Durability may be unneeded)", acked)
		}
	})
}

// failoverLoss runs the write stream across a failover of a fresh
// Sentinel deployment and returns how many acknowledged writes the new
// master lacks, of how many.
func failoverLoss(t *testing.T, wait bool) (lost, total int) {
	ctx := context.Background()
	s := redistest.Sentinel(t)
	u, err := state.ParseRedisURL(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	d := u.Durability()
	if d.Replicas != 1 {
		t.Fatalf("Durability on Sentinel = %+v, want one replica", d)
	}
	if !wait {
		d = state.Durability{}
	}
	rdb := u.Client()
	t.Cleanup(func() { rdb.Close() })
	prefix := fmt.Sprintf("t%d", time.Now().UnixNano())
	key := func(parts ...string) string { // the store's layout, {prefix}:…
		k := "{" + prefix + "}"
		for _, p := range parts {
			k += ":" + p
		}
		return k
	}
	acked, direct := acrossFailover(t, s, func(name string) error {
		wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		return d.Do(wctx, rdb, func(c redis.Cmdable) error {
			_, err := c.TxPipelined(wctx, func(p redis.Pipeliner) error {
				p.Set(wctx, key("incident", name), name, 0)
				p.SAdd(wctx, key("active"), name)
				p.XAdd(wctx, &redis.XAddArgs{Stream: key("timeline", "stream"), Values: map[string]any{"detail": name}})
				return nil
			})
			return err
		})
	})
	active, err := direct.SMembers(ctx, key("active")).Result()
	if err != nil {
		t.Fatal(err)
	}
	evs, err := direct.XRange(ctx, key("timeline", "stream"), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	inSet := map[string]bool{}
	for _, a := range active {
		inSet[a] = true
	}
	inStream := map[string]bool{}
	for _, e := range evs {
		inStream[fmt.Sprint(e.Values["detail"])] = true
	}
	for _, name := range acked {
		v, err := direct.Get(ctx, key("incident", name)).Result()
		if err != nil || v != name || !inSet[name] || !inStream[name] {
			lost++
			if wait && lost <= 5 {
				t.Errorf("acknowledged write %s is not on the new master (record %q, %v; index %v; timeline %v)", name, v, err, inSet[name], inStream[name])
			}
		}
	}
	t.Logf("%d of %d acknowledged writes missing on the new master", lost, len(acked))
	return lost, len(acked)
}
