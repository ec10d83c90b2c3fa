package nettest

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
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

// The kernel picks ports for outgoing connections and for port 0 from
// its ephemeral range; a port from there can be gone before the test's
// server binds it.
func TestFreePortsBelowTheEphemeralRange(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Fatal(err)
	}
	low, err := strconv.Atoi(strings.Fields(string(b))[0])
	if err != nil {
		t.Fatal(err)
	}
	ports, err := FreePorts(50)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ports {
		if p >= low || p < 1024 {
			t.Errorf("port %d: want one in [1024, %d), below the ephemeral range", p, low)
		}
	}
}

// A port this process has is not handed to another test process, nor
// again to this one; one held by a process that died is free again.
func TestClaimsAcrossProcesses(t *testing.T) {
	if p := os.Getenv("NETTEST_CLAIM"); p != "" {
		n, _ := strconv.Atoi(p)
		if claim(n) {
			os.Stdout.WriteString("claimed\n")
		} else {
			os.Stdout.WriteString("refused\n")
		}
		return
	}
	other := func(port int) string {
		cmd := exec.Command(os.Args[0], "-test.run=^TestClaimsAcrossProcesses$")
		cmd.Env = append(os.Environ(), "NETTEST_CLAIM="+strconv.Itoa(port))
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("child: %v", err)
		}
		return strings.Fields(string(out))[0]
	}
	mine := FreePort(t)
	if got := other(mine); got != "refused" {
		t.Errorf("another process claiming port %d held here: %s, want refused", mine, got)
	}
	if claim(mine) {
		t.Errorf("port %d claimed twice in one process", mine)
	}
	// A port no live process holds (the child's claim died with it).
	lo, hi := portRange()
	tried := false
	for p := lo; p <= hi && !tried; p++ {
		if claims.held[p] != nil || !bindable(p) {
			continue
		}
		if other(p) != "claimed" {
			continue // another test process on this machine has it
		}
		if got := other(p); got != "claimed" {
			t.Errorf("port %d after the claiming child exited: %s, want claimed", p, got)
		}
		tried = true
	}
	if !tried {
		t.Fatalf("no port in %d-%d that no process holds", lo, hi)
	}
}

func TestClosedAddrRefuses(t *testing.T) {
	_, err := net.Dial("tcp", ClosedAddr(t))
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial a closed address: %v, want connection refused", err)
	}
}
