package bot

// Several `rollbot serve` processes on one Redis (through Sentinel) and one
// Slack-compatible server, as in production with replicas: 3. The faults
// are real: kill -9 of the process that owns an incident, SENTINEL
// FAILOVER, every envelope delivered twice to two replicas. The simulated
// platform is shared by the processes through its state file, and counts
// every write on its side.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"rollbot/handlers"
	"rollbot/platforms/sim"
	"rollbot/state"
	"rollbot/testkit/dbtest"
	"rollbot/testkit/kubetest"
	"rollbot/testkit/redistest"
	"rollbot/testkit/slackemu"
	"rollbot/testkit/wait"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const replicaLease = 3 * time.Second

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// rollbotBinary builds the rollbot command once per test run.
func rollbotBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "rollbot-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "rollbot")
		out, err := exec.Command("go", "build", "-o", builtBin, "rollbot").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// replicaSet is N rollbot processes sharing one Redis and one Slack.
type replicaSet struct {
	t         testing.TB
	bin, dir  string
	emu       *slackemu.Server
	redisURL  string
	prefix    string
	stateFile string
	store     *state.Store

	mu    sync.Mutex
	procs map[int]*exec.Cmd // live processes by pid
	logs  []string
}

func newReplicaSet(t testing.TB, sent *redistest.Sentinels, n int, stepDelay time.Duration) *replicaSet {
	t.Helper()
	return newReplicaSetFor(t, sent, n, simYAML(stepDelay))
}

func simYAML(stepDelay time.Duration) func(stateFile string) string {
	return func(stateFile string) string {
		// Stopping the rollout takes as long as a pod, so a test can kill
		// the replica while it stops.
		return fmt.Sprintf(`    platform: simulated
    simulated:
      versions: [{artifact: "app:v1"}, {artifact: "app:v2"}, {artifact: "app:v3", bad: true}]
      replicas: 3
      step_delay: %s
      stop_delay: %s
      state_file: %s
    metrics: {simulated: true}
`, stepDelay, stepDelay, stateFile)
	}
}

// newReplicaSetFor starts n replicas whose one service, myapp, is
// configured by service (indented under services.myapp).
func newReplicaSetFor(t testing.TB, sent *redistest.Sentinels, n int, service func(stateFile string) string) *replicaSet {
	return newReplicaSetLease(t, sent, n, replicaLease, service)
}

