package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// MasterName is the name the sentinels of Sentinel monitor.
const MasterName = "rollbot"

// Sentinels is a Sentinel deployment for one test: one master, one
// replica and three sentinels (quorum 2) on loopback ports. Failures are
// noticed after 1 s and a failover may take 5 s, so tests are quick.
type Sentinels struct {
	// URL is the REDIS_URL that reaches the deployment through the
	// sentinels, in rollbot's form (redis://…?master_name=…&addr=…).
	URL string

	mu        sync.Mutex
	data      map[string]*server // by "127.0.0.1:port": the master and the replica
	sentinels []*server
}

// Sentinel starts a Sentinel deployment that is stopped when t ends.
func Sentinel(t testing.TB) *Sentinels {
	t.Helper()
	master := startT(t, "redis-server")
	replica := startT(t, "redis-server", fmt.Sprintf("replicaof 127.0.0.1 %d", master.port))
	s := &Sentinels{data: map[string]*server{master.addr(): master, replica.addr(): replica}}
	waitFor(t, "replica in sync with the master", 15*time.Second, func(ctx context.Context) error {
		return linkUp(ctx, replica)
	})
	for range 3 {
		s.sentinels = append(s.sentinels, startT(t, "redis-sentinel",
			fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 2", MasterName, master.port),
			"sentinel down-after-milliseconds "+MasterName+" 1000",
			"sentinel failover-timeout "+MasterName+" 5000",
			"sentinel parallel-syncs "+MasterName+" 1",
		))
	}
	s.waitSettled(t, "", master.addr(), 30*time.Second)
	addrs := make([]string, 0, 2)
	for _, x := range s.sentinels[1:] {
		addrs = append(addrs, "addr="+x.addr())
	}
	s.URL = fmt.Sprintf("redis://%s/0?master_name=%s&%s", s.sentinels[0].addr(), MasterName, strings.Join(addrs, "&"))
	return s
}

// Client returns a go-redis Sentinel client of the deployment, closed
// when t ends.
func (s *Sentinels) Client(t testing.TB) redis.UniversalClient {
	t.Helper()
	addrs := make([]string, len(s.sentinels))
	for i, x := range s.sentinels {
		addrs[i] = x.addr()
	}
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: MasterName, SentinelAddrs: addrs})
	t.Cleanup(func() { c.Close() })
	return c
}

// Master is the master's address as the first live sentinel reports it.
func (s *Sentinels) Master(t testing.TB) string {
	t.Helper()
	var addr string
	waitFor(t, "a sentinel names the master", 10*time.Second, func(ctx context.Context) error {
		var err error
		for _, x := range s.sentinels {
			if addr, err = masterOf(ctx, x); err == nil {
				return nil
			}
		}
		return err
	})
	return addr
}

// Failover runs SENTINEL FAILOVER and returns once every sentinel names
// the new master and it accepts writes; it returns the new master's
// address. The old master keeps running and is made a replica of the
// new one by the sentinels, as in production, within about 10 s (their
// INFO period); a second Failover first waits for that.
func (s *Sentinels) Failover(t testing.TB) string {
	t.Helper()
	old := s.waitSettled(t, "", "", 60*time.Second)
	waitFor(t, "SENTINEL FAILOVER accepted", 30*time.Second, func(ctx context.Context) error {
		c := s.sentinels[0].client()
		defer c.Close()
		// -NOGOODSLAVE until a sentinel has fresh INFO of the replica,
		// -INPROG while a failover runs: both pass.
		return c.Do(ctx, "SENTINEL", "FAILOVER", MasterName).Err()
	})
	return s.AwaitNewMaster(t, old)
}

// KillMaster kills the master's process with SIGKILL (kill -9) and
// returns its address; the sentinels then fail over on their own
// (AwaitNewMaster).
func (s *Sentinels) KillMaster(t testing.TB) string {
	t.Helper()
	addr := s.Master(t)
	s.mu.Lock()
	m := s.data[addr]
	s.mu.Unlock()
	if m == nil {
		t.Fatalf("redis for tests: the sentinels name %s as master, which is none of the test's servers", addr)
	}
	m.kill()
	return addr
}

// AwaitNewMaster waits until every sentinel names a master other than
// old and that master accepts writes; it returns its address.
func (s *Sentinels) AwaitNewMaster(t testing.TB, old string) string {
	t.Helper()
	var addr string
	// 60 s: on a loaded CI machine one sentinel still named the old
	// master after 30 s (it learns of the new one from the others'
	// hello messages, every 2 s).
	waitFor(t, "the sentinels agree on a new master that accepts writes", 60*time.Second, func(ctx context.Context) error {
		var err error
		addr, err = s.agreedMaster(ctx, old)
		if err != nil {
			return err
		}
		return s.acceptsWrites(ctx, addr)
	})
	return addr
}

