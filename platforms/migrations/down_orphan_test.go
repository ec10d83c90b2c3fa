package migrations

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"rollbot/platforms"
	"rollbot/testkit/wait"
)

// A down command outlives the process that started it with RunDown (a
// replica killed with kill -9): these tests start RunDown in a real
// process, the test binary run again in the helper mode downStarter, and
// kill it with SIGKILL.

const (
	downStarterEnv = "ROLLBOT_TEST_DOWN_STARTER" // the incident
	downScriptEnv  = "ROLLBOT_TEST_DOWN_SCRIPT"
	downDirEnv     = "ROLLBOT_TEST_DOWN_DIR"
	downSecretEnv  = "ROLLBOT_TEST_DOWN_SECRET"
	downSecret     = "postgres://migrator:Orph4n-S3cret@db.internal/app"
)

// orphanConfig runs script with sh in dir, with the secret DATABASE_URL.
func orphanConfig(dir, script string, timeout time.Duration) DownConfig {
	return DownConfig{Kind: DownCommand, Dir: dir, Timeout: timeout, Command: []string{"sh", "-c", script},
		SecretEnv: map[string]SecretRef{"DATABASE_URL": {Env: downSecretEnv}}}
}

// downStarter is the helper process (TestMain): RunDown of the script in
// $ROLLBOT_TEST_DOWN_SCRIPT for the incident in $ROLLBOT_TEST_DOWN_STARTER,
// its relayed output on stdout.
func downStarter() int {
	cfg := orphanConfig(os.Getenv(downDirEnv), os.Getenv(downScriptEnv), time.Minute)
	if err := RunDown(context.Background(), cfg, os.Getenv(downStarterEnv), nil, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// starter is a helper process running RunDown.
type starter struct {
	cmd   *exec.Cmd
	lines chan string // what RunDown relayed, line by line
}

func startStarter(t *testing.T, incident, dir, script string) *starter {
	t.Helper()
	t.Setenv(downSecretEnv, downSecret)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), downStarterEnv+"="+incident, downScriptEnv+"="+script, downDirEnv+"="+dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &starter{cmd: cmd, lines: make(chan string, 100)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		close(s.lines)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return s
}

// relayed waits for RunDown in the starter to relay want.
func (s *starter) relayed(t *testing.T, want string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				t.Fatalf("the starter ended before it relayed %q", want)
			}
			if l == want {
				return
			}
		case <-timeout:
			t.Fatalf("the starter did not relay %q within 30s", want)
		}
	}
}

// kill9 kills the starter with SIGKILL and reaps it.
func (s *starter) kill9(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("starter: %v, want killed", err)
	}
}

// runDirOf is incident's run directory in this test process.
func runDirOf(t *testing.T, incident string) string {
	t.Helper()
	dir, err := runDirPath(incident, false)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// commandPID is the pid RunDown recorded for incident's command.
func commandPID(t *testing.T, incident string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(runDirOf(t, incident), pidName))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// waitGone waits for process pid to have exited (a zombie is gone too:
// it is reparented and reaped by init).
func waitGone(t *testing.T, pid int, what string) {
	t.Helper()
	err := wait.UntilEvery(context.Background(), 50*time.Millisecond, 15*time.Second, what, func() (bool, error) {
		stat, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) || strings.Contains(string(stat), ") Z "), nil
	})
	if err != nil {
		syscall.Kill(-pid, syscall.SIGKILL)
		t.Fatal(err)
	}
}

func locked(t *testing.T, incident string) bool {
	t.Helper()
	held, err := lockHeld(filepath.Join(runDirOf(t, incident), runningName))
	if err != nil {
		t.Fatal(err)
	}
	return held
}

func noRunDir(t *testing.T, incident string) {
	t.Helper()
	if _, err := os.Lstat(runDirOf(t, incident)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("run directory of %s after the run: %v, want none (it holds unredacted output)", incident, err)
	}
}

// orphanScript prints a line, waits for the file gate (the test creates
// it after the kill), prints again — a write that a pipe whose reader
// died with the starter answers with SIGPIPE — and only then does its
// work: it writes the file marker.
const orphanScript = `echo "rolling back with $DATABASE_URL"
while [ ! -e gate ]; do sleep 0.05; done
echo "migrated 2 steps, still $DATABASE_URL"
echo done > marker`

