// Package redistest gives tests a real Redis: the server named by
// ROLLBOT_TEST_REDIS_URL (started by .ci/run), or else a redis-server
// started for the test binary on a free loopback port. A missing
// redis-server fails the test; it never skips.
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"rollbot/testkit/wait"
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
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", fmt.Errorf("redis-server not found on PATH: %w", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir, err := os.MkdirTemp("", "rollbot-redis-")
	if err != nil {
		return "", err
	}
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir, "--save", "", "--appendonly", "no")
	cmd.SysProcAttr = deathSignal()
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start redis-server: %w", err)
	}
	u := fmt.Sprintf("redis://127.0.0.1:%d/0", port)
	opt, _ := redis.ParseURL(u)
	c := redis.NewClient(opt)
	defer c.Close()
	err = wait.UntilEvery(context.Background(), 50*time.Millisecond, 10*time.Second, fmt.Sprintf("redis-server to answer on port %d", port), func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		err := c.Ping(ctx).Err()
		return err == nil, err
	})
	if err != nil {
		cmd.Process.Kill()
		return "", err
	}
	return u, nil
}
