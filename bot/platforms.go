package bot

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"rollbot/handlers"
	"rollbot/platforms"
	"rollbot/platforms/bluegreen"
	"rollbot/platforms/compose"
	"rollbot/platforms/database"
	"rollbot/platforms/kube"
	"rollbot/platforms/migrations"
	"rollbot/platforms/probe"
	"rollbot/platforms/prom"
	"rollbot/platforms/rds"
	"rollbot/platforms/registry"
	"rollbot/platforms/scrape"
	"rollbot/platforms/sim"
	"rollbot/platforms/swarm"
	"rollbot/platforms/vm"
	"rollbot/state"
)

// PlatformSections are the per-platform blocks of a service; exactly the
// one named by platform must be set.
type PlatformSections struct {
	Kubernetes *kube.Config      `yaml:"kubernetes"`
	Swarm      *swarm.Config     `yaml:"swarm"`
	Compose    *compose.Config   `yaml:"compose"`
	VM         *vm.Config        `yaml:"vm"`
	BlueGreen  *bluegreen.Config `yaml:"bluegreen"`
	Simulated  *sim.Config       `yaml:"simulated"`
}

// adapter is one platform a service can name: the value of
// services.<name>.platform, which is also the name of its section.
// Adding a platform is a section above and one entry in adapters.
type adapter struct {
	name string
	// section is the service's section for this platform; nil when unset.
	section func(PlatformSections) validatable
	// build constructs the adapter from its (validated) section.
	build func(ctx context.Context, s PlatformSections, b buildEnv) (platforms.Platform, error)
	// waits are the adapter's waits inside the runbook's steps, from its
	// section at the config path at (nil section: none); the step budgets
	// are checked against them.
	waits func(s PlatformSections, at string) []platforms.Wait
}

// waiter is a section whose adapter waits inside the runbook's steps.
type waiter interface {
	Waits(at string) []platforms.Wait
}

// buildEnv is what an adapter may need besides its section.
type buildEnv struct {
	service string
	history *state.Store // nil: no record of deployed versions
	log     *slog.Logger // with the platform's name
}

// platformAdapter ties a section to the constructor that takes it.
func platformAdapter[C validatable](name string, section func(PlatformSections) *C, build func(context.Context, C, buildEnv) (platforms.Platform, error)) adapter {
	return adapter{
		name:    name,
		section: func(s PlatformSections) validatable { return validator(section(s)) },
		build: func(ctx context.Context, s PlatformSections, b buildEnv) (platforms.Platform, error) {
			return build(ctx, *section(s), b)
		},
		waits: func(s PlatformSections, at string) []platforms.Wait {
			if c := section(s); c != nil {
				if w, ok := any(*c).(waiter); ok {
					return w.Waits(at)
				}
			}
			return nil
		},
	}
}

// adapters are the platforms of this build, in the order the config
// errors list them.
var adapters = []adapter{
	platformAdapter("kubernetes", func(s PlatformSections) *kube.Config { return s.Kubernetes },
		func(_ context.Context, c kube.Config, b buildEnv) (platforms.Platform, error) {
			return kube.NewPlatform(c, b.log)
		}),
	platformAdapter("swarm", func(s PlatformSections) *swarm.Config { return s.Swarm },
		func(_ context.Context, c swarm.Config, b buildEnv) (platforms.Platform, error) {
			return swarm.New(c, b.log, withHistory(b, swarm.WithHistory)...)
		}),
	platformAdapter("compose", func(s PlatformSections) *compose.Config { return s.Compose },
		func(_ context.Context, c compose.Config, b buildEnv) (platforms.Platform, error) {
			return compose.New(c, b.log, withHistory(b, compose.WithHistory)...)
		}),
	platformAdapter("vm", func(s PlatformSections) *vm.Config { return s.VM },
		func(_ context.Context, c vm.Config, b buildEnv) (platforms.Platform, error) { return vm.New(c, b.log) }),
	platformAdapter("bluegreen", func(s PlatformSections) *bluegreen.Config { return s.BlueGreen },
		func(ctx context.Context, c bluegreen.Config, b buildEnv) (platforms.Platform, error) {
			return bluegreen.New(ctx, c, b.log)
		}),
	platformAdapter("simulated", func(s PlatformSections) *sim.Config { return s.Simulated },
		func(_ context.Context, c sim.Config, b buildEnv) (platforms.Platform, error) {
			return sim.New(b.service, c)
		}),
}

