package migrations

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"rollbot/platforms"
)

// RunDown runs a kind: command down configuration on this host for
// incident: the command (no shell) with $(NAME) references replaced from
// its environment, which is PATH and HOME of the bot, cfg.Env,
// cfg.SecretEnv read from the bot's environment, and vars
// (Report.DownVars). The bot's other variables (its tokens) are not
// passed on. Combined stdout and stderr go to a file in the incident's
// run directory (see runDirRoot), which RunDown follows into out line by
// line as they come (one Write per line, newline included), with secret
// values replaced by [REDACTED], so the caller can post them into the
// incident thread. The command runs in a process group of its own: when
// the bot dies, it goes on, and a replica that takes the incident over on
// this host follows it (OpenDownRun). RunDown stops the command's whole
// process group when ctx ends or cfg.Timeout passes, and removes the run
// directory once the command has ended. A command for incident that
// still runs on this host is not started a second time. Errors name
// Command[0] only, never the expanded arguments.
func RunDown(ctx context.Context, cfg DownConfig, incident string, vars map[string]string, out io.Writer) error {
	if cfg.Kind != DownCommand {
		return fmt.Errorf("run down: kind %q: RunDown runs kind command; use JobRunner for kubernetes_job", cfg.Kind)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("run down: %w", err)
	}
	name := cfg.Command[0]
	env, secrets, err := commandEnv(cfg, vars)
	if err != nil {
		return err
	}
	argv := make([]string, len(cfg.Command))
	for i, a := range cfg.Command {
		argv[i] = expandRefs(a, env)
	}
	path, err := lookPath(argv[0], cfg.Dir, env["PATH"])
	if err != nil {
		if strings.Contains(argv[0], "/") && !filepath.IsAbs(argv[0]) {
			where := cfg.Dir
			if where == "" {
				where = "the bot's working directory"
			}
			return platforms.Userf(fmt.Errorf("run down %s: %w", name, err),
				"the down command %s is not in %s on the bot's host (or is not executable): check database.down.command and down.dir", name, where)
		}
		return platforms.Userf(fmt.Errorf("run down %s: %w", name, err), "the down command %s is not installed on the bot's host", name)
	}

	dir, err := newRunDir(incident)
	if err != nil {
		return fmt.Errorf("run down %s: %w", name, err)
	}
	// The command has ended whenever RunDown returns (the bot is alive):
	// its output, secrets and all, goes with the directory.
	defer os.RemoveAll(dir)
	files, err := openRunFiles(dir)
	if err != nil {
		return fmt.Errorf("run down %s: %w", name, err)
	}
	defer files.close()

	ctx, cancel := context.WithTimeout(ctx, cfg.timeout())
	defer cancel()
	cmd := exec.CommandContext(ctx, path, argv[1:]...)
	cmd.Args[0] = argv[0]
	cmd.Dir = cfg.Dir
	cmd.Env = envList(env)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = stopGrace
	cmd.Stdout, cmd.Stderr = files.output, files.output
	// The command and its descendants hold the running lock (as fd 3)
	// until the last of them exits, after the bot if it dies.
	cmd.ExtraFiles = []*os.File{files.running}
	if err := cmd.Start(); err != nil {
		return redact(fmt.Errorf("run down %s: %w", name, err), secrets)
	}
	files.output.Close() // the command has its own
	files.output = nil
	// A failure here only makes a follower unable to stop the command
	// at its timeout; it is not worth stopping a migration that started.
	_ = writePID(dir, cmd.Process.Pid)

	done := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		// Kill whatever the command left behind in its group.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		close(done)
	}()
	copyErr := copyLines(out, newFollower(files.read, func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}), secrets)
	<-done
	err = waitErr
	switch {
	case ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		return platforms.Userf(fmt.Errorf("run down %s: timed out after %s: %w", name, cfg.timeout(), ctx.Err()),
			"the down command %s did not finish within %s and was stopped: check the migration table before anything else", name, cfg.timeout())
	case ctx.Err() != nil:
		return fmt.Errorf("run down %s: %w", name, ctx.Err())
	case err != nil:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return platforms.Userf(fmt.Errorf("run down %s: %s", name, ee.ProcessState),
				"the down command %s failed (%s): see its output above", name, ee.ProcessState)
		}
		return redact(fmt.Errorf("run down %s: %w", name, err), secrets)
	case copyErr != nil:
		return fmt.Errorf("run down %s: write output: %w", name, copyErr)
	}
	return nil
}

// runFiles are the files of a new run directory that RunDown holds open.
type runFiles struct {
	output  *os.File // the command's stdout and stderr, append only
	read    *os.File // output, for following it
	running *os.File // locked LOCK_EX; the command inherits it
}

