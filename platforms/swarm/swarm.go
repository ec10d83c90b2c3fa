// Package swarm is rollbot's Docker Swarm adapter: one `docker service`
// on one engine (a swarm manager).
//
// Reading: the service spec's image, its PreviousSpec, the update status
// and the tasks (running, failed in the restart window) make a Snapshot.
// History is the current image, the previous spec's image, rollbot's own
// record (History), and the engine's local images of the same repository.
//
// Writing, always with the service version read just before as a
// compare-and-set (the engine refuses an update "out of sequence"; the
// adapter re-reads the service: a changed spec is a concurrent change and
// wraps platforms.ErrConflict, a version the engine moved on its own, as
// an update's tasks progress, is written again):
//   - Rollback uses the engine's native rollback when PreviousSpec runs the
//     target image (like `docker service rollback`: the whole previous spec
//     comes back, and the rollback_config of that spec paces it), else it
//     updates the image with update_parallelism / update_delay from Config
//     and failure action "pause" (so a failing rollback is not rolled back
//     to the bad image by swarm).
//   - Then it waits until all tasks of the new spec run (a task with a
//     HEALTHCHECK only counts as running once healthy) and, with
//     health_path, answer HTTP health through their published ports.
//   - Stop: swarm has no way to pause an update from outside (it pauses
//     only on task failures). Stop reports the state and writes nothing:
//     the rollback's own update supersedes one in progress, as swarm stops
//     a running update when the spec changes. The runbook's "scale to zero"
//     is ScaleToZero, done only when a user asks for it.
package swarm

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"rollbot/platforms"
	"rollbot/platforms/internal/docker"
)

// Config is one swarm service target, under services.<name>.swarm in the
// bot's config.
type Config struct {
	// Host is the engine (a swarm manager): unix:///var/run/docker.sock,
	// tcp://host:2376. Default: DOCKER_HOST, else the local socket.
	Host string `yaml:"host"`
	// TLSCertPath is a directory with ca.pem, cert.pem and key.pem for a
	// tcp host with TLS. Default: DOCKER_CERT_PATH.
	TLSCertPath string `yaml:"tls_cert_path"`
	// Service is the swarm service name or ID.
	Service string `yaml:"service"`
	// UpdateDelay is the pause between updating batches of tasks during a
	// rollback by image (`--update-delay`; the runbook uses 10s). 0: none.
	UpdateDelay time.Duration `yaml:"update_delay"`
	// UpdateParallelism is how many tasks are updated at once (default 1).
	UpdateParallelism uint64 `yaml:"update_parallelism"`
	// Timeout bounds the wait for convergence after a write (default 5m).
	Timeout time.Duration `yaml:"timeout"`
	// RestartWindow is how far back failed tasks count as restarts (default 5m).
	RestartWindow time.Duration `yaml:"restart_window"`
	// HealthPath, when set, is also checked over HTTP (GET, 2xx) on every
	// running task through its published port before a write counts as
	// converged and a task as ready.
	HealthPath string `yaml:"health_path"`
	// HealthPort is the container (target) port of HealthPath; default:
	// the service's only published port.
	HealthPort uint32 `yaml:"health_port"`
	// HealthHost is where published ports are reached; default: the
	// engine's host for tcp hosts, 127.0.0.1 for the local socket.
	HealthHost string `yaml:"health_host"`
	// RemoteImages says the nodes pull images from a registry: the check
	// that the rollback image is present on the engine is skipped (a
	// missing image then shows as rejected tasks while waiting).
	RemoteImages bool `yaml:"remote_images"`
}

// Validate returns the config errors, each naming its field.
func (c Config) Validate() error {
	var errs []error
	if c.Service == "" {
		errs = append(errs, errors.New("service: required"))
	}
	if err := docker.ValidateHost("host", c.Host); err != nil {
		errs = append(errs, err)
	}
	if c.UpdateDelay < 0 {
		errs = append(errs, errors.New("update_delay: must not be negative"))
	}
	if c.Timeout < 0 {
		errs = append(errs, errors.New("timeout: must not be negative"))
	}
	if c.RestartWindow < 0 {
		errs = append(errs, errors.New("restart_window: must not be negative"))
	}
	if c.HealthPath != "" && !strings.HasPrefix(c.HealthPath, "/") {
		errs = append(errs, errors.New("health_path: must start with /"))
	}
	if c.HealthPort > 65535 {
		errs = append(errs, errors.New("health_port: must be a port number"))
	}
	return errors.Join(errs...)
}

