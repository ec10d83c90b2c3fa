package compose

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"rollbot/platforms"
	"rollbot/platforms/internal/docker"
)

// errFileMoved: the compose file names another image than the one running
// (an edit not applied yet, or a concurrent deploy).
var errFileMoved = errors.New("compose file and containers disagree")

// fileRef is the place in a compose file that pins the service's image.
type fileRef struct {
	path    string   // the file whose services.<svc>.image wins
	files   []string // every file of the project, for -f
	workdir string
	data    []byte // path's content as read
	offset  int    // byte offset of the image token in data
	token   string // the token as written (with its quotes)
	value   string
	style   yaml.Style
}

// composeFile finds and checks the compose file that sets the service's
// image: readable, a literal reference (no ${VAR}) and the image that runs.
func (a *Adapter) composeFile(st state) (*fileRef, error) {
	newest := st.containers[len(st.containers)-1]
	files := a.cfg.ComposeFiles
	workdir := ""
	if newest.Config != nil {
		workdir = newest.Config.Labels[labelWorkingDir]
		if len(files) == 0 && newest.Config.Labels[labelConfigFiles] != "" {
			files = strings.Split(newest.Config.Labels[labelConfigFiles], ",")
		}
	}
	if len(files) == 0 {
		return nil, platforms.Userf(nil, "no compose file is known (set compose_files)")
	}
	abs := make([]string, len(files))
	for i, f := range files {
		if !filepath.IsAbs(f) && workdir != "" {
			f = filepath.Join(workdir, f)
		}
		abs[i] = f
	}
	if workdir == "" {
		workdir = filepath.Dir(abs[0])
	}
	var ref *fileRef
	for _, f := range abs {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, platforms.Userf(fmt.Errorf("read compose file %s: %w", f, err), "rollbot cannot read the compose file %s", f)
		}
		r, err := findImage(data, a.cfg.Service)
		if err != nil {
			return nil, platforms.Userf(fmt.Errorf("compose file %s: %w", f, err), "the compose file %s is not valid YAML", f)
		}
		if r != nil { // later files override earlier ones
			r.path, r.data = f, data
			ref = r
		}
	}
	if ref == nil {
		return nil, platforms.Userf(nil, "no compose file sets services.%s.image", a.cfg.Service)
	}
	ref.files, ref.workdir = abs, workdir
	if strings.Contains(ref.value, "$") {
		return nil, platforms.Userf(nil, "%s sets services.%s.image through a variable (%s), which rollbot does not edit", ref.path, a.cfg.Service, ref.value)
	}
	if !docker.SameImage(ref.value, st.current) {
		return nil, platforms.Userf(errFileMoved, "%s names %s for %s but the service runs %s", ref.path, ref.value, a.cfg.Service, st.current)
	}
	return ref, nil
}

// findImage locates services.<svc>.image in a compose file; nil when the
// file does not set it.
func findImage(data []byte, svc string) (*fileRef, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	node := mapValue(doc.Content[0], "services")
	node = mapValue(node, svc)
	node = mapValue(node, "image")
	if node == nil {
		return nil, nil
	}
	if node.Kind != yaml.ScalarNode {
		return nil, errors.New("image is not a string")
	}
	token := node.Value
	switch node.Style {
	case 0:
	case yaml.DoubleQuotedStyle:
		token = `"` + node.Value + `"`
	case yaml.SingleQuotedStyle:
		token = `'` + node.Value + `'`
	default:
		return nil, fmt.Errorf("image is written in a YAML style rollbot does not edit")
	}
	// Offset of line:column (1-based; column counts runes).
	lines := bytes.SplitAfter(data, []byte("\n"))
	if node.Line < 1 || node.Line > len(lines) {
		return nil, errors.New("cannot locate the image line")
	}
	off := 0
	for _, l := range lines[:node.Line-1] {
		off += len(l)
	}
	line := []rune(string(lines[node.Line-1]))
	if node.Column < 1 || node.Column > len(line) {
		return nil, errors.New("cannot locate the image column")
	}
	off += len(string(line[:node.Column-1]))
	if !bytes.HasPrefix(data[off:], []byte(token)) {
		return nil, errors.New("the image value is written in a way rollbot does not edit (escapes?)")
	}
	return &fileRef{offset: off, token: token, value: node.Value, style: node.Style}, nil
}

