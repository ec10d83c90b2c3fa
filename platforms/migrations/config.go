// Package migrations is rollbot's database side of a rollback (runbook §1
// "Check for Database Migrations" and §4 "Roll Back Database"): it finds out,
// over a read-only connection, which schema migrations ran since the bad
// deploy started and whether each can be undone, runs the service's own down
// command (on this host or as a Kubernetes Job with the bad release's image)
// and checks the migration table afterwards.
//
// Supported tools: Flyway (flyway_schema_history), Liquibase
// (DATABASECHANGELOG), Django (django_migrations), Rails (schema_migrations)
// and golang-migrate (schema_migrations with a dirty column), on PostgreSQL
// (pgx) and MySQL/MariaDB (go-sql-driver/mysql).
//
// The DSN comes from the environment variable named in Config.DSNEnv. It is
// never logged and never appears in an error: driver errors are redacted
// before they leave this package.
package migrations

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"rollbot/platforms"
)

// Tool names, as written in Config.Tool and Report.Tool.
const (
	ToolAuto          = "auto"
	ToolFlyway        = "flyway"
	ToolLiquibase     = "liquibase"
	ToolDjango        = "django"
	ToolRails         = "rails"
	ToolGolangMigrate = "golang-migrate"
)

// Drivers.
const (
	DriverPostgres = "postgres"
	DriverMySQL    = "mysql"
)

// Down kinds.
const (
	DownCommand       = "command"
	DownKubernetesJob = "kubernetes_job"
)

// Where a kubernetes_job takes its image from.
const (
	ImageFromBadRelease = "bad_release" // the default: down migrations ship with the release that added them
	ImageFromLastGood   = "last_good"
	ImageFromFixed      = "fixed" // DownConfig.Image
)

var tools = []string{ToolAuto, ToolFlyway, ToolLiquibase, ToolDjango, ToolRails, ToolGolangMigrate}

// Config is one service's database, under services.<name>.database in the
// bot's YAML configuration.
//
//	database:
//	  driver: postgres
//	  dsn_env: MYAPP_DB_RO_DSN          # read-only DSN; never logged
//	  tool: golang-migrate              # or auto
//	  migrations_dir: /srv/myapp/migrations
//	  down:
//	    kind: kubernetes_job
//	    namespace: prod
//	    command: [migrate, -path, /migrations, -database, $(DATABASE_URL), down, $(ROLLBOT_STEPS)]
//	    secret_env:
//	      DATABASE_URL: {secret: myapp-db, key: migrate_dsn}
type Config struct {
	// Driver is postgres or mysql (MySQL and MariaDB).
	Driver string `yaml:"driver"`
	// DSNEnv names the environment variable that holds the DSN rollbot
	// reads with. Use a read-only role where you can; rollbot also makes the
	// session read-only. Postgres: URL or key=value; mysql: the
	// go-sql-driver form user:pass@tcp(host:port)/db.
	DSNEnv string `yaml:"dsn_env"`
	// Tool is flyway, liquibase, django, rails, golang-migrate or auto
	// (default): found from the tables that exist.
	Tool string `yaml:"tool"`
	// Table overrides the tool's table name ("schema.table" allowed).
	Table string `yaml:"table"`
	// MigrationsDir holds the migrations' source as shipped with the bad
	// release, when rollbot can read it: Flyway V*.sql, golang-migrate
	// *.up.sql/*.down.sql, Liquibase changelogs (FILENAME is resolved
	// against it), Django's project root (<app>/migrations/*.py), Rails'
	// db/migrate. Used to tell whether a migration is destructive and
	// whether its down/undo exists.
	MigrationsDir string `yaml:"migrations_dir"`
	// UndoDir holds Flyway undo scripts (U<version>__*.sql), when they are
	// not in MigrationsDir.
	UndoDir string `yaml:"undo_dir"`
	// AssumeReversible states that every migration of this service has a
	// working down/rollback (e.g. a team rule enforced in CI). It is shown as
	// the reason; rollbot's destructive check still applies.
	AssumeReversible bool `yaml:"assume_reversible"`
	// TimeZone is the zone (IANA name) of timestamps the migration table
	// stores without one (Flyway's installed_on, Liquibase's DATEEXECUTED).
	// Default: the database server's time zone; UTC for Django, which
	// stores UTC.
	TimeZone string `yaml:"time_zone"`
	// ClockSkew widens the "since the deploy started" window for clock
	// differences between the platform and the database server.
	ClockSkew time.Duration `yaml:"clock_skew"`
	// Down is how the service rolls a migration back.
	Down DownConfig `yaml:"down"`
}

