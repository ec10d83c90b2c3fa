// Package sshtest starts real OpenSSH servers (Debian's /usr/sbin/sshd) on
// loopback as stand-ins for VM hosts, for the VM adapter's tests and the
// end-to-end test. TEST INFRASTRUCTURE: nothing in the product imports it.
//
// Each Host is one sshd with its own generated host key, its own
// authorized_keys and a random loopback port, running in its own private
// mount namespace where the host's directory <Dir>/opt is mounted at /opt.
// So two hosts both have an /opt/myapp/... of their own, and the adapter is
// configured with the same production paths it would use on real VMs. Files
// are reachable from the test at Host.Path("/opt/...").
//
// There is no systemd on the test machines. Each host gets its own copy of
// a small systemctl stand-in (testdata/systemctl, NOT part of rollbot) at
// the host path Systemctl (/opt/.sshtest/bin/systemctl, the same on every
// host); tests point the adapter's `systemctl` setting at it. It starts
// and stops the units described with Host.Unit as detached processes with
// a pid file.
//
// Requirements: root (sshd and mount namespaces need it), /usr/sbin/sshd
// (Debian openssh-server), unshare and setsid (util-linux).
package sshtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	_ "embed"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	"rollbot/testkit/wait"

	"rollbot/testkit/nettest"
)

//go:embed testdata/systemctl
var systemctlStandIn []byte

// SSHD is the server binary; an absolute path, as sshd requires.
const SSHD = "/usr/sbin/sshd"

// Systemctl is where the systemctl stand-in is on every host (host view).
const Systemctl = "/opt/.sshtest/bin/systemctl"

// Key is a generated ed25519 key pair.
type Key struct {
	Private ed25519.PrivateKey
	Signer  ssh.Signer
	Public  ssh.PublicKey
	// File holds the private key in OpenSSH format (mode 0600).
	File string
}

// NewKey generates a key and writes its private half to dir/name.
func NewKey(t testing.TB, dir, name string) Key {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, name)
	if err != nil {
		t.Fatalf("marshal key: %v", err)
	}
	file := filepath.Join(dir, name)
	if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return Key{Private: priv, Signer: signer, Public: signer.PublicKey(), File: file}
}

// Host is one running sshd.
type Host struct {
	Name string
	// Dir is the host's directory; Dir/opt is its /opt.
	Dir     string
	Addr    string // 127.0.0.1:port
	HostKey ssh.PublicKey
	// SystemdDir holds the stand-in's unit files, pid files and logs
	// (the test's view of the host's /opt/.sshtest/systemd).
	SystemdDir string

	cmd    *exec.Cmd
	stderr *bytes.Buffer
	exited chan struct{}
}

// Start runs an sshd for a host named name under parent/name that accepts
// the given user key for root. It is stopped (and every unit it started is
// killed) on t.Cleanup. A missing sshd is a test failure, not a skip.
func Start(t testing.TB, parent, name string, authorized ssh.PublicKey) *Host {
	t.Helper()
	if _, err := os.Stat(SSHD); err != nil {
		t.Fatalf("sshtest: %s not found (Debian package openssh-server): %v", SSHD, err)
	}
	for _, bin := range []string{"unshare", "setsid", "mount"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("sshtest: %s not found (Debian package util-linux/mount): %v", bin, err)
		}
	}
	if os.Geteuid() != 0 {
		t.Fatalf("sshtest: must run as root (sshd and mount namespaces need it)")
	}
	dir := filepath.Join(parent, name)
	h := &Host{Name: name, Dir: dir}
	h.SystemdDir = h.Path(path.Join(path.Dir(path.Dir(Systemctl)), "systemd"))
	for _, d := range []string{h.Path("/opt"), h.SystemdDir, filepath.Join(dir, "etc")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(h.Path(Systemctl)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.Path(Systemctl), systemctlStandIn, 0o755); err != nil {
		t.Fatal(err)
	}
	hk := NewKey(t, filepath.Join(dir, "etc"), "ssh_host_ed25519_key")
	h.HostKey = hk.Public
	if err := os.WriteFile(filepath.Join(dir, "etc", "authorized_keys"), ssh.MarshalAuthorizedKey(authorized), 0o600); err != nil {
		t.Fatal(err)
	}

	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port := nettest.FreePort(t)
		h.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = h.start(t, hk.File, port); lastErr == nil {
			t.Cleanup(h.Stop)
			return h
		}
	}
	t.Fatalf("sshtest: start sshd for %s: %v", name, lastErr)
	return nil
}

// Path maps a path on the host (e.g. /opt/myapp/current) to the test's view.
func (h *Host) Path(p string) string {
	return filepath.Join(h.Dir, filepath.FromSlash(strings.TrimPrefix(p, "/")))
}

