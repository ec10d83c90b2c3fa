package vm

import (
	"fmt"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
)

// Remote commands. Every value put into a command — configured paths, the
// unit, the package name, versions and artifact paths, also in messages the
// script echoes — is passed through shellQuote: artifact names come from
// the host's directory listing, and a file named myapp_1.0_$(cmd).deb must
// stay a name. Versions are also checked against versionRe and against the
// versions listed on the host. The one exception is version_command, which
// is the operator's own shell command from the config.

// exitConflict and exitMissing are the install script's own exit codes.
const (
	exitConflict = 97 // the host changed since the rollback read it
	exitMissing  = 98 // the version's artifact is gone
)

func q(s string) string { return shellQuote(s) }

func (a *Adapter) dpkgRootFlag() string {
	if a.cfg.DpkgRoot == "" {
		return ""
	}
	return " --root=" + q(a.cfg.DpkgRoot)
}

func (a *Adapter) systemctl(verb string) string {
	return q(a.cfg.Systemctl) + " " + verb + " " + q(a.cfg.Unit)
}

// versionCmd prints the running version (first line is used).
func (a *Adapter) versionCmd() string {
	if a.cfg.VersionCommand != "" {
		return a.cfg.VersionCommand
	}
	switch a.cfg.Strategy {
	case Symlink:
		return "readlink " + q(a.cfg.CurrentLink)
	case Deb:
		return "dpkg-query" + a.dpkgRootFlag() + " -W -f '${db:Status-Abbrev}|${Version}\\n' " + q(a.cfg.Package)
	}
	return q(a.cfg.InstallPath) + " --version"
}

// parseVersion turns the version command's output into a version.
func (a *Adapter) parseVersion(out string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	line = strings.TrimSpace(line)
	if a.versionRe != nil {
		m := a.versionRe.FindStringSubmatch(line)
		if len(m) < 2 {
			return ""
		}
		return m[1]
	}
	if a.cfg.VersionCommand != "" {
		return line
	}
	switch a.cfg.Strategy {
	case Symlink:
		if line == "" {
			return ""
		}
		return path.Base(strings.TrimRight(line, "/"))
	case Deb:
		status, ver, ok := strings.Cut(line, "|")
		if !ok || !strings.HasPrefix(status, "ii") {
			return "" // not installed (removed, half-configured, ...)
		}
		return ver
	}
	return line
}

// fingerprintCmd prints what the compare-and-set compares: the installed
// binary's inode, size and mtime; the link target; the package state.
func (a *Adapter) fingerprintCmd() string {
	switch a.cfg.Strategy {
	case Symlink:
		return "readlink " + q(a.cfg.CurrentLink)
	case Deb:
		return "dpkg-query" + a.dpkgRootFlag() + " -W -f '${db:Status-Abbrev}|${Version}' " + q(a.cfg.Package)
	}
	return "stat -c '%i:%s:%Y' " + q(a.cfg.InstallPath)
}

// deployedCmd prints the epoch seconds of the last install.
func (a *Adapter) deployedCmd() string {
	switch a.cfg.Strategy {
	case Symlink:
		return "stat -c %Y " + q(a.cfg.CurrentLink)
	case Deb:
		info := path.Join(a.cfg.DpkgRoot, "/var/lib/dpkg/info", a.cfg.Package)
		return "stat -c %Y " + q(info) + ".list " + q(info) + ":*.list 2>/dev/null | head -n 1"
	}
	return "stat -c %Y " + q(a.cfg.InstallPath)
}

func (a *Adapter) listDir() string {
	switch a.cfg.Strategy {
	case Symlink:
		return a.cfg.ReleasesDir
	case Deb:
		return a.cfg.PackagesDir
	}
	return a.cfg.BackupDir
}

// listCmd prints "<mtime> <name>" per available version.
func (a *Adapter) listCmd() string {
	dir := q(a.listDir())
	switch a.cfg.Strategy {
	case Symlink:
		return "find " + dir + " -mindepth 1 -maxdepth 1 -type d -printf '%T@ %f\\n'"
	case Deb:
		return "find " + dir + " -mindepth 1 -maxdepth 1 -type f -name " + q(a.cfg.Package+"_*.deb") + " -printf '%T@ %f\\n'"
	}
	return "find " + dir + " -mindepth 1 -maxdepth 1 -type d -exec test -f " + q("{}/"+a.cfg.Binary) + " ';' -printf '%T@ %f\\n'"
}

