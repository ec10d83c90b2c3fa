// Package compose is rollbot's adapter for one service of a docker-compose
// project on one engine.
//
// It finds the service's containers by the labels docker-compose puts on
// them (com.docker.compose.project, com.docker.compose.service). The
// current image is the one the newest container runs; the history is that
// image, rollbot's own record of what was deployed (History), and the
// engine's local images of the same repository.
//
// A rollback takes one of two ways (Config.Mode):
//   - compose_file: when the project's compose file pins the service's
//     image to the running tag (`image: myapp:v2`), the file is edited to
//     the target tag and `docker-compose up -d --no-deps <service>` runs,
//     the runbook's `docker-compose pull && up -d` without the pull (the
//     image must be on the engine; no registry is asked). The file and the
//     containers then agree, so a later `up` keeps the rollback.
//   - recreate: otherwise each container is recreated through the engine
//     API with the same configuration (env, ports, networks and aliases,
//     volumes including anonymous ones, labels, healthcheck, restart
//     policy) and the target image; settings that came from the old image
//     (its env, cmd, healthcheck, ...) are left for the new image to
//     supply. If the compose file still names the old tag, the next
//     `docker-compose up` brings it back; the result says so.
//
// "auto" (the default) uses compose_file when the file is readable and pins
// the running image, else recreate.
//
// Each write is a compare-and-set on what was read: the containers (IDs and
// images) and, in compose_file mode, the file's bytes. The engine has no
// conditional write for containers, so the check runs right before each
// container is touched. After each container is replaced the adapter waits
// until it runs, its HEALTHCHECK (if any) says healthy and, with
// health_path, it answers HTTP through its published port; a recreated
// container that does not get there is replaced by the previous one again.
package compose

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"rollbot/platforms"
	"rollbot/platforms/internal/docker"
)

// Compose labels.
const (
	labelProject     = "com.docker.compose.project"
	labelService     = "com.docker.compose.service"
	labelOneoff      = "com.docker.compose.oneoff"
	labelConfigFiles = "com.docker.compose.project.config_files"
	labelWorkingDir  = "com.docker.compose.project.working_dir"
)

// Modes.
const (
	ModeAuto        = "auto"
	ModeRecreate    = "recreate"
	ModeComposeFile = "compose_file"
)

// Config is one compose service target, under services.<name>.compose in
// the bot's config.
type Config struct {
	// Host is the engine: unix:///var/run/docker.sock, tcp://host:2376.
	// Default: DOCKER_HOST, else the local socket.
	Host string `yaml:"host"`
	// TLSCertPath is a directory with ca.pem, cert.pem and key.pem for a
	// tcp host with TLS. Default: DOCKER_CERT_PATH.
	TLSCertPath string `yaml:"tls_cert_path"`
	// Project is the compose project name (com.docker.compose.project).
	Project string `yaml:"project"`
	// Service is the compose service name (com.docker.compose.service).
	Service string `yaml:"service"`
	// Mode is auto (default), recreate or compose_file; see the package doc.
	Mode string `yaml:"mode"`
	// ComposeFiles are the project's compose files, as given to
	// docker-compose -f. Default: the files the containers' labels name.
	ComposeFiles []string `yaml:"compose_files"`
	// ComposeCommand is the docker-compose binary (default: docker-compose on PATH).
	ComposeCommand string `yaml:"compose_command"`
	// HealthPath, when set, is also checked over HTTP (GET, 2xx) on every
	// container through its published port.
	HealthPath string `yaml:"health_path"`
	// HealthPort is the container port of HealthPath; default: the
	// container's only published TCP port.
	HealthPort uint16 `yaml:"health_port"`
	// HealthHost is where published ports are reached; default: the
	// binding's own address when specific, else the engine's host for tcp
	// hosts, else 127.0.0.1.
	HealthHost string `yaml:"health_host"`
	// Timeout bounds the wait for each container to become healthy (default 2m).
	Timeout time.Duration `yaml:"timeout"`
	// StopTimeout is how long a container gets to stop (default 10s).
	StopTimeout time.Duration `yaml:"stop_timeout"`
	// RestartWindow is how far back restarts count (default 5m).
	RestartWindow time.Duration `yaml:"restart_window"`
}