// dockerAPI is the part of the moby client the adapter uses.
type dockerAPI interface {
	ServiceInspect(ctx context.Context, serviceID string, options client.ServiceInspectOptions) (client.ServiceInspectResult, error)
	ServiceUpdate(ctx context.Context, serviceID string, options client.ServiceUpdateOptions) (client.ServiceUpdateResult, error)
	TaskList(ctx context.Context, options client.TaskListOptions) (client.TaskListResult, error)
	ServiceLogs(ctx context.Context, serviceID string, options client.ServiceLogsOptions) (client.ServiceLogsResult, error)
	docker.ImageAPI // image inspect and list, for the history and the image check
}

// History is rollbot's own record of what it saw deployed for a service
// (package state satisfies it). Revisions are newest first; Artifact is
// the image reference.
type History = docker.History

// Adapter is a platforms.Platform and platforms.Fallbacks for one swarm service.
type Adapter struct {
	cfg  Config
	api  dockerAPI
	eng  docker.Engine
	log  *slog.Logger
	poll time.Duration
}

var (
	_ platforms.Platform  = (*Adapter)(nil)
	_ platforms.Fallbacks = (*Adapter)(nil)
)

// Option configures an Adapter.
type Option func(*Adapter)

// WithHistory adds rollbot's record of deployed images to the history;
// key is what h.Deployed is asked for (the rollbot service name).
func WithHistory(h History, key string) Option {
	return func(a *Adapter) { a.eng.Record, a.eng.RecordKey = h, key }
}

// New returns the adapter for cfg. It does not contact the engine.
func New(cfg Config, log *slog.Logger, opts ...Option) (*Adapter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cli, err := docker.NewClient(cfg.Host, cfg.TLSCertPath)
	if err != nil {
		return nil, err
	}
	return newAdapter(cfg, cli, log, opts...), nil
}

// defaultTimeout bounds the wait for convergence without Config.Timeout.
const defaultTimeout = 5 * time.Minute

// Waits are the adapter's waits inside the runbook's steps (platforms.Wait),
// at the config path at: every write waits for the service to converge, up
// to timeout.
func (c Config) Waits(at string) []platforms.Wait {
	d, what := c.Timeout, fmt.Sprintf("%s.timeout (%s)", at, c.Timeout)
	if d <= 0 {
		d, what = defaultTimeout, fmt.Sprintf("%s.timeout (%s, the default)", at, defaultTimeout)
	}
	return []platforms.Wait{{Step: platforms.WaitRollback, D: d, What: what, Lower: "lower " + at + ".timeout"}}
}