// TestRunDownOutlivesItsStarter: RunDown's process is killed with
// SIGKILL while its command runs. The command keeps running and writing,
// finishes its work, and holds the running lock until it exits (not the
// dead starter); a follower on the same host (OpenDownRun, the takeover)
// relays its whole output, redacted, and sees it end — while it still
// runs, or after it has ended.
func TestRunDownOutlivesItsStarter(t *testing.T) {
	for _, tc := range []struct {
		name string
		// endFirst: the command ends before the follower starts.
		endFirst bool
	}{
		{name: "followed while it runs"},
		{name: "ended before the takeover", endFirst: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			incident := "RB-" + strconv.Itoa(int(time.Now().UnixNano()%1e9))
			dir := t.TempDir()
			s := startStarter(t, incident, dir, orphanScript)
			s.relayed(t, "rolling back with [REDACTED]")
			pid := commandPID(t, incident)
			t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) })
			s.kill9(t)
			if !locked(t, incident) {
				t.Fatal("the running lock is free after the starter died, while its command runs")
			}
			if err := syscall.Kill(pid, 0); err != nil {
				t.Fatalf("the command died with its starter: %v", err)
			}

			var w lines
			done := make(chan error, 1)
			follow := func() {
				dr, err := OpenDownRun(incident)
				if err != nil {
					done <- err
					return
				}
				done <- dr.Follow(context.Background(), orphanConfig(dir, orphanScript, time.Minute), &w)
			}
			if !tc.endFirst {
				go follow()
			}
			if err := os.WriteFile(filepath.Join(dir, "gate"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if tc.endFirst {
				waitGone(t, pid, "the command to end")
				if err := wait.UntilEvery(context.Background(), 50*time.Millisecond, 10*time.Second, "the running lock to be released", func() (bool, error) {
					return !locked(t, incident), nil
				}); err != nil {
					t.Fatal(err)
				}
				go follow()
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Follow: %v (output %q)", err, w.String())
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("Follow did not return within 30s (output %q)", w.String())
			}
			if b, err := os.ReadFile(filepath.Join(dir, "marker")); err != nil || string(b) != "done\n" {
				t.Errorf("the command did not finish its work after its starter died: marker %q, %v", b, err)
			}
			want := []string{"rolling back with [REDACTED]\n", "migrated 2 steps, still [REDACTED]\n"}
			if strings.Join(w.l, "|") != strings.Join(want, "|") {
				t.Errorf("followed %q, want %q", w.l, want)
			}
			if strings.Contains(w.String(), "Orph4n-S3cret") {
				t.Errorf("the followed output holds the secret: %q", w.String())
			}
			waitGone(t, pid, "the command to end")
			noRunDir(t, incident)
			if _, err := OpenDownRun(incident); !errors.Is(err, ErrNoDownRun) {
				t.Errorf("OpenDownRun after the follow: %v, want ErrNoDownRun", err)
			}
		})
	}
}

// TestFollowDownStops: a follower whose ctx ends leaves the command and
// its run directory to the next one; a command still running at the
// follower's timeout is stopped, process group and all, like RunDown's.
func TestFollowDownStops(t *testing.T) {
	incident := "RB-" + strconv.Itoa(int(time.Now().UnixNano()%1e9))
	dir := t.TempDir()
	script := `sleep 300 & echo $! > child.pid; echo "started with $DATABASE_URL"; while :; do sleep 0.1; done`
	s := startStarter(t, incident, dir, script)
	s.relayed(t, "started with [REDACTED]")
	pid := commandPID(t, incident)
	t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) })
	s.kill9(t)

	dr, err := OpenDownRun(incident)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var w lines
	err = dr.Follow(ctx, orphanConfig(dir, script, time.Minute), &w)
	if !errors.Is(err, context.DeadlineExceeded) || w.String() != "started with [REDACTED]\n" {
		t.Fatalf("Follow with a short ctx: %v (output %q)", err, w.String())
	}
	if !locked(t, incident) || syscall.Kill(pid, 0) != nil {
		t.Fatal("a follower whose ctx ended stopped the command")
	}

	b, err := os.ReadFile(filepath.Join(dir, "child.pid"))
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if dr, err = OpenDownRun(incident); err != nil {
		t.Fatalf("the run directory after a follower's ctx ended: %v", err)
	}
	start := time.Now()
	w = lines{}
	err = dr.Follow(context.Background(), orphanConfig(dir, script, time.Second), &w)
	msg, _ := platforms.UserMessage(err)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(msg, "the down command sh started by the replica that stopped did not finish within 1s after the takeover and was stopped") {
		t.Fatalf("Follow past its timeout: %v (message %q)", err, msg)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("Follow returned %s after its 1s timeout (SIGTERM ends the script)", d)
	}
	if w.String() != "started with [REDACTED]\n" {
		t.Errorf("output %q", w.String())
	}
	waitGone(t, pid, "the command to end once stopped")
	waitGone(t, child, "the command's background child to end once stopped")
	noRunDir(t, incident)
}

