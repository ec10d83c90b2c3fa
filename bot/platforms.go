package bot

import (
	"context"
	"fmt"
	"log/slog"

	"rollbot/handlers"
	"rollbot/platforms"
	"rollbot/platforms/bluegreen"
	"rollbot/platforms/compose"
	"rollbot/platforms/kube"
	"rollbot/platforms/migrations"
	"rollbot/platforms/prom"
	"rollbot/platforms/rds"
	"rollbot/platforms/scrape"
	"rollbot/platforms/sim"
	"rollbot/platforms/swarm"
	"rollbot/platforms/vm"
	"rollbot/state"
)

// platformNames are the values of services.<name>.platform.
var platformNames = []string{"kubernetes", "swarm", "compose", "vm", "bluegreen", "simulated"}

// PlatformSections are the per-platform blocks of a service; exactly the
// one named by platform must be set.
type PlatformSections struct {
	Kubernetes *kube.Config      `yaml:"kubernetes"`
	Swarm      *swarm.Config     `yaml:"swarm"`
	Compose    *compose.Config   `yaml:"compose"`
	VM         *vm.Config        `yaml:"vm"`
	BlueGreen  *bluegreen.Config `yaml:"bluegreen"`
}

func (s ServiceConfig) sections() map[string]validatable {
	return map[string]validatable{
		"kubernetes": validator(s.Kubernetes),
		"swarm":      validator(s.Swarm),
		"compose":    validator(s.Compose),
		"vm":         validator(s.VM),
		"bluegreen":  validator(s.BlueGreen),
	}
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
	// Restore is the destructive path: an RDS snapshot or point-in-time restore.
	Restore              *rds.Config     `yaml:"restore"`
	Approvers            handlers.Access `yaml:"approvers"`
	DestructiveApprovals int             `yaml:"destructive_approvals"`
}

func (d DatabaseSettings) validate(p string, add func(string, error)) []error {
	var errs []error
	add(p, d.Config.Validate())
	if d.Restore != nil {
		add(p+".restore", d.Restore.Validate())
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

// BuildServices constructs every configured service's adapters. history
// is rollbot's own record of deployed versions (state.Store), which the
// Docker adapters use when the engine no longer knows a previous image.
func BuildServices(ctx context.Context, c *Config, history *state.Store, log *slog.Logger) ([]*handlers.Service, error) {
	var out []*handlers.Service
	for name, sc := range c.Services {
		svc, err := buildService(ctx, name, sc, history, log.With("service", name))
		if err != nil {
			return nil, fmt.Errorf("services.%s: %w", name, err)
		}
		out = append(out, svc)
	}
	return out, nil
}

func buildService(ctx context.Context, name string, sc ServiceConfig, history *state.Store, log *slog.Logger) (*handlers.Service, error) {
	svc := &handlers.Service{
		Name: name, Thresholds: sc.Thresholds.thresholds(), Approvers: sc.Approvers,
		AssessWindow: sc.Windows.Assess, BaselineWindow: sc.Windows.Baseline,
	}
	var err error
	switch sc.Platform {
	case "kubernetes":
		svc.Platform, err = kube.New(*sc.Kubernetes, log.With("platform", "kubernetes"))
	case "swarm":
		var opts []swarm.Option
		if history != nil {
			opts = append(opts, swarm.WithHistory(history, name))
		}
		svc.Platform, err = swarm.New(*sc.Swarm, log.With("platform", "swarm"), opts...)
	case "compose":
		var opts []compose.Option
		if history != nil {
			opts = append(opts, compose.WithHistory(history, name))
		}
		svc.Platform, err = compose.New(*sc.Compose, log.With("platform", "compose"), opts...)
	case "vm":
		svc.Platform, err = vm.New(*sc.VM, log.With("platform", "vm"))
	case "bluegreen":
		svc.Platform, err = bluegreen.New(ctx, *sc.BlueGreen, log.With("platform", "bluegreen"))
	case "simulated":
		var s *sim.Sim
		s, err = sim.New(name, *sc.Simulated)
		svc.Platform = s
		if err == nil && sc.Metrics.Simulated {
			svc.Metrics = s
		}
	default:
		return nil, fmt.Errorf("platform %q is not available in this build", sc.Platform)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", sc.Platform, err)
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
	if sc.Database != nil {
		svc.DBApprovers = sc.Database.Approvers
		svc.DestructiveApprovals = sc.Database.DestructiveApprovals
		db := &database{down: sc.Database.Down, service: name, platform: svc.Platform, history: history, log: log.With("op", "database")}
		if db.mig, err = migrations.New(ctx, sc.Database.Config, log.With("op", "database")); err != nil {
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
			db.jobs = migrations.NewJobRunner(cs, log.With("op", "db-down"))
		}
		if sc.Database.Restore != nil {
			if db.restore, err = rds.New(ctx, *sc.Database.Restore, log.With("op", "restore")); err != nil {
				return nil, fmt.Errorf("database.restore: %w", err)
			}
		}
		svc.Database = db
	}
	return svc, nil
}

// newProber builds the §5 health and smoke probes.
func newProber(sc ServiceConfig, p platforms.Platform) (handlers.Prober, bool, bool) {
	if s, ok := p.(*sim.Sim); ok && len(sc.HealthURLs) == 0 && len(sc.SmokeTest.Command) == 0 {
		return s, true, true // the simulated service's own probes
	}
	pr := &httpProber{urls: sc.HealthURLs, smoke: sc.SmokeTest.Command, smokeTimeout: sc.SmokeTest.Timeout}
	return pr, len(sc.HealthURLs) > 0, len(sc.SmokeTest.Command) > 0
}
