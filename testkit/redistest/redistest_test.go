package redistest_test

import (
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"rollbot/testkit/redistest"
)

func TestSentinelFailoverAndKill(t *testing.T) {
	ctx := context.Background()
	s := redistest.Sentinel(t)
	if !strings.Contains(s.URL, "master_name="+redistest.MasterName) || strings.Count(s.URL, "addr=") != 2 {
		t.Fatalf("URL = %s; want master_name and two more sentinels", s.URL)
	}
	c := s.Client(t)
	if err := c.Set(ctx, "k", "before", 0).Err(); err != nil {
		t.Fatal(err)
	}
	first := s.Master(t)
	second := s.Failover(t)
	if second == first {
		t.Fatalf("Failover kept master %s", first)
	}
	// and back: the old master became a usable replica
	if third := s.Failover(t); third != first {
		t.Fatalf("second Failover went to %s, want the first master %s back", third, first)
	}
	killed := s.KillMaster(t)
	now := s.AwaitNewMaster(t, killed)
	if now == killed {
		t.Fatalf("after kill -9 the master is still %s", killed)
	}
	if err := c.Set(ctx, "k", "after", 0).Err(); err != nil {
		t.Fatalf("write through the Sentinel client after kill -9: %v", err)
	}
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "after" {
		t.Fatalf("Get = %q, %v", v, err)
	}
}

func TestClusterSpreadsSlots(t *testing.T) {
	ctx := context.Background()
	cl := redistest.Cluster(t)
	if !strings.HasPrefix(cl.URL, "redis+cluster://") || strings.Count(cl.URL, "addr=") != 2 {
		t.Fatalf("URL = %s", cl.URL)
	}
	c := cl.Client(t)
	// Keys in different slots cannot share a command: the proof this is
	// a real cluster and not one server.
	if err := c.Do(ctx, "MSET", "a", "1", "b", "2").Err(); err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Fatalf("MSET over two slots = %v; want CROSSSLOT", err)
	}
	if err := c.Do(ctx, "MSET", "{t}a", "1", "{t}b", "2").Err(); err != nil {
		t.Fatalf("MSET in one slot: %v", err)
	}
	masters := map[string]bool{}
	for _, k := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		if err := c.Set(ctx, k, k, 0).Err(); err != nil {
			t.Fatal(err)
		}
		slot, err := c.ClusterKeySlot(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		shards, err := c.ClusterSlots(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, sh := range shards {
			if int64(sh.Start) <= slot && slot <= int64(sh.End) {
				masters[sh.Nodes[0].Addr] = true
			}
		}
	}
	if len(masters) < 2 {
		t.Fatalf("8 keys landed on %d master(s); want the slots spread over the three", len(masters))
	}
	// Each node's bus port is a claimed one (nettest), not its port plus
	// 10000, which lands in the kernel's ephemeral range: CI saw a node
	// abort there with "Address already in use".
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Fatal(err)
	}
	ephemeral, _ := strconv.Atoi(strings.Fields(string(b))[0])
	err = c.(*redis.ClusterClient).ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		_, port, _ := net.SplitHostPort(n.Options().Addr)
		got, err := n.ConfigGet(ctx, "cluster-port").Result()
		if err != nil {
			return err
		}
		bus, _ := strconv.Atoi(got["cluster-port"])
		if p, _ := strconv.Atoi(port); bus == 0 || bus == p+10000 || bus >= ephemeral {
			t.Errorf("node %s: cluster-port %q; want a claimed port below %d", n.Options().Addr, got["cluster-port"], ephemeral)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