func newAdapter(cfg Config, api dockerAPI, log *slog.Logger, opts ...Option) *Adapter {
	if cfg.UpdateParallelism == 0 {
		cfg.UpdateParallelism = 1
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.RestartWindow == 0 {
		cfg.RestartWindow = 5 * time.Minute
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Adapter{
		cfg:  cfg,
		api:  api,
		eng:  docker.NewEngine(cfg.Host),
		log:  log.With("platform", "swarm", "service", cfg.Service),
		poll: 500 * time.Millisecond,
	}
	for _, o := range opts {
		o(a)
	}
	return a
}

// Kind implements platforms.Platform.
func (a *Adapter) Kind() string { return "swarm" }

// Target implements platforms.Platform.
func (a *Adapter) Target() string {
	return fmt.Sprintf("swarm service %s (engine %s)", a.cfg.Service, a.eng.Host)
}

func (a *Adapter) inspect(ctx context.Context) (swarm.Service, error) {
	res, err := a.api.ServiceInspect(ctx, a.cfg.Service, client.ServiceInspectOptions{})
	if err != nil {
		if docker.IsNotFound(err) {
			return swarm.Service{}, platforms.Userf(fmt.Errorf("inspect service %s: %w: %w", a.cfg.Service, platforms.ErrNotFound, err),
				"swarm service %s does not exist on the engine at %s", a.cfg.Service, a.eng.Host)
		}
		return swarm.Service{}, a.eng.Err(err, "inspect service "+a.cfg.Service)
	}
	if res.Service.Spec.TaskTemplate.ContainerSpec == nil {
		return swarm.Service{}, platforms.Userf(fmt.Errorf("service %s: no container spec", a.cfg.Service),
			"swarm service %s does not run containers (plugin service?); rollbot cannot roll it back", a.cfg.Service)
	}
	return res.Service, nil
}

func (a *Adapter) tasks(ctx context.Context, serviceID string) ([]swarm.Task, error) {
	res, err := a.api.TaskList(ctx, client.TaskListOptions{Filters: make(client.Filters).Add("service", serviceID)})
	if err != nil {
		return nil, a.eng.Err(err, "list tasks of service "+a.cfg.Service)
	}
	return res.Items, nil
}

func specImage(s *swarm.ServiceSpec) string {
	if s == nil || s.TaskTemplate.ContainerSpec == nil {
		return ""
	}
	return s.TaskTemplate.ContainerSpec.Image
}

func taskImage(t swarm.Task) string {
	if t.Spec.ContainerSpec == nil {
		return ""
	}
	return t.Spec.ContainerSpec.Image
}

func updateState(s swarm.Service) swarm.UpdateState {
	if s.UpdateStatus == nil {
		return ""
	}
	return s.UpdateStatus.State
}

// deployedAt is when the current spec started rolling out.
func deployedAt(s swarm.Service) time.Time {
	if s.UpdateStatus != nil && s.UpdateStatus.StartedAt != nil {
		return *s.UpdateStatus.StartedAt
	}
	if !s.UpdatedAt.IsZero() {
		return s.UpdatedAt
	}
	return s.CreatedAt
}

// Snapshot implements platforms.Platform.
func (a *Adapter) Snapshot(ctx context.Context) (*platforms.Snapshot, error) {
	svc, err := a.inspect(ctx)
	if err != nil {
		return nil, err
	}
	tasks, err := a.tasks(ctx, svc.ID)
	if err != nil {
		return nil, err
	}
	cur := specImage(&svc.Spec)
	repo := docker.Repo(cur)
	at := deployedAt(svc)
	current := docker.RevisionFor(cur, repo, at)
	current.ChangeCause = "current spec"
	var known [][]platforms.Revision
	if prev := specImage(svc.PreviousSpec); prev != "" {
		r := docker.RevisionFor(prev, repo, time.Time{})
		r.ChangeCause = "previous spec"
		known = append(known, []platforms.Revision{r})
	}
	history, err := a.eng.History(ctx, a.api, current, cur, known...)
	if err != nil {
		return nil, err
	}
	state := updateState(svc)
	snap := &platforms.Snapshot{
		Current:           current,
		History:           history,
		Health:            a.health(ctx, svc, tasks, time.Now()),
		RolloutInProgress: state == swarm.UpdateStateUpdating || state == swarm.UpdateStateRollbackStarted,
		Paused:            state == swarm.UpdateStatePaused || state == swarm.UpdateStateRollbackPaused,
		DeployedAt:        at,
	}
	return snap, nil
}

// desiredTasks is the number of tasks the service should run.
func desiredTasks(svc swarm.Service, tasks []swarm.Task) int {
	if m := svc.Spec.Mode.Replicated; m != nil && m.Replicas != nil {
		return int(*m.Replicas)
	}
	n := 0
	for _, t := range tasks {
		if t.DesiredState == swarm.TaskStateRunning {
			n++
		}
	}
	return n
}

// taskFailed is a task that ended by itself: crashed, exited, killed as
// unhealthy (it then exits "complete"), or refused by the node.
func taskFailed(t swarm.Task) bool {
	switch t.Status.State {
	case swarm.TaskStateFailed, swarm.TaskStateRejected, swarm.TaskStateComplete, swarm.TaskStateOrphaned:
		return true
	}
	return false
}

func taskErr(t swarm.Task) string {
	if t.Status.Err != "" {
		return t.Status.Err
	}
	return t.Status.Message
}

// health counts the tasks of the current spec that run (healthy, when the
// image has a HEALTHCHECK) and the tasks that failed in the restart window.
func (a *Adapter) health(ctx context.Context, svc swarm.Service, tasks []swarm.Task, now time.Time) platforms.Health {
	cur := specImage(&svc.Spec)
	h := platforms.Health{Desired: desiredTasks(svc, tasks), RestartWindow: a.cfg.RestartWindow, Known: true}
	var lastErr string
	var lastErrAt time.Time
	var httpBad []string
	for _, t := range tasks {
		if taskFailed(t) && now.Sub(t.Status.Timestamp) <= a.cfg.RestartWindow {
			h.Restarts++
			if t.Status.Timestamp.After(lastErrAt) {
				lastErr, lastErrAt = taskErr(t), t.Status.Timestamp
			}
		}
		if t.DesiredState != swarm.TaskStateRunning || t.Status.State != swarm.TaskStateRunning || !docker.SameImage(taskImage(t), cur) {
			continue
		}
		if a.cfg.HealthPath != "" {
			if err := a.checkHTTP(ctx, svc, t); err != nil {
				httpBad = append(httpBad, fmt.Sprintf("task %s: %v", t.ID[:min(12, len(t.ID))], err))
				continue
			}
		}
		h.Ready++
	}
	h.Detail = fmt.Sprintf("%d/%d tasks running %s", h.Ready, h.Desired, docker.WithoutDigest(cur))
	if a.cfg.HealthPath != "" {
		h.Detail += fmt.Sprintf(" and answering %s", a.cfg.HealthPath)
	}
	if h.Restarts > 0 {
		h.Detail += fmt.Sprintf("; %d tasks failed in the last %s (last: %s)", h.Restarts, a.cfg.RestartWindow, lastErr)
	}
	if len(httpBad) > 0 {
		h.Detail += "; health check failed: " + strings.Join(httpBad, ", ")
	}
	return h
}

// healthURLs are the URLs of the task's health endpoint through its
// published ports: the task's own host-mode ports, else the service's
// ingress ports. The engine may publish a port once per IP family under
// different numbers without saying which is which, so every candidate is
// returned and any one answering counts.
func (a *Adapter) healthURLs(svc swarm.Service, t swarm.Task) ([]string, error) {
	want := a.cfg.HealthPort
	pick := func(ports []swarm.PortConfig) ([]uint32, error) {
		var found []uint32
		targets := map[uint32]bool{}
		for _, p := range ports {
			if p.PublishedPort == 0 || (p.Protocol != "" && p.Protocol != network.TCP) {
				continue
			}
			if (want == 0 || p.TargetPort == want) && !slices.Contains(found, p.PublishedPort) {
				found = append(found, p.PublishedPort)
				targets[p.TargetPort] = true
			}
		}
		if len(targets) > 1 {
			return nil, errors.New("several published ports; set health_port")
		}
		return found, nil
	}
	ports, err := pick(t.Status.PortStatus.Ports)
	if err == nil && len(ports) == 0 {
		ports, err = pick(svc.Endpoint.Ports)
	}
	if err != nil {
		return nil, err
	}
	if len(ports) == 0 {
		return nil, errors.New("no published port to check health through")
	}
	host := a.eng.PublishedHost(a.cfg.HealthHost)
	var urls []string
	for _, p := range ports {
		urls = append(urls, "http://"+net.JoinHostPort(host, strconv.Itoa(int(p)))+a.cfg.HealthPath)
	}
	return urls, nil
}

// checkHTTP GETs the task's health URLs; the first 2xx answer wins.
func (a *Adapter) checkHTTP(ctx context.Context, svc swarm.Service, t swarm.Task) error {
	urls, err := a.healthURLs(svc, t)
	if err != nil {
		return err
	}
	return a.eng.FirstOK(ctx, urls)
}

// Stop implements platforms.Platform. Swarm cannot pause an update from
// outside, so Stop never writes; see the package doc.
func (a *Adapter) Stop(ctx context.Context, dryRun bool) (platforms.Result, error) {
	svc, err := a.inspect(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	name := svc.Spec.Name
	switch st := updateState(svc); st {
	case swarm.UpdateStateUpdating, swarm.UpdateStateRollbackStarted:
		return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf(
			"swarm service %s has an update in progress (%s to %s). Swarm has no pause for it; the rollback's update replaces it (swarm stops a running update when the service spec changes). To stop every task instead, scale the service to zero.",
			name, st, docker.WithoutDigest(specImage(&svc.Spec)))}, nil
	case swarm.UpdateStatePaused, swarm.UpdateStateRollbackPaused:
		return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf(
			"the update of swarm service %s is already stopped: swarm paused it (%s)", name, svc.UpdateStatus.Message)}, nil
	case "":
		return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf("swarm service %s has no update in progress", name)}, nil
	default:
		return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf("swarm service %s has no update in progress (last update %s)", name, st)}, nil
	}
}

