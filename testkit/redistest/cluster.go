package redistest

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Clusters is a Redis Cluster for one test: three masters, no replicas,
// the 16384 slots split between them by redis-cli --cluster create.
type Clusters struct {
	// URL is the REDIS_URL that reaches the cluster, in rollbot's form
	// (redis+cluster://host:port?addr=…&addr=…).
	URL   string
	nodes []*server
}

// Cluster starts a three-master Redis Cluster that is stopped when t ends.
func Cluster(t testing.TB) *Clusters {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("redis for tests: redis-cli not found on PATH (apt-get install redis-tools): %v", err)
	}
	c := &Clusters{}
	args := []string{"--cluster", "create"}
	for range 3 {
		n := startT(t, "redis-server", "cluster-enabled yes", "cluster-config-file nodes.conf", "cluster-node-timeout 2000")
		c.nodes = append(c.nodes, n)
		args = append(args, n.addr())
	}
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis for tests: redis-cli --cluster create: %v\n%s", err, out)
	}
	waitFor(t, "every node reports cluster_state:ok", 30*time.Second, func(ctx context.Context) error {
		for _, n := range c.nodes {
			nc := n.client()
			info, err := nc.ClusterInfo(ctx).Result()
			nc.Close()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:3") {
				return fmt.Errorf("node %s: not ok yet", n.addr())
			}
		}
		return nil
	})
	c.URL = fmt.Sprintf("redis+cluster://%s?addr=%s&addr=%s", c.nodes[0].addr(), c.nodes[1].addr(), c.nodes[2].addr())
	return c
}

// Client returns a go-redis Cluster client of the cluster, closed when t
// ends.
func (c *Clusters) Client(t testing.TB) redis.UniversalClient {
	t.Helper()
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.addr()
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { cc.Close() })
	return cc
}

// Addrs are the nodes' addresses.
func (c *Clusters) Addrs() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.addr()
	}
	return out
}