// newReplicaSetLease is newReplicaSetFor with a lease of its own.
func newReplicaSetLease(t testing.TB, sent *redistest.Sentinels, n int, lease time.Duration, service func(stateFile string) string) *replicaSet {
	t.Helper()
	emu, err := slackemu.New(slackemu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	dir := t.TempDir()
	r := &replicaSet{t: t, bin: rollbotBinary(t), dir: dir, emu: emu, redisURL: sent.URL,
		prefix: "rb" + strconv.FormatInt(time.Now().UnixNano(), 36), stateFile: filepath.Join(dir, "sim.json"), procs: map[int]*exec.Cmd{}}
	r.store = state.New(sent.Client(t), r.prefix)
	cfg := fmt.Sprintf(`incident_channels: [%s]
redis_prefix: %s
lease: %s
lock_ttl: 2m
verify_timeout: 20s
verify_soak: 1s
verify_interval: 500ms
query_timeout: 2s
budgets: {assess: 1m, confirm: 5m, rollout: 2m, verify: 2m, hold: 5m}
services:
  myapp:
%s    approvers: {groups: [%s]}
`, slackemu.ChannelIncident, r.prefix, lease, service(r.stateFile), slackemu.GroupOnCall)
	if err := os.WriteFile(filepath.Join(dir, "rollbot.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.stopAll)
	for range n {
		r.start()
	}
	r.waitConnections(n)
	return r
}

func (r *replicaSet) start() int {
	r.t.Helper()
	logf := filepath.Join(r.dir, fmt.Sprintf("replica-%d.log", len(r.logs)))
	f, err := os.Create(logf)
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(r.bin, "serve", "--config", filepath.Join(r.dir, "rollbot.yaml"))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + r.dir,
		"SLACK_BOT_TOKEN=" + slackemu.BotToken, "SLACK_APP_TOKEN=" + slackemu.AppToken,
		"SLACK_API_URL=" + r.emu.APIURL(), "REDIS_URL=" + r.redisURL, "ROLLBOT_OPS_ADDR=off"}
	for _, kv := range os.Environ() { // the service's own variables (DSNs)
		if strings.HasPrefix(kv, "MYAPP_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.procs[cmd.Process.Pid] = cmd
	r.logs = append(r.logs, logf)
	r.mu.Unlock()
	return cmd.Process.Pid
}

func (r *replicaSet) waitConnections(n int) {
	r.t.Helper()
	wait.For(r.t, 30*time.Second, fmt.Sprintf("%d Socket Mode connections", n), func() (bool, error) {
		ids := r.emu.ConnectionIDs()
		return len(ids) >= n, errors.New(fmt.Sprint(ids))
	})
}

// kill sends SIGKILL to one replica and reaps it.
func (r *replicaSet) kill(pid int) {
	r.t.Helper()
	r.mu.Lock()
	cmd := r.procs[pid]
	delete(r.procs, pid)
	r.mu.Unlock()
	if cmd == nil {
		r.t.Fatalf("no live replica with pid %d", pid)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		r.t.Fatal(err)
	}
	cmd.Wait()
}

func (r *replicaSet) stopAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for pid, cmd := range r.procs {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		delete(r.procs, pid)
	}
	if r.t.Failed() {
		for _, l := range r.logs {
			b, _ := os.ReadFile(l)
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			r.t.Logf("--- %s\n%s", filepath.Base(l), b)
		}
	}
}

// ownerPID is the process of an incident's owner: replica ids are
// host-pid-random.
func ownerPID(t testing.TB, in *state.Incident) int {
	t.Helper()
	parts := strings.Split(in.Owner, "-")
	if len(parts) < 3 {
		t.Fatalf("owner %q is not host-pid-random", in.Owner)
	}
	pid, err := strconv.Atoi(parts[len(parts)-2])
	if err != nil {
		t.Fatalf("owner %q: %v", in.Owner, err)
	}
	return pid
}

func (r *replicaSet) incident(id string) *state.Incident {
	in, err := r.store.Get(context.Background(), id)
	if err != nil {
		return nil
	}
	return in
}

func (r *replicaSet) waitStatus(id string, within time.Duration, ok func(state.Status) bool, what string) *state.Incident {
	r.t.Helper()
	var in *state.Incident
	wait.For(r.t, within, id+" "+what, func() (bool, error) {
		in = r.incident(id)
		if in == nil {
			return false, errors.New("no incident yet")
		}
		return ok(in.Status), errors.New(string(in.Status))
	})
	return in
}

func is(ss ...state.Status) func(state.Status) bool {
	return func(s state.Status) bool {
		for _, x := range ss {
			if s == x {
				return true
			}
		}
		return false
	}
}

func (r *replicaSet) writes() map[string]int {
	r.t.Helper()
	ws, err := sim.ReadWrites(r.stateFile)
	if err != nil {
		r.t.Fatal(err)
	}
	n := map[string]int{}
	for _, w := range ws {
		n[w.Op]++
	}
	return n
}

func (r *replicaSet) wait(what string, pred func(slackemu.Message) bool) slackemu.Message {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	m, err := r.emu.WaitForMessage(ctx, pred)
	if err != nil {
		r.t.Fatalf("waiting for %s: %v", what, err)
	}
	return m
}

// checkOnce asserts that the incident completed with every action once:
// one request, one confirmation, one verdict on the timeline; one pause,
// one template write and one DO_NOT_DEPLOY mark on the platform.
func (r *replicaSet) checkOnce(id string, takeovers int) {
	r.t.Helper()
	evs, err := r.store.Timeline(context.Background(), id)
	if err != nil {
		r.t.Fatal(err)
	}
	count := func(step, detail string) int {
		n := 0
		for _, ev := range evs {
			if ev.Step == step && strings.Contains(ev.Detail, detail) {
				n++
			}
		}
		return n
	}
	var all strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&all, "  %s %s %s: %s\n", ev.Time.Format("15:04:05.000"), ev.Actor, ev.Step, ev.Detail)
	}
	for _, c := range []struct {
		step, detail string
		want         int
	}{
		{"request", "requested rollback", 1},
		{"confirm", "confirmed rollback", 1},
		{"verify", "verified:", 1},
		{"takeover", "resumed by", takeovers},
	} {
		if got := count(c.step, c.detail); got != c.want {
			r.t.Errorf("%d %q events with %q, want %d; timeline:\n%s", got, c.step, c.detail, c.want, all.String())
		}
	}
	w := r.writes()
	if w[sim.OpStop] != 1 || w[sim.OpRollback] != 1 || w[sim.OpMarkDoNotDeploy] != 1 {
		r.t.Errorf("platform writes %v, want one stop, one rollback, one mark", w)
	}
	if l, _ := r.store.LockHolder(context.Background(), "myapp"); l != nil {
		r.t.Errorf("lock still held: %+v", l)
	}
}

func (r *replicaSet) confirm() {
	r.t.Helper()
	a := r.wait("assessment with buttons", hasAction(handlers.ActConfirm))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.emu.ClickButton(ctx, slackemu.UserBob, slackemu.ChannelIncident, a.TS, handlers.ActConfirm); err != nil {
		r.t.Fatal(err)
	}
}

func (r *replicaSet) slash(text string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.emu.SlashCommand(ctx, slackemu.UserAlice, slackemu.ChannelIncident, "/rollback", text); err != nil {
		r.t.Fatal(err)
	}
}

// Kill -9 the replica that owns the incident at each step: another replica
// finishes the rollback within the lease + 10 s, every action happens
// once, and the thread says who resumed it.
func TestReplicasKillOwnerAtEachStep(t *testing.T) {
	sent := redistest.Sentinel(t)
	for _, tc := range []struct {
		name      string
		takeovers int
		// kill waits for the step and kills the owner; it returns the
		// killed pid.
		kill func(r *replicaSet) int
	}{
		{"assessing", -1, func(r *replicaSet) int {
			in := r.waitStatus("RB-1", 20*time.Second, func(state.Status) bool { return true }, "exists")
			pid := ownerPID(t, in)
			r.kill(pid)
			return pid
		}},
		{"awaiting confirmation", 0, func(r *replicaSet) int {
			in := r.waitStatus("RB-1", 20*time.Second, is(state.AwaitingConfirm), "awaiting confirmation")
			pid := ownerPID(t, in) // the replica that assessed
			r.kill(pid)
			return pid
		}},
		{"stopping", 1, func(r *replicaSet) int {
			in := r.waitStatus("RB-1", 20*time.Second, is(state.Stopping), "stopping")
			pid := ownerPID(t, in)
			r.kill(pid)
			return pid
		}},
		{"rolling back", 1, func(r *replicaSet) int {
			wait.For(t, 30*time.Second, "the rollback's template write", func() (bool, error) {
				w := r.writes()
				return w[sim.OpRollback] == 1, errors.New(fmt.Sprint(w))
			})
			in := r.incident("RB-1")
			if in.Status != state.RollingBack {
				t.Fatalf("status %s at the template write, want rolling back", in.Status)
			}
			pid := ownerPID(t, in)
			r.kill(pid)
			return pid
		}},
		{"verifying", 1, func(r *replicaSet) int {
			in := r.waitStatus("RB-1", 30*time.Second, is(state.Verifying), "verifying")
			pid := ownerPID(t, in)
			r.kill(pid)
			return pid
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newReplicaSet(t, sent, 3, time.Second)
			r.t = t
			r.slash("myapp")
			var killedAt time.Time
			if tc.name == "assessing" || tc.name == "awaiting confirmation" {
				tc.kill(r)
				killedAt = time.Now()
				r.confirm()
			} else {
				r.confirm()
				tc.kill(r)
				killedAt = time.Now()
			}
			in := r.waitStatus("RB-1", 60*time.Second, is(state.Completed, state.VerifyFailed, state.RollbackFailed, state.Cancelled), "finished")
			if in.Status != state.Completed {
				t.Fatalf("RB-1 ended %s, want completed", in.Status)
			}
			takeovers := tc.takeovers
			if takeovers < 0 { // killed while assessing, or just after: either way at most one
				takeovers = len(in.TakenOver)
				if takeovers > 1 {
					t.Errorf("%d takeovers for one kill", takeovers)
				}
			}
			if len(in.TakenOver) != takeovers {
				t.Errorf("%d takeovers recorded, want %d: %+v", len(in.TakenOver), takeovers, in.TakenOver)
			}
			if takeovers > 0 {
				to := in.TakenOver[0]
				if d := to.At.Sub(killedAt); d > replicaLease+10*time.Second {
					t.Errorf("taken over %s after the kill, want within the lease + 10s", d)
				}
				m := r.wait("takeover message", textHas("RB-1 resumed by"))
				if m.ThreadTS == "" {
					t.Errorf("takeover message outside the thread")
				}
				t.Logf("taken over %s after kill -9 (lease %s)", to.At.Sub(killedAt).Round(10*time.Millisecond), replicaLease)
			}
			r.checkOnce("RB-1", takeovers)
		})
	}
}

// Regression (#12: "every process start takes over every incident"):
// replicas that start while another live replica is rolling a service
// back leave its incident alone. Its owner keeps it (no takeover, the same
// fence), finishes it, and every write happens once.
func TestReplicasNewProcessLeavesALiveIncident(t *testing.T) {
	sent := redistest.Sentinel(t)
	r := newReplicaSet(t, sent, 1, 3*time.Second) // stop 3s, then 3 pods at 3s each
	r.slash("myapp")
	r.confirm()
	wait.For(t, 30*time.Second, "the rollback's template write", func() (bool, error) {
		w := r.writes()
		return w[sim.OpRollback] == 1, errors.New(fmt.Sprint(w))
	})
	before := r.incident("RB-1")
	// Two more `rollbot serve` processes start on the same Redis while the
	// first one works. A replica looks for incidents to take over as it
	// starts, before Socket Mode connects.
	r.start()
	r.start()
	r.waitConnections(3)
	during := r.incident("RB-1")
	if during == nil || !during.Status.Working() {
		t.Fatalf("RB-1 is no longer working when the new replicas are up (%+v): lengthen the rollback", during)
	}
	if len(during.TakenOver) != 0 || during.Owner != before.Owner || during.Fence < before.Fence {
		t.Fatalf("a starting replica took RB-1 over: owner %s → %s, takeovers %+v", before.Owner, during.Owner, during.TakenOver)
	}
	in := r.waitStatus("RB-1", 60*time.Second, is(state.Completed, state.VerifyFailed, state.RollbackFailed, state.Cancelled), "finished")
	if in.Status != state.Completed {
		t.Fatalf("RB-1 ended %s, want completed", in.Status)
	}
	if len(in.TakenOver) != 0 || in.Owner != before.Owner {
		t.Errorf("RB-1 changed owner: %s → %s, takeovers %+v", before.Owner, in.Owner, in.TakenOver)
	}
	for _, m := range r.emu.Messages(slackemu.ChannelIncident) {
		if strings.Contains(m.PlainText(), "resumed by") || strings.Contains(m.PlainText(), "interrupted") {
			t.Errorf("the thread reports a takeover of a live incident:\n%s", m.PlainText())
		}
	}
	r.checkOnce("RB-1", 0)
}

// 200 concurrent /rollback for one service spread over three replicas:
// exactly one proceeds, 199 are told who holds it.
func TestReplicasConcurrentCommandsOneProceeds(t *testing.T) {
	sent := redistest.Sentinel(t)
	r := newReplicaSet(t, sent, 3, 50*time.Millisecond)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for range 200 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			errs <- r.emu.SlashCommand(ctx, slackemu.UserAlice, slackemu.ChannelIncident, "/rollback", "myapp")
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a command was not acknowledged: %v", err)
		}
	}
	r.wait("assessment with buttons", hasAction(handlers.ActConfirm))
	var refused int
	wait.For(t, 30*time.Second, "199 refusals", func() (bool, error) {
		refused = 0
		for _, m := range r.emu.Messages(slackemu.ChannelIncident) {
			if m.Ephemeral && strings.Contains(m.PlainText(), "is already running") {
				refused++
			}
		}
		return refused >= 199, errors.New(strconv.Itoa(refused))
	})
	recent, err := r.store.Recent(context.Background(), "myapp", 300)
	if err != nil {
		t.Fatal(err)
	}
	if len(recent) != 1 || refused != 199 {
		t.Fatalf("%d incidents opened and %d refused, want 1 and 199", len(recent), refused)
	}
	seen := map[int]bool{}
	for _, d := range r.emu.Deliveries() {
		seen[d.Conn] = true
	}
	if len(seen) < 3 {
		t.Errorf("the commands reached %d replicas, want all 3", len(seen))
	}
}

