// Package nettest hands tests loopback ports and addresses: free ones for
// a server a test starts (sshd, Prometheus, a published container port,
// the Kubernetes control plane) and closed ones to provoke "connection
// refused".
//
// go test runs each package's tests in a process of their own, several at
// once, and a test often learns its port well before its server binds it
// (a systemd unit on a fake host, etcd behind an apiserver). Asking the
// kernel for port 0 would hand out ports from the ephemeral range, where
// every outgoing connection and every other package's "free port" come
// from as well: two packages were seen to get the same one. So ports come
// from below the ephemeral range, where the kernel never picks one on its
// own, and each is claimed with a lock file that the claiming process
// holds until it exits (kill -9 included): no other test process takes
// it, and none within this process gets it twice. A port some other
// program listens on is skipped.
package nettest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// span is how many ports below the ephemeral range nettest hands out.
const span = 12000

var claims = struct {
	sync.Mutex
	held map[int]*os.File // open, flock'ed for the life of the process
}{held: map[int]*os.File{}}

// portRange is [lo, hi] below the kernel's ephemeral range, read once.
var portRange = sync.OnceValues(func() (lo, hi int) {
	hi = 32767
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 2048 {
				hi = n - 1
			}
		}
	}
	return max(1024, hi-span+1), hi
})

// lockDir is where the claims of all test processes on this machine meet;
// it is made once.
var lockDir = sync.OnceValues(func() (string, error) {
	dir := filepath.Join(os.TempDir(), "rollbot-nettest-ports")
	return dir, os.MkdirAll(dir, 0o777)
})

// claim takes port for this process, or reports that another process (or
// this one) has it. The lock goes with the process.
func claim(port int) bool {
	claims.Lock()
	defer claims.Unlock()
	if claims.held[port] != nil {
		return false
	}
	dir, err := lockDir()
	if err != nil {
		return false
	}
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return false
	}
	claims.held[port] = f
	return true
}

// bindable reports whether nothing listens on port now.
func bindable(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// FreePorts returns n distinct TCP ports, free on 127.0.0.1 when asked
// for and claimed for this process: no other test process gets them.
func FreePorts(n int) ([]int, error) {
	lo, hi := portRange()
	size := hi - lo + 1
	ports := make([]int, 0, n)
	start := rand.IntN(size)
	for i := 0; i < size && len(ports) < n; i++ {
		p := lo + (start+i)%size
		if claim(p) && bindable(p) {
			ports = append(ports, p)
		}
	}
	if len(ports) < n {
		dir, err := lockDir()
		if err != nil {
			return nil, fmt.Errorf("nettest: the claims' directory: %w", err)
		}
		return nil, fmt.Errorf("only %d of %d loopback ports in %d-%d are free and unclaimed (claims in %s)", len(ports), n, lo, hi, dir)
	}
	return ports, nil
}

// FreePort is one free loopback port; it fails t when none can be had.
func FreePort(t testing.TB) int {
	t.Helper()
	ports, err := FreePorts(1)
	if err != nil {
		t.Fatalf("nettest: find a free port: %v", err)
	}
	return ports[0]
}

// FreeAddr is a loopback host:port that is free and claimed for this
// process.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}

// ClosedAddr is a loopback host:port where nothing listens: a connection
// to it is refused. The port is claimed, so no other test binds it.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	return FreeAddr(t)
}