func (h *Host) start(t testing.TB, hostKeyFile string, port int) error {
	conf := filepath.Join(h.Dir, "etc", "sshd_config")
	cfg := strings.Join([]string{
		"Port " + strconv.Itoa(port),
		"ListenAddress 127.0.0.1",
		"HostKey " + hostKeyFile,
		"PidFile " + filepath.Join(h.Dir, "sshd.pid"),
		"AuthorizedKeysFile " + filepath.Join(h.Dir, "etc", "authorized_keys"),
		"StrictModes no",
		"UsePAM no",
		"PermitRootLogin prohibit-password",
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"MaxStartups 64",
		"MaxSessions 64",
		"LogLevel VERBOSE",
		"",
	}, "\n")
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		return err
	}
	// A private mount namespace: the host's own /opt, and a private /run
	// for sshd's privilege separation directory (nothing on the machine
	// is changed).
	script := `set -e
mount --bind "$1" /opt
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -m 0755 /run/sshd
exec "$2" -D -e -f "$3"`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", h.Path("/opt"), SSHD, conf)
	h.stderr = &bytes.Buffer{}
	cmd.Stdout = h.stderr
	cmd.Stderr = h.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	h.cmd = cmd
	h.exited = make(chan struct{})
	go func() { _ = cmd.Wait(); close(h.exited) }()

	err := wait.Until(context.Background(), 10*time.Second, "sshd to answer on "+h.Addr, func() (bool, error) {
		select {
		case <-h.exited:
			return false, wait.Stop(fmt.Errorf("sshd exited: %s", h.stderr.String()))
		default:
		}
		c, err := net.DialTimeout("tcp", h.Addr, 200*time.Millisecond)
		if err != nil {
			return false, err
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		return strings.HasPrefix(line, "SSH-2.0-"), fmt.Errorf("greeting %q", line)
	})
	if err != nil {
		h.kill()
		return fmt.Errorf("%w: %s", err, h.stderr.String())
	}
	return nil
}

func (h *Host) kill() {
	if h.cmd == nil || h.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-h.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-h.exited:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL)
		<-h.exited
	}
}

// Stop kills every unit the stand-in started on this host, then sshd.
func (h *Host) Stop() {
	pids, _ := filepath.Glob(filepath.Join(h.SystemdDir, "*.pid"))
	for _, f := range pids {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	h.kill()
}

// Log returns sshd's output so far (for failure messages).
func (h *Host) Log() string { return h.stderr.String() }

// Unit describes a service for the systemctl stand-in: exe run with args.
// exe is a path as the host sees it (e.g. /opt/myapp/current/myapp).
func (h *Host) Unit(t testing.TB, unit, exe string, args ...string) {
	t.Helper()
	quoted := strings.Join(args, " ")
	conf := fmt.Sprintf("EXEC=%q\nARGS=%q\n", exe, quoted)
	if err := os.WriteFile(filepath.Join(h.SystemdDir, unit+".conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Journal returns the stand-in's start/stop record for unit.
func (h *Host) Journal(unit string) string {
	b, _ := os.ReadFile(filepath.Join(h.SystemdDir, unit+".journal"))
	return string(b)
}

// ServiceLog returns the unit's output.
func (h *Host) ServiceLog(unit string) string {
	b, _ := os.ReadFile(filepath.Join(h.SystemdDir, unit+".log"))
	return string(b)
}

// Run runs cmd on the host as root over SSH (host key pinned) and returns
// its combined output; a failure is fatal.
func (h *Host) Run(t testing.TB, key Key, cmd string) string {
	t.Helper()
	c, err := ssh.Dial("tcp", h.Addr, &ssh.ClientConfig{User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(key.Signer)}, HostKeyCallback: ssh.FixedHostKey(h.HostKey), Timeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("ssh %s: %v", h.Name, err)
	}
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		t.Fatalf("ssh %s: %v", h.Name, err)
	}
	defer s.Close()
	// Separate buffers: the session copies stdout and stderr concurrently.
	var out, errOut bytes.Buffer
	s.Stdout, s.Stderr = &out, &errOut
	if err := s.Run(cmd); err != nil {
		t.Fatalf("ssh %s %q: %v\n%s%s", h.Name, cmd, err, out.String(), errOut.String())
	}
	return out.String() + errOut.String()
}

// KnownHosts writes a known_hosts file listing the hosts' keys.
func KnownHosts(t testing.TB, file string, hosts ...*Host) string {
	t.Helper()
	var b strings.Builder
	for _, h := range hosts {
		b.WriteString(knownhosts.Line([]string{knownhosts.Normalize(h.Addr)}, h.HostKey))
		b.WriteString("\n")
	}
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}
