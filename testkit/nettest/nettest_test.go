package nettest

import (
	"errors"
	"net"
	"syscall"
	"testing"
)

func TestFreePortsDistinctAndBindable(t *testing.T) {
	ports, err := FreePorts(4)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] || p == 0 {
			t.Fatalf("FreePorts(4) = %v: not distinct", ports)
		}
		seen[p] = true
	}
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: FreePort(t)})
	if err != nil {
		t.Fatalf("listen on a free port: %v", err)
	}
	l.Close()
}

func TestClosedAddrRefuses(t *testing.T) {
	_, err := net.Dial("tcp", ClosedAddr(t))
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial a closed address: %v, want connection refused", err)
	}
}