func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// edited is the file content with the image set to target, same quoting.
func (r *fileRef) edited(target string) []byte {
	tok := target
	switch r.style {
	case yaml.DoubleQuotedStyle:
		tok = `"` + target + `"`
	case yaml.SingleQuotedStyle:
		tok = `'` + target + `'`
	}
	out := slices.Clone(r.data[:r.offset])
	out = append(out, tok...)
	return append(out, r.data[r.offset+len(r.token):]...)
}

// writeFile replaces path's content atomically, keeping its mode.
func writeFile(path string, data []byte) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".rollbot-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(fi.Mode().Perm()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func (a *Adapter) composeArgs(r *fileRef) []string {
	args := []string{"-p", a.cfg.Project}
	for _, f := range r.files {
		args = append(args, "-f", f)
	}
	if r.workdir != "" {
		args = append(args, "--project-directory", r.workdir)
	}
	return append(args, "up", "-d", "--no-deps", "--no-build", a.cfg.Service)
}

// rollbackFile edits the compose file to target and runs docker-compose up
// for the service, then waits for its containers.
func (a *Adapter) rollbackFile(ctx context.Context, st state, r *fileRef, target string, dryRun bool, progress platforms.ProgressFunc) (platforms.Result, error) {
	svc := a.cfg.Service
	args := a.composeArgs(r)
	plan := []string{
		fmt.Sprintf("edit %s: services.%s.image %s -> %s", r.path, svc, r.value, target),
		fmt.Sprintf("run %s %s", a.cfg.ComposeCommand, strings.Join(args, " ")),
	}
	if dryRun {
		return platforms.Result{Outcome: platforms.Planned, Plan: plan,
			Detail: fmt.Sprintf("would set compose service %s to %s in %s and run docker-compose up", svc, docker.WithoutDigest(target), r.path)}, nil
	}
	bin, err := exec.LookPath(a.cfg.ComposeCommand)
	if err != nil {
		return platforms.Result{}, platforms.Userf(err, "%s is not installed where rollbot runs; install it or set mode: recreate", a.cfg.ComposeCommand)
	}
	// Compare-and-set: the containers and the file are still what was read.
	if err := a.sameContainers(ctx, st); err != nil {
		return platforms.Result{}, err
	}
	now, err := os.ReadFile(r.path)
	if err != nil {
		return platforms.Result{}, fmt.Errorf("read compose file %s: %w", r.path, err)
	}
	if !bytes.Equal(now, r.data) {
		return platforms.Result{}, a.conflict(fmt.Errorf("compose file %s changed", r.path), r.path+" was edited")
	}
	if err := writeFile(r.path, r.edited(target)); err != nil {
		return platforms.Result{}, platforms.Userf(fmt.Errorf("write compose file %s: %w", r.path, err), "rollbot cannot write %s", r.path)
	}
	a.log.InfoContext(ctx, "compose file edited", "op", "rollback", "file", r.path, "from", r.value, "to", target)
	if progress != nil {
		progress(platforms.Progress{Message: fmt.Sprintf("Running docker-compose up for %s with %s", svc, docker.WithoutDigest(target)), Desired: len(st.containers)})
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = r.workdir
	cmd.Env = a.composeEnv(os.Environ())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		tail := out.String()
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		cause := fmt.Errorf("%s up: %w: %s", a.cfg.ComposeCommand, err, tail)
		if werr := writeFile(r.path, r.data); werr != nil {
			return platforms.Result{Plan: plan}, platforms.Userf(errors.Join(cause, werr),
				"docker-compose up for %s failed, and putting %s back failed too; it now names %s", svc, r.path, target)
		}
		return platforms.Result{Plan: plan}, platforms.Userf(cause,
			"docker-compose up for %s with %s failed; rollbot put %s back as it was. %s", svc, docker.WithoutDigest(target), r.path, docker.FallbackHint(docker.WithoutDigest(target)))
	}
	// Wait for the service's containers, now on target.
	after, err := a.read(ctx)
	if err != nil {
		return platforms.Result{Plan: plan}, err
	}
	p := platforms.Progress{Desired: len(after.containers)}
	for _, c := range after.containers {
		if !docker.SameImage(c.Config.Image, target) {
			return platforms.Result{Plan: plan}, a.conflict(fmt.Errorf("container %s runs %s after up", name(c), c.Config.Image),
				fmt.Sprintf("container %s runs %s", name(c), c.Config.Image))
		}
		p.Updated++
	}
	for _, c := range after.containers {
		err := a.waitReady(ctx, c.ID, func(msg string) {
			if progress != nil {
				q := p
				q.Message = fmt.Sprintf("Waiting for %s on %s: %s", name(c), docker.WithoutDigest(target), msg)
				progress(q)
			}
		})
		if err != nil {
			return platforms.Result{Plan: plan}, platforms.Userf(fmt.Errorf("container %s on %s: %w", name(c), target, err),
				"compose service %s now runs %s (and %s names it) but container %s did not become healthy (%v). %s",
				svc, docker.WithoutDigest(target), r.path, name(c), err, docker.FallbackHint(docker.WithoutDigest(target)))
		}
		p.Ready++
	}
	p.Done = true
	p.Message = fmt.Sprintf("compose service %s converged: %d/%d containers running %s and healthy", svc, p.Ready, p.Desired, docker.WithoutDigest(target))
	if progress != nil {
		progress(p)
	}
	return platforms.Result{Outcome: platforms.Done, Plan: plan,
		Detail: fmt.Sprintf("set compose service %s to %s in %s and ran docker-compose up; all containers healthy", svc, docker.WithoutDigest(target), r.path)}, nil
}

