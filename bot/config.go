package bot

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"rollbot/handlers"
	"rollbot/platforms"
	"rollbot/platforms/migrations"
	"rollbot/platforms/prom"
	"rollbot/platforms/registry"
	"rollbot/state"
)

// Config is rollbot.yaml. Secrets never live here: they come from the
// environment (Env) or from variables the config names (*_env fields).
type Config struct {
	// IncidentChannels are the channels (ids like C0123, or names) where
	// /rollback acts. Required: a rollback belongs where the team sees it.
	IncidentChannels []string `yaml:"incident_channels"`
	// RedisPrefix namespaces rollbot's keys; default "rollbot".
	RedisPrefix     string        `yaml:"redis_prefix"`
	LockTTL         time.Duration `yaml:"lock_ttl"`
	ApprovalTTL     time.Duration `yaml:"approval_ttl"`
	PostmortemAfter time.Duration `yaml:"postmortem_after"`
	VerifyTimeout   time.Duration `yaml:"verify_timeout"`
	// VerifySoak is how long every automatic verification item must hold
	// before a rollback counts as verified (3m, the runbook's §5); a
	// service may set its own.
	VerifySoak time.Duration `yaml:"verify_soak"`
	// VerifyRecent is the shortest recent window on which each
	// verification round also judges the request metrics (30s); at least
	// twice the metrics source's scrape interval. A service may set its own.
	VerifyRecent   time.Duration `yaml:"verify_recent"`
	VerifyInterval time.Duration `yaml:"verify_interval"`
	QueryTimeout   time.Duration `yaml:"query_timeout"`
	StepTimeout    time.Duration `yaml:"step_timeout"`
	// Lease is how long a replica's claim on a working incident lasts
	// without a heartbeat before another replica takes it over (15s).
	Lease time.Duration `yaml:"lease"`
	// Budgets bound each step; see handlers.Budgets for the defaults.
	Budgets handlers.Budgets `yaml:"budgets"`
	// Alertmanager enables the alert receiver (POST /alertmanager on the
	// ops listener); nil: off.
	Alertmanager *AlertmanagerConfig `yaml:"alertmanager"`

	Services map[string]ServiceConfig `yaml:"services"`
}

// ServiceConfig is one service under services.<name>.
type ServiceConfig struct {
	// Platform selects the adapter: kubernetes, swarm, compose, vm,
	// bluegreen or simulated; its section of the same name configures it.
	Platform         string `yaml:"platform"`
	PlatformSections `yaml:",inline"`

	// Channels are where /rollback sees this service (ids or names);
	// default: incident_channels. A team's channel sees only its services.
	Channels []string `yaml:"channels"`
	// Environments define the service once per environment (staging,
	// prod): each entry takes the keys above as defaults and replaces the
	// ones it sets (a key set in the environment replaces the service's
	// whole value for that key). `/rollback <name> --env <environment>`
	// picks one; a name left ambiguous in a channel is asked about.
	Environments map[string]ServiceConfig `yaml:"environments"`
	// Drills allows `/rollback drill` on this service (or environment):
	// only for non-production targets.
	Drills bool         `yaml:"drills"`
	Drill  *DrillConfig `yaml:"drill"`
	// DeployLock: after a completed rollback the deploy gate (rollbot
	// deployable, GET /v1/deployable) refuses every version of the service
	// until an approver runs /rollback unlock <service>.
	DeployLock bool `yaml:"deploy_lock"`
	// Registry marks the bad image DO_NOT_DEPLOY in its OCI registry.
	Registry *registry.Config `yaml:"registry"`

	Approvers  handlers.Access   `yaml:"approvers"`
	Thresholds ThresholdsConfig  `yaml:"thresholds"`
	Windows    WindowsConfig     `yaml:"windows"`
	Metrics    MetricsConfig     `yaml:"metrics"`
	HealthURLs []string          `yaml:"health_urls"`
	SmokeTest  SmokeTestConfig   `yaml:"smoke_test"`
	Database   *DatabaseSettings `yaml:"database"`
	// VerifySoak overrides the top-level verify_soak for this service;
	// VerifyRecent the top-level verify_recent.
	VerifySoak   time.Duration `yaml:"verify_soak"`
	VerifyRecent time.Duration `yaml:"verify_recent"`
	// Capture bounds the evidence (logs, events) kept before the rollback's
	// first write, on platforms that can capture.
	Capture platforms.CaptureLimits `yaml:"capture"`
	// Verdict tunes the assessment's "Deployment-related?" row and names
	// the other services it compares with.
	Verdict VerdictSettings `yaml:"verdict"`

	// Base and Env are set for an environment's entry: the service's name
	// and the environment's. Its key in Config.Services is Base@Env.
	Base string `yaml:"-"`
	Env  string `yaml:"-"`
}