// Validate returns the config errors, each naming its field.
func (c Config) Validate() error {
	var errs []error
	if c.Project == "" {
		errs = append(errs, errors.New("project: required"))
	}
	if c.Service == "" {
		errs = append(errs, errors.New("service: required"))
	}
	if err := docker.ValidateHost("host", c.Host); err != nil {
		errs = append(errs, err)
	}
	switch c.Mode {
	case "", ModeAuto, ModeRecreate, ModeComposeFile:
	default:
		errs = append(errs, fmt.Errorf("mode: %q is not auto, recreate or compose_file", c.Mode))
	}
	if c.HealthPath != "" && !strings.HasPrefix(c.HealthPath, "/") {
		errs = append(errs, errors.New("health_path: must start with /"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"timeout", c.Timeout}, {"stop_timeout", c.StopTimeout}, {"restart_window", c.RestartWindow}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative", d.name))
		}
	}
	return errors.Join(errs...)
}

// dockerAPI is the part of the moby client the adapter uses.
type dockerAPI interface {
	ContainerList(ctx context.Context, options client.ContainerListOptions) (client.ContainerListResult, error)
	ContainerInspect(ctx context.Context, containerID string, options client.ContainerInspectOptions) (client.ContainerInspectResult, error)
	ContainerCreate(ctx context.Context, options client.ContainerCreateOptions) (client.ContainerCreateResult, error)
	ContainerStart(ctx context.Context, containerID string, options client.ContainerStartOptions) (client.ContainerStartResult, error)
	ContainerStop(ctx context.Context, containerID string, options client.ContainerStopOptions) (client.ContainerStopResult, error)
	ContainerRename(ctx context.Context, containerID string, options client.ContainerRenameOptions) (client.ContainerRenameResult, error)
	ContainerRemove(ctx context.Context, containerID string, options client.ContainerRemoveOptions) (client.ContainerRemoveResult, error)
	NetworkConnect(ctx context.Context, networkID string, options client.NetworkConnectOptions) (client.NetworkConnectResult, error)
	docker.LogAPI   // the containers' logs, for the capture
	docker.ImageAPI // image inspect and list, for the history and the image check
}

// History is rollbot's own record of what it saw deployed for a service
// (package state satisfies it). Revisions are newest first; Artifact is
// the image reference.
type History = docker.History

// Adapter is a platforms.Platform and platforms.Fallbacks for one compose service.
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

// The defaults of Config.Timeout and Config.StopTimeout.
const (
	defaultTimeout     = 2 * time.Minute
	defaultStopTimeout = 10 * time.Second
)

// Waits are the adapter's waits inside the runbook's steps (platforms.Wait),
// at the config path at: a write replaces the service's containers one at
// a time, each stopped (up to stop_timeout) and then waited for until
// healthy (up to timeout). The number of containers is the project's, so
// the wait counted is one container's.
func (c Config) Waits(at string) []platforms.Wait {
	field := func(name string, v, def time.Duration) (time.Duration, string) {
		if v > 0 {
			return v, fmt.Sprintf("%s.%s (%s)", at, name, v)
		}
		return def, fmt.Sprintf("%s.%s (%s, the default)", at, name, def)
	}
	stop, stopWhat := field("stop_timeout", c.StopTimeout, defaultStopTimeout)
	ready, readyWhat := field("timeout", c.Timeout, defaultTimeout)
	return []platforms.Wait{{Step: platforms.WaitRollback, D: stop + ready,
		What:  stopWhat + " + " + readyWhat + " for one container (each further container of the service adds as much)",
		Lower: "lower " + at + ".timeout"}}
}

func newAdapter(cfg Config, api dockerAPI, log *slog.Logger, opts ...Option) *Adapter {
	if cfg.Mode == "" {
		cfg.Mode = ModeAuto
	}
	if cfg.ComposeCommand == "" {
		cfg.ComposeCommand = "docker-compose"
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = defaultStopTimeout
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
		log:  log.With("platform", "compose", "service", cfg.Project+"/"+cfg.Service),
		poll: 300 * time.Millisecond,
	}
	for _, o := range opts {
		o(a)
	}
	return a
}

// Kind implements platforms.Platform.
func (a *Adapter) Kind() string { return "compose" }

// Target implements platforms.Platform.
func (a *Adapter) Target() string {
	return fmt.Sprintf("compose service %s in project %s (engine %s)", a.cfg.Service, a.cfg.Project, a.eng.Host)
}

// state is what a write starts from: the service's containers, oldest first.
type state struct {
	containers []container.InspectResponse
	current    string // image of the newest container
}