// Every envelope delivered twice, to two different replicas: every action
// happens once.
func TestReplicasDuplicateDeliveriesActOnce(t *testing.T) {
	sent := redistest.Sentinel(t)
	r := newReplicaSet(t, sent, 3, 200*time.Millisecond)
	r.emu.DuplicateEnvelopes(true)
	r.slash("myapp")
	r.confirm()
	in := r.waitStatus("RB-1", 60*time.Second, is(state.Completed, state.VerifyFailed, state.RollbackFailed), "finished")
	if in.Status != state.Completed {
		t.Fatalf("RB-1 ended %s", in.Status)
	}
	if in2 := r.incident("RB-2"); in2 != nil {
		t.Fatalf("a duplicated command opened a second incident: %+v", in2)
	}
	for _, m := range r.emu.Messages(slackemu.ChannelIncident) {
		if m.Ephemeral {
			t.Errorf("a duplicate was answered: %s", m.PlainText())
		}
	}
	r.checkOnce("RB-1", 0)
}

// SENTINEL FAILOVER in the middle of a rollback: it finishes, nothing is
// lost from the timeline, and every write happened once.
func TestReplicasSentinelFailoverMidRollback(t *testing.T) {
	sent := redistest.Sentinel(t)
	r := newReplicaSet(t, sent, 3, time.Second)
	r.slash("myapp")
	r.confirm()
	wait.For(t, 30*time.Second, "the rollback's template write", func() (bool, error) {
		w := r.writes()
		return w[sim.OpRollback] == 1, errors.New(fmt.Sprint(w))
	})
	sent.Failover(t)
	in := r.waitStatus("RB-1", 90*time.Second, is(state.Completed, state.VerifyFailed, state.RollbackFailed), "finished")
	if in.Status != state.Completed {
		t.Fatalf("RB-1 ended %s after the failover", in.Status)
	}
	// A replica whose heartbeat failed during the failover may have handed
	// the incident over: each takeover is on the timeline, and every write
	// still happened once.
	r.checkOnce("RB-1", len(in.TakenOver))
}