// TestRunDownRunDir: while the command runs, its run directory is
// private and its running lock held; a second RunDown for the incident is
// refused; the directory is gone afterwards, after a failure too; one an
// ended run left behind is replaced.
func TestRunDownRunDir(t *testing.T) {
	dir := t.TempDir()
	const incident = "RB-7"
	run := runDirOf(t, incident)
	cfg := DownConfig{Kind: DownCommand, Dir: dir, Timeout: time.Minute, Command: []string{"sh", "-c",
		`echo waiting; while [ ! -e gate ]; do sleep 0.05; done; echo through`}}
	w := &lines{}
	var checked bool
	w.on = func(l string) {
		if l != "waiting\n" {
			return
		}
		defer os.WriteFile(filepath.Join(dir, "gate"), nil, 0o600)
		checked = true
		for name, want := range map[string]os.FileMode{run: os.ModeDir | 0o700, filepath.Dir(run): os.ModeDir | 0o700,
			filepath.Join(run, outputName): 0o600, filepath.Join(run, runningName): 0o600, filepath.Join(run, pidName): 0o600} {
			if fi, err := os.Lstat(name); err != nil || fi.Mode() != want {
				t.Errorf("%s: %v, %v; want mode %v", name, fi.Mode(), err, want)
			}
		}
		if !locked(t, incident) {
			t.Error("the running lock is free while the command runs")
		}
		pid := commandPID(t, incident)
		if pgid, err := syscall.Getpgid(pid); err != nil || pgid != pid {
			t.Errorf("pid file %d: process group %d, %v; want the command's own group", pid, pgid, err)
		}
		err := RunDown(context.Background(), cfg, incident, nil, &lines{})
		if msg, ok := platforms.UserMessage(err); !ok || !strings.Contains(msg, "still running on the bot's host") {
			t.Errorf("a second RunDown for %s while the first runs: %v", incident, err)
		}
	}
	if err := RunDown(context.Background(), cfg, incident, nil, w); err != nil {
		t.Fatalf("RunDown: %v (output %q)", err, w.String())
	}
	if !checked || w.String() != "waiting\nthrough\n" {
		t.Fatalf("output %q", w.String())
	}
	noRunDir(t, incident)

	// A failure removes it too.
	cfg.Command = []string{"sh", "-c", "echo failing; exit 3"}
	if err := RunDown(context.Background(), cfg, incident, nil, &lines{}); err == nil {
		t.Fatal("exit 3 succeeded")
	}
	noRunDir(t, incident)

	// A directory an ended run left behind (its bot died, no replica on
	// this host took it over): its output is not relayed again.
	if err := os.MkdirAll(run, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{outputName, runningName} {
		if err := os.WriteFile(filepath.Join(run, f), []byte("stale output\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Command = []string{"echo", "fresh"}
	w = &lines{}
	if err := RunDown(context.Background(), cfg, incident, nil, w); err != nil || w.String() != "fresh\n" {
		t.Fatalf("RunDown over a stale directory: %v, output %q", err, w.String())
	}
	noRunDir(t, incident)

	t.Run("bad places", func(t *testing.T) {
		tmp := t.TempDir()
		t.Setenv("TMPDIR", tmp)
		elsewhere := t.TempDir()
		if err := os.Symlink(elsewhere, filepath.Join(tmp, runDirRoot)); err != nil {
			t.Fatal(err)
		}
		marker := filepath.Join(dir, "ran")
		cfg := DownConfig{Kind: DownCommand, Command: []string{"touch", marker}}
		if err := RunDown(context.Background(), cfg, incident, nil, &lines{}); err == nil || !strings.Contains(err.Error(), "symbolic link") {
			t.Errorf("RunDown with %s/%s a symlink: %v", tmp, runDirRoot, err)
		}
		if err := RunDown(context.Background(), cfg, "../etc", nil, &lines{}); err == nil || !strings.Contains(err.Error(), "not a plain file name") {
			t.Errorf("RunDown for incident ../etc: %v", err)
		}
		if os.Geteuid() == 0 { // CI runs as root: a directory of another user
			os.Remove(filepath.Join(tmp, runDirRoot))
			if err := os.Mkdir(filepath.Join(tmp, runDirRoot), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(filepath.Join(tmp, runDirRoot), 65534, 65534); err != nil {
				t.Fatal(err)
			}
			if err := RunDown(context.Background(), cfg, incident, nil, &lines{}); err == nil || !strings.Contains(err.Error(), "not owned by the bot's user") {
				t.Errorf("RunDown with %s/%s owned by uid 65534: %v", tmp, runDirRoot, err)
			}
		}
		if _, err := os.Stat(marker); err == nil {
			t.Error("the command ran")
		}
	})
}