func (a *Adapter) read(ctx context.Context) (state, error) {
	f := make(client.Filters).
		Add("label", labelProject+"="+a.cfg.Project).
		Add("label", labelService+"="+a.cfg.Service)
	list, err := a.api.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return state{}, a.eng.Err(err, "list containers of "+a.cfg.Project+"/"+a.cfg.Service)
	}
	var st state
	for _, c := range list.Items {
		if c.Labels[labelOneoff] == "True" {
			continue // `docker-compose run` containers are not the service
		}
		in, err := a.api.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{})
		if err != nil {
			if docker.IsNotFound(err) {
				continue // removed while listing
			}
			return state{}, a.eng.Err(err, "inspect container "+c.ID)
		}
		st.containers = append(st.containers, in.Container)
	}
	if len(st.containers) == 0 {
		return state{}, platforms.Userf(fmt.Errorf("containers of compose service %s/%s: %w", a.cfg.Project, a.cfg.Service, platforms.ErrNotFound),
			"compose service %s of project %s has no containers on the engine at %s", a.cfg.Service, a.cfg.Project, a.eng.Host)
	}
	slices.SortFunc(st.containers, func(x, y container.InspectResponse) int { return strings.Compare(x.Created, y.Created) })
	st.current = st.containers[len(st.containers)-1].Config.Image
	return st, nil
}

func created(c container.InspectResponse) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, c.Created)
	return t
}

func name(c container.InspectResponse) string { return strings.TrimPrefix(c.Name, "/") }

// Snapshot implements platforms.Platform.
func (a *Adapter) Snapshot(ctx context.Context) (*platforms.Snapshot, error) {
	st, err := a.read(ctx)
	if err != nil {
		return nil, err
	}
	newest := st.containers[len(st.containers)-1]
	current := docker.RevisionFor(st.current, docker.Repo(st.current), created(newest))
	history, err := a.eng.History(ctx, a.api, current, newest.Image)
	if err != nil {
		return nil, err
	}
	mixed := false
	for _, c := range st.containers {
		mixed = mixed || !docker.SameImage(c.Config.Image, st.current)
	}
	return &platforms.Snapshot{
		Current:           current,
		History:           history,
		Health:            a.health(ctx, st, time.Now()),
		RolloutInProgress: mixed,
		DeployedAt:        created(newest),
	}, nil
}

// health counts containers that run the current image, are healthy (when
// they have a healthcheck) and answer health_path; restarts are the
// restart counts of containers (re)started within the restart window.
func (a *Adapter) health(ctx context.Context, st state, now time.Time) platforms.Health {
	h := platforms.Health{Desired: len(st.containers), RestartWindow: a.cfg.RestartWindow, Known: true}
	var notes []string
	for _, c := range st.containers {
		started, _ := time.Parse(time.RFC3339Nano, c.State.StartedAt)
		if c.RestartCount > 0 && now.Sub(started) <= a.cfg.RestartWindow {
			h.Restarts += c.RestartCount
		}
		if err := a.containerReady(ctx, c); err != nil {
			notes = append(notes, fmt.Sprintf("%s: %v", name(c), err))
			continue
		}
		if !docker.SameImage(c.Config.Image, st.current) {
			notes = append(notes, fmt.Sprintf("%s runs %s", name(c), c.Config.Image))
			continue
		}
		h.Ready++
	}
	h.Detail = fmt.Sprintf("%d/%d containers running %s and healthy", h.Ready, h.Desired, docker.WithoutDigest(st.current))
	if h.Restarts > 0 {
		h.Detail += fmt.Sprintf("; %d restarts in the last %s", h.Restarts, a.cfg.RestartWindow)
	}
	if len(notes) > 0 {
		h.Detail += "; " + strings.Join(notes, "; ")
	}
	return h
}

// readiness says why a container is not ready; final when it will not
// get there by waiting (exited, unhealthy, restarting).
type readiness struct {
	msg   string
	final bool
}

func (r *readiness) Error() string { return r.msg }

func notReady(format string, args ...any) error {
	return &readiness{msg: fmt.Sprintf(format, args...)}
}

func failed(format string, args ...any) error {
	return &readiness{msg: fmt.Sprintf(format, args...), final: true}
}

func isFinal(err error) bool {
	var r *readiness
	return errors.As(err, &r) && r.final
}

// containerReady checks one container: running, healthy by its
// HEALTHCHECK if it has one, and answering health_path over HTTP.
func (a *Adapter) containerReady(ctx context.Context, c container.InspectResponse) error {
	s := c.State
	switch {
	case s == nil:
		return notReady("no state")
	case s.Restarting:
		return failed("restarting (exit code %d)", s.ExitCode)
	case !s.Running:
		if s.Status == container.StateCreated {
			return notReady("created, not started")
		}
		return failed("%s (exit code %d)", s.Status, s.ExitCode)
	case s.Health != nil && s.Health.Status == container.Unhealthy:
		return failed("unhealthy%s", lastProbe(s.Health))
	case s.Health != nil && s.Health.Status != container.Healthy:
		return notReady("health %s", s.Health.Status)
	}
	if a.cfg.HealthPath == "" {
		return nil
	}
	urls, err := a.healthURLs(c)
	if err != nil {
		return notReady("%v", err) // ports show up once the engine has set them up
	}
	if err := a.eng.FirstOK(ctx, urls); err != nil {
		return notReady("%v", err)
	}
	return nil
}

