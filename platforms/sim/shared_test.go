package sim

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"rollbot/platforms"
	"rollbot/testkit/platformtest"
)

// The deployment of these tests: v3 (bad) runs, v2 is the last good one.
func sharedConfig(path string, step time.Duration) Config {
	return Config{
		Versions:  []Version{{Artifact: "app:v1"}, {Artifact: "app:v2"}, {Artifact: "app:v3", Bad: true}},
		Replicas:  5,
		StepDelay: step,
		StateFile: path,
	}
}

var (
	revV1 = platforms.Revision{ID: "1", Artifact: "app:v1"}
	revV2 = platforms.Revision{ID: "2", Artifact: "app:v2"}
)

func newSim(t *testing.T, cfg Config) *Sim {
	t.Helper()
	s, err := New("myapp", cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func snapshot(t *testing.T, s *Sim) *platforms.Snapshot {
	t.Helper()
	snap, err := s.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func writes(t *testing.T, stateFile, op string) []Write {
	t.Helper()
	all, err := ReadWrites(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	var ws []Write
	for _, w := range all {
		if w.Op == op {
			ws = append(ws, w)
		}
	}
	return ws
}

// await fails the test if ch has not delivered within a minute: a guard
// against hanging, not a measure of speed.
func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(time.Minute):
		t.Fatalf("gave up waiting for %s", what)
		panic("unreachable")
	}
}

func TestSharedStateFirstProcessWins(t *testing.T) {
	path := filepath.Join(t.TempDir(), "myapp.json")
	a := newSim(t, sharedConfig(path, 0))
	if ws, err := ReadWrites(path); err != nil || len(ws) != 0 {
		t.Fatalf("write log before any write = %v, %v; want empty", ws, err)
	}
	if _, err := a.Stop(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	cfg := sharedConfig(path, 0)
	cfg.Replicas = 7
	b := newSim(t, cfg) // loads a's deployment instead of writing its own
	snap := snapshot(t, b)
	if !snap.Paused || snap.Health.Desired != 5 || snap.Current.Artifact != "app:v3" {
		t.Fatalf("second Sim sees paused=%v desired=%d current=%s; want the first one's deployment: paused, 5, app:v3",
			snap.Paused, snap.Health.Desired, snap.Current.Artifact)
	}
	res, err := b.Stop(context.Background(), false)
	if err != nil || res.Outcome != platforms.Skipped {
		t.Fatalf("Stop through the second Sim = %+v, %v; want Skipped (already paused by the first)", res, err)
	}
	ws, err := ReadWrites(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 1 || ws[0].Op != OpStop || ws[0].PID != os.Getpid() || ws[0].Version != 1 || ws[0].Time.IsZero() {
		t.Fatalf("write log = %+v; want one stop by pid %d at version 1", ws, os.Getpid())
	}
}

func TestSharedStateFileInMissingDirectory(t *testing.T) {
	_, err := New("myapp", sharedConfig(filepath.Join(t.TempDir(), "no-such-dir", "myapp.json"), 0))
	if err == nil || !strings.Contains(err.Error(), "state_file") {
		t.Fatalf("New = %v; want an error naming state_file", err)
	}
}

func TestSharedContract(t *testing.T) {
	path := filepath.Join(t.TempDir(), "myapp.json")
	cfg := Config{Versions: []Version{{Artifact: "app:v1"}, {Artifact: "app:v2", Bad: true}}, StateFile: path}
	platformtest.Contract(t, platformtest.Env{Platform: newSim(t, cfg), Good: "app:v1", Bad: "app:v2"})

	other := newSim(t, cfg)
	if snap := snapshot(t, other); snap.Current.Artifact != "app:v1" || snap.RolloutInProgress || snap.Health.Ready != 3 {
		t.Fatalf("another Sim on the file sees %s, in progress %v, %s; want app:v1 rolled out", snap.Current.Artifact, snap.RolloutInProgress, snap.Health.Detail)
	}
	var ops []string
	all, err := ReadWrites(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range all {
		ops = append(ops, w.Op)
	}
	if strings.Join(ops, ",") != OpStop+","+OpRollback {
		t.Fatalf("write log ops = %v; want stop, rollback (dry runs and skips write nothing)", ops)
	}
}

// modes runs a test on one Sim in memory and on two Sims sharing a file.
func modes(t *testing.T, step time.Duration, test func(t *testing.T, path string, a, b *Sim)) {
	t.Run("memory", func(t *testing.T) {
		s := newSim(t, sharedConfig("", step))
		test(t, "", s, s)
	})
	t.Run("state file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "myapp.json")
		test(t, path, newSim(t, sharedConfig(path, step)), newSim(t, sharedConfig(path, step)))
	})
}

type outcome struct {
	res platforms.Result
	err error
}

// pausedAfterTemplate starts a rollback to rev that stops in its progress
// report right after the template write until proceed is closed.
func pausedAfterTemplate(s *Sim, rev platforms.Revision, proceed <-chan struct{}) (written <-chan struct{}, done <-chan outcome) {
	w, d := make(chan struct{}), make(chan outcome, 1)
	go func() {
		once := false
		res, err := s.Rollback(context.Background(), rev, false, func(p platforms.Progress) {
			if p.Updated == 1 && !once {
				once = true
				close(w)
				<-proceed
			}
		})
		d <- outcome{res, err}
	}()
	return w, d
}

func TestSecondRollbackToTheSameRevisionWaitsAndWritesNothing(t *testing.T) {
	modes(t, time.Millisecond, func(t *testing.T, path string, a, b *Sim) {
		proceed := make(chan struct{})
		written, first := pausedAfterTemplate(a, revV2, proceed)
		await(t, written, "the template write")

		waitingSeen, second := make(chan struct{}), make(chan outcome, 1)
		go func() {
			res, err := b.Rollback(context.Background(), revV2, false, func(p platforms.Progress) {
				if p.Message == waiting(revV2).Message {
					close(waitingSeen)
				}
			})
			second <- outcome{res, err}
		}()
		await(t, waitingSeen, "the second rollback to wait")
		close(proceed)

		if o := await(t, first, "the first rollback"); o.err != nil || o.res.Outcome != platforms.Done {
			t.Fatalf("first rollback = %+v, %v; want Done", o.res, o.err)
		}
		if o := await(t, second, "the second rollback"); o.err != nil || o.res.Outcome != platforms.Skipped || !strings.Contains(o.res.Detail, "already at 2 (app:v2)") {
			t.Fatalf("second rollback = %+v, %v; want Skipped, already at 2 (app:v2)", o.res, o.err)
		}
		if snap := snapshot(t, b); snap.Current.Artifact != "app:v2" || snap.Health.Ready != 5 || snap.RolloutInProgress {
			t.Fatalf("after both: %s, %s, in progress %v; want app:v2 with 5/5 ready", snap.Current.Artifact, snap.Health.Detail, snap.RolloutInProgress)
		}
		if path != "" {
			if ws := writes(t, path, OpRollback); len(ws) != 1 {
				t.Fatalf("template writes = %+v; want exactly one", ws)
			}
		}
	})
}

func TestRollbackContinuesWhereAnAbandonedOneStopped(t *testing.T) {
	modes(t, 5*time.Millisecond, func(t *testing.T, path string, a, b *Sim) {
		ctx, cancel := context.WithCancel(context.Background())
		_, err := a.Rollback(ctx, revV2, false, func(p platforms.Progress) {
			if p.Updated == 1 {
				cancel() // the first pod is replaced: stop here
			}
		})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("abandoned rollback = %v; want context.Canceled", err)
		}
		snap := snapshot(t, b)
		if snap.Current.Artifact != "app:v2" || !snap.RolloutInProgress || snap.Health.Ready < 1 || snap.Health.Ready >= 5 {
			t.Fatalf("after the abandoned rollback: %s, %s, in progress %v; want app:v2 partly rolled out", snap.Current.Artifact, snap.Health.Detail, snap.RolloutInProgress)
		}
		dry, err := b.Rollback(context.Background(), revV2, true, nil)
		if err != nil || dry.Outcome != platforms.Planned || !strings.Contains(strings.Join(dry.Plan, "\n"), "template already written") {
			t.Fatalf("dry run = %+v, %v; want a plan that continues the rollout", dry, err)
		}
		res, err := b.Rollback(context.Background(), revV2, false, nil)
		if err != nil || res.Outcome != platforms.Done || !strings.Contains(res.Detail, "(5/5 pods ready); continued the rollout process") {
			t.Fatalf("second rollback = %+v, %v; want Done, continuing", res, err)
		}
		if snap := snapshot(t, a); snap.Health.Ready != 5 || snap.RolloutInProgress {
			t.Fatalf("after resuming: %s, in progress %v; want 5/5 ready", snap.Health.Detail, snap.RolloutInProgress)
		}
		if res, err := b.Rollback(context.Background(), revV2, false, nil); err != nil || res.Outcome != platforms.Skipped {
			t.Fatalf("third rollback = %+v, %v; want Skipped", res, err)
		}
		if path != "" {
			if ws := writes(t, path, OpRollback); len(ws) != 1 {
				t.Fatalf("template writes = %+v; want exactly one", ws)
			}
		}
	})
}

func TestLaterRollbackToAnotherRevisionStopsTheFirst(t *testing.T) {
	modes(t, time.Millisecond, func(t *testing.T, path string, a, b *Sim) {
		proceed := make(chan struct{})
		written, first := pausedAfterTemplate(a, revV1, proceed)
		await(t, written, "the template write")
		res, err := b.Rollback(context.Background(), revV2, false, nil)
		if err != nil || res.Outcome != platforms.Done {
			t.Fatalf("rollback to v2 during the one to v1 = %+v, %v; want Done", res, err)
		}
		close(proceed)
		if o := await(t, first, "the rollback to v1"); !errors.Is(o.err, platforms.ErrConflict) {
			t.Fatalf("rollback to v1 = %+v, %v; want ErrConflict", o.res, o.err)
		}
		if snap := snapshot(t, a); snap.Current.Artifact != "app:v2" || snap.Health.Ready != 5 || snap.RolloutInProgress {
			t.Fatalf("after both: %s, %s, in progress %v; want app:v2 with 5/5 ready", snap.Current.Artifact, snap.Health.Detail, snap.RolloutInProgress)
		}
		if path != "" {
			ws := writes(t, path, OpRollback)
			if len(ws) != 2 || !strings.Contains(ws[0].Detail, "-> app:v1") || !strings.Contains(ws[1].Detail, "app:v1 -> app:v2") || ws[1].Version != ws[0].Version+1 {
				t.Fatalf("template writes = %+v; want v1 then v2, one version apart", ws)
			}
		}
	})
}

func TestFallbackWritesAreLogged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "myapp.json")
	s := newSim(t, sharedConfig(path, 0))
	ctx := context.Background()
	if _, err := s.MarkDoNotDeploy(ctx, platforms.Revision{ID: "3", Artifact: "app:v3"}, "U123"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetArtifact(ctx, "app:v1", false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ScaleToZero(ctx, true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ScaleToZero(ctx, false); err != nil {
		t.Fatal(err)
	}
	all, err := ReadWrites(path)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range all {
		got = append(got, fmt.Sprintf("%s@%d", w.Op, w.Version))
	}
	want := []string{OpMarkDoNotDeploy + "@0", OpSetArtifact + "@1", OpScaleToZero + "@2"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("write log = %v; want %v", got, want)
	}
	snap := snapshot(t, newSim(t, sharedConfig(path, 0)))
	if snap.History[0].Artifact != "app:v3" || !snap.History[0].DoNotDeploy || snap.Health.Desired != 0 {
		t.Fatalf("another Sim sees %+v, desired %d; want app:v3 marked and 0 replicas", snap.History[0], snap.Health.Desired)
	}
}

// Child processes: the test binary runs TestHelperProcess again with
// ROLLBOT_SIM_CHILD naming what to do on the state file ROLLBOT_SIM_STATE.

const hammerN = 150

func TestHelperProcess(t *testing.T) {
	mode := os.Getenv("ROLLBOT_SIM_CHILD")
	if mode == "" {
		return // only a child process does something here
	}
	s, err := New("myapp", sharedConfig(os.Getenv("ROLLBOT_SIM_STATE"), 5*time.Millisecond))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx := context.Background()
	switch mode {
	case "rollback":
		// Roll back to v2 and stay in the middle of it, right after the
		// template write, until killed (or until stdin closes).
		_, err = s.Rollback(ctx, revV2, false, func(p platforms.Progress) {
			if p.Updated == 1 {
				fmt.Println("template written")
				io.Copy(io.Discard, os.Stdin)
				os.Exit(3)
			}
		})
	case "hammer":
		bufio.NewReader(os.Stdin).ReadString('\n') // start together
		for i := 0; i < hammerN && err == nil; i++ {
			if _, err = s.MarkDoNotDeploy(ctx, platforms.Revision{Artifact: fmt.Sprintf("app:%d-%d", os.Getpid(), i)}, "child"); err == nil {
				_, err = s.ScaleToZero(ctx, false)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
}

func startChild(t *testing.T, mode, stateFile string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "ROLLBOT_SIM_CHILD="+mode, "ROLLBOT_SIM_STATE="+stateFile)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stdin: stdin, stdout: bufio.NewReader(stdout)}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return c
}

// rollingChild starts a child that rolls back to v2 and stops right after
// the template write; it returns once the write log shows that write.
func rollingChild(t *testing.T, path string) *child {
	t.Helper()
	c := startChild(t, "rollback", path)
	if line, err := c.stdout.ReadString('\n'); line != "template written\n" {
		t.Fatalf("child said %q, %v; want \"template written\"", line, err)
	}
	ws := writes(t, path, OpRollback)
	if len(ws) != 1 || ws[0].PID != c.cmd.Process.Pid {
		t.Fatalf("template writes = %+v; want one by the child %d", ws, c.cmd.Process.Pid)
	}
	return c
}

func (c *child) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := c.cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v; want killed by SIGKILL", err)
	}
}

func TestRollbackSurvivesKill9(t *testing.T) {
	path := filepath.Join(t.TempDir(), "myapp.json")
	s := newSim(t, sharedConfig(path, time.Millisecond))
	c := rollingChild(t, path)
	pid := c.cmd.Process.Pid
	c.kill(t)

	snap := snapshot(t, s)
	if snap.Current.Artifact != "app:v2" || !snap.RolloutInProgress || snap.Health.Ready != 1 {
		t.Fatalf("after the kill: %s, %s, in progress %v; want app:v2, 1/5 ready, in progress", snap.Current.Artifact, snap.Health.Detail, snap.RolloutInProgress)
	}
	res, err := s.Rollback(context.Background(), revV2, false, nil)
	if err != nil || res.Outcome != platforms.Done || !strings.Contains(res.Detail, "continued the rollout process "+strconv.Itoa(pid)) {
		t.Fatalf("rollback after the kill = %+v, %v; want Done, continuing process %d's rollout", res, err, pid)
	}
	if snap := snapshot(t, s); snap.Health.Ready != 5 || snap.RolloutInProgress {
		t.Fatalf("after resuming: %s, in progress %v; want 5/5 ready", snap.Health.Detail, snap.RolloutInProgress)
	}
	if ws := writes(t, path, OpRollback); len(ws) != 1 || ws[0].PID != pid {
		t.Fatalf("template writes = %+v; want exactly one, by the killed child %d", ws, pid)
	}
}

func TestRollbackWaitingOnALiveProcessTakesOverWhenItIsKilled(t *testing.T) {
	path := filepath.Join(t.TempDir(), "myapp.json")
	s := newSim(t, sharedConfig(path, time.Millisecond))
	c := rollingChild(t, path)
	pid := c.cmd.Process.Pid

	waitingSeen, done := make(chan struct{}), make(chan outcome, 1)
	go func() {
		res, err := s.Rollback(context.Background(), revV2, false, func(p platforms.Progress) {
			if p.Message == waiting(revV2).Message {
				close(waitingSeen)
			}
		})
		done <- outcome{res, err}
	}()
	await(t, waitingSeen, "the rollback to wait") // the child is alive and holds the rollout: this one waits
	c.kill(t)

	o := await(t, done, "the rollback")
	if o.err != nil || o.res.Outcome != platforms.Done || !strings.Contains(o.res.Detail, "continued the rollout process "+strconv.Itoa(pid)) {
		t.Fatalf("rollback = %+v, %v; want Done, continuing process %d's rollout", o.res, o.err, pid)
	}
	if snap := snapshot(t, s); snap.Current.Artifact != "app:v2" || snap.Health.Ready != 5 || snap.RolloutInProgress {
		t.Fatalf("after the takeover: %s, %s, in progress %v; want app:v2 with 5/5 ready", snap.Current.Artifact, snap.Health.Detail, snap.RolloutInProgress)
	}
	if ws := writes(t, path, OpRollback); len(ws) != 1 || ws[0].PID != pid {
		t.Fatalf("template writes = %+v; want exactly one, by the killed child %d", ws, pid)
	}
}

func TestStateFileLockSerialisesProcesses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "myapp.json")
	newSim(t, sharedConfig(path, 0))
	children := []*child{startChild(t, "hammer", path), startChild(t, "hammer", path)}
	for _, c := range children {
		if _, err := io.WriteString(c.stdin, "go\n"); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range children {
		if err := c.cmd.Wait(); err != nil {
			t.Fatalf("child %d: %v", c.cmd.Process.Pid, err)
		}
	}
	st, err := stateFile{path: path}.load()
	if err != nil {
		t.Fatal(err)
	}
	// Each child bumped the version hammerN times and added hammerN marks:
	// a lost update would show fewer.
	if st.Version != 2*hammerN || len(st.Marks) != 2*hammerN {
		t.Fatalf("version %d, %d marks; want %d of each", st.Version, len(st.Marks), 2*hammerN)
	}
	all, err := ReadWrites(path)
	if err != nil {
		t.Fatal(err)
	}
	perPID := map[int]int{}
	for _, w := range all {
		perPID[w.PID]++
	}
	for _, c := range children {
		if n := perPID[c.cmd.Process.Pid]; n != 2*hammerN {
			t.Fatalf("child %d logged %d writes; want %d", c.cmd.Process.Pid, n, 2*hammerN)
		}
	}
	if len(all) != 4*hammerN {
		t.Fatalf("%d writes logged; want %d", len(all), 4*hammerN)
	}
}