// DrillConfig is services.<name>.drill.
type DrillConfig struct {
	// Bad is the artifact (image or tag) a drill deploys as its bad version.
	Bad string `yaml:"bad"`
}

// path is the config path of a service, for error messages.
func (s ServiceConfig) path(key string) string {
	if s.Env != "" {
		return "services." + s.Base + ".environments." + s.Env
	}
	return "services." + key
}

// ThresholdsConfig overrides the runbook's defaults; unset fields keep them.
type ThresholdsConfig struct {
	ErrorRate     *float64      `yaml:"error_rate"`
	LatencyFactor *float64      `yaml:"latency_factor"`
	Restarts      *int          `yaml:"restarts"`
	UnreadyRatio  *float64      `yaml:"unready_ratio"`
	BaselineP95   time.Duration `yaml:"baseline_p95"`
}

// WindowsConfig sets the metric windows.
type WindowsConfig struct {
	Assess   time.Duration `yaml:"assess"`
	Baseline time.Duration `yaml:"baseline"`
}

// VerdictSettings is services.<name>.verdict: the "Deployment-related?"
// row of the assessment (when the failure started relative to the deploy;
// whether other services and the nodes are unwell too).
type VerdictSettings struct {
	// Step is the time between two points of the range queries (default:
	// the range / 120); Window what each point measures (default: the
	// larger of two steps and a fifth of windows.assess); Before how far
	// before the deploy the range starts (default: windows.baseline);
	// Budget bounds the verdict's reads (default: query_timeout).
	Step   time.Duration `yaml:"step"`
	Window time.Duration `yaml:"window"`
	Before time.Duration `yaml:"before"`
	Budget time.Duration `yaml:"budget"`
	// Neighbours are the other services compared with this one.
	Neighbours NeighboursConfig `yaml:"neighbours"`
}

// NeighboursConfig names the services the verdict compares with.
type NeighboursConfig struct {
	// Services are other services of this config, measured with their own
	// metrics source and thresholds (for a service defined per
	// environment, the same environment's entry when there is one).
	Services []string `yaml:"services"`
	// Selectors are label matchers on this service's Prometheus, one per
	// neighbour (e.g. job="payments"), measured with this service's
	// queries and the runbook's thresholds.
	Selectors []string `yaml:"selectors"`
}

// validate checks services.<name>.verdict; services are the configured ones.
func (v VerdictSettings) validate(p, self string, s ServiceConfig, services map[string]ServiceConfig) []error {
	var errs []error
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"step", v.Step}, {"window", v.Window}, {"before", v.Before}, {"budget", v.Budget}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s.verdict.%s: must not be negative", p, d.name))
		}
	}
	if v.Budget > time.Minute {
		errs = append(errs, fmt.Errorf("%s.verdict.budget: at most 1m (the verdict runs inside the assessment's budget, budgets.assess)", p))
	}
	for i, n := range v.Neighbours.Services {
		key, ok := neighbourKey(n, s.Env, services)
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%s.verdict.neighbours.services[%d]: %q is not a configured service", p, i, n))
		case key == self:
			errs = append(errs, fmt.Errorf("%s.verdict.neighbours.services[%d]: %q is this service; name the others", p, i, n))
		}
	}
	if len(v.Neighbours.Selectors) > 0 && s.Metrics.Prometheus == nil {
		errs = append(errs, fmt.Errorf("%s.verdict.neighbours.selectors: need metrics.prometheus (they are measured on this service's Prometheus); use neighbours.services for services with another source", p))
	}
	for i, sel := range v.Neighbours.Selectors {
		if strings.TrimSpace(sel) == "" || strings.ContainsAny(sel, "{}") {
			errs = append(errs, fmt.Errorf(`%s.verdict.neighbours.selectors[%d]: label matchers without braces, e.g. job="payments"`, p, i))
		}
	}
	return errs
}

// neighbourKey is the Config.Services key a neighbour's name refers to:
// the same environment's entry first, then the name itself.
func neighbourKey(name, env string, services map[string]ServiceConfig) (string, bool) {
	if env != "" {
		if _, ok := services[handlers.ServiceKey(name, env)]; ok {
			return handlers.ServiceKey(name, env), true
		}
	}
	_, ok := services[name]
	return name, ok
}