// Rollback implements platforms.Platform.
func (a *Adapter) Rollback(ctx context.Context, to platforms.Revision, dryRun bool, progress platforms.ProgressFunc) (platforms.Result, error) {
	svc, err := a.inspect(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	target, err := docker.TargetImage(to, specImage(&svc.Spec))
	if err != nil {
		return platforms.Result{}, err
	}
	return a.moveTo(ctx, svc, target, true, dryRun, progress)
}

// SetArtifact implements platforms.Fallbacks: an update to the image,
// never the native rollback.
func (a *Adapter) SetArtifact(ctx context.Context, artifact string, dryRun bool, progress platforms.ProgressFunc) (platforms.Result, error) {
	if err := docker.ValidImage(artifact); err != nil {
		return platforms.Result{}, err
	}
	svc, err := a.inspect(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	return a.moveTo(ctx, svc, artifact, false, dryRun, progress)
}

// Deploy implements platforms.Deployer: the service's image is updated
// as a release would (the service's own update config), conditional on
// the version read (and, with from set, on the service running from); it
// returns once the engine took the update, without waiting for the tasks.
func (a *Adapter) Deploy(ctx context.Context, artifact, from string, dryRun bool) (platforms.Result, error) {
	if err := docker.ValidImage(artifact); err != nil {
		return platforms.Result{}, err
	}
	svc, err := a.inspect(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	name, cur := svc.Spec.Name, specImage(&svc.Spec)
	if docker.SameImage(cur, artifact) {
		return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf("swarm service %s already runs %s", name, docker.WithoutDigest(cur))}, nil
	}
	if from != "" && !docker.SameImage(cur, from) {
		return platforms.Result{}, platforms.Userf(fmt.Errorf("deploy %s to swarm service %s: it runs %s, not %s: %w", artifact, name, cur, from, platforms.ErrConflict),
			"swarm service %s runs %s, not %s: someone changed it, so %s was not deployed over it", name, docker.WithoutDigest(cur), docker.WithoutDigest(from), docker.WithoutDigest(artifact))
	}
	if !a.cfg.RemoteImages {
		if err := a.eng.RequireImage(ctx, a.api, artifact); err != nil {
			return platforms.Result{}, err
		}
	}
	plan := []string{fmt.Sprintf("swarm service %s (version %d): image %s -> %s", name, svc.Version.Index, docker.WithoutDigest(cur), docker.WithoutDigest(artifact))}
	if dryRun {
		return platforms.Result{Outcome: platforms.Planned, Plan: plan, Detail: fmt.Sprintf("would deploy %s to swarm service %s", docker.WithoutDigest(artifact), name)}, nil
	}
	spec := svc.Spec
	cs := *spec.TaskTemplate.ContainerSpec
	cs.Image = artifact
	spec.TaskTemplate.ContainerSpec = &cs
	a.log.InfoContext(ctx, "swarm service update", "op", "deploy", "from", cur, "to", artifact, "version", svc.Version.Index)
	if _, err := a.update(ctx, svc, client.ServiceUpdateOptions{Spec: spec}, "update service "+name); err != nil {
		return platforms.Result{}, err
	}
	return platforms.Result{Outcome: platforms.Done, Plan: plan,
		Detail: fmt.Sprintf("deployed %s to swarm service %s (was %s)", docker.WithoutDigest(artifact), name, docker.WithoutDigest(cur))}, nil
}

func (a *Adapter) moveTo(ctx context.Context, svc swarm.Service, target string, allowNative, dryRun bool, progress platforms.ProgressFunc) (platforms.Result, error) {
	name := svc.Spec.Name
	cur := specImage(&svc.Spec)
	if docker.SameImage(cur, target) {
		detail := fmt.Sprintf("swarm service %s already runs %s", name, docker.WithoutDigest(cur))
		if st := updateState(svc); st != "" {
			detail += fmt.Sprintf(" (update %s)", st)
		}
		return platforms.Result{Outcome: platforms.Skipped, Detail: detail}, nil
	}
	if !a.cfg.RemoteImages {
		if err := a.eng.RequireImage(ctx, a.api, target); err != nil {
			return platforms.Result{}, err
		}
	}
	native := allowNative && docker.SameImage(specImage(svc.PreviousSpec), target)
	var plan []string
	var opts client.ServiceUpdateOptions
	if native {
		rc := svc.PreviousSpec.RollbackConfig
		pace := "parallelism 1, no delay (swarm defaults)"
		if rc != nil {
			pace = fmt.Sprintf("parallelism %d, delay %s", rc.Parallelism, rc.Delay)
		}
		plan = append(plan, fmt.Sprintf("swarm service %s (version %d): native rollback to the previous spec, image %s -> %s, paced by the service's rollback_config (%s)",
			name, svc.Version.Index, docker.WithoutDigest(cur), docker.WithoutDigest(target), pace))
		opts.Spec = svc.Spec
		opts.Rollback = "previous"
	} else {
		spec := svc.Spec
		cs := *spec.TaskTemplate.ContainerSpec
		cs.Image = target
		spec.TaskTemplate.ContainerSpec = &cs
		uc := swarm.UpdateConfig{}
		if spec.UpdateConfig != nil {
			uc = *spec.UpdateConfig
		}
		uc.Parallelism = a.cfg.UpdateParallelism
		uc.Delay = a.cfg.UpdateDelay
		uc.FailureAction = swarm.UpdateFailureActionPause
		spec.UpdateConfig = &uc
		opts.Spec = spec
		plan = append(plan, fmt.Sprintf("swarm service %s (version %d): image %s -> %s, update parallelism %d, delay %s, failure action pause",
			name, svc.Version.Index, docker.WithoutDigest(cur), docker.WithoutDigest(target), uc.Parallelism, uc.Delay))
	}
	if dryRun {
		return platforms.Result{Outcome: platforms.Planned, Plan: plan,
			Detail: fmt.Sprintf("would move swarm service %s from %s to %s", name, docker.WithoutDigest(cur), docker.WithoutDigest(target))}, nil
	}
	a.log.InfoContext(ctx, "swarm service update", "op", "rollback", "from", cur, "to", target, "native", native, "version", svc.Version.Index)
	written, err := a.update(ctx, svc, opts, "update service "+name)
	if err != nil {
		return platforms.Result{}, err
	}
	if err := a.waitConverged(ctx, written, target, native, progress); err != nil {
		return platforms.Result{Plan: plan}, err
	}
	how := "updated"
	if native {
		how = "rolled back (native)"
	}
	return platforms.Result{Outcome: platforms.Done, Plan: plan,
		Detail: fmt.Sprintf("swarm service %s %s from %s to %s; all tasks running", name, how, docker.WithoutDigest(cur), docker.WithoutDigest(target))}, nil
}

// update writes opts over svc, with the version read in svc as the
// compare-and-set, and returns the service as it was when the write took.
// The engine refuses a stale version with a plain 500 ("update out of
// sequence"), so a refused write re-reads the service. The engine moves
// the version itself while an update's tasks progress (the update status
// is part of the versioned object): when the spec and the previous spec
// are still what was read, the write is made again against the new
// version, a few times at most. A change to either is someone else's, and
// is reported as a conflict without writing over it.
func (a *Adapter) update(ctx context.Context, svc swarm.Service, opts client.ServiceUpdateOptions, op string) (swarm.Service, error) {
	for try := 1; ; try++ {
		opts.Version = svc.Version
		_, err := a.api.ServiceUpdate(ctx, svc.ID, opts)
		if err == nil {
			return svc, nil
		}
		if client.IsErrConnectionFailed(err) || errors.Is(err, context.DeadlineExceeded) {
			return svc, a.eng.Err(err, op)
		}
		res, ierr := a.api.ServiceInspect(ctx, svc.ID, client.ServiceInspectOptions{})
		if ierr != nil || res.Service.Version.Index == svc.Version.Index {
			return svc, fmt.Errorf("%s: %w", op, err)
		}
		now := res.Service
		if !reflect.DeepEqual(now.Spec, svc.Spec) || !reflect.DeepEqual(now.PreviousSpec, svc.PreviousSpec) {
			return svc, a.conflict(fmt.Errorf("%s: version %d, now %d: %w: %w", op, svc.Version.Index, now.Version.Index, platforms.ErrConflict, err), now)
		}
		if try == engineMoves {
			return svc, fmt.Errorf("%s: the engine moved the service's version %d times while rollbot wrote it, its spec unchanged: %w", op, try, err)
		}
		a.log.InfoContext(ctx, "swarm service version moved by the engine, spec unchanged; writing again",
			"op", op, "version", svc.Version.Index, "now", now.Version.Index, "update", string(updateState(now)))
		svc = now
	}
}

// engineMoves is how many writes update makes while the engine alone
// moves the version.
const engineMoves = 5

func (a *Adapter) conflict(cause error, now swarm.Service) error {
	return platforms.Userf(cause,
		"swarm service %s was changed by someone else while rollbot was working on it (it now runs %s, update %s); rollbot did not overwrite that change. Check `docker service ps %s` and start the rollback again if it is still needed",
		a.cfg.Service, docker.WithoutDigest(specImage(&now.Spec)), cmp.Or(string(updateState(now)), "none"), a.cfg.Service)
}

// waitConverged polls until every task of the service runs target (and
// answers health_path), reporting progress; it fails when swarm pauses or
// reverts the update, when someone else changes the spec, or on timeout.
func (a *Adapter) waitConverged(ctx context.Context, before swarm.Service, target string, native bool, progress platforms.ProgressFunc) error {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	var oldStart time.Time
	if before.UpdateStatus != nil && before.UpdateStatus.StartedAt != nil {
		oldStart = *before.UpdateStatus.StartedAt
	}
	name := before.Spec.Name
	last := platforms.Progress{}
	for {
		svc, err := a.inspect(ctx)
		if err != nil {
			return a.waitErr(ctx, err, name, target, last)
		}
		if !docker.SameImage(specImage(&svc.Spec), target) {
			return a.conflict(fmt.Errorf("wait for service %s: spec image is now %s: %w", name, specImage(&svc.Spec), platforms.ErrConflict), svc)
		}
		tasks, err := a.tasks(ctx, svc.ID)
		if err != nil {
			return a.waitErr(ctx, err, name, target, last)
		}
		ours := svc.UpdateStatus != nil && svc.UpdateStatus.StartedAt != nil && !svc.UpdateStatus.StartedAt.Equal(oldStart)
		state := updateState(svc)
		p := platforms.Progress{Desired: desiredTasks(svc, tasks)}
		var failures []string
		allOnTarget := true
		for _, t := range tasks {
			onTarget := docker.SameImage(taskImage(t), target)
			if t.DesiredState == swarm.TaskStateRunning {
				if onTarget {
					p.Updated++
				} else {
					allOnTarget = false
				}
			}
			if onTarget && t.Status.State == swarm.TaskStateRunning && t.DesiredState == swarm.TaskStateRunning {
				if a.cfg.HealthPath == "" || a.checkHTTP(ctx, svc, t) == nil {
					p.Ready++
				}
			}
			if onTarget && taskFailed(t) && (oldStart.IsZero() || t.Status.Timestamp.After(oldStart)) {
				failures = append(failures, taskErr(t))
			}
		}
		if ours && (state == swarm.UpdateStatePaused || state == swarm.UpdateStateRollbackPaused) {
			return a.paused(svc, target, failures)
		}
		if ours && !native && (state == swarm.UpdateStateRollbackStarted || state == swarm.UpdateStateRollbackCompleted) {
			return platforms.Userf(fmt.Errorf("service %s: update to %s reverted by swarm: %s", name, target, svc.UpdateStatus.Message),
				"swarm reverted the update of %s to %s by itself (%s). %s", name, docker.WithoutDigest(target), svc.UpdateStatus.Message, docker.FallbackHint(docker.WithoutDigest(target)))
		}
		finished := ours && (state == swarm.UpdateStateCompleted || state == swarm.UpdateStateRollbackCompleted)
		p.Done = finished && allOnTarget && p.Ready == p.Desired
		p.Message = fmt.Sprintf("Waiting for swarm service %s: %d of %d tasks updated to %s, %d running", name, p.Updated, p.Desired, docker.WithoutDigest(target), p.Ready)
		if a.cfg.HealthPath != "" {
			p.Message += " and healthy"
		}
		if p.Done {
			p.Message = fmt.Sprintf("swarm service %s converged: %d/%d tasks running %s", name, p.Ready, p.Desired, docker.WithoutDigest(target))
		}
		if progress != nil && p != last {
			progress(p)
		}
		last = p
		if p.Done {
			return nil
		}
		select {
		case <-ctx.Done():
			return a.waitErr(ctx, ctx.Err(), name, target, last)
		case <-time.After(a.poll):
		}
	}
}

func (a *Adapter) waitErr(ctx context.Context, err error, name, target string, last platforms.Progress) error {
	if ctx.Err() != nil {
		return platforms.Userf(fmt.Errorf("wait for service %s: %w", name, err),
			"swarm service %s did not converge on %s within %s (%d/%d tasks updated, %d running); check `docker service ps %s`",
			name, docker.WithoutDigest(target), a.cfg.Timeout, last.Updated, last.Desired, last.Ready, name)
	}
	return err
}

func (a *Adapter) paused(svc swarm.Service, target string, failures []string) error {
	name := svc.Spec.Name
	slices.Sort(failures)
	failures = slices.Compact(failures)
	why := ""
	if len(failures) > 0 {
		why = " Task errors: " + strings.Join(failures, "; ") + "."
	}
	return platforms.Userf(fmt.Errorf("service %s: update to %s paused: %s", name, target, svc.UpdateStatus.Message),
		"swarm paused the update of %s to %s because its tasks failed (%s).%s %s",
		name, docker.WithoutDigest(target), svc.UpdateStatus.Message, why, docker.FallbackHint(docker.WithoutDigest(target)))
}

// ScaleToZero implements platforms.Fallbacks (runbook §2's
// `docker service update --replicas=0`).
func (a *Adapter) ScaleToZero(ctx context.Context, dryRun bool) (platforms.Result, error) {
	svc, err := a.inspect(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	name := svc.Spec.Name
	m := svc.Spec.Mode.Replicated
	if m == nil || m.Replicas == nil {
		return platforms.Result{}, platforms.Userf(fmt.Errorf("scale service %s: not replicated", name),
			"swarm service %s is not a replicated service, so it cannot be scaled to zero; remove it or drain its nodes instead", name)
	}
	if *m.Replicas == 0 {
		return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf("swarm service %s is already scaled to zero", name)}, nil
	}
	plan := []string{fmt.Sprintf("swarm service %s (version %d): replicas %d -> 0", name, svc.Version.Index, *m.Replicas)}
	if dryRun {
		return platforms.Result{Outcome: platforms.Planned, Plan: plan, Detail: fmt.Sprintf("would scale swarm service %s to zero", name)}, nil
	}
	spec := svc.Spec
	zero := uint64(0)
	spec.Mode.Replicated = &swarm.ReplicatedService{Replicas: &zero}
	a.log.InfoContext(ctx, "swarm service update", "op", "scale_to_zero", "replicas", *m.Replicas, "version", svc.Version.Index)
	if _, err := a.update(ctx, svc, client.ServiceUpdateOptions{Spec: spec}, "scale service "+name); err != nil {
		return platforms.Result{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	for {
		tasks, err := a.tasks(ctx, svc.ID)
		if err != nil {
			return platforms.Result{Plan: plan}, err
		}
		running := 0
		for _, t := range tasks {
			if t.DesiredState == swarm.TaskStateRunning || t.Status.State == swarm.TaskStateRunning {
				running++
			}
		}
		if running == 0 {
			return platforms.Result{Outcome: platforms.Done, Plan: plan, Detail: fmt.Sprintf("swarm service %s scaled to zero; no task runs", name)}, nil
		}
		select {
		case <-ctx.Done():
			return platforms.Result{Plan: plan}, platforms.Userf(fmt.Errorf("scale service %s: %w", name, ctx.Err()),
				"swarm service %s was scaled to zero but %d tasks still run after %s", name, running, a.cfg.Timeout)
		case <-time.After(a.poll):
		}
	}
}

// MarkDoNotDeploy implements platforms.Platform. A label on the service
// would be a spec change (it replaces PreviousSpec), so the mark stays in
// rollbot's own state.
func (a *Adapter) MarkDoNotDeploy(ctx context.Context, rev platforms.Revision, by string) (platforms.Result, error) {
	return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf(
		"swarm has no place for a do-not-deploy mark on %s that leaves the service spec alone; rollbot keeps the mark in its own state", rev.Label())}, nil
}