// waitSettled waits until the sentinels agree on a master that is not
// exclude (and is want, if want is set) and accepts writes, every other
// live data server is its replica in sync, and every sentinel knows the
// other sentinels and sees each replica as promotable (so that a later
// failover finds a good replica). It returns the master's address.
func (s *Sentinels) waitSettled(t testing.TB, exclude, want string, within time.Duration) string {
	t.Helper()
	var addr string
	waitFor(t, "the Sentinel deployment settles", within, func(ctx context.Context) error {
		var err error
		if addr, err = s.agreedMaster(ctx, exclude); err != nil {
			return err
		}
		if want != "" && addr != want {
			return fmt.Errorf("sentinels name %s, want %s", addr, want)
		}
		if err := s.acceptsWrites(ctx, addr); err != nil {
			return err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		replicas := 0
		for a, d := range s.data {
			if a == addr || !d.alive() {
				continue
			}
			replicas++
			if err := linkUp(ctx, d); err != nil {
				return fmt.Errorf("replica %s: %w", a, err)
			}
		}
		for _, x := range s.sentinels {
			m, err := sentinelMaster(ctx, x)
			if err != nil {
				return err
			}
			if m["num-other-sentinels"] != strconv.Itoa(len(s.sentinels)-1) {
				return fmt.Errorf("sentinel %s knows %s other sentinels", x.addr(), m["num-other-sentinels"])
			}
			if m["num-slaves"] != strconv.Itoa(replicas) {
				return fmt.Errorf("sentinel %s knows %s replicas, want %d", x.addr(), m["num-slaves"], replicas)
			}
			if strings.Contains(m["flags"], "down") || strings.Contains(m["flags"], "failover") {
				return fmt.Errorf("sentinel %s: master flags %s", x.addr(), m["flags"])
			}
			good, err := goodReplicas(ctx, x)
			if err != nil {
				return err
			}
			if good != replicas {
				return fmt.Errorf("sentinel %s sees %d usable replicas, want %d", x.addr(), good, replicas)
			}
		}
		return nil
	})
	return addr
}

// agreedMaster is the master every live sentinel names, if they agree
// and it is not exclude.
func (s *Sentinels) agreedMaster(ctx context.Context, exclude string) (string, error) {
	var agreed string
	for _, x := range s.sentinels {
		if !x.alive() {
			continue
		}
		a, err := masterOf(ctx, x)
		if err != nil {
			return "", err
		}
		if a == exclude {
			return "", fmt.Errorf("sentinel %s still names %s", x.addr(), a)
		}
		if agreed != "" && a != agreed {
			return "", fmt.Errorf("sentinels disagree: %s and %s", agreed, a)
		}
		agreed = a
	}
	if agreed == "" {
		return "", errors.New("no live sentinel")
	}
	return agreed, nil
}

func (s *Sentinels) acceptsWrites(ctx context.Context, addr string) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	return c.Set(ctx, "redistest:probe", time.Now().UnixNano(), 0).Err()
}

func masterOf(ctx context.Context, x *server) (string, error) {
	c := x.client()
	defer c.Close()
	hp, err := c.Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MasterName).StringSlice()
	if err != nil {
		return "", fmt.Errorf("sentinel %s: %w", x.addr(), err)
	}
	if len(hp) != 2 {
		return "", fmt.Errorf("sentinel %s: no master", x.addr())
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}

func sentinelMaster(ctx context.Context, x *server) (map[string]string, error) {
	c := x.client()
	defer c.Close()
	m, err := c.Do(ctx, "SENTINEL", "MASTER", MasterName).Result()
	if err != nil {
		return nil, fmt.Errorf("sentinel %s: %w", x.addr(), err)
	}
	return flatMap(m), nil
}

// goodReplicas counts replicas a sentinel could promote: flags "slave"
// only and its link to the master up.
func goodReplicas(ctx context.Context, x *server) (int, error) {
	c := x.client()
	defer c.Close()
	res, err := c.Do(ctx, "SENTINEL", "REPLICAS", MasterName).Slice()
	if err != nil {
		return 0, fmt.Errorf("sentinel %s: %w", x.addr(), err)
	}
	n := 0
	for _, r := range res {
		m := flatMap(r)
		if m["flags"] == "slave" && m["master-link-status"] == "ok" {
			n++
		}
	}
	return n, nil
}

// flatMap reads a reply that is a flat list of field, value (RESP2) or
// a map (RESP3).
func flatMap(v any) map[string]string {
	out := map[string]string{}
	switch r := v.(type) {
	case []any:
		for i := 0; i+1 < len(r); i += 2 {
			out[fmt.Sprint(r[i])] = fmt.Sprint(r[i+1])
		}
	case map[any]any:
		for k, x := range r {
			out[fmt.Sprint(k)] = fmt.Sprint(x)
		}
	}
	return out
}

// linkUp is nil when d is a replica whose link to its master is up and
// whose initial sync is done.
func linkUp(ctx context.Context, d *server) error {
	c := d.client()
	defer c.Close()
	role, err := infoField(ctx, c, "replication", "role")
	if err != nil {
		return err
	}
	if role != "slave" {
		return fmt.Errorf("%s is a %s", d.addr(), role)
	}
	st, err := infoField(ctx, c, "replication", "master_link_status")
	if err != nil {
		return err
	}
	if st != "up" {
		return fmt.Errorf("%s: link to master %s", d.addr(), st)
	}
	if sync, _ := infoField(ctx, c, "replication", "master_sync_in_progress"); sync != "0" {
		return fmt.Errorf("%s: sync in progress", d.addr())
	}
	return nil
}
