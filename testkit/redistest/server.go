package redistest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"rollbot/testkit/nettest"
	"rollbot/testkit/wait"
)

// server is one redis-server or redis-sentinel process started by a test.
type server struct {
	port int
	dir  string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

func (s *server) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// client returns a plain client of this one process.
func (s *server) client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: s.addr(), DialTimeout: time.Second, ReadTimeout: 2 * time.Second, MaxRetries: -1})
}

// logTail is the end of the process's log, for failure messages.
func (s *server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(bytes.TrimSpace(b))
}

// kill sends SIGKILL and waits for the process to be gone.
func (s *server) kill() {
	if s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-s.done
}

func (s *server) alive() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// spawn starts bin (redis-server or redis-sentinel) in a fresh directory
// under parent on a free loopback port; conf is written to redis.conf
// there and passed as the config file (sentinels rewrite it). It waits
// until the process answers PING.
func spawn(parent, bin string, conf []string) (*server, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		pkg := "redis-server"
		if bin == "redis-sentinel" {
			pkg = "redis-sentinel"
		}
		return nil, fmt.Errorf("%s not found on PATH (apt-get install %s): %w", bin, pkg, err)
	}
	// A cluster node also listens on a bus port, by default its port
	// plus 10000: that one would come from no claim, so it is named.
	cluster := slices.Contains(conf, "cluster-enabled yes")
	n := 1
	if cluster {
		n = 2
	}
	ports, err := nettest.FreePorts(n)
	if err != nil {
		return nil, err
	}
	port := ports[0]
	if cluster {
		conf = append(slices.Clip(conf), "cluster-port "+strconv.Itoa(ports[1]))
	}
	dir := filepath.Join(parent, bin+"-"+strconv.Itoa(port))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	lines := []string{"bind 127.0.0.1", "port " + strconv.Itoa(port), "dir " + dir, "logfile " + filepath.Join(dir, "log")}
	if bin == "redis-server" {
		// no persistence; a replica's full sync starts at once instead
		// of after the default 5 s diskless delay
		lines = append(lines, `save ""`, "appendonly no", "repl-diskless-sync-delay 0")
	}
	lines = append(lines, conf...)
	cfg := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(cfg, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(path, cfg)
	cmd.SysProcAttr = deathSignal()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	s := &server{port: port, dir: dir, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(s.done) }()
	c := s.client()
	defer c.Close()
	err = wait.UntilEvery(context.Background(), 50*time.Millisecond, 10*time.Second, fmt.Sprintf("%s on port %d to answer PING", bin, port), func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err != nil && !s.alive() {
			return false, wait.Stop(fmt.Errorf("it exited: %w", err))
		}
		return err == nil, err
	})
	if err != nil {
		s.kill()
		return nil, fmt.Errorf("%w\n%s", err, s.logTail())
	}
	return s, nil
}

// startT spawns a server that is killed when the test ends.
func startT(t testing.TB, bin string, conf ...string) *server {
	t.Helper()
	s, err := spawn(t.TempDir(), bin, conf)
	if err != nil {
		t.Fatalf("redis for tests: %v", err)
	}
	t.Cleanup(s.kill)
	return s
}

// waitFor polls cond (each call bounded by 2s) every 50ms until it
// returns nil or within passes; the test fails with the last error.
func waitFor(t testing.TB, what string, within time.Duration, cond func(ctx context.Context) error) {
	t.Helper()
	debug := os.Getenv("REDISTEST_DEBUG") != ""
	wait.Every(t, 50*time.Millisecond, within, "redis for tests: "+what, func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := cond(ctx)
		cancel()
		if err != nil && debug {
			t.Logf("%s %s: %v", time.Now().Format("15:04:05.000"), what, err)
		}
		return err == nil, err
	})
}

// infoField reads one field of INFO <section>.
func infoField(ctx context.Context, c *redis.Client, section, field string) (string, error) {
	s, err := c.Info(ctx, section).Result()
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(s, "\r\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("INFO %s has no %s", section, field)
}

// Standalone is one redis-server of a test alone, so that the test can
// kill it for real (a Redis that goes away mid-flow).
type Standalone struct {
	URL string
	s   *server
}

// Server starts a redis-server for t alone, killed when t ends.
func Server(t testing.TB) *Standalone {
	t.Helper()
	s := startT(t, "redis-server")
	return &Standalone{URL: "redis://" + s.addr() + "/0", s: s}
}

// Kill sends SIGKILL and waits until the process is gone.
func (x *Standalone) Kill() { x.s.kill() }

// Freeze stops the process (SIGSTOP): connections stay open and every
// command hangs, as with a Redis that is overloaded or cut off without a
// reset. Thaw lets it go on; Freeze is undone when t ends.
func (x *Standalone) Freeze() { x.s.cmd.Process.Signal(syscall.SIGSTOP) }

// Thaw resumes a frozen server (SIGCONT).
func (x *Standalone) Thaw() { x.s.cmd.Process.Signal(syscall.SIGCONT) }