// MetricsConfig picks the request-metrics source.
type MetricsConfig struct {
	Prometheus     *prom.Config `yaml:"prometheus"`
	MetricsSources `yaml:",inline"`
	// Simulated uses the simulated platform's own metrics (demo only).
	Simulated bool `yaml:"simulated"`
}

// SmokeTestConfig is the critical-user-flow test of runbook §5.
type SmokeTestConfig struct {
	Command []string      `yaml:"command"`
	Timeout time.Duration `yaml:"timeout"`
}

// Env is what rollbot reads from the environment.
type Env struct {
	BotToken string // SLACK_BOT_TOKEN, xoxb-…
	AppToken string // SLACK_APP_TOKEN, xapp-…
	APIURL   string // SLACK_API_URL, default https://slack.com/api/
	RedisURL string // REDIS_URL
}

// DefaultSlackAPIURL is Slack's Web API base.
const DefaultSlackAPIURL = "https://slack.com/api/"

// EnvFromOS reads Env.
func EnvFromOS() Env {
	e := Env{
		BotToken: os.Getenv("SLACK_BOT_TOKEN"),
		AppToken: os.Getenv("SLACK_APP_TOKEN"),
		APIURL:   os.Getenv("SLACK_API_URL"),
		RedisURL: os.Getenv("REDIS_URL"),
	}
	if e.APIURL == "" {
		e.APIURL = DefaultSlackAPIURL
	}
	return e
}

// Validate checks the environment; errors name the variable, never its value.
func (e Env) Validate() error {
	var errs []error
	switch {
	case e.BotToken == "":
		errs = append(errs, errors.New("SLACK_BOT_TOKEN: required (the bot token, xoxb-…)"))
	case !strings.HasPrefix(e.BotToken, "xoxb-"):
		errs = append(errs, errors.New("SLACK_BOT_TOKEN: must be a bot token starting with xoxb-"))
	}
	switch {
	case e.AppToken == "":
		errs = append(errs, errors.New("SLACK_APP_TOKEN: required (an app-level token with connections:write, xapp-…)"))
	case !strings.HasPrefix(e.AppToken, "xapp-"):
		errs = append(errs, errors.New("SLACK_APP_TOKEN: must be an app-level token starting with xapp-"))
	}
	if u, err := url.Parse(e.APIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, errors.New("SLACK_API_URL: must be an http(s) URL such as https://slack.com/api/"))
	} else if !strings.HasSuffix(e.APIURL, "/") {
		errs = append(errs, errors.New("SLACK_API_URL: must end with / (e.g. https://slack.com/api/)"))
	}
	if e.RedisURL == "" {
		errs = append(errs, errors.New("REDIS_URL: required, e.g. redis://redis:6379/0"))
	} else if _, err := state.ParseRedisURL(e.RedisURL); err != nil {
		errs = append(errs, err) // names the bad part, never the password
	}
	return errors.Join(errs...)
}

// Secrets returns the secret values of the environment, for redaction.
func (e Env) Secrets() []string {
	return append([]string{e.BotToken, e.AppToken}, state.RedisURLSecrets(e.RedisURL)...)
}

// LoadConfig reads and strictly decodes a config file: unknown fields are
// errors with their line, so a typo never silently disables a check.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return ParseConfig(b)
}

// ParseConfig decodes YAML config text.
func ParseConfig(b []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := c.expandEnvironments(b); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c.applyDefaults()
	return &c, nil
}

var envNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,30}$`)

// expandEnvironments replaces each service that has environments by one
// entry per environment, keyed name@env (handlers.ServiceKey). An entry is
// the service's keys overridden key by key by the environment's: the
// merge is done on the YAML mapping, so "set in the environment" means
// written there, whatever its value. The strict decode before this one
// already rejected unknown keys, with their lines.
func (c *Config) expandEnvironments(b []byte) error {
	var withEnvs []string
	for name, s := range c.Services {
		if len(s.Environments) > 0 {
			withEnvs = append(withEnvs, name)
		}
	}
	if len(withEnvs) == 0 {
		return nil
	}
	sort.Strings(withEnvs)
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return err
	}
	services := mappingValue(docRoot(&doc), "services")
	for _, name := range withEnvs {
		svcNode := mappingValue(services, name)
		envsNode := mappingValue(svcNode, "environments")
		if svcNode == nil || envsNode == nil || envsNode.Kind != yaml.MappingNode {
			return fmt.Errorf("services.%s.environments: a mapping of environment names to settings", name)
		}
		for i := 0; i+1 < len(envsNode.Content); i += 2 {
			env, envNode := envsNode.Content[i].Value, envsNode.Content[i+1]
			p := "services." + name + ".environments." + env
			if !envNameRE.MatchString(env) {
				return fmt.Errorf("%s: environment names are lowercase letters, digits, '_' and '-' (at most 31)", p)
			}
			if envNode.Kind != yaml.MappingNode {
				return fmt.Errorf("%s: a mapping of settings (line %d)", p, envNode.Line)
			}
			if mappingValue(envNode, "environments") != nil {
				return fmt.Errorf("%s.environments: environments do not nest (line %d)", p, envNode.Line)
			}
			merged := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			for j := 0; j+1 < len(svcNode.Content); j += 2 {
				k := svcNode.Content[j].Value
				if k == "environments" || mappingValue(envNode, k) != nil {
					continue
				}
				merged.Content = append(merged.Content, svcNode.Content[j], svcNode.Content[j+1])
			}
			merged.Content = append(merged.Content, envNode.Content...)
			var sc ServiceConfig
			if err := merged.Decode(&sc); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			sc.Base, sc.Env = name, env
			c.Services[handlers.ServiceKey(name, env)] = sc
		}
		delete(c.Services, name)
	}
	return nil
}

func docRoot(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		return n.Content[0]
	}
	return n
}

// mappingValue is the value of key in a mapping node, or nil.
func mappingValue(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// applyDefaults fills fields whose default comes from elsewhere in the file.
func (c *Config) applyDefaults() {
	for name, s := range c.Services {
		// The down Job runs beside the service unless told otherwise.
		if d := s.Database; d != nil && d.Down.Kind == "kubernetes_job" && d.Down.Namespace == "" && s.Kubernetes != nil {
			d.Down.Namespace = s.Kubernetes.Namespace
		}
		c.Services[name] = s
	}
}

var (
	serviceNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	channelRE     = regexp.MustCompile(`^([CG][A-Z0-9]{2,}|#?[a-z0-9][a-z0-9_-]{0,79})$`)
	slackUserRE   = regexp.MustCompile(`^[UW][A-Z0-9]{2,}$`)
	slackGroupRE  = regexp.MustCompile(`^S[A-Z0-9]{2,}$`)
)

// Validate checks the whole config; every error names its field path.
func (c *Config) Validate() error {
	var errs []error
	add := func(path string, err error) {
		if err == nil {
			return
		}
		for _, e := range unjoin(err) {
			errs = append(errs, fmt.Errorf("%s.%s", path, e))
		}
	}
	if len(c.IncidentChannels) == 0 && !c.everyServiceHasChannels() {
		errs = append(errs, errors.New("incident_channels: at least one channel id (C…) or name is required (or give every service its channels)"))
	}
	for i, ch := range c.IncidentChannels {
		if !channelRE.MatchString(ch) {
			errs = append(errs, fmt.Errorf("incident_channels[%d]: %q is not a channel id (C…) or name", i, ch))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"lock_ttl", c.LockTTL}, {"approval_ttl", c.ApprovalTTL}, {"postmortem_after", c.PostmortemAfter},
		{"verify_timeout", c.VerifyTimeout}, {"verify_soak", c.VerifySoak}, {"verify_recent", c.VerifyRecent}, {"verify_interval", c.VerifyInterval}, {"query_timeout", c.QueryTimeout}, {"step_timeout", c.StepTimeout}, {"lease", c.Lease}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative", d.name))
		}
	}
	if c.Lease != 0 && c.Lease < 3*time.Second {
		errs = append(errs, errors.New("lease: at least 3s (the owner renews it every third of it)"))
	}
	lease := c.Lease
	if lease <= 0 {
		lease = 15 * time.Second
	}
	budgets := c.Budgets.Resolve(c.VerifyTimeout, c.longestSoak(), c.StepTimeout)
	if err := budgets.Validate(c.verifyTimeout(), c.longestSoak(), lease); err != nil {
		errs = append(errs, unjoin(err)...)
	}
	errs = append(errs, c.validateStepWaits(budgets)...)
	if c.LockTTL != 0 && c.LockTTL < 2*lease {
		errs = append(errs, fmt.Errorf("lock_ttl (%s) must be at least twice the lease (%s)", c.LockTTL, lease))
	}
	if c.PostmortemAfter > 24*time.Hour {
		errs = append(errs, errors.New("postmortem_after: at most 24h (the runbook schedules the postmortem within 24 hours)"))
	}
	if len(c.Services) == 0 {
		errs = append(errs, errors.New("services: at least one service is required"))
	}
	names := make([]string, 0, len(c.Services))
	for n := range c.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		s := c.Services[name]
		p := s.path(name)
		base := name
		if s.Env != "" {
			base = s.Base
		}
		if !serviceNameRE.MatchString(base) {
			errs = append(errs, fmt.Errorf("services.%s: service names are lowercase letters, digits, '.', '_' and '-'", base))
		}
		errs = append(errs, s.validate(p, add)...)
		errs = append(errs, s.Verdict.validate(p, name, s, c.Services)...)
	}
	if c.Alertmanager != nil {
		errs = append(errs, c.Alertmanager.validate(c.Services, c.IncidentChannels)...)
	}
	errs = append(errs, c.validateSafety()...)
	return errors.Join(errs...)
}

