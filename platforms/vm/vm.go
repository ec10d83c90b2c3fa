// Package vm is the VM / systemd adapter: a service installed on a fleet
// of hosts reached over SSH and run by a systemd unit.
//
// A rollback goes host by host in the configured order: install the
// previous version by the service's strategy, `systemctl restart` the unit
// (through `sudo -n` when configured), wait until the host answers its
// health URL, and only then go on to the next host. It stops at the first
// failure and says exactly where (which hosts were rolled back, which host
// failed and how, which were not touched). Strategies:
//
//   - backup: copy <backup_dir>/<version>/<binary> over install_path (the
//     runbook's `cp /opt/myapp/backup/v1.2.3/myapp /usr/local/bin/myapp`,
//     done as copy-to-temp + rename, since copying over a running binary
//     fails with "Text file busy");
//   - symlink: point the current symlink at <releases_dir>/<version>
//     (atomically: new link + rename);
//   - deb: `dpkg -i <packages_dir>/<package>_<version>_<arch>.deb`.
//
// The versions a user can pick are the ones listed on the hosts (backup or
// release directories, .deb files), never free text: a requested version
// is checked against that list, and every value placed in a remote command
// is shell-quoted besides. Each host's install is a compare-and-set: the
// state read at the start of the rollback (binary inode/size/mtime, link
// target, package version) is checked again on the host, in the same
// remote command, right before the change.
//
// Host keys are always verified against known_hosts; an unknown key is
// refused with the fingerprint to verify. Authentication is a private key
// file or the SSH agent at $SSH_AUTH_SOCK.
//
// Stop does not stop the unit by default (see Adapter.Stop).
package vm

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path"
	"regexp"
	"strings"
	"text/template"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"rollbot/platforms"
)

// Strategy is how a version is installed on a host.
type Strategy string

const (
	Deb     Strategy = "deb"
	Backup  Strategy = "backup"
	Symlink Strategy = "symlink"
)

// Host is one machine of the fleet.
type Host struct {
	Name string `yaml:"name"`
	// Addr is host:port (port 22 when omitted).
	Addr string `yaml:"addr"`
	// User overrides Config.User.
	User string `yaml:"user,omitempty"`
	// HealthURL overrides Config.HealthURL for this host.
	HealthURL string `yaml:"health_url,omitempty"`
}

