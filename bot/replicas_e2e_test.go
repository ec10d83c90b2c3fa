package bot

// Several `rollbot serve` processes on one Redis (through Sentinel) and one
// Slack-compatible server, as in production with replicas: 3. The faults
// are real: kill -9 of the process that owns an incident, SENTINEL
// FAILOVER, every envelope delivered twice to two replicas. The simulated
// platform is shared by the processes through its state file, and counts
// every write on its side; on the real Kubernetes control plane the API
// server's audit log counts them (kubetest.Cluster.Writes). The kill at
// each step is killsteps_e2e_test.go's, on both.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"rollbot/handlers"
	"rollbot/platforms/kube"
	"rollbot/platforms/migrations"
	"rollbot/platforms/sim"
	"rollbot/state"
	"rollbot/testkit/dbtest"
	"rollbot/testkit/kubetest"
	"rollbot/testkit/redistest"
	"rollbot/testkit/rollbotbin"
	"rollbot/testkit/slackemu"
	"rollbot/testkit/wait"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
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
		buildErr = rollbotbin.Build(builtBin)
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
	tmp       string // the replicas' TMPDIR: one host's (down command run directories)
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
	r := &replicaSet{t: t, bin: rollbotBinary(t), dir: dir, tmp: filepath.Join(dir, "tmp"), emu: emu, redisURL: sent.URL,
		prefix: "rb" + strconv.FormatInt(time.Now().UnixNano(), 36), stateFile: filepath.Join(dir, "sim.json"), procs: map[int]*exec.Cmd{}}
	if err := os.Mkdir(r.tmp, 0o700); err != nil {
		t.Fatal(err)
	}
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
		"SLACK_API_URL=" + r.emu.APIURL(), "REDIS_URL=" + r.redisURL, "ROLLBOT_OPS_ADDR=off",
		// The replicas share one host's temporary directory, apart from
		// other tests' replicas (the same incident ids).
		"TMPDIR=" + r.tmp}
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
	return r.waitIncident(id, within, what, func(in *state.Incident) bool { return ok(in.Status) })
}