func (c *Config) everyServiceHasChannels() bool {
	for _, s := range c.Services {
		if len(s.Channels) == 0 {
			return false
		}
	}
	return len(c.Services) > 0
}

func (s ServiceConfig) validate(p string, add func(string, error)) []error {
	var errs []error
	errs = append(errs, s.validatePlatform(p, add)...)
	for i, ch := range s.Channels {
		if !channelRE.MatchString(ch) {
			errs = append(errs, fmt.Errorf("%s.channels[%d]: %q is not a channel id (C…) or name", p, i, ch))
		}
	}
	errs = append(errs, s.validateDrill(p)...)
	if s.Approvers.Empty() {
		errs = append(errs, fmt.Errorf("%s.approvers: list the users or user groups allowed to confirm a rollback", p))
	}
	errs = append(errs, validateAccess(p+".approvers", s.Approvers)...)
	if s.Registry != nil {
		add(p+".registry", s.Registry.Validate())
	}
	t := s.Thresholds
	if t.ErrorRate != nil && (*t.ErrorRate <= 0 || *t.ErrorRate >= 1) {
		errs = append(errs, fmt.Errorf("%s.thresholds.error_rate: a ratio between 0 and 1 (0.01 = 1%%)", p))
	}
	if t.LatencyFactor != nil && *t.LatencyFactor <= 1 {
		errs = append(errs, fmt.Errorf("%s.thresholds.latency_factor: must be greater than 1 (the runbook uses 2)", p))
	}
	if t.Restarts != nil && *t.Restarts < 0 {
		errs = append(errs, fmt.Errorf("%s.thresholds.restarts: must not be negative", p))
	}
	if t.UnreadyRatio != nil && (*t.UnreadyRatio <= 0 || *t.UnreadyRatio >= 1) {
		errs = append(errs, fmt.Errorf("%s.thresholds.unready_ratio: a ratio between 0 and 1 (0.5 = 50%%)", p))
	}
	if s.Metrics.Prometheus != nil {
		add(p+".metrics.prometheus", s.Metrics.Prometheus.Validate())
	}
	errs = append(errs, s.Metrics.validate(p+".metrics", add)...)
	if sc := s.Metrics.Scrape; sc != nil && sc.History > 0 && sc.History < cmp.Or(s.Windows.Assess, 5*time.Minute) {
		errs = append(errs, fmt.Errorf("%s.metrics.scrape.history (%s) must be at least windows.assess (%s): the assessment is answered from it", p, sc.History, cmp.Or(s.Windows.Assess, 5*time.Minute)))
	}
	if s.Windows.Assess < 0 || s.Windows.Baseline < 0 {
		errs = append(errs, fmt.Errorf("%s.windows: must not be negative", p))
	}
	if s.Metrics.Simulated && s.Platform != "simulated" {
		errs = append(errs, fmt.Errorf("%s.metrics.simulated: only for platform simulated", p))
	}
	for i, u := range s.HealthURLs {
		errs = append(errs, platforms.FieldErrors(fmt.Sprintf("%s.health_urls[%d]", p, i), platforms.CheckHTTPURL(u))...)
	}
	if s.VerifySoak < 0 {
		errs = append(errs, fmt.Errorf("%s.verify_soak: must not be negative", p))
	}
	if s.VerifyRecent < 0 {
		errs = append(errs, fmt.Errorf("%s.verify_recent: must not be negative", p))
	}
	add(p+".capture", s.Capture.Validate())
	if s.SmokeTest.Timeout < 0 {
		errs = append(errs, fmt.Errorf("%s.smoke_test.timeout: must not be negative", p))
	}
	if s.Database != nil {
		errs = append(errs, s.Database.validate(p+".database", add)...)
		if r := s.Database.Restore; r != nil && r.Switch == platforms.SwitchSecret && s.Platform != "kubernetes" {
			errs = append(errs, fmt.Errorf("%s.database.restore.switch: secret writes a Secret on the service's Kubernetes cluster, so it needs platform: kubernetes (this service's platform is %q); use rename or manual", p, s.Platform))
		}
		if s.Database.Down.Kind == migrations.DownKubernetesJob && s.Platform != "kubernetes" {
			errs = append(errs, fmt.Errorf("%s.database.down.kind: kubernetes_job runs on the service's Kubernetes cluster, so it needs platform: kubernetes (this service's platform is %q); use kind: command", p, s.Platform))
		}
	}
	return errs
}