// Config is the vm part of a service's configuration (services.<name>.vm).
type Config struct {
	Hosts []Host `yaml:"hosts"`
	// User is the SSH login (default: "rollbot").
	User string `yaml:"user,omitempty"`
	// KnownHosts is the known_hosts file that host keys are checked against.
	KnownHosts string `yaml:"known_hosts"`
	// KeyFile is the private key; empty means the SSH agent at $SSH_AUTH_SOCK.
	KeyFile string `yaml:"key_file,omitempty"`
	// KeyPassphraseEnv names the env var holding KeyFile's passphrase.
	KeyPassphraseEnv string `yaml:"key_passphrase_env,omitempty"`
	// Timeout bounds connecting to a host and each command on it (default 30s).
	Timeout time.Duration `yaml:"timeout,omitempty"`

	Strategy Strategy `yaml:"strategy"`
	// Unit is the systemd unit (e.g. myapp or myapp.service).
	Unit string `yaml:"unit"`
	// Sudo runs installs and systemctl through `sudo -n`.
	Sudo bool `yaml:"sudo,omitempty"`
	// Systemctl is the systemctl command (default "systemctl").
	Systemctl string `yaml:"systemctl,omitempty"`

	// InstallPath is the binary the unit runs (backup; default /usr/local/bin/<unit>).
	InstallPath string `yaml:"install_path,omitempty"`
	// BackupDir holds <version>/<binary> (backup; default /opt/<unit>/backup).
	BackupDir string `yaml:"backup_dir,omitempty"`
	// Binary is the file name inside a backup or release directory
	// (default: the base name of install_path).
	Binary string `yaml:"binary,omitempty"`
	// ReleasesDir holds one directory per version (symlink; default /opt/<unit>/releases).
	ReleasesDir string `yaml:"releases_dir,omitempty"`
	// CurrentLink is the symlink to the running release (symlink; default /opt/<unit>/current).
	CurrentLink string `yaml:"current_link,omitempty"`
	// PackagesDir holds <package>_<version>_<arch>.deb (deb; default /opt/<unit>/packages).
	PackagesDir string `yaml:"packages_dir,omitempty"`
	// Package is the Debian package name (deb; default <unit>).
	Package string `yaml:"package,omitempty"`
	// DpkgRoot is passed to dpkg and dpkg-query as --root (deb; chroot installs).
	DpkgRoot string `yaml:"dpkg_root,omitempty"`

	// VersionCommand prints the running version on a host. Default:
	// backup: `<install_path> --version`; symlink: the current link's
	// target directory name; deb: dpkg-query's Version of the package.
	// It is run by the login shell as written (trusted configuration).
	VersionCommand string `yaml:"version_command,omitempty"`
	// VersionRegexp extracts the version from VersionCommand's first line
	// (first capture group), e.g. `myapp version (\S+)`.
	VersionRegexp string `yaml:"version_regexp,omitempty"`

	// HealthURL is a template for each host's health check URL, e.g.
	// http://{{.Host}}:8080/health ({{.Name}}, {{.Host}}, {{.Addr}}).
	// Empty: `systemctl is-active <unit>` on the host decides.
	HealthURL string `yaml:"health_url,omitempty"`
	// HealthTimeout is how long a restarted host may take to answer 2xx (default 60s).
	HealthTimeout time.Duration `yaml:"health_timeout,omitempty"`
	// HistoryOrder orders the available versions: mtime (default: newest
	// directory/file first) or version (natural version order).
	HistoryOrder string `yaml:"history_order,omitempty"`
	// LogCommand prints the unit's recent log on a host, for the evidence
	// kept before a rollback; {unit} and {lines} are replaced by the unit
	// and the number of lines to keep. Default: journalctl -u {unit} -n
	// {lines} --no-pager -o short-iso. Run by the login shell as written
	// (trusted configuration), through sudo when `sudo` is set.
	LogCommand string `yaml:"log_command,omitempty"`
	// StopUnitOnPause makes Stop run `systemctl stop` on every host, as the
	// runbook's step 2 says. Off by default: see Adapter.Stop.
	StopUnitOnPause bool `yaml:"stop_unit_on_pause,omitempty"`
}