// BenchmarkTakeoverAfterKill measures how long after kill -9 of the owning
// replica (mid-rollback) another replica has taken the incident over, for
// a short lease and the default one: the goal is the lease + 5s. Run with
// -benchtime=3x.
func BenchmarkTakeoverAfterKill(b *testing.B) {
	sent := redistest.Sentinel(b)
	for _, lease := range []time.Duration{3 * time.Second, 15 * time.Second} {
		b.Run("lease="+lease.String(), func(b *testing.B) {
			var total, worst time.Duration
			for b.Loop() {
				r := newReplicaSetLease(b, sent, 3, lease, simYAML(2*time.Second))
				r.slash("myapp")
				r.confirm()
				wait.For(b, 30*time.Second, "the rollback's template write", func() (bool, error) {
					w := r.writes()
					return w[sim.OpRollback] == 1, errors.New(fmt.Sprint(w))
				})
				in := r.incident("RB-1")
				killed := time.Now()
				r.kill(ownerPID(b, in))
				var took time.Duration
				wait.For(b, lease+30*time.Second, "takeover", func() (bool, error) {
					in = r.incident("RB-1")
					if in == nil || len(in.TakenOver) == 0 {
						return false, errors.New("not yet")
					}
					took = in.TakenOver[0].At.Sub(killed)
					return true, nil
				})
				total += took
				worst = max(worst, took)
				r.stopAll()
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-to-takeover")
			b.ReportMetric(float64(worst.Milliseconds()), "ms-worst")
			b.ReportMetric(float64(lease.Milliseconds()), "ms-lease")
		})
	}
}

// The same on the real Kubernetes control plane: kill -9 of the owner right
// after its rollback write (and, separately, while it verifies); another
// replica resumes, the Deployment saw exactly two spec writes (the pause
// and the rollback, counted by its generation on the apiserver), and the
// pods end on the good image.
func TestReplicasKillOwnerOnKubernetes(t *testing.T) {
	sent := redistest.Sentinel(t)
	c := kubetest.Start(t)
	for _, at := range []string{"rolling back", "verifying"} {
		t.Run(at, func(t *testing.T) {
			ns := kubetest.CreateNamespace(t, c.AdminClient, "replicas")
			kubetest.CreateDeployment(t, c.AdminClient, ns, "myapp", "registry.local/myapp:v1", 3)
			kubetest.WaitRolledOut(t, c.AdminClient, ns, "myapp")
			kubetest.SetImage(t, c.AdminClient, ns, "myapp", "registry.local/myapp:v2")
			g0 := kubetest.WaitRolledOut(t, c.AdminClient, ns, "myapp").Generation
			kubeconfig := c.KubeconfigFor(t, ns, "../deploy/kubernetes/rbac.yaml")
			r := newReplicaSetFor(t, sent, 3, func(string) string {
				return fmt.Sprintf(`    platform: kubernetes
    kubernetes: {kubeconfig: %s, namespace: %s, deployment: myapp, rollout_timeout: 1m}
    thresholds: {baseline_p95: 100ms}
`, kubeconfig, ns)
			})
			generation := func() int64 {
				d, err := c.AdminClient.AppsV1().Deployments(ns).Get(context.Background(), "myapp", metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				return d.Generation
			}
			r.slash("myapp")
			r.confirm()
			var in *state.Incident
			if at == "rolling back" {
				wait.For(t, 30*time.Second, "the rollback write", func() (bool, error) {
					g := generation()
					return g >= g0+2, fmt.Errorf("generation %d (before %d)", g, g0)
				})
				in = r.incident("RB-1")
			} else {
				in = r.waitStatus("RB-1", 30*time.Second, is(state.Verifying), "verifying")
			}
			killed := time.Now()
			r.kill(ownerPID(t, in))
			// No metrics source, health URL or smoke test: the four items
			// other than the pods are checks by hand, answered on whichever
			// replica Slack delivers the click to, after the takeover.
			answerChecksByHand(t, r.emu, slackemu.UserBob, 4, time.Minute)
			in = r.waitStatus("RB-1", 60*time.Second, is(state.Completed, state.VerifyFailed, state.RollbackFailed), "finished")
			if in.Status != state.Completed {
				t.Fatalf("RB-1 ended %s after the takeover, want completed", in.Status)
			}
			// Killed while working (the verification waits for the checks
			// by hand here), so exactly one takeover.
			if len(in.TakenOver) != 1 {
				t.Fatalf("%d takeovers for one kill: %+v", len(in.TakenOver), in.TakenOver)
			}
			if d := in.TakenOver[0].At.Sub(killed); d > replicaLease+10*time.Second {
				t.Errorf("taken over %s after the kill", d)
			}
			t.Logf("%s, taken over %s after kill -9 at %s", in.Status, in.TakenOver[0].At.Sub(killed).Round(10*time.Millisecond), in.TakenOver[0].Status)
			if g := generation(); g != g0+2 {
				t.Errorf("the Deployment's generation went %d → %d: want exactly two writes (pause, rollback)", g0, g)
			}
			images, ready := kubetest.PodImages(t, c.AdminClient, ns, "myapp")
			if len(images) != 3 || ready != 3 {
				t.Errorf("pods after the resumed rollback: %v, %d ready", images, ready)
			}
			for _, img := range images {
				if img != "registry.local/myapp:v1" {
					t.Errorf("a pod runs %s", img)
				}
			}
			v := r.wait("verification verdict", textHas("Rollback verified"))
			if !strings.Contains(v.PlainText(), "Verified by rollbot, each held for the 1s soak: All pods healthy.") ||
				!strings.Contains(v.PlainText(), "Confirmed by hand: Health checks passing by <@"+slackemu.UserBob+">") {
				t.Errorf("verdict:\n%s", v.PlainText())
			}
			for key, c := range in.Checks {
				if c.Answer != state.CheckOK || c.By != slackemu.UserBob {
					t.Errorf("check %s on the incident: %+v", key, c)
				}
			}
		})
	}
}

// The database steps with replicas: kill -9 of a replica while the DB
// approval waits (another serves the approval), and of the owner while the
// down migration runs (a real golang-migrate against PostgreSQL, started
// by the dead replica and finishing on its own): the next owner never runs
// it a second time — the migration table says it finished — and rolls the
// app back.
func TestReplicasKillDuringDatabaseStep(t *testing.T) {
	sent := redistest.Sentinel(t)
	pg := dbtest.StartPostgres(t, dbtest.PostgresOptions{})
	dir, err := filepath.Abs("../platforms/migrations/testdata/golang-migrate")
	if err != nil {
		t.Fatal(err)
	}
	bin := migrateBin(t)
	for _, at := range []string{"awaiting DB approval", "down migration running"} {
		t.Run(at, func(t *testing.T) {
			db := pg.CreateDatabase(t)
			owner, err := sql.Open("pgx", db.DSN)
			if err != nil {
				t.Fatal(err)
			}
			defer owner.Close()
			for _, n := range []string{"2", "1"} { // the good deploy, then the bad one's migration
				if out, err := exec.Command(bin, "-path", dir, "-database", db.URL, "up", n).CombinedOutput(); err != nil {
					t.Fatalf("migrate up %s: %v\n%s", n, err, out)
				}
			}
			version := func() string {
				var v int64
				var dirty bool
				if err := owner.QueryRow(`SELECT version, dirty FROM schema_migrations`).Scan(&v, &dirty); err != nil {
					t.Fatal(err)
				}
				return fmt.Sprintf("%d dirty=%v", v, dirty)
			}
			t.Setenv("MYAPP_RO_DSN", db.DSN)
			t.Setenv("MYAPP_MIGRATE_URL", db.URL)
			r := newReplicaSetFor(t, sent, 3, func(stateFile string) string {
				return fmt.Sprintf(`    platform: simulated
    simulated:
      versions: [{artifact: "app:v1"}, {artifact: "app:v2"}, {artifact: "app:v3", bad: true}]
      deployed_ago: 1h
      step_delay: 200ms
      state_file: %s
    metrics: {simulated: true}
    database:
      driver: postgres
      dsn_env: MYAPP_RO_DSN
      tool: golang-migrate
      migrations_dir: %q
      down:
        kind: command
        command: [sh, -c, "sleep 1 && exec %s -path %s -database '$(DATABASE_URL)' down $(ROLLBOT_STEPS)"]
        secret_env:
          DATABASE_URL: {env: MYAPP_MIGRATE_URL}
        timeout: 2m
      approvers: {groups: [%s]}
`, stateFile, dir, bin, dir, slackemu.GroupDBA)
			})
			// What the replicas' recorder wrote while app:v2 ran.
			if err := r.store.RecordSchema(context.Background(), "myapp", state.SchemaRecord{
				At: time.Now().Add(-2 * time.Hour), Artifact: "app:v2", Tool: "golang-migrate", Versions: []string{"2"}}); err != nil {
				t.Fatal(err)
			}
			r.slash("myapp")
			r.confirm()
			in := r.waitStatus("RB-1", 30*time.Second, is(state.AwaitingDBApprove), "awaiting DB approval")
			m := r.wait("DB approval request", hasAction(handlers.ActDBApprove))
			var killed time.Time
			if at == "awaiting DB approval" {
				r.kill(ownerPID(t, in)) // the replica that assessed and asked
				killed = time.Now()
			}
			r.approve(slackemu.UserDana, m)
			if at == "down migration running" {
				in = r.waitStatus("RB-1", 30*time.Second, func(state.Status) bool {
					cur := r.incident("RB-1")
					return cur != nil && cur.Steps["database"] == "started"
				}, "down migration started")
				r.kill(ownerPID(t, in))
				killed = time.Now()
			}
			in = r.waitStatus("RB-1", 90*time.Second, is(state.Completed, state.VerifyFailed, state.RollbackFailed), "finished")
			if in.Status != state.Completed {
				t.Fatalf("RB-1 ended %s", in.Status)
			}
			if got := version(); got != "2 dirty=false" {
				t.Errorf("schema_migrations = %s, want 2 dirty=false (the down migration once)", got)
			}
			want := 0
			if at == "down migration running" {
				want = 1
				if d := in.TakenOver[0].At.Sub(killed); len(in.TakenOver) == 1 && d > replicaLease+10*time.Second {
					t.Errorf("taken over %s after the kill", d)
				}
			}
			if len(in.TakenOver) != want {
				t.Errorf("%d takeovers, want %d: %+v", len(in.TakenOver), want, in.TakenOver)
			}
			r.checkOnce("RB-1", want)
			if at == "down migration running" {
				evs, _ := r.store.Timeline(context.Background(), "RB-1")
				resumed := false
				for _, ev := range evs {
					resumed = resumed || (ev.Step == "database" && strings.Contains(ev.Detail, "resuming the database step"))
				}
				if !resumed {
					t.Errorf("the database step was not resumed by the new owner: %+v", evs)
				}
			}
		})
	}
}

// approve approves the DB step as user in the modal, typing the service.
func (r *replicaSet) approve(user string, dbMsg slackemu.Message) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.emu.ClickButton(ctx, user, slackemu.ChannelIncident, dbMsg.TS, handlers.ActDBApprove); err != nil {
		r.t.Fatal(err)
	}
	v, err := r.emu.WaitForView(ctx, func(v slackemu.View) bool { return v.User == user && v.Open && v.CallbackID == "db_approve_modal" })
	if err != nil {
		r.t.Fatalf("no approval modal for %s: %v", user, err)
	}
	ack, err := r.emu.SubmitView(ctx, user, v.ID, map[string]map[string]string{"confirm": {"service": "myapp"}})
	if err != nil || len(ack.Errors) > 0 {
		r.t.Fatalf("approval: %+v %v", ack, err)
	}
}