func validateAccess(p string, a handlers.Access) []error {
	var errs []error
	for i, u := range a.Users {
		if !slackUserRE.MatchString(u) {
			errs = append(errs, fmt.Errorf("%s.users[%d]: %q is not a Slack user id (U…)", p, i, u))
		}
	}
	for i, g := range a.Groups {
		if !slackGroupRE.MatchString(g) {
			errs = append(errs, fmt.Errorf("%s.groups[%d]: %q is not a Slack user group id (S…)", p, i, g))
		}
	}
	return errs
}

type validatable interface{ Validate() error }

// validator returns v as a validatable, or nil for a nil pointer.
func validator[T validatable](v *T) validatable {
	if v == nil {
		return nil
	}
	return *v
}

// unjoin splits an errors.Join result back into its errors.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, unjoin(e)...)
		}
		return out
	}
	return []error{err}
}

// EngineOptions maps the config's timings onto the engine's.
func (c *Config) EngineOptions() handlers.Options {
	return handlers.Options{
		IncidentChannels: c.IncidentChannels, LockTTL: c.LockTTL, ApprovalTTL: c.ApprovalTTL,
		PostmortemAfter: c.PostmortemAfter, VerifyTimeout: c.VerifyTimeout, VerifySoak: c.VerifySoak, VerifyRecent: c.VerifyRecent, VerifyInterval: c.VerifyInterval,
		QueryTimeout: c.QueryTimeout, StepTimeout: c.StepTimeout, Lease: c.Lease, Budgets: c.Budgets,
	}
}

// longestSoak is the longest soak of any service: the verify budget must
// cover it.
func (c *Config) longestSoak() time.Duration {
	soak := c.VerifySoak
	if soak <= 0 {
		soak = handlers.DefaultVerifySoak
	}
	for _, s := range c.Services {
		soak = max(soak, s.VerifySoak)
	}
	return soak
}

func (c *Config) verifyTimeout() time.Duration {
	if c.VerifyTimeout > 0 {
		return c.VerifyTimeout
	}
	return 5 * time.Minute
}

// thresholds applies overrides to the runbook's defaults.
func (t ThresholdsConfig) thresholds() handlers.Thresholds {
	h := handlers.DefaultThresholds()
	if t.ErrorRate != nil {
		h.ErrorRate = *t.ErrorRate
	}
	if t.LatencyFactor != nil {
		h.LatencyFactor = *t.LatencyFactor
	}
	if t.Restarts != nil {
		h.Restarts = *t.Restarts
	}
	if t.UnreadyRatio != nil {
		h.UnreadyRatio = *t.UnreadyRatio
	}
	h.BaselineP95 = t.BaselineP95
	return h
}

// drillPlatforms can deploy a drill's bad version (platforms.Deployer).
var drillPlatforms = []string{"kubernetes", "swarm", "simulated"}

func (s ServiceConfig) validateDrill(p string) []error {
	if !s.Drills {
		return nil
	}
	var errs []error
	if s.Drill == nil || strings.TrimSpace(s.Drill.Bad) == "" {
		errs = append(errs, fmt.Errorf("%s.drill.bad: drills: true needs the artifact a drill deploys as its bad version (an image or tag)", p))
	}
	if !slices.Contains(drillPlatforms, s.Platform) {
		errs = append(errs, fmt.Errorf("%s.drills: drills run on platform %s, not %q", p, strings.Join(drillPlatforms, ", "), s.Platform))
	}
	return errs
}