// withHistory gives a Docker adapter (swarm, compose) rollbot's record of
// deployed images, which it uses when the engine no longer knows a
// previous image; none when there is no record.
func withHistory[O any](b buildEnv, with func(swarm.History, string) O) []O {
	if b.history == nil {
		return nil
	}
	return []O{with(b.history, b.service)}
}

// adapterNamed returns the adapter of a platform name.
func adapterNamed(name string) (adapter, bool) {
	for _, a := range adapters {
		if a.name == name {
			return a, true
		}
	}
	return adapter{}, false
}

// platformNames are the values of services.<name>.platform.
func platformNames() string {
	names := make([]string, len(adapters))
	for i, a := range adapters {
		names[i] = a.name
	}
	return strings.Join(names, ", ")
}

// validatePlatform checks services.<name>.platform and its section: the
// section of the chosen platform is required and valid, the others unset.
func (s ServiceConfig) validatePlatform(p string, add func(string, error)) []error {
	var errs []error
	for _, a := range adapters {
		v := a.section(s.PlatformSections)
		switch {
		case v == nil:
		case a.name != s.Platform:
			errs = append(errs, fmt.Errorf("%s.%s: set, but platform is %q", p, a.name, s.Platform))
		default:
			add(p+"."+a.name, v.Validate())
		}
	}
	a, known := adapterNamed(s.Platform)
	switch {
	case s.Platform == "":
		errs = append(errs, fmt.Errorf("%s.platform: required, one of %s", p, platformNames()))
	case !known:
		errs = append(errs, fmt.Errorf("%s.platform: %q is not one of %s", p, s.Platform, platformNames()))
	case a.section(s.PlatformSections) == nil:
		errs = append(errs, fmt.Errorf("%s.%s: required for platform %s", p, s.Platform, s.Platform))
	}
	return errs
}

// MetricsSources are the request-metric sources besides Prometheus.
type MetricsSources struct {
	Scrape *scrape.Config `yaml:"scrape"`
}

func (m MetricsConfig) validate(p string, add func(string, error)) []error {
	var errs []error
	if m.Scrape != nil {
		add(p+".scrape", m.Scrape.Validate())
	}
	n := 0
	for _, set := range []bool{m.Prometheus != nil, m.Scrape != nil, m.Simulated} {
		if set {
			n++
		}
	}
	if n > 1 {
		errs = append(errs, fmt.Errorf("%s: choose one source (prometheus, scrape or simulated)", p))
	}
	return errs
}

// DatabaseSettings is services.<name>.database.
type DatabaseSettings struct {
	// The migration check (read-only) and the reversible down command.
	migrations.Config `yaml:",inline"`
	// Restore is the destructive path: an RDS snapshot or point-in-time
	// restore, then the endpoint switch.
	Restore              *RestoreSettings `yaml:"restore"`
	Approvers            handlers.Access  `yaml:"approvers"`
	DestructiveApprovals int              `yaml:"destructive_approvals"`
}

func (d DatabaseSettings) validate(p string, add func(string, error)) []error {
	var errs []error
	add(p, d.Config.Validate())
	if d.Restore != nil {
		add(p+".restore", d.Restore.Config.Validate())
		errs = append(errs, d.Restore.validate(p+".restore", add)...)
	}
	if d.Approvers.Empty() {
		errs = append(errs, fmt.Errorf("%s.approvers: list the DB approvers (users or groups)", p))
	}
	errs = append(errs, validateAccess(p+".approvers", d.Approvers)...)
	if d.DestructiveApprovals < 0 {
		errs = append(errs, fmt.Errorf("%s.destructive_approvals: must not be negative", p))
	}
	return errs
}

// RestoreSettings is services.<name>.database.restore: the RDS restore and
// how the app is then pointed at the restored instance.
type RestoreSettings struct {
	rds.Config `yaml:",inline"`
	// Switch: rename (the instance-rename swap), secret (a Kubernetes
	// Secret key and a restart) or manual (default: a DB approver switches
	// by hand and presses "Endpoint switched").
	Switch string                   `yaml:"switch"`
	Secret *kube.SecretSwitchConfig `yaml:"secret"`
}