func lastProbe(h *container.Health) string {
	if h == nil || len(h.Log) == 0 {
		return ""
	}
	out := strings.TrimSpace(h.Log[len(h.Log)-1].Output)
	if len(out) > 200 {
		out = out[:200]
	}
	if out == "" {
		return ""
	}
	return " (" + out + ")"
}

// healthURLs are the URLs of health_path through the container's
// published port. The engine may publish it once per IP family, even
// under different numbers, so every binding is a candidate, IPv4 first.
func (a *Adapter) healthURLs(c container.InspectResponse) ([]string, error) {
	if c.NetworkSettings == nil {
		return nil, errors.New("no network settings")
	}
	var found []network.PortBinding
	seen := map[string]bool{}
	ports := map[network.Port]bool{}
	for p, bs := range c.NetworkSettings.Ports {
		if p.Proto() != network.TCP || (a.cfg.HealthPort != 0 && p.Num() != a.cfg.HealthPort) {
			continue
		}
		for _, b := range bs {
			if b.HostPort == "" || seen[b.HostIP.String()+" "+b.HostPort] {
				continue
			}
			seen[b.HostIP.String()+" "+b.HostPort] = true
			ports[p] = true
			found = append(found, b)
		}
	}
	switch {
	case len(found) == 0:
		return nil, fmt.Errorf("no published port to check %s through", a.cfg.HealthPath)
	case len(ports) > 1:
		return nil, fmt.Errorf("several published ports; set health_port")
	}
	v4 := func(b network.PortBinding) bool { return !b.HostIP.IsValid() || b.HostIP.Is4() }
	slices.SortStableFunc(found, func(x, y network.PortBinding) int {
		switch {
		case v4(x) == v4(y):
			return 0
		case v4(x):
			return -1
		}
		return 1
	})
	var urls []string
	for _, b := range found {
		host := a.cfg.HealthHost
		switch {
		case host != "":
		case b.HostIP.IsValid() && !b.HostIP.IsUnspecified():
			host = b.HostIP.String()
		case b.HostIP.Is6():
			host = "::1"
		default:
			host = a.eng.PublishedHost("")
		}
		u := "http://" + net.JoinHostPort(host, b.HostPort) + a.cfg.HealthPath
		if !slices.Contains(urls, u) {
			urls = append(urls, u)
		}
	}
	return urls, nil
}

// Stop implements platforms.Platform: compose has no rollout that runs on
// its own, so there is nothing to stop.
func (a *Adapter) Stop(ctx context.Context, dryRun bool) (platforms.Result, error) {
	if _, err := a.read(ctx); err != nil {
		return platforms.Result{}, err
	}
	return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf(
		"compose service %s has no rollout in progress to stop (docker-compose replaces containers only while `up` runs)", a.cfg.Service)}, nil
}

