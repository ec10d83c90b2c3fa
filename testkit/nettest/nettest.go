// Package nettest hands tests loopback ports and addresses: free ones for
// a server a test starts (sshd, Prometheus, a published container port,
// the Kubernetes control plane) and closed ones to provoke "connection
// refused".
//
// A free port is free when asked for; another process may take it before
// the test's server binds it. Kits that start a server retry or fail with
// the server's own message, never silently.
package nettest

import (
	"net"
	"testing"
)

// FreePorts returns n distinct TCP ports that were free on 127.0.0.1 a
// moment ago (all held open together while asking, so they differ).
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
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

// FreeAddr is a loopback host:port that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("nettest: find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// ClosedAddr is a loopback host:port where nothing listens: a connection
// to it is refused.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	return FreeAddr(t)
}