func (r RestoreSettings) validate(p string, add func(string, error)) []error {
	var errs []error
	switch r.Switch {
	case "", platforms.SwitchRename, platforms.SwitchManual:
		if r.Secret != nil {
			errs = append(errs, fmt.Errorf("%s.secret: only with switch: secret", p))
		}
	case platforms.SwitchSecret:
		if r.Secret == nil {
			errs = append(errs, fmt.Errorf("%s.secret: required with switch: secret (name and key of the Secret that holds the database endpoint)", p))
		} else {
			add(p+".secret", r.Secret.Validate())
		}
	default:
		errs = append(errs, fmt.Errorf("%s.switch: %q is not rename, secret or manual", p, r.Switch))
	}
	return errs
}

// BuildServices constructs every configured service's adapters. history
// is rollbot's own record of deployed versions (state.Store), which the
// Docker adapters use when the engine no longer knows a previous image.
func BuildServices(ctx context.Context, c *Config, history *state.Store, log *slog.Logger) ([]*handlers.Service, error) {
	var out []*handlers.Service
	byKey := map[string]*handlers.Service{}
	for name, sc := range c.Services {
		svc, err := buildService(ctx, name, sc, history, log.With("service", name))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", sc.path(name), err)
		}
		out = append(out, svc)
		byKey[name] = svc
	}
	for name, sc := range c.Services {
		if err := buildNeighbours(byKey[name], sc, c.Services, byKey); err != nil {
			return nil, fmt.Errorf("%s.verdict.neighbours: %w", sc.path(name), err)
		}
	}
	return out, nil
}

// buildNeighbours sets the verdict's settings and the services it
// compares with: configured services with their own metrics source and
// thresholds, and selectors on this service's Prometheus.
func buildNeighbours(svc *handlers.Service, sc ServiceConfig, services map[string]ServiceConfig, byKey map[string]*handlers.Service) error {
	v := sc.Verdict
	svc.Verdict = handlers.VerdictConfig{Step: v.Step, Window: v.Window, Before: v.Before, Budget: v.Budget}
	for _, n := range v.Neighbours.Services {
		key, ok := neighbourKey(n, sc.Env, services)
		other := byKey[key]
		if !ok || other == nil {
			return fmt.Errorf("%q is not a configured service", n)
		}
		svc.Verdict.Neighbours = append(svc.Verdict.Neighbours, handlers.Neighbour{Name: key, Metrics: other.Metrics, Thresholds: other.Thresholds})
	}
	for _, sel := range v.Neighbours.Selectors {
		p, ok := svc.Metrics.(*prom.Adapter)
		if !ok {
			return fmt.Errorf("selectors need metrics.prometheus")
		}
		m, err := p.WithSelector(sel)
		if err != nil {
			return err
		}
		svc.Verdict.Neighbours = append(svc.Verdict.Neighbours, handlers.Neighbour{Name: sel, Metrics: m, Thresholds: handlers.DefaultThresholds()})
	}
	return nil
}

func buildService(ctx context.Context, name string, sc ServiceConfig, history *state.Store, log *slog.Logger) (*handlers.Service, error) {
	svc := &handlers.Service{
		Name: name, Env: sc.Env, Channels: sc.Channels, Thresholds: sc.Thresholds.thresholds(), Approvers: sc.Approvers,
		AssessWindow: sc.Windows.Assess, BaselineWindow: sc.Windows.Baseline, VerifySoak: sc.VerifySoak, VerifyRecent: sc.VerifyRecent, Capture: sc.Capture,
	}
	if sc.Drills && sc.Drill != nil {
		svc.Drill = &handlers.Drill{Bad: sc.Drill.Bad}
	}
	a, ok := adapterNamed(sc.Platform)
	if !ok {
		return nil, fmt.Errorf("platform %q is not available in this build", sc.Platform)
	}
	var err error
	svc.Platform, err = a.build(ctx, sc.PlatformSections, buildEnv{service: name, history: history, log: log.With("platform", a.name)})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", sc.Platform, err)
	}
	if sc.Metrics.Simulated {
		// Validation allows it for platform simulated only, whose adapter has its own metrics.
		svc.Metrics, _ = svc.Platform.(platforms.Metrics)
	}
	switch {
	case sc.Metrics.Prometheus != nil:
		svc.Metrics, err = prom.New(*sc.Metrics.Prometheus, log.With("source", "prometheus"))
	case sc.Metrics.Scrape != nil:
		svc.Metrics, err = scrape.New(*sc.Metrics.Scrape, log.With("source", "scrape"))
	}
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	svc.Health, svc.HasHealth, svc.HasSmoke = newProber(sc, svc.Platform)
	if svc.HasSmoke && len(sc.SmokeTest.Command) > 0 {
		svc.SmokeTimeout = cmp.Or(sc.SmokeTest.Timeout, probe.DefaultSmokeTimeout)
	}
	if err := buildGate(name, sc, svc, log); err != nil {
		return nil, err
	}
	if sc.Database != nil {
		svc.DBApprovers = sc.Database.Approvers
		svc.DestructiveApprovals = sc.Database.DestructiveApprovals
		if svc.Database, err = buildDatabase(ctx, name, sc, svc.Platform, history, log); err != nil {
			return nil, err
		}
	}
	return svc, nil
}