// readScript gathers everything Snapshot and Rollback need in one command.
func (a *Adapter) readScript() string {
	return strings.Join([]string{
		"echo @@version",
		"( " + a.versionCmd() + " ) 2>/dev/null | head -n 1",
		"echo @@fingerprint",
		"( " + a.fingerprintCmd() + " ) 2>/dev/null",
		"echo",
		"echo @@deployed",
		"( " + a.deployedCmd() + " ) 2>/dev/null",
		"echo @@listdir",
		"if [ -d " + q(a.listDir()) + " ]; then echo yes; else echo no; fi",
		"echo @@releases",
		"( " + a.listCmd() + " ) 2>/dev/null",
		"echo @@marked",
		"for f in " + q(a.listDir()) + "/*.DO_NOT_DEPLOY; do [ -f \"$f\" ] || continue; printf '%s ' \"${f##*/}\"; sed -n 's/^by=//p' \"$f\" | head -n 1; done 2>/dev/null",
		"exit 0",
	}, "\n")
}

type release struct {
	version  string
	artifact string // path on the host
	mtime    time.Time
}

// hostRead is one host's parsed read.
type hostRead struct {
	version     string
	rawVersion  string
	fingerprint string
	deployed    time.Time
	listDirOK   bool
	releases    map[string]release
	// marked maps a version with a do-not-deploy marker to who marked it.
	marked map[string]string
}

func (a *Adapter) parseRead(out string) hostRead {
	r := hostRead{releases: map[string]release{}, marked: map[string]string{}}
	sections := map[string][]string{}
	cur := ""
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "@@") {
			cur = line[2:]
			continue
		}
		sections[cur] = append(sections[cur], line)
	}
	r.rawVersion = strings.TrimSpace(strings.Join(sections["version"], "\n"))
	r.version = a.parseVersion(r.rawVersion)
	if !versionRe.MatchString(r.version) {
		r.version = ""
	}
	r.fingerprint = strings.TrimSpace(strings.Join(sections["fingerprint"], "\n"))
	if secs, err := strconv.ParseInt(strings.TrimSpace(strings.Join(sections["deployed"], "")), 10, 64); err == nil {
		r.deployed = time.Unix(secs, 0).UTC()
	}
	r.listDirOK = strings.TrimSpace(strings.Join(sections["listdir"], "")) == "yes"
	for _, line := range sections["marked"] {
		name, by, _ := strings.Cut(strings.TrimSpace(line), " ")
		if ver, ok := strings.CutSuffix(name, ".DO_NOT_DEPLOY"); ok && versionRe.MatchString(ver) {
			r.marked[ver] = strings.TrimSpace(by)
		}
	}
	for _, line := range sections["releases"] {
		ts, name, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(ts, 64)
		if err != nil {
			continue
		}
		ver, art, ok := a.releaseOf(name)
		if !ok {
			continue
		}
		sec := int64(f)
		r.releases[ver] = release{version: ver, artifact: art, mtime: time.Unix(sec, int64((f-float64(sec))*1e9)).UTC()}
	}
	return r
}

// releaseOf maps a listed name to (version, artifact path).
func (a *Adapter) releaseOf(name string) (string, string, bool) {
	ver := name
	if a.cfg.Strategy == Deb {
		rest, ok := strings.CutPrefix(name, a.cfg.Package+"_")
		if !ok || !strings.HasSuffix(rest, ".deb") {
			return "", "", false
		}
		i := strings.LastIndexByte(rest, '_')
		if i <= 0 {
			return "", "", false
		}
		v, err := url.PathUnescape(rest[:i]) // epochs are written %3a in file names
		if err != nil {
			return "", "", false
		}
		ver = v
	}
	if !versionRe.MatchString(ver) {
		return "", "", false
	}
	return ver, a.artifact(ver, name), true
}