// waitIncident waits until the incident is as ok wants it and returns it.
func (r *replicaSet) waitIncident(id string, within time.Duration, what string, ok func(*state.Incident) bool) *state.Incident {
	r.t.Helper()
	var in *state.Incident
	wait.For(r.t, within, id+" "+what, func() (bool, error) {
		in = r.incident(id)
		if in == nil {
			return false, errors.New("no incident yet")
		}
		return ok(in), errors.New(string(in.Status))
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
	r.checkTimeline(id, decisions(takeovers)...)
	r.checkSimWrites()
	r.checkReleased()
}

// checkSimWrites asserts that the simulated platform saw one pause, one
// template write and one DO_NOT_DEPLOY mark.
func (r *replicaSet) checkSimWrites() {
	r.t.Helper()
	w := r.writes()
	if w[sim.OpStop] != 1 || w[sim.OpRollback] != 1 || w[sim.OpMarkDoNotDeploy] != 1 {
		r.t.Errorf("platform writes %v, want one stop, one rollback, one mark", w)
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

// Kill -9 the replica that owns the incident at each step (killSteps),
// the database steps with a real golang-migrate down migration on
// PostgreSQL: another replica finishes the rollback, taking it over
// within the lease + 10 s when work was in flight, every action happens
// once, and the thread says who resumed it.
func TestReplicasKillOwnerAtEachStep(t *testing.T) {
	heavyLong(t)
	sent := redistest.Sentinel(t)
	pg := dbtest.StartPostgres(t, dbtest.PostgresOptions{})
	for _, k := range killSteps {
		t.Run(k.name, func(t *testing.T) { killOwnerAt(t, k, simKillTarget(t, sent, pg, k)) })
	}
}

// simKillTarget is myapp on the simulated platform, which the replicas
// share through its state file, where it counts every write. With a
// database (k.db) the bad release app:v3 migrated it; the down migration
// is a command that sleeps a second, then runs golang-migrate.
func simKillTarget(t *testing.T, sent *redistest.Sentinels, pg *dbtest.Postgres, k killStep) *killTarget {
	x := &killTarget{}
	var spawned string // created by the down command as it starts
	if !k.db {
		x.r = newReplicaSet(t, sent, 3, time.Second)
	} else {
		x.db = newGMSchema(t, pg)
		spawned = filepath.Join(t.TempDir(), "down-command-started")
		x.r = newReplicaSetFor(t, sent, 3, func(stateFile string) string {
			return fmt.Sprintf(`    platform: simulated
    simulated:
      versions: [{artifact: "app:v1"}, {artifact: "app:v2"}, {artifact: "app:v3", bad: true}]
      deployed_ago: 1h
      step_delay: 200ms
      state_file: %s
    metrics: {simulated: true}
`, stateFile) + x.db.service(fmt.Sprintf(`
kind: command
command: [sh, -c, "touch %s && sleep 1 && echo rolling back && exec %s -path %s -database '$(DATABASE_URL)' down $(ROLLBOT_STEPS)"]
secret_env:
  DATABASE_URL: {env: %s}
timeout: 2m`, spawned, x.db.bin, x.db.dir, x.db.urlVar))
		})
		x.db.recordGood(x.r.store, "app:v2")
	}
	r := x.r
	x.holds = map[string]func() hold{
		// Each pod takes step_delay after the template write.
		atRollingBack: func() hold {
			return hold{reached: func() *state.Incident {
				wait.For(t, 30*time.Second, "the rollback's template write", func() (bool, error) {
					w := r.writes()
					return w[sim.OpRollback] == 1, errors.New(fmt.Sprint(w))
				})
				return r.incident("RB-1")
			}}
		},
		// The down command sleeps a second, then prints a line before it
		// migrates, so the kill comes before that write: the command must
		// outlive its replica and finish (its output goes to a file, not
		// to a pipe whose reader died with the replica: SIGPIPE). The kill
		// comes once the command's process exists: "started" is recorded
		// before rollbot reads the table again and spawns it, and a kill
		// in between (seen under CI load) leaves no command to watch, a
		// different case (the new owner then waits down.timeout and asks
		// for a check by hand, never running it twice).
		atDownMigration: func() hold {
			return hold{reached: func() *state.Incident {
				wait.For(t, 30*time.Second, "the down command to start", func() (bool, error) {
					_, err := os.Stat(spawned)
					return err == nil, err
				})
				return r.waitIncident("RB-1", 30*time.Second, "down migration started", func(in *state.Incident) bool {
					return in.Steps["database"] == "started"
				})
			}}
		},
	}
	x.check = func(*state.Incident) {
		r.checkSimWrites()
		if k.name == atDownMigration {
			// The new owner followed the command the dead one started on
			// this host (never a second one) to its end.
			m := r.wait("the database step's result", textHas("the down command started by the replica that stopped finished (rollbot followed it on this host)"))
			if !strings.Contains(m.PlainText(), "rolling back") {
				t.Errorf("the database step's message lacks the command's output: %s", m.PlainText())
			}
		}
		if k.db {
			// The down command's run directory (its unredacted output)
			// is removed by the replica that followed it to its end.
			if _, err := os.Lstat(filepath.Join(r.tmp, "rollbot-down", "RB-1")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the down command's run directory after the rollback: %v, want none", err)
			}
		}
	}
	return x
}

// Regression (#12: "every process start takes over every incident"):
// replicas that start while another live replica is rolling a service
// back leave its incident alone. Its owner keeps it (no takeover, the same
// fence), finishes it, and every write happens once.
func TestReplicasNewProcessLeavesALiveIncident(t *testing.T) {
	heavy(t)
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
	heavy(t)
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
	heavy(t)
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
	heavy(t)
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

// The same on the real Kubernetes control plane, each step in a namespace
// of its own on one control plane: myapp is a Deployment of three pods
// rolled from v1 to the bad v2; rollbot's credentials are a
// ServiceAccount bound to the Roles of deploy/kubernetes/rbac.yaml; the
// down migration is a Job (kind kubernetes_job) whose container the test
// plays on this host (playDownJob: golang-migrate on PostgreSQL). The
// API server's audit log counts the writes: one pause and one rollback
// patch of the Deployment, one DO_NOT_DEPLOY patch of the bad ReplicaSet,
// the one down Job, and nothing else.
func TestReplicasKillOwnerOnKubernetes(t *testing.T) {
	heavyLong(t)
	sent := redistest.Sentinel(t)
	c := kubetest.Start(t)
	pg := dbtest.StartPostgres(t, dbtest.PostgresOptions{})
	for _, k := range killSteps {
		t.Run(k.name, func(t *testing.T) { killOwnerAt(t, k, kubeKillTarget(t, c, sent, pg, k)) })
	}
}

// kubeKillTarget is myapp in a namespace of its own on c, rolled from
// registry.local/myapp:v1 to the bad v2 (which migrated the database when
// k.db). No metrics source, health URL or smoke test: the four items
// other than the pods are checks by hand, answered after the kill on
// whichever replica Slack delivers the click to. The owner is held in
// the steps that work on the platform by the platform's own waits:
// stopping in the evidence upload that comes before the pause (Slack
// keeps it waiting), rolling back in the rollout wait (the new pods
// cannot start on the cordoned node), the down migration while its Job's
// pod waits on the cordoned node.
func kubeKillTarget(t *testing.T, c *kubetest.Cluster, sent *redistest.Sentinels, pg *dbtest.Postgres, k killStep) *killTarget {
	const rbac = "../deploy/kubernetes/rbac.yaml"
	cs := c.AdminClient
	ctx := context.Background()
	ns := kubetest.CreateNamespace(t, cs, "kill")
	kubetest.CreateDeployment(t, cs, ns, "myapp", "registry.local/myapp:v1", 3)
	kubetest.WaitRolledOut(t, cs, ns, "myapp")
	if k.db {
		// Creation times have seconds, and rollbot takes its record of
		// the schema as the good release's only if that was deployed
		// strictly before the bad one.
		v1 := replicaSetOf(t, cs, ns, "registry.local/myapp:v1").CreationTimestamp.Time
		wait.For(t, 3*time.Second, "the second after v1's ReplicaSet", func() (bool, error) {
			return time.Now().Truncate(time.Second).After(v1), nil
		})
	}
	kubetest.SetImage(t, cs, ns, "myapp", "registry.local/myapp:v2")
	g0 := kubetest.WaitRolledOut(t, cs, ns, "myapp").Generation

	x := &killTarget{}
	kubeconfig, database := c.KubeconfigFor(t, ns, rbac), ""
	var played <-chan jobRun
	gate := make(chan struct{})
	if k.db {
		x.db = newGMSchema(t, pg)
		// The Job's DSN lives in a Secret of the namespace; rollbot never
		// reads it.
		if _, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "myapp-db"},
			StringData: map[string]string{"migrate_url": x.db.db.URL}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		kubeconfig = c.KubeconfigForRoles(t, ns, rbac, "rollbot", migrations.JobRole)
		database = x.db.service(fmt.Sprintf(`
kind: kubernetes_job
namespace: %s
command: [migrate, -path, %q, -database, $(DATABASE_URL), down, $(ROLLBOT_STEPS)]
secret_env:
  DATABASE_URL: {secret: myapp-db, key: migrate_url}
timeout: 2m`, ns, x.db.dir))
		// The Job's pod waits on the cordoned node until the test has
		// played its container — when the owner is to be killed in the
		// down migration, until it is dead.
		cordon(t, cs, true)
		t.Cleanup(func() { cordon(t, cs, false) })
		p := jobPlay{dir: x.db.dir, deployment: "myapp", bins: map[string]string{"migrate": x.db.bin}}
		if k.name == atDownMigration {
			p.gate = gate
		}
		played = playDownJob(t, c, ns, p)
	}
	x.r = newReplicaSetFor(t, sent, 3, func(string) string {
		return fmt.Sprintf(`    platform: kubernetes
    kubernetes: {kubeconfig: %q, namespace: %s, deployment: myapp, rollout_timeout: 1m}
    thresholds: {baseline_p95: 100ms}
`, kubeconfig, ns) + database
	})
	r := x.r
	if k.db {
		x.db.recordGood(r.store, "registry.local/myapp:v1")
	}
	generation := func() int64 { return kubetest.Get(t, cs, ns, "myapp").Generation }

	x.holds = map[string]func() hold{
		atStopping: func() hold {
			const upload = "files.getUploadURLExternal"
			uploads := len(r.emu.CallsTo(upload))
			r.emu.DelayMethod(upload, time.Minute)
			return hold{
				reached: func() *state.Incident {
					wait.For(t, 30*time.Second, "the evidence upload, kept waiting by Slack", func() (bool, error) {
						return len(r.emu.CallsTo(upload)) > uploads, nil
					})
					return r.incident("RB-1")
				},
				release: func() { r.emu.DelayMethod(upload, 0) },
			}
		},
		atRollingBack: func() hold {
			cordon(t, cs, true)
			t.Cleanup(func() { cordon(t, cs, false) })
			return hold{
				reached: func() *state.Incident {
					wait.For(t, 30*time.Second, "the rollback write", func() (bool, error) {
						g := generation()
						return g >= g0+2, fmt.Errorf("generation %d (before %d)", g, g0)
					})
					return r.incident("RB-1")
				},
				release: func() { cordon(t, cs, false) },
			}
		},
		atDownMigration: func() hold {
			return hold{
				reached: func() *state.Incident {
					r.waitIncident("RB-1", 30*time.Second, "down migration started", func(in *state.Incident) bool {
						return in.Steps["database"] == "started"
					})
					kubetest.Poll(t, "the down Job", func(ctx context.Context) (bool, error) {
						_, err := cs.BatchV1().Jobs(ns).Get(ctx, migrations.JobName("RB-1"), metav1.GetOptions{})
						return err == nil, err
					})
					return r.incident("RB-1")
				},
				release: func() { close(gate) },
			}
		},
	}
	x.people = func() { answerChecksByHand(t, r.emu, slackemu.UserBob, 4, time.Minute) }

	x.check = func(in *state.Incident) {
		bad := replicaSetOf(t, cs, ns, "registry.local/myapp:v2")
		want := []string{"patch deployments/myapp", "patch deployments/myapp", "patch replicasets/" + bad.Name}
		if k.db {
			want = append([]string{"create jobs/" + migrations.JobName("RB-1")}, want...)
		}
		ws, err := c.Writes(ns)
		if err != nil {
			t.Fatal(err)
		}
		var made []string
		for _, w := range ws {
			if !w.OK() {
				t.Logf("refused by the API server: %s (%d)", w, w.Code)
				continue
			}
			made = append(made, w.String())
		}
		if !slices.Equal(made, want) {
			t.Errorf("the API server made the writes\n  %s\nwant (the pause, the rollback, the DO_NOT_DEPLOY mark; the down Job first)\n  %s",
				strings.Join(made, "\n  "), strings.Join(want, "\n  "))
		}
		if d := kubetest.Get(t, cs, ns, "myapp"); d.Generation != g0+2 || d.Spec.Paused {
			t.Errorf("the Deployment's generation went %d → %d (paused %v): want exactly two spec writes, the rollout resumed", g0, d.Generation, d.Spec.Paused)
		}
		if bad.Annotations[kube.AnnotationDoNotDeploy] != "true" {
			t.Errorf("the bad ReplicaSet %s is not marked: %v", bad.Name, bad.Annotations)
		}
		images, ready := kubetest.PodImages(t, cs, ns, "myapp")
		if len(images) != 3 || ready != 3 || slices.ContainsFunc(images, func(s string) bool { return s != "registry.local/myapp:v1" }) {
			t.Errorf("pods after the rollback: %v, %d ready; want 3 Ready on registry.local/myapp:v1", images, ready)
		}
		if k.db {
			jobs, err := cs.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(jobs.Items) != 1 || jobs.Items[0].Status.Succeeded != 1 {
				t.Errorf("%d Jobs in %s, want the one down Job, succeeded", len(jobs.Items), ns)
			}
			select {
			case run := <-played:
				if run.err != nil || run.image != "registry.local/myapp:v2" || run.appImage != "registry.local/myapp:v2" {
					t.Errorf("the down Job's container: image %s while the app ran %s: %v", run.image, run.appImage, run.err)
				}
			case <-time.After(10 * time.Second):
				t.Error("the down Job's container was never played")
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
	}
	return x
}

// replicaSetOf is the ReplicaSet in ns whose pods run image.
func replicaSetOf(t *testing.T, cs kubernetes.Interface, ns, image string) appsv1.ReplicaSet {
	t.Helper()
	rss, err := cs.AppsV1().ReplicaSets(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, rs := range rss.Items {
		if cs := rs.Spec.Template.Spec.Containers; len(cs) > 0 && cs[0].Image == image {
			return rs
		}
	}
	t.Fatalf("no ReplicaSet in %s runs %s", ns, image)
	return appsv1.ReplicaSet{}
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