// buildGate constructs what keeps the bad version out after a rollback:
// the deploy lock, the registry mark and the cluster's admission policy.
func buildGate(name string, sc ServiceConfig, svc *handlers.Service, log *slog.Logger) error {
	svc.DeployLock = sc.DeployLock
	if k := sc.Kubernetes; k != nil && k.Admission {
		cs, err := kube.Clientset(*k)
		if err != nil {
			return fmt.Errorf("kubernetes.admission: %w", err)
		}
		svc.Admission = kube.NewAdmission(cs, k.Namespace, name, log.With("op", "admission"))
	}
	if sc.Registry != nil {
		m, err := registry.New(*sc.Registry, os.Getenv, log.With("op", "registry"))
		if err != nil {
			return fmt.Errorf("registry: %w", err)
		}
		svc.Registry = m
	}
	return nil
}

// buildDatabase constructs the parts of services.<name>.database.
func buildDatabase(ctx context.Context, name string, sc ServiceConfig, p platforms.Platform, history *state.Store, log *slog.Logger) (*database.DB, error) {
	parts := database.Parts{Service: name, Platform: p, Down: sc.Database.Down, History: history}
	if history != nil {
		parts.RunScope = history.Prefix()
	}
	var err error
	if parts.Migrations, err = migrations.New(ctx, sc.Database.Config, log.With("op", "database")); err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	if sc.Database.Down.Kind == migrations.DownKubernetesJob {
		// Config validation requires platform kubernetes for it.
		if sc.Kubernetes == nil {
			return nil, fmt.Errorf("database.down.kind: kubernetes_job needs platform kubernetes")
		}
		cs, err := kube.Clientset(*sc.Kubernetes)
		if err != nil {
			return nil, fmt.Errorf("database.down: %w", err)
		}
		parts.Jobs = migrations.NewJobRunner(cs, log.With("op", "db-down"))
	}
	if r := sc.Database.Restore; r != nil {
		if parts.Restore, err = rds.New(ctx, r.Config, log.With("op", "restore")); err != nil {
			return nil, fmt.Errorf("database.restore: %w", err)
		}
		parts.Switch = r.Switch
		if r.Switch == platforms.SwitchSecret {
			if sc.Kubernetes == nil {
				return nil, fmt.Errorf("database.restore.switch: secret needs platform kubernetes")
			}
			cs, err := kube.Clientset(*sc.Kubernetes)
			if err != nil {
				return nil, fmt.Errorf("database.restore.secret: %w", err)
			}
			parts.Secret = kube.NewSecretSwitch(cs, *sc.Kubernetes, *r.Secret, log.With("op", "endpoint-switch"))
		}
	}
	return database.New(parts, log.With("op", "database")), nil
}

// newProber builds the §5 health and smoke probes.
func newProber(sc ServiceConfig, p platforms.Platform) (platforms.Prober, bool, bool) {
	if s, ok := p.(*sim.Sim); ok && len(sc.HealthURLs) == 0 && len(sc.SmokeTest.Command) == 0 {
		return s, true, true // the simulated service's own probes
	}
	pr := &probe.Probes{HealthURLs: sc.HealthURLs, SmokeCommand: sc.SmokeTest.Command, SmokeTimeout: sc.SmokeTest.Timeout}
	return pr, len(sc.HealthURLs) > 0, len(sc.SmokeTest.Command) > 0
}