// artifact is the path of version ver on a host. name is the listed file
// name for deb (empty: a conventional name is made up for display).
func (a *Adapter) artifact(ver, name string) string {
	switch a.cfg.Strategy {
	case Symlink:
		return path.Join(a.cfg.ReleasesDir, ver)
	case Deb:
		if name == "" {
			return path.Join(a.cfg.PackagesDir, a.cfg.Package+"_"+ver+"_*.deb")
		}
		return path.Join(a.cfg.PackagesDir, name)
	}
	return path.Join(a.cfg.BackupDir, ver, a.cfg.Binary)
}

// installScript installs rel if the host still has fingerprint want.
func (a *Adapter) installScript(rel release, want string) string {
	check := fmt.Sprintf(`fp=$( ( %s ) 2>/dev/null )
if [ "$fp" != %s ]; then printf 'rollbot: changed since read: %%s\n' "$fp" >&2; exit %d; fi`, a.fingerprintCmd(), q(want), exitConflict)
	var do string
	switch a.cfg.Strategy {
	case Symlink:
		tmp := a.cfg.CurrentLink + ".rollbot-new"
		do = fmt.Sprintf(`test -d %s || { echo missing %s >&2; exit %d; }
ln -sfn %s %s
mv -Tf %s %s`, q(rel.artifact), q(rel.artifact), exitMissing, q(rel.artifact), q(tmp), q(tmp), q(a.cfg.CurrentLink))
	case Deb:
		do = fmt.Sprintf(`test -f %s || { echo missing %s >&2; exit %d; }
dpkg%s -i %s`, q(rel.artifact), q(rel.artifact), exitMissing, a.dpkgRootFlag(), q(rel.artifact))
	default:
		tmp := a.cfg.InstallPath + ".rollbot-new"
		do = fmt.Sprintf(`test -f %s || { echo missing %s >&2; exit %d; }
cp -p %s %s
mv -f %s %s`, q(rel.artifact), q(rel.artifact), exitMissing, q(rel.artifact), q(tmp), q(tmp), q(a.cfg.InstallPath))
	}
	return "set -e\n" + check + "\n" + do
}

// describeInstall is the plan line's command part.
func (a *Adapter) describeInstall(rel release) string {
	sudo := ""
	if a.cfg.Sudo {
		sudo = "sudo "
	}
	var cmd string
	switch a.cfg.Strategy {
	case Symlink:
		cmd = fmt.Sprintf("ln -sfn %s %s", rel.artifact, a.cfg.CurrentLink)
	case Deb:
		cmd = fmt.Sprintf("dpkg -i %s", rel.artifact)
	default:
		cmd = fmt.Sprintf("cp %s %s", rel.artifact, a.cfg.InstallPath)
	}
	return fmt.Sprintf("%s%s; %s%s restart %s", sudo, cmd, sudo, a.cfg.Systemctl, a.cfg.Unit)
}

// compareVersions orders versions naturally (v1.10 > v1.9 > v1.2): digit
// runs compare as numbers, the rest as text; no pre-release rules.
func compareVersions(x, y string) int {
	x, y = strings.TrimPrefix(x, "v"), strings.TrimPrefix(y, "v")
	for x != "" && y != "" {
		xd, yd := isDigit(x[0]), isDigit(y[0])
		xs, xr := splitRun(x, xd)
		ys, yr := splitRun(y, yd)
		var c int
		switch {
		case xd && yd:
			xs, ys = strings.TrimLeft(xs, "0"), strings.TrimLeft(ys, "0")
			if len(xs) != len(ys) {
				c = len(xs) - len(ys)
			} else {
				c = strings.Compare(xs, ys)
			}
		case xd:
			c = 1
		case yd:
			c = -1
		default:
			c = strings.Compare(xs, ys)
		}
		if c != 0 {
			if c < 0 {
				return -1
			}
			return 1
		}
		x, y = xr, yr
	}
	return strings.Compare(x, y)
}

func isDigit(b byte) bool { return b >= '0' && b <= '9' }

func splitRun(s string, digits bool) (string, string) {
	i := 0
	for i < len(s) && isDigit(s[i]) == digits {
		i++
	}
	return s[:i], s[i:]
}
