package sshtest

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

func run(t *testing.T, h *Host, key Key, known, cmd string) (string, error) {
	t.Helper()
	cb, err := knownhosts.New(known)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ssh.Dial("tcp", h.Addr, &ssh.ClientConfig{User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(key.Signer)}, HostKeyCallback: cb})
	if err != nil {
		return "", err
	}
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Separate buffers: the session copies stdout and stderr concurrently.
	var out, errOut bytes.Buffer
	s.Stdout, s.Stderr = &out, &errOut
	err = s.Run(cmd)
	return out.String() + errOut.String(), err
}

// Two hosts, each with its own /opt; the stand-in starts and stops a unit.
func TestTwoHostsOwnOpt(t *testing.T) {
	dir := t.TempDir()
	key := NewKey(t, dir, "id_ed25519")
	a := Start(t, dir, "hostA", key.Public)
	b := Start(t, dir, "hostB", key.Public)
	known := KnownHosts(t, filepath.Join(dir, "known_hosts"), a, b)
	for _, h := range []*Host{a, b} {
		if err := os.WriteFile(h.Path("/opt/marker"), []byte(h.Name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range []*Host{a, b} {
		out, err := run(t, h, key, known, "cat /opt/marker")
		if err != nil || out != h.Name {
			t.Errorf("%s: /opt/marker = %q, %v; want its own %q\n%s", h.Name, out, err, h.Name, h.Log())
		}
	}

	// The stand-in: a unit running `sleep`, started and stopped over SSH.
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	a.Unit(t, "napper", sleep, "300")
	if out, err := run(t, a, key, known, Systemctl+" is-active napper"); err == nil || !strings.Contains(out, "inactive") {
		t.Errorf("is-active before start = %q, %v", out, err)
	}
	if out, err := run(t, a, key, known, Systemctl+" start napper.service"); err != nil {
		t.Fatalf("start: %v %s", err, out)
	}
	if out, err := run(t, a, key, known, Systemctl+" is-active napper"); err != nil || strings.TrimSpace(out) != "active" {
		t.Errorf("is-active after start = %q, %v", out, err)
	}
	if out, err := run(t, a, key, known, Systemctl+" --no-pager stop napper"); err != nil {
		t.Fatalf("stop: %v %s", err, out)
	}
	if out, err := run(t, a, key, known, Systemctl+" is-active napper"); strings.TrimSpace(out) != "inactive" || err == nil {
		t.Errorf("is-active after stop = %q, %v; want inactive, exit 3", out, err)
	}
	if j := a.Journal("napper"); !strings.Contains(j, "start "+sleep) || !strings.Contains(j, "stop ") {
		t.Errorf("journal = %q", j)
	}
}

func TestUnknownHostRejectedByClient(t *testing.T) {
	dir := t.TempDir()
	key := NewKey(t, dir, "id_ed25519")
	a := Start(t, dir, "hostA", key.Public)
	b := Start(t, dir, "hostB", key.Public)
	known := KnownHosts(t, filepath.Join(dir, "known_hosts"), a) // b not listed
	_, err := run(t, b, key, known, "true")
	var ke *knownhosts.KeyError
	if err == nil || !errors.As(err, &ke) {
		t.Fatalf("dial unknown host = %v, want a knownhosts.KeyError", err)
	}
	if len(ke.Want) != 0 {
		t.Errorf("Want = %v; an unknown host has no known keys", ke.Want)
	}
}