// DownConfig is the service's own down command:
//
//	flyway undo:     command: [flyway, undo]
//	Django:          command: [python, manage.py, migrate, myapp, $(ROLLBOT_TARGET_MYAPP)]
//	Rails:           command: [bin/rails, db:rollback, STEP=$(ROLLBOT_STEPS)]
//	golang-migrate:  command: [migrate, -path, /migrations, -database, $(DATABASE_URL), down, $(ROLLBOT_STEPS)]
//
// $(NAME) in the command is replaced by the variable NAME of the command's
// environment (Kubernetes' syntax, used for both kinds): Env, SecretEnv and
// the ROLLBOT_* variables of Report.DownVars. No shell is involved.
type DownConfig struct {
	// Kind is command (run on the bot's host) or kubernetes_job.
	Kind string `yaml:"kind"`
	// Command is the argv; Command[0] is looked up on PATH (kind command) or
	// is the container's entrypoint override (kubernetes_job).
	Command []string `yaml:"command"`
	// Dir is the working directory (kind command).
	Dir string `yaml:"dir"`
	// Env holds plain variables.
	Env map[string]string `yaml:"env"`
	// SecretEnv holds variables whose values are secrets: from the bot's
	// environment (kind command) or from a Kubernetes Secret
	// (kubernetes_job). For kind command their values are redacted from the
	// streamed output. A Job's are not: rollbot never reads the Secret, so
	// it cannot know them, and the Job's log is posted as the Job writes it.
	SecretEnv map[string]SecretRef `yaml:"secret_env"`
	// Timeout bounds the run (default 15m).
	Timeout time.Duration `yaml:"timeout"`

	// kubernetes_job only:
	Namespace      string `yaml:"namespace"`
	ImageFrom      string `yaml:"image_from"` // bad_release (default), last_good, fixed
	Image          string `yaml:"image"`      // with image_from: fixed
	ServiceAccount string `yaml:"service_account"`
	// EnvFromSecret adds every key of this Secret as a variable.
	EnvFromSecret string `yaml:"env_from_secret"`
}

// SecretRef names where a secret variable's value comes from.
type SecretRef struct {
	Env    string `yaml:"env"`    // kind command: the bot's environment variable
	Secret string `yaml:"secret"` // kubernetes_job: Secret name
	Key    string `yaml:"key"`    // kubernetes_job: key in the Secret
}

// DefaultDownTimeout bounds a down run when DownConfig.Timeout is zero.
const DefaultDownTimeout = 15 * time.Minute