var (
	unitRe    = regexp.MustCompile(`^[A-Za-z0-9:_.@\\-]+$`)
	packageRe = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
	nameRe    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	// versionRe bounds what a version (a directory or file name on the
	// hosts) may look like before it goes anywhere near a command line.
	versionRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+~:-]{0,127}$`)
)

// Validate checks the fields; errors name the field.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(c.Hosts) == 0 {
		add("hosts: at least one host required")
	}
	seen := map[string]bool{}
	for i, h := range c.Hosts {
		switch {
		case h.Name == "":
			add("hosts[%d].name: required", i)
		case !nameRe.MatchString(h.Name):
			add("hosts[%d].name: %q: letters, digits, '.', '_', '-' only", i, h.Name)
		case seen[h.Name]:
			add("hosts[%d].name: %q used twice", i, h.Name)
		}
		seen[h.Name] = true
		if h.Addr == "" {
			add("hosts[%d].addr: required", i)
		} else if _, _, err := net.SplitHostPort(withPort(h.Addr)); err != nil {
			add("hosts[%d].addr: %v", i, err)
		}
		if h.HealthURL != "" {
			if _, err := template.New("").Parse(h.HealthURL); err != nil {
				add("hosts[%d].health_url: %v", i, err)
			}
		}
	}
	if c.KnownHosts == "" {
		add("known_hosts: required (host keys are always verified)")
	}
	switch c.Strategy {
	case Deb, Backup, Symlink:
	case "":
		add("strategy: required (deb, backup or symlink)")
	default:
		add("strategy: %q is not deb, backup or symlink", c.Strategy)
	}
	if c.Unit == "" {
		add("unit: required")
	} else if !unitRe.MatchString(c.Unit) {
		add("unit: %q is not a systemd unit name", c.Unit)
	}
	for _, p := range []struct{ field, v string }{
		{"install_path", c.InstallPath}, {"backup_dir", c.BackupDir}, {"releases_dir", c.ReleasesDir},
		{"current_link", c.CurrentLink}, {"packages_dir", c.PackagesDir}, {"dpkg_root", c.DpkgRoot}, {"known_hosts", c.KnownHosts},
	} {
		if p.v != "" && !path.IsAbs(p.v) {
			add("%s: must be an absolute path", p.field)
		}
	}
	if c.Binary != "" && (strings.Contains(c.Binary, "/") || c.Binary == "." || c.Binary == "..") {
		add("binary: a file name, not a path")
	}
	if c.Package != "" && !packageRe.MatchString(c.Package) {
		add("package: %q is not a Debian package name", c.Package)
	}
	if c.VersionRegexp != "" {
		if re, err := regexp.Compile(c.VersionRegexp); err != nil {
			add("version_regexp: %v", err)
		} else if re.NumSubexp() < 1 {
			add("version_regexp: needs a capture group for the version")
		}
	}
	if c.HealthURL != "" {
		if _, err := template.New("").Parse(c.HealthURL); err != nil {
			add("health_url: %v", err)
		}
	}
	switch c.HistoryOrder {
	case "", "mtime", "version":
	default:
		add("history_order: %q is not mtime or version", c.HistoryOrder)
	}
	if c.Timeout < 0 {
		add("timeout: must not be negative")
	}
	if c.HealthTimeout < 0 {
		add("health_timeout: must not be negative")
	}
	if c.KeyPassphraseEnv != "" && c.KeyFile == "" {
		add("key_passphrase_env: set without key_file")
	}
	return errors.Join(errs...)
}

func withPort(addr string) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	if strings.Count(addr, ":") > 1 && !strings.HasPrefix(addr, "[") {
		return net.JoinHostPort(addr, "22") // bare IPv6
	}
	return addr + ":22"
}

// The defaults of Config.Timeout and Config.HealthTimeout.
const (
	defaultTimeout       = 30 * time.Second
	defaultHealthTimeout = 60 * time.Second
)

// Waits are the adapter's waits inside the runbook's steps (platforms.Wait),
// at the config path at. A rollback reads every host at once (connect and
// read, each up to timeout), then takes one host at a time: connect,
// install, restart (each up to timeout), wait until healthy (up to
// health_timeout), check the version (up to timeout). With
// stop_unit_on_pause, stopping the rollout connects to each host in turn
// and checks and stops the unit (each up to timeout).
func (c Config) Waits(at string) []platforms.Wait {
	d := c.withDefaults()
	field := func(name string, raw, v time.Duration) string {
		if raw == 0 {
			return fmt.Sprintf("%s.%s (%s, the default)", at, name, v)
		}
		return fmt.Sprintf("%s.%s (%s)", at, name, v)
	}
	t, ht, n := d.Timeout, d.HealthTimeout, time.Duration(len(c.Hosts))
	timeout, health := field("timeout", c.Timeout, t), field("health_timeout", c.HealthTimeout, ht)
	hosts := fmt.Sprintf("the %d hosts", n)
	if n == 1 {
		hosts = "the host"
	}
	waits := []platforms.Wait{{Step: platforms.WaitRollback, D: 2*t + n*(4*t+ht),
		What:  fmt.Sprintf("reading %s (2 × %s), then each host in turn: 4 × timeout + %s", hosts, timeout, health),
		Lower: fmt.Sprintf("lower %s.timeout or %s.health_timeout", at, at)}}
	if c.StopUnitOnPause {
		waits = append(waits, platforms.Wait{Step: platforms.WaitStop, D: n * 3 * t,
			What:  fmt.Sprintf("stopping the unit on %s in turn (3 × %s each, stop_unit_on_pause)", hosts, timeout),
			Lower: "lower " + at + ".timeout"})
	}
	return waits
}

// withDefaults fills the derived defaults.
func (c Config) withDefaults() Config {
	unit := strings.TrimSuffix(c.Unit, ".service")
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&c.User, "rollbot")
	def(&c.Systemctl, "systemctl")
	def(&c.InstallPath, "/usr/local/bin/"+unit)
	def(&c.BackupDir, "/opt/"+unit+"/backup")
	def(&c.ReleasesDir, "/opt/"+unit+"/releases")
	def(&c.CurrentLink, "/opt/"+unit+"/current")
	def(&c.PackagesDir, "/opt/"+unit+"/packages")
	def(&c.Package, unit)
	def(&c.Binary, path.Base(c.InstallPath))
	def(&c.HistoryOrder, "mtime")
	if c.Timeout == 0 {
		c.Timeout = defaultTimeout
	}
	if c.HealthTimeout == 0 {
		c.HealthTimeout = defaultHealthTimeout
	}
	for i := range c.Hosts {
		c.Hosts[i].Addr = withPort(c.Hosts[i].Addr)
		def(&c.Hosts[i].User, c.User)
	}
	return c
}

// Adapter is bound to one service's hosts.
type Adapter struct {
	cfg       Config
	log       *slog.Logger
	known     ssh.HostKeyCallback
	auth      authSource
	versionRe *regexp.Regexp
	health    []*template.Template // per host
}

// New checks the configuration, loads known_hosts and the key (or finds
// the agent). It does not connect to any host.
func New(cfg Config, log *slog.Logger) (*Adapter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Hosts = append([]Host(nil), cfg.Hosts...)
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	known, err := knownhosts.New(cfg.KnownHosts)
	if err != nil {
		return nil, fmt.Errorf("known_hosts: %w", err)
	}
	auth, err := newAuth(cfg)
	if err != nil {
		return nil, err
	}
	a := &Adapter{cfg: cfg, known: known, auth: auth}
	if cfg.VersionRegexp != "" {
		a.versionRe = regexp.MustCompile(cfg.VersionRegexp)
	}
	for _, h := range cfg.Hosts {
		src := h.HealthURL
		if src == "" {
			src = cfg.HealthURL
		}
		if src == "" {
			a.health = append(a.health, nil)
			continue
		}
		t, err := template.New(h.Name).Option("missingkey=error").Parse(src)
		if err != nil {
			return nil, fmt.Errorf("health_url: %w", err)
		}
		a.health = append(a.health, t)
	}
	for i, h := range cfg.Hosts {
		if _, err := a.healthURL(i); err != nil {
			return nil, fmt.Errorf("health_url: host %s: %w", h.Name, err)
		}
	}
	a.log = log.With("platform", "vm", "target", a.Target())
	return a, nil
}

// Kind implements platforms.Platform.
func (a *Adapter) Kind() string { return "vm" }

// Target implements platforms.Platform: "systemd unit myapp on 2 hosts (web1, web2)".
func (a *Adapter) Target() string {
	names := make([]string, len(a.cfg.Hosts))
	for i, h := range a.cfg.Hosts {
		names[i] = h.Name
	}
	n := "hosts"
	if len(names) == 1 {
		n = "host"
	}
	return fmt.Sprintf("systemd unit %s on %d %s (%s)", a.cfg.Unit, len(names), n, strings.Join(names, ", "))
}

// authSource yields the client's auth method for one connection.
type authSource interface {
	method() (ssh.AuthMethod, func(), error)
	describe() string // for messages: "key /etc/rollbot/id_ed25519 (SHA256:…)" or "the SSH agent"
}

type keyAuth struct {
	file   string
	signer ssh.Signer
}

func (k keyAuth) method() (ssh.AuthMethod, func(), error) {
	return ssh.PublicKeys(k.signer), func() {}, nil
}

func (k keyAuth) describe() string {
	return fmt.Sprintf("key %s (%s)", k.file, ssh.FingerprintSHA256(k.signer.PublicKey()))
}

func newAuth(cfg Config) (authSource, error) {
	if cfg.KeyFile == "" {
		sock := os.Getenv("SSH_AUTH_SOCK")
		if sock == "" {
			return nil, errors.New("key_file: empty and SSH_AUTH_SOCK is not set (no key and no agent)")
		}
		return agentAuth{sock: sock}, nil
	}
	pem, err := os.ReadFile(cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("key_file: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) {
		if cfg.KeyPassphraseEnv == "" {
			return nil, errors.New("key_file: the key is encrypted; set key_passphrase_env")
		}
		pass, ok := os.LookupEnv(cfg.KeyPassphraseEnv)
		if !ok {
			return nil, fmt.Errorf("key_passphrase_env: %s is not set", cfg.KeyPassphraseEnv)
		}
		signer, err = ssh.ParsePrivateKeyWithPassphrase(pem, []byte(pass))
		if err != nil {
			// Never wrap err: keep the passphrase's variable out of it.
			return nil, fmt.Errorf("key_file: cannot decrypt with the passphrase from %s", cfg.KeyPassphraseEnv)
		}
	} else if err != nil {
		return nil, fmt.Errorf("key_file: %w", err)
	}
	return keyAuth{file: cfg.KeyFile, signer: signer}, nil
}
