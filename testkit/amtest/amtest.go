// Package amtest runs a real Alertmanager (Debian's
// prometheus-alertmanager) for tests, on a random loopback port, with the
// configuration a test gives. TEST INFRASTRUCTURE: nothing in the product
// imports it.
package amtest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"rollbot/testkit/nettest"
	"rollbot/testkit/wait"
)

// Binary locates Alertmanager: $ALERTMANAGER_BIN, then
// /usr/bin/prometheus-alertmanager (Debian's package). It fails t when
// neither exists.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("ALERTMANAGER_BIN"); p != "" {
		return p
	}
	for _, p := range []string{"/usr/bin/prometheus-alertmanager", "/usr/bin/alertmanager"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatal("alertmanager not found at /usr/bin/prometheus-alertmanager: install the Debian package `prometheus-alertmanager` (listed in .ci/apt-packages) or set ALERTMANAGER_BIN")
	return ""
}

// Alertmanager is a running Alertmanager.
type Alertmanager struct {
	Addr string // host:port, for Prometheus's alerting config
	URL  string
	Dir  string
	log  string
}

// Start runs Alertmanager with config (alertmanager.yml) until the test
// ends, and waits until it is ready.
func Start(t testing.TB, config string) *Alertmanager {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := nettest.FreeAddr(t)
	am := &Alertmanager{Addr: addr, URL: "http://" + addr, Dir: dir, log: filepath.Join(dir, "alertmanager.log")}
	logf, err := os.Create(am.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--cluster.listen-address=", "--log.level=debug")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	err = wait.UntilEvery(context.Background(), 100*time.Millisecond, 30*time.Second, "alertmanager to be ready", func() (bool, error) {
		select {
		case <-exited:
			return false, wait.Stop(errors.New("alertmanager exited"))
		default:
		}
		resp, err := http.Get(am.URL + "/-/ready")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == 200, fmt.Errorf("/-/ready: %d", resp.StatusCode)
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, am.LogTail(30))
	}
	return am
}

// LogTail returns the last n lines of Alertmanager's log.
func (a *Alertmanager) LogTail(n int) string {
	b, _ := os.ReadFile(a.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