func openRunFiles(dir string) (*runFiles, error) {
	f := &runFiles{}
	var err error
	if f.output, err = os.OpenFile(filepath.Join(dir, outputName), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND|syscall.O_NOFOLLOW, 0o600); err != nil {
		return nil, err
	}
	if f.read, err = os.OpenFile(filepath.Join(dir, outputName), os.O_RDONLY|syscall.O_NOFOLLOW, 0); err != nil {
		f.close()
		return nil, err
	}
	if f.running, err = os.OpenFile(filepath.Join(dir, runningName), os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600); err != nil {
		f.close()
		return nil, err
	}
	if err = unix.Flock(int(f.running.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.close()
		return nil, fmt.Errorf("lock %s: %w", f.running.Name(), err)
	}
	return f, nil
}

func (f *runFiles) close() {
	for _, x := range []*os.File{f.output, f.read, f.running} {
		if x != nil {
			x.Close()
		}
	}
}

// writePID records the command's pid, its process group id, in dir.
func writePID(dir string, pid int) error {
	f, err := os.OpenFile(filepath.Join(dir, pidName), os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(f, "%d\n", pid); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// commandEnv builds the child's environment and the list of secret values.
func commandEnv(cfg DownConfig, vars map[string]string) (map[string]string, []string, error) {
	env := map[string]string{}
	for _, k := range []string{"PATH", "HOME", "LANG", "TZ"} {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
	}
	for k, v := range vars {
		env[k] = v
	}
	for k, v := range cfg.Env {
		env[k] = v
	}
	var secrets []string
	for _, k := range sortedKeys(cfg.SecretEnv) {
		ref := cfg.SecretEnv[k]
		v := os.Getenv(ref.Env)
		if v == "" {
			return nil, nil, platforms.Userf(fmt.Errorf("run down: secret_env.%s: variable %s is not set", k, ref.Env),
				"the down command needs %s, but the variable %s is not set on the bot", k, ref.Env)
		}
		env[k] = v
		secrets = append(secrets, v)
		for _, p := range secretParts(v) {
			if p != "" {
				secrets = append(secrets, p)
			}
		}
	}
	return env, secrets, nil
}

var refRe = regexp.MustCompile(`\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expandRefs replaces $(NAME) like Kubernetes does: unknown names stay as
// written, $$ is a literal $.
func expandRefs(s string, env map[string]string) string {
	return refRe.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		if v, ok := env[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

func envList(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for _, k := range sortedKeys(env) {
		out = append(out, k+"="+env[k])
	}
	return out
}

// lookPath resolves name against the child's PATH, not the bot's. A name
// with a slash is a path; a relative one (bin/rails, ./manage.py) is
// relative to the command's working directory dir, as the child sees it.
func lookPath(name, dir, path string) (string, error) {
	if strings.Contains(name, "/") {
		if dir != "" && !filepath.IsAbs(name) {
			name = filepath.Join(dir, name)
		}
		return exec.LookPath(name)
	}
	for _, dir := range strings.Split(path, ":") {
		if dir == "" {
			dir = "."
		}
		p := dir + "/" + name
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w", name, exec.ErrNotFound)
}

// copyLines writes r to w one redacted line at a time, each cut to
// maxLineBytes (readCappedLine).
func copyLines(w io.Writer, r io.Reader, secrets []string) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var werr error
	for {
		line, cut, err := readCappedLine(br)
		if line != "" && werr == nil {
			line = strings.TrimSuffix(line, "\n")
			if cut > 0 {
				line = trimSecretPrefix(line, secrets) + cutMarker(cut)
			}
			_, werr = io.WriteString(w, redactString(line, secrets)+"\n")
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, os.ErrClosed) {
				return werr
			}
			if werr == nil {
				werr = err
			}
			return werr
		}
	}
}

// maxLineBytes caps one line of a down command's or Job's output: a
// progress bar that never writes a newline must not grow a line in
// rollbot's memory without bound.
const maxLineBytes = 4 << 10

// readCappedLine reads one line from br like ReadString('\n'), but keeps at
// most maxLineBytes of it (cut at a UTF-8 boundary) and reads and drops the
// rest, returning how many bytes it dropped. The newline, when the line has
// one, is kept. err is as ReadString's: non-nil when the line did not end
// with a newline.
func readCappedLine(br *bufio.Reader) (line string, cut int, err error) {
	var buf []byte
	nl := false
	for {
		frag, ferr := br.ReadSlice('\n')
		if ferr == nil {
			frag, nl = frag[:len(frag)-1], true
		}
		take := min(max(maxLineBytes-len(buf), 0), len(frag))
		buf = append(buf, frag[:take]...)
		cut += len(frag) - take
		if ferr == bufio.ErrBufferFull {
			continue
		}
		err = ferr
		break
	}
	if cut > 0 {
		// Do not keep half a rune.
		i := len(buf) - 1
		for i > 0 && !utf8.RuneStart(buf[i]) {
			i--
		}
		if i >= 0 && !utf8.FullRune(buf[i:]) {
			cut += len(buf) - i
			buf = buf[:i]
		}
	}
	if nl {
		buf = append(buf, '\n')
	}
	return string(buf), cut, err
}

// cutMarker ends a line readCappedLine cut.
func cutMarker(cut int) string { return fmt.Sprintf(" …[line cut: %d more bytes]", cut) }

// trimSecretPrefix drops an end of s that begins a secret: a line cut in
// the middle of a secret value must not show its first characters.
func trimSecretPrefix(s string, secrets []string) string {
	for _, sec := range secrets {
		for n := min(len(sec)-1, len(s)); n > 0; n-- {
			if strings.HasSuffix(s, sec[:n]) {
				s = s[:len(s)-n]
				break
			}
		}
	}
	return s
}

func redactString(s string, secrets []string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, redactedMark)
		}
	}
	return s
}
