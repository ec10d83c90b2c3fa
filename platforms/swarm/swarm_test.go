package swarm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
	"go.yaml.in/yaml/v3"

	"rollbot/platforms"
	"rollbot/platforms/internal/docker"
	"rollbot/testkit/dockertest"
	"rollbot/testkit/wait"
)

// Images every test uses: v1 is good, v2 fails its health check (the
// engine kills its tasks as unhealthy, so a deploy of it pauses).
var (
	good = dockertest.Variant{Tag: "v1"}
	bad  = dockertest.Variant{Tag: "v2", FailHealth: true}
	cli  *client.Client
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx := context.Background()
	var err error
	if cli, err = dockertest.Connect(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "swarm tests:", err)
		return 1
	}
	defer cli.Close()
	release, err := dockertest.EnsureSwarm(ctx, cli)
	if err != nil {
		fmt.Fprintln(os.Stderr, "swarm tests:", err)
		return 1
	}
	for _, v := range []dockertest.Variant{good, bad} {
		if _, err := dockertest.Image(ctx, cli, v); err != nil {
			fmt.Fprintln(os.Stderr, "swarm tests:", err)
			release(ctx)
			return 1
		}
	}
	code := m.Run()
	if err := release(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "swarm tests: leave swarm:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

func createService(t *testing.T, image string, replicas uint64) string {
	t.Helper()
	return dockertest.Service(t, cli, image, replicas)
}

func waitRunning(t *testing.T, name, image string, n int) []swarm.Task {
	t.Helper()
	return dockertest.WaitTasks(t, cli, name, image, n, true)
}

func waitTasks(t *testing.T, name, image string, n int, all bool) []swarm.Task {
	t.Helper()
	return dockertest.WaitTasks(t, cli, name, image, n, all)
}

func deploy(t *testing.T, name, image string) {
	t.Helper()
	dockertest.Deploy(t, cli, name, image)
}

func inspectService(t *testing.T, name string) swarm.Service {
	t.Helper()
	s, err := cli.ServiceInspect(context.Background(), name, client.ServiceInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s.Service
}

func waitUpdateState(t *testing.T, name string, want swarm.UpdateState) {
	t.Helper()
	wait.Every(t, 200*time.Millisecond, 90*time.Second, "update state "+string(want), func() (bool, error) {
		st := updateState(inspectService(t, name))
		return st == want, fmt.Errorf("update state %q, want %q", st, want)
	})
}

func newTestAdapter(t *testing.T, cfg Config, opts ...Option) *Adapter {
	t.Helper()
	a, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// versionOverHTTP asks every running task for /version through its
// host-mode published port (one per IP family, maybe under different
// numbers: the first that answers counts).
func versionOverHTTP(t *testing.T, tasks []swarm.Task) []string {
	t.Helper()
	hc := docker.HealthClient()
	var out []string
	for _, tk := range tasks {
		var errs []error
		answered := false
		for _, p := range tk.Status.PortStatus.Ports {
			if p.TargetPort != 8080 || answered {
				continue
			}
			resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/version", p.PublishedPort))
			if err != nil {
				errs = append(errs, err)
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			out = append(out, strings.TrimSpace(string(b)))
			answered = true
		}
		if !answered {
			t.Fatalf("task %s answers on no published port: %v", tk.ID, errors.Join(errs...))
		}
	}
	return out
}

type progressLog struct {
	mu sync.Mutex
	ps []platforms.Progress
}

func (l *progressLog) add(p platforms.Progress) { l.mu.Lock(); l.ps = append(l.ps, p); l.mu.Unlock() }
func (l *progressLog) last() platforms.Progress {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.ps) == 0 {
		return platforms.Progress{}
	}
	return l.ps[len(l.ps)-1]
}

// TestBadDeployThenNativeRollback: v1 → v2 (fails health, swarm pauses the
// update) → Snapshot sees it → Rollback to the last known good revision
// (PreviousSpec, so the engine's native rollback) → every task runs v1 and
// answers HTTP.
func TestBadDeployThenNativeRollback(t *testing.T) {
	parallel(t)
	v1, v2 := good.Ref(), bad.Ref()
	name := createService(t, v1, 2)
	deploy(t, name, v2)
	waitUpdateState(t, name, swarm.UpdateStatePaused)

	a := newTestAdapter(t, Config{Service: name, HealthPath: "/health"})
	ctx := context.Background()
	snap, err := a.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Current.ID != "v2" || snap.Current.Artifact != v2 {
		t.Errorf("current = %+v, want v2 (%s)", snap.Current, v2)
	}
	if !snap.Paused || snap.RolloutInProgress {
		t.Errorf("paused=%v rollout=%v, want paused only", snap.Paused, snap.RolloutInProgress)
	}
	if snap.Health.Restarts < 1 || snap.Health.Ready != 0 || snap.Health.Desired != 2 {
		t.Errorf("health = %+v, want 0/2 ready on v2 and at least one failed task", snap.Health)
	}
	if snap.DeployedAt.IsZero() || time.Since(snap.DeployedAt) > 5*time.Minute {
		t.Errorf("deployed at %v, want the start of the v2 update", snap.DeployedAt)
	}
	lkg, ok := platforms.LastKnownGood(snap.History, snap.Current, nil)
	if !ok || lkg.Artifact != v1 || lkg.ID != "v1" {
		t.Fatalf("last known good = %+v (%v) from history %+v, want v1", lkg, ok, snap.History)
	}

	var pl progressLog
	res, err := a.Rollback(ctx, lkg, false, func(p platforms.Progress) { t.Log(p.Message); pl.add(p) })
	if err != nil {
		t.Fatalf("rollback: %v", err)
	}
	if res.Outcome != platforms.Done || !strings.Contains(res.Plan[0], "native rollback") {
		t.Errorf("result = %+v, want done by native rollback", res)
	}
	if last := pl.last(); !last.Done || last.Ready != 2 || last.Desired != 2 {
		t.Errorf("last progress = %+v, want done 2/2", last)
	}
	svc := inspectService(t, name)
	if got := specImage(&svc.Spec); got != v1 {
		t.Errorf("spec image = %s, want %s", got, v1)
	}
	if st := updateState(svc); st != swarm.UpdateStateRollbackCompleted {
		t.Errorf("update state = %s, want rollback_completed", st)
	}
	tasks := waitRunning(t, name, v1, 2)
	for _, v := range versionOverHTTP(t, tasks) {
		if v != "v1" {
			t.Errorf("a task answers /version %q, want v1", v)
		}
	}
	snap, err = a.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Health.Ready != 2 || snap.Current.ID != "v1" {
		t.Errorf("after rollback: current %s, health %+v", snap.Current.ID, snap.Health)
	}
}

type memHistory map[string][]platforms.Revision

func (h memHistory) Deployed(ctx context.Context, key string) ([]platforms.Revision, error) {
	return h[key], nil
}

// TestRollbackByImageUsesConfiguredPace: the target comes from rollbot's
// record and is not the previous spec, so the rollback is an image update
// with the configured parallelism and delay that keeps the rest of the spec.
func TestRollbackByImageUsesConfiguredPace(t *testing.T) {
	parallel(t)
	v1 := good.Ref()
	name := createService(t, v1, 2)
	// An env setting the rollback must keep.
	s := inspectService(t, name)
	spec := s.Spec
	spec.TaskTemplate.ContainerSpec.Env = []string{"SAMPLEAPP_SELF_LOAD=0"}
	if _, err := cli.ServiceUpdate(context.Background(), s.ID, client.ServiceUpdateOptions{Version: s.Version, Spec: spec}); err != nil {
		t.Fatal(err)
	}
	waitUpdateState(t, name, swarm.UpdateStateCompleted)
	deploy(t, name, bad.Ref())
	waitUpdateState(t, name, swarm.UpdateStatePaused)
	// The target is an image from rollbot's record, not the previous spec.
	other := dockertest.MustImage(t, cli, dockertest.Variant{Tag: "v1-rebuilt", Version: "v1.1"})
	hist := memHistory{"myapp": {{ID: "v1-rebuilt", Artifact: other}}}
	a := newTestAdapter(t, Config{Service: name, UpdateParallelism: 2, UpdateDelay: time.Second}, WithHistory(hist, "myapp"))
	snap, err := a.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range snap.History {
		found = found || r.Artifact == other
	}
	if !found {
		t.Fatalf("history %+v lacks rollbot's record %s", snap.History, other)
	}
	res, err := a.Rollback(context.Background(), platforms.Revision{ID: "v1-rebuilt"}, false, nil)
	if err != nil {
		t.Fatalf("rollback: %v", err)
	}
	if res.Outcome != platforms.Done || strings.Contains(res.Plan[0], "native") {
		t.Errorf("result = %+v, want done by image update", res)
	}
	after := inspectService(t, name)
	uc := after.Spec.UpdateConfig
	if uc == nil || uc.Parallelism != 2 || uc.Delay != time.Second || uc.FailureAction != swarm.UpdateFailureActionPause {
		t.Errorf("update config = %+v, want parallelism 2, delay 1s, failure action pause", uc)
	}
	if got := after.Spec.TaskTemplate.ContainerSpec.Env; len(got) != 1 || got[0] != "SAMPLEAPP_SELF_LOAD=0" {
		t.Errorf("env = %v: the rollback lost the rest of the spec", got)
	}
	for _, v := range versionOverHTTP(t, waitRunning(t, name, other, 2)) {
		if v != "v1.1" {
			t.Errorf("a task answers /version %q, want v1.1", v)
		}
	}
}

// racingAPI changes the service through the engine right before the
// adapter's own update reaches it, as a deploy pipeline running at the
// same moment would.
type racingAPI struct {
	dockerAPI
	race func()
	once sync.Once
}

func (r *racingAPI) ServiceUpdate(ctx context.Context, id string, o client.ServiceUpdateOptions) (client.ServiceUpdateResult, error) {
	r.once.Do(r.race)
	return r.dockerAPI.ServiceUpdate(ctx, id, o)
}

// TestConcurrentUpdateIsAConflict: the version the adapter read is stale
// when its write arrives; the engine refuses it and the adapter reports a
// conflict instead of overwriting the other change.
func TestConcurrentUpdateIsAConflict(t *testing.T) {
	parallel(t)
	name := createService(t, good.Ref(), 1)
	other := dockertest.MustImage(t, cli, dockertest.Variant{Tag: "v3-concurrent", Version: "v3"})
	var logs bytes.Buffer
	a := newTestAdapter(t, Config{Service: name})
	a.log = slog.New(slog.NewTextHandler(&logs, nil))
	a.api = &racingAPI{dockerAPI: a.api, race: func() { deploy(t, name, other) }}

	_, err := a.Rollback(context.Background(), platforms.Revision{ID: "v2"}, false, nil)
	if !errors.Is(err, platforms.ErrConflict) {
		t.Fatalf("rollback during a concurrent deploy: err = %v, want ErrConflict", err)
	}
	msg, ok := platforms.UserMessage(err)
	if !ok || !strings.Contains(msg, "changed by someone else") || !strings.Contains(msg, "v3-concurrent") {
		t.Errorf("user message = %q, want it to say someone else changed it to v3-concurrent", msg)
	}
	if got := inspectService(t, name).Spec.TaskTemplate.ContainerSpec.Image; got != other {
		t.Errorf("spec image = %s, want the concurrent deploy's %s kept", got, other)
	}
}

// TestEngineVersionMoveIsNotAConflict: the engine moves a service's
// version itself while an update's tasks progress (here a deploy of the
// unhealthy image, which swarm pauses). A write that meets such a move,
// the spec unchanged, is made again against the new version, not refused
// as someone else's change (CI, 2026-12-06: a deploy back over an update
// the engine was pausing was refused "changed by someone else").
func TestEngineVersionMoveIsNotAConflict(t *testing.T) {
	parallel(t)
	name := createService(t, good.Ref(), 1)
	waitRunning(t, name, good.Ref(), 1)
	deploy(t, name, bad.Ref())
	a := newTestAdapter(t, Config{Service: name})
	moving := &engineMoveAPI{dockerAPI: a.api, t: t}
	a.api = moving
	res, err := a.Deploy(context.Background(), good.Ref(), bad.Ref(), false)
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("deploy back over the engine's own version move = %+v, %v", res, err)
	}
	if !moving.moved {
		t.Fatal("the engine did not move the version between the read and the write: the test proved nothing")
	}
	if now := inspectService(t, name); specImage(&now.Spec) != good.Ref() {
		t.Errorf("spec image %s, want %s", specImage(&now.Spec), good.Ref())
	}
}

// engineMoveAPI holds the adapter's first write until the engine has
// moved the service's version past the one the adapter read, on its own:
// the spec still runs the image the adapter read.
type engineMoveAPI struct {
	dockerAPI
	t     *testing.T
	once  sync.Once
	moved bool
}

func (e *engineMoveAPI) ServiceUpdate(ctx context.Context, id string, o client.ServiceUpdateOptions) (client.ServiceUpdateResult, error) {
	e.once.Do(func() {
		var read swarm.Service
		err := wait.Until(ctx, time.Minute, "the engine to move the service's version", func() (bool, error) {
			res, err := e.dockerAPI.ServiceInspect(ctx, id, client.ServiceInspectOptions{})
			read = res.Service
			return err == nil && read.Version.Index > o.Version.Index, err
		})
		if err != nil {
			e.t.Error(err)
			return
		}
		e.moved = specImage(&read.Spec) == bad.Ref()
	})
	return e.dockerAPI.ServiceUpdate(ctx, id, o)
}

// TestMissingImage: a rollback to an image the engine does not have fails
// before any change, with the FAQ's fallback; with remote_images the
// update goes out and the tasks' rejection ("No such image") is reported.
func TestMissingImage(t *testing.T) {
	parallel(t)
	name := createService(t, good.Ref(), 1)
	missing := dockertest.Name("rollbot-sampleapp:never-built-")
	ctx := context.Background()

	before := inspectService(t, name).Version.Index
	_, err := newTestAdapter(t, Config{Service: name}).Rollback(ctx, platforms.Revision{Artifact: missing}, false, nil)
	if !errors.Is(err, platforms.ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	msg, _ := platforms.UserMessage(err)
	for _, want := range []string{missing, "not present", "scale the service to zero", "rebuild"} {
		if !strings.Contains(msg, want) {
			t.Errorf("user message %q lacks %q", msg, want)
		}
	}
	if after := inspectService(t, name).Version.Index; after != before {
		t.Errorf("service version %d -> %d: a failed precheck changed the service", before, after)
	}

	a := newTestAdapter(t, Config{Service: name, RemoteImages: true, Timeout: 2 * time.Minute})
	_, err = a.SetArtifact(ctx, missing, false, nil)
	msg, _ = platforms.UserMessage(err)
	if err == nil || !strings.Contains(msg, "paused") || !strings.Contains(msg, "No such image") {
		t.Fatalf("set artifact to a missing image with remote_images: err = %v, user message %q; want a paused update naming the missing image", err, msg)
	}
}

// TestEngineUnreachable: a bogus host gives a clear message, not a raw error.
func TestEngineUnreachable(t *testing.T) {
	parallel(t)
	for _, host := range []string{"tcp://127.0.0.1:1", "unix:///nonexistent/docker.sock"} {
		t.Run(host, func(t *testing.T) {
			a := newTestAdapter(t, Config{Service: "myapp", Host: host})
			_, err := a.Snapshot(context.Background())
			msg, ok := platforms.UserMessage(err)
			if !ok || !strings.Contains(msg, "cannot reach the Docker engine at "+host) {
				t.Errorf("err = %v, user message %q", err, msg)
			}
			if _, err := a.Rollback(context.Background(), platforms.Revision{ID: "v1"}, true, nil); err == nil {
				t.Error("dry-run rollback against an unreachable engine succeeded")
			}
		})
	}
}

// TestHostCredentialsNeverShown: a host with credentials is refused, and
// neither the error nor the log repeats the password.
func TestHostCredentialsNeverShown(t *testing.T) {
	const secret = "s3cr3t-passw0rd"
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	_, err := New(Config{Service: "myapp", Host: "tcp://admin:" + secret + "@127.0.0.1:1"}, log)
	if err == nil || !strings.Contains(err.Error(), "host:") {
		t.Fatalf("err = %v, want a host: error", err)
	}
	t.Setenv("DOCKER_HOST", "tcp://admin:"+secret+"@127.0.0.1:1")
	_, err2 := New(Config{Service: "myapp"}, log)
	if err2 == nil {
		t.Fatal("DOCKER_HOST with credentials accepted")
	}
	for _, s := range []string{err.Error(), err2.Error(), logs.String()} {
		if strings.Contains(s, secret) {
			t.Errorf("secret leaked: %q", s)
		}
	}
}

// TestAlreadyAtTargetAndDryRun: rolling back to the running image is
// skipped; a dry run plans the exact change and leaves the service alone.
func TestAlreadyAtTargetAndDryRun(t *testing.T) {
	parallel(t)
	name := createService(t, good.Ref(), 1)
	a := newTestAdapter(t, Config{Service: name, UpdateDelay: 10 * time.Second})
	ctx := context.Background()
	before := inspectService(t, name)

	res, err := a.Rollback(ctx, platforms.Revision{ID: "v1"}, false, nil)
	if err != nil || res.Outcome != platforms.Skipped || !strings.Contains(res.Detail, "already runs rollbot-sampleapp:v1") {
		t.Errorf("rollback to current: %+v, %v; want skipped", res, err)
	}
	res, err = a.Rollback(ctx, platforms.Revision{ID: "v2"}, true, nil)
	if err != nil || res.Outcome != platforms.Planned {
		t.Fatalf("dry run: %+v, %v", res, err)
	}
	wantPlan := fmt.Sprintf("swarm service %s (version %d): image rollbot-sampleapp:v1 -> rollbot-sampleapp:v2, update parallelism 1, delay 10s, failure action pause", name, before.Version.Index)
	if len(res.Plan) != 1 || res.Plan[0] != wantPlan {
		t.Errorf("plan = %q, want %q", res.Plan, wantPlan)
	}
	res, err = a.ScaleToZero(ctx, true)
	if err != nil || res.Outcome != platforms.Planned || !strings.Contains(res.Plan[0], "replicas 1 -> 0") {
		t.Errorf("scale to zero dry run: %+v, %v", res, err)
	}
	after := inspectService(t, name)
	if after.Version.Index != before.Version.Index || specImage(&after.Spec) != good.Ref() {
		t.Errorf("dry runs changed the service: version %d -> %d, image %s", before.Version.Index, after.Version.Index, specImage(&after.Spec))
	}
}

// TestStopAndRollbackDuringUpdate: while a slow update is in progress,
// Stop says so without writing (swarm has no pause), and the rollback
// supersedes the update.
func TestStopAndRollbackDuringUpdate(t *testing.T) {
	parallel(t)
	name := createService(t, good.Ref(), 2)
	a := newTestAdapter(t, Config{Service: name})
	ctx := context.Background()
	res, err := a.Stop(ctx, false)
	if err != nil || res.Outcome != platforms.Skipped || !strings.Contains(res.Detail, "no update in progress") {
		t.Errorf("stop with no update: %+v, %v", res, err)
	}

	// A deploy of another good image with a long delay between tasks.
	s := inspectService(t, name)
	spec := s.Spec
	slow := *spec.UpdateConfig
	slow.Delay = 5 * time.Minute
	spec.UpdateConfig = &slow
	v3 := dockertest.MustImage(t, cli, dockertest.Variant{Tag: "v3-slow", Version: "v3"})
	spec.TaskTemplate.ContainerSpec.Image = v3
	if _, err := cli.ServiceUpdate(ctx, s.ID, client.ServiceUpdateOptions{Version: s.Version, Spec: spec}); err != nil {
		t.Fatal(err)
	}
	waitTasks(t, name, v3, 1, false) // first batch done, second waits 5 minutes
	snap, err := a.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !snap.RolloutInProgress {
		t.Fatalf("snapshot during a slow update: rollout in progress = false")
	}
	version := inspectService(t, name).Version.Index
	res, err = a.Stop(ctx, false)
	if err != nil || res.Outcome != platforms.Skipped || !strings.Contains(res.Detail, "update in progress") {
		t.Errorf("stop during update: %+v, %v", res, err)
	}
	if v := inspectService(t, name).Version.Index; v != version {
		t.Errorf("stop wrote to the service: version %d -> %d", version, v)
	}
	res, err = a.Rollback(ctx, platforms.Revision{ID: "v1"}, false, nil)
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("rollback during update: %+v, %v", res, err)
	}
	waitRunning(t, name, good.Ref(), 2)
	res, err = a.Stop(ctx, false)
	if err != nil || res.Outcome != platforms.Skipped || !strings.Contains(res.Detail, "no update in progress") {
		t.Errorf("stop after rollback: %+v, %v", res, err)
	}
}

// TestScaleToZero stops every task; a second call is skipped.
func TestScaleToZero(t *testing.T) {
	parallel(t)
	name := createService(t, good.Ref(), 2)
	a := newTestAdapter(t, Config{Service: name})
	ctx := context.Background()
	res, err := a.ScaleToZero(ctx, false)
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("scale to zero: %+v, %v", res, err)
	}
	l, err := cli.ContainerList(ctx, client.ContainerListOptions{Filters: make(client.Filters).Add("label", "com.docker.swarm.service.name="+name)})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 0 {
		t.Errorf("%d containers still running after scale to zero", len(l.Items))
	}
	res, err = a.ScaleToZero(ctx, false)
	if err != nil || res.Outcome != platforms.Skipped {
		t.Errorf("second scale to zero: %+v, %v", res, err)
	}
	snap, err := a.Snapshot(ctx)
	if err != nil || snap.Health.Desired != 0 || snap.Health.Ready != 0 {
		t.Errorf("snapshot after scale to zero: %+v, %v", snap, err)
	}
}

func TestServiceNotFound(t *testing.T) {
	a := newTestAdapter(t, Config{Service: dockertest.Name("rollbot-test-absent-")})
	_, err := a.Snapshot(context.Background())
	if !errors.Is(err, platforms.ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	if msg, _ := platforms.UserMessage(err); !strings.Contains(msg, "does not exist") {
		t.Errorf("user message = %q", msg)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none: valid
	}{
		{"minimal", Config{Service: "myapp"}, nil},
		{"full", Config{Service: "myapp", Host: "tcp://10.0.0.1:2376", TLSCertPath: "/etc/docker/certs", UpdateDelay: 10 * time.Second, UpdateParallelism: 2, HealthPath: "/health", HealthPort: 8080}, nil},
		{"empty", Config{}, []string{"service: required"}},
		{"bad host", Config{Service: "x", Host: "ssh://me@host"}, []string{"host:"}},
		{"negative", Config{Service: "x", UpdateDelay: -time.Second, Timeout: -1}, []string{"update_delay:", "timeout:"}},
		{"health path", Config{Service: "x", HealthPath: "health"}, []string{"health_path:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Errorf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %v", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// TestConfigYAML: the config decodes from the bot's YAML, durations included.
func TestConfigYAML(t *testing.T) {
	var cfg Config
	err := yaml.Unmarshal([]byte(`
host: tcp://manager:2376
service: myapp
update_delay: 10s
update_parallelism: 2
timeout: 3m
health_path: /health
health_port: 8080
remote_images: true
`), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Host: "tcp://manager:2376", Service: "myapp", UpdateDelay: 10 * time.Second, UpdateParallelism: 2,
		Timeout: 3 * time.Minute, HealthPath: "/health", HealthPort: 8080, RemoteImages: true}
	if cfg != want {
		t.Errorf("decoded %+v, want %+v", cfg, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Error(err)
	}
}
