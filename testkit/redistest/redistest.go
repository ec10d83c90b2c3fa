// Package redistest gives tests a real Redis, from Debian's redis-server
// and redis-sentinel binaries on free loopback ports:
//
//   - URL and Client: one server, the one named by ROLLBOT_TEST_REDIS_URL
//     (started by .ci/run) or else one started for the test binary;
//   - Sentinel: a master, a replica and three sentinels for one test,
//     with a forced failover and a kill -9 of the master;
//   - Cluster: three masters for one test.
//
// A missing binary fails the test; it never skips. REDISTEST_DEBUG=1
// logs each poll while a helper waits for the servers (go test -v).
package redistest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	once    sync.Once
	url     string
	onceErr error
)

// URL returns the URL of a running Redis for tests.
func URL(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		if u := os.Getenv("ROLLBOT_TEST_REDIS_URL"); u != "" {
			url = u
			return
		}
		url, onceErr = start()
	})
	if onceErr != nil {
		t.Fatalf("redis for tests: %v (install redis-server, or set ROLLBOT_TEST_REDIS_URL)", onceErr)
	}
	return url
}

// Client returns a client of the test Redis and a key prefix unique to
// this test, so tests sharing one server never see each other's keys.
func Client(t testing.TB) (*redis.Client, string) {
	t.Helper()
	opt, err := redis.ParseURL(URL(t))
	if err != nil {
		t.Fatalf("parse redis url: %v", err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("redis ping: %v", err)
	}
	return c, fmt.Sprintf("t%d-%s", time.Now().UnixNano(), filepath.Base(t.Name()))
}

// start runs redis-server for the life of the test binary; the kernel
// kills it when the test binary exits (Pdeathsig).
func start() (string, error) {
	dir, err := os.MkdirTemp("", "rollbot-redis-")
	if err != nil {
		return "", err
	}
	s, err := spawn(dir, "redis-server", nil)
	if err != nil {
		return "", err
	}
	return "redis://" + s.addr() + "/0", nil
}