// Rollback implements platforms.Platform.
func (a *Adapter) Rollback(ctx context.Context, to platforms.Revision, dryRun bool, progress platforms.ProgressFunc) (platforms.Result, error) {
	st, err := a.read(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	target, err := docker.TargetImage(to, st.current)
	if err != nil {
		return platforms.Result{}, err
	}
	return a.moveTo(ctx, st, target, dryRun, progress)
}

// SetArtifact implements platforms.Fallbacks.
func (a *Adapter) SetArtifact(ctx context.Context, artifact string, dryRun bool, progress platforms.ProgressFunc) (platforms.Result, error) {
	if err := docker.ValidImage(artifact); err != nil {
		return platforms.Result{}, err
	}
	st, err := a.read(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	return a.moveTo(ctx, st, artifact, dryRun, progress)
}

func (a *Adapter) moveTo(ctx context.Context, st state, target string, dryRun bool, progress platforms.ProgressFunc) (platforms.Result, error) {
	svc := a.cfg.Service
	todo := slices.DeleteFunc(slices.Clone(st.containers), func(c container.InspectResponse) bool { return docker.SameImage(c.Config.Image, target) })
	if len(todo) == 0 {
		return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf("compose service %s already runs %s", svc, docker.WithoutDigest(target))}, nil
	}
	if err := a.eng.RequireImage(ctx, a.api, target); err != nil {
		return platforms.Result{}, err
	}
	file, ferr := a.composeFile(st)
	useFile := false
	switch a.cfg.Mode {
	case ModeComposeFile:
		if errors.Is(ferr, errFileMoved) {
			return platforms.Result{}, a.conflict(ferr, "its compose file names another image than the one running")
		}
		if msg, ok := platforms.UserMessage(ferr); ok {
			return platforms.Result{}, platforms.Userf(ferr, "cannot roll back compose service %s through its compose file: %s", svc, msg)
		}
		if ferr != nil {
			return platforms.Result{}, fmt.Errorf("roll back compose service %s through its compose file: %w", svc, ferr)
		}
		useFile = true
	case ModeAuto:
		useFile = ferr == nil
		if ferr != nil {
			a.log.InfoContext(ctx, "compose file not usable, recreating containers", "reason", ferr)
		}
	}
	if useFile {
		return a.rollbackFile(ctx, st, file, target, dryRun, progress)
	}
	return a.rollbackRecreate(ctx, st, todo, target, dryRun, progress)
}

func (a *Adapter) conflict(cause error, what string) error {
	return platforms.Userf(fmt.Errorf("%w: %w", platforms.ErrConflict, cause),
		"compose service %s was changed by someone else while rollbot was working on it (%s); rollbot did not overwrite that change. Check `docker-compose -p %s ps %s` and start the rollback again if it is still needed",
		a.cfg.Service, what, a.cfg.Project, a.cfg.Service)
}

// ScaleToZero implements platforms.Fallbacks: it stops every container of
// the service (`docker-compose stop <service>`); they stay for inspection.
func (a *Adapter) ScaleToZero(ctx context.Context, dryRun bool) (platforms.Result, error) {
	st, err := a.read(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	var plan []string
	var running []container.InspectResponse
	for _, c := range st.containers {
		if c.State != nil && (c.State.Running || c.State.Restarting) {
			running = append(running, c)
			plan = append(plan, fmt.Sprintf("container %s (%s): stop", name(c), c.ID[:12]))
		}
	}
	if len(running) == 0 {
		return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf("no container of compose service %s is running", a.cfg.Service)}, nil
	}
	if dryRun {
		return platforms.Result{Outcome: platforms.Planned, Plan: plan, Detail: fmt.Sprintf("would stop %d containers of compose service %s", len(running), a.cfg.Service)}, nil
	}
	for _, c := range running {
		a.log.InfoContext(ctx, "stop container", "op", "scale_to_zero", "container", name(c))
		if err := a.stop(ctx, c.ID); err != nil {
			return platforms.Result{Plan: plan}, a.eng.Err(err, "stop container "+name(c))
		}
	}
	return platforms.Result{Outcome: platforms.Done, Plan: plan, Detail: fmt.Sprintf("stopped %d containers of compose service %s; they are kept for investigation", len(running), a.cfg.Service)}, nil
}

func (a *Adapter) stop(ctx context.Context, id string) error {
	secs := int(a.cfg.StopTimeout / time.Second)
	_, err := a.api.ContainerStop(ctx, id, client.ContainerStopOptions{Timeout: &secs})
	return err
}

// MarkDoNotDeploy implements platforms.Platform: compose has no place for
// the mark; rollbot keeps it in its own state.
func (a *Adapter) MarkDoNotDeploy(ctx context.Context, rev platforms.Revision, by string) (platforms.Result, error) {
	return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf(
		"compose has no place for a do-not-deploy mark on %s; rollbot keeps the mark in its own state", rev.Label())}, nil
}

// waitReady polls one container until it is ready, failed, or the timeout
// passes, reporting progress.
func (a *Adapter) waitReady(ctx context.Context, id string, report func(msg string)) error {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	var last error // what the last look saw, for the timeout's message
	timedOut := func() error {
		if last == nil {
			return failed("not ready within %s", a.cfg.Timeout)
		}
		return failed("not ready within %s (last: %v)", a.cfg.Timeout, last)
	}
	lastMsg := ""
	for {
		in, err := a.api.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
		if err != nil {
			if ctx.Err() != nil {
				// The deadline passed during the inspect (a slow engine):
				// the previous look is still what the user needs to see.
				return timedOut()
			}
			return a.eng.Err(err, "inspect container "+id)
		}
		err = a.containerReady(ctx, in.Container)
		if err == nil {
			return nil
		}
		if isFinal(err) {
			return err
		}
		if ctx.Err() == nil || last == nil {
			last = err // not the probe cut short by the deadline
		}
		if msg := err.Error(); msg != lastMsg && report != nil {
			report(msg)
			lastMsg = msg
		}
		select {
		case <-ctx.Done():
			return timedOut()
		case <-time.After(a.poll):
		}
	}
}