// sameContainers checks that the service still has the containers read,
// on the same images.
func (a *Adapter) sameContainers(ctx context.Context, st state) error {
	now, err := a.read(ctx)
	if err != nil {
		return err
	}
	key := func(s state) []string {
		var out []string
		for _, c := range s.containers {
			out = append(out, c.ID+"@"+c.Image)
		}
		slices.Sort(out)
		return out
	}
	if !slices.Equal(key(now), key(st)) {
		return a.conflict(errors.New("containers changed since they were read"), "its containers were replaced")
	}
	return nil
}

// composeEnvAllowed are the only variables of the bot's environment that
// docker-compose gets: what it needs to run (PATH, HOME, locale, temp dir),
// to reach the engine (DOCKER_HOST, DOCKER_CONTEXT, DOCKER_CONFIG, TLS) and
// its own settings (COMPOSE_*). Nothing else: the bot's environment holds
// its Slack tokens, REDIS_URL and database DSNs, and docker-compose would
// hand any of them to a container through ${VAR} interpolation or an
// `environment: [NAME]` pass-through. Variables the project's compose file
// interpolates belong in the project's .env file, which docker-compose
// still reads.
var composeEnvAllowed = []string{
	"PATH", "HOME", "USER", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ", "XDG_RUNTIME_DIR",
	"DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY",
	"DOCKER_API_VERSION", "DOCKER_DEFAULT_PLATFORM",
}

// composeEnvAllowedPrefix: docker-compose's own settings.
const composeEnvAllowedPrefix = "COMPOSE_"

// composeEnv is the environment for docker-compose: the allowlisted part of
// environ (the bot's, os.Environ()), with the configured engine.
func (a *Adapter) composeEnv(environ []string) []string {
	var env []string
	for _, kv := range environ {
		k, _, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		if slices.Contains(composeEnvAllowed, k) || strings.HasPrefix(k, composeEnvAllowedPrefix) {
			env = append(env, kv)
		}
	}
	if a.cfg.Host != "" {
		env = append(env, "DOCKER_HOST="+a.cfg.Host)
	}
	if a.cfg.TLSCertPath != "" {
		env = append(env, "DOCKER_CERT_PATH="+a.cfg.TLSCertPath, "DOCKER_TLS_VERIFY=1")
	}
	return env
}