var (
	tableRe   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$`)
	envNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	k8sNameRe = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
)

// Validate reports every invalid field, each error naming it.
func (c Config) Validate() error {
	var errs []error
	switch c.Driver {
	case DriverPostgres, DriverMySQL:
	case "":
		errs = append(errs, errors.New("driver: required (postgres or mysql)"))
	default:
		errs = append(errs, fmt.Errorf("driver: %q is not postgres or mysql", c.Driver))
	}
	switch {
	case c.DSNEnv == "":
		errs = append(errs, errors.New("dsn_env: required (name of the variable holding the DSN)"))
	case !envNameRe.MatchString(c.DSNEnv):
		errs = append(errs, fmt.Errorf("dsn_env: %q is not a variable name (give the name, not the DSN)", c.DSNEnv))
	}
	if c.Tool != "" && !slices.Contains(tools, c.Tool) {
		errs = append(errs, fmt.Errorf("tool: %q is not one of %s", c.Tool, strings.Join(tools, ", ")))
	}
	if c.Table != "" && !tableRe.MatchString(c.Table) {
		errs = append(errs, fmt.Errorf("table: %q is not a plain [schema.]table name", c.Table))
	}
	if c.Table != "" && c.tool() == ToolAuto {
		errs = append(errs, errors.New("table: needs tool: set (auto-detection uses the tools' own table names)"))
	}
	if c.TimeZone != "" {
		if _, err := time.LoadLocation(c.TimeZone); err != nil {
			errs = append(errs, fmt.Errorf("time_zone: %w", err))
		}
	}
	if c.ClockSkew < 0 {
		errs = append(errs, errors.New("clock_skew: must not be negative"))
	}
	if c.Down.Kind != "" || len(c.Down.Command) > 0 {
		if err := c.Down.Validate(); err != nil {
			errs = append(errs, prefixErr("down.", err))
		}
	}
	return errors.Join(errs...)
}

// Validate reports every invalid field of the down configuration.
func (d DownConfig) Validate() error {
	var errs []error
	switch d.Kind {
	case DownCommand, DownKubernetesJob:
	case "":
		errs = append(errs, errors.New("kind: required (command or kubernetes_job)"))
	default:
		errs = append(errs, fmt.Errorf("kind: %q is not command or kubernetes_job", d.Kind))
	}
	if len(d.Command) == 0 || d.Command[0] == "" {
		errs = append(errs, errors.New("command: required"))
	}
	if d.Timeout < 0 {
		errs = append(errs, errors.New("timeout: must not be negative"))
	}
	for _, k := range sortedKeys(d.Env) {
		if !envNameRe.MatchString(k) {
			errs = append(errs, fmt.Errorf("env: %q is not a variable name", k))
		}
	}
	for _, k := range sortedKeys(d.SecretEnv) {
		ref := d.SecretEnv[k]
		if !envNameRe.MatchString(k) {
			errs = append(errs, fmt.Errorf("secret_env: %q is not a variable name", k))
		}
		if _, dup := d.Env[k]; dup {
			errs = append(errs, fmt.Errorf("secret_env.%s: also set in env", k))
		}
		switch d.Kind {
		case DownCommand:
			if ref.Env == "" || !envNameRe.MatchString(ref.Env) {
				errs = append(errs, fmt.Errorf("secret_env.%s.env: required (the bot's variable holding the value)", k))
			}
			if ref.Secret != "" || ref.Key != "" {
				errs = append(errs, fmt.Errorf("secret_env.%s: secret/key are for kind kubernetes_job", k))
			}
		case DownKubernetesJob:
			if ref.Secret == "" || ref.Key == "" {
				errs = append(errs, fmt.Errorf("secret_env.%s: secret and key required", k))
			}
			if ref.Env != "" {
				errs = append(errs, fmt.Errorf("secret_env.%s.env: is for kind command", k))
			}
		}
	}
	switch d.Kind {
	case DownCommand:
		if d.Namespace != "" || d.Image != "" || d.ImageFrom != "" || d.ServiceAccount != "" || d.EnvFromSecret != "" {
			errs = append(errs, errors.New("namespace/image/image_from/service_account/env_from_secret: only for kind kubernetes_job"))
		}
	case DownKubernetesJob:
		if d.Namespace == "" {
			errs = append(errs, errors.New("namespace: required for kind kubernetes_job"))
		} else if !k8sNameRe.MatchString(d.Namespace) {
			errs = append(errs, fmt.Errorf("namespace: %q is not a valid name", d.Namespace))
		}
		switch d.ImageFrom {
		case "", ImageFromBadRelease, ImageFromLastGood:
			if d.Image != "" {
				errs = append(errs, errors.New("image: only with image_from: fixed"))
			}
		case ImageFromFixed:
			if d.Image == "" {
				errs = append(errs, errors.New("image: required with image_from: fixed"))
			}
		default:
			errs = append(errs, fmt.Errorf("image_from: %q is not bad_release, last_good or fixed", d.ImageFrom))
		}
		if d.EnvFromSecret != "" && !k8sNameRe.MatchString(d.EnvFromSecret) {
			errs = append(errs, fmt.Errorf("env_from_secret: %q is not a valid name", d.EnvFromSecret))
		}
		if d.Dir != "" {
			errs = append(errs, errors.New("dir: only for kind command (set the image's workdir)"))
		}
	}
	return errors.Join(errs...)
}

// ImageFor picks the Job's image: the bad release's by default, since the
// down migrations ship with the release that added them.
func (d DownConfig) ImageFor(badRelease, lastGood string) string {
	switch d.ImageFrom {
	case ImageFromFixed:
		return d.Image
	case ImageFromLastGood:
		return lastGood
	default:
		return badRelease
	}
}

// Waits are the down run's wait inside the database step
// (platforms.Wait), at the config path at (the down section): the run, up
// to timeout; a Job gets a minute more to start and be seen to end.
func (d DownConfig) Waits(at string) []platforms.Wait {
	if d.Kind == "" {
		return nil
	}
	what := fmt.Sprintf("%s.timeout (%s)", at, d.timeout())
	if d.Timeout <= 0 {
		what = fmt.Sprintf("%s.timeout (%s, the default)", at, d.timeout())
	}
	w := platforms.Wait{Step: platforms.WaitDBDown, D: d.timeout(), What: what, Lower: "lower " + at + ".timeout"}
	if d.Kind == DownKubernetesJob {
		w.D += time.Minute
		w.What += " + 1m for the Job to start and end"
	}
	return []platforms.Wait{w}
}

func (d DownConfig) timeout() time.Duration {
	if d.Timeout > 0 {
		return d.Timeout
	}
	return DefaultDownTimeout
}

func (c Config) tool() string {
	if c.Tool == "" {
		return ToolAuto
	}
	return c.Tool
}

// prefixErr prefixes each joined error's field name.
func prefixErr(prefix string, err error) error {
	var out []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			out = append(out, fmt.Errorf("%s%w", prefix, e))
		}
		return errors.Join(out...)
	}
	return fmt.Errorf("%s%w", prefix, err)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
