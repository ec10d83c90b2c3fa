package migrations

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"rollbot/platforms"
)

// A kind: command down command runs with a run directory on the bot's
// host, <os.TempDir()>/rollbot-down/<incident>/, so that a replica that
// takes the incident over on the same host can follow a command whose
// replica was killed (the command runs in a process group of its own and
// outlives it):
//
//   - output: the command's stdout and stderr (0600, O_APPEND). A file,
//     not a pipe: a pipe's reader dies with the replica, and the command's
//     next write would kill it with SIGPIPE half-way through a migration.
//     It holds the output unredacted, so the directory is removed once the
//     command has ended and its output was relayed.
//   - running: locked (flock LOCK_EX) through a descriptor the command
//     inherits (cmd.ExtraFiles), so the command and its descendants hold
//     the lock, and the kernel releases it when the last of them exits:
//     "still running" needs no pid, which could be reused.
//   - pid: the command's pid, which is its process group id, for stopping
//     it.
const (
	runDirRoot  = "rollbot-down"
	outputName  = "output"
	runningName = "running"
	pidName     = "pid"
)

// followPoll is how often a follower of the output file looks for more
// output, or for the command's end, once it has read everything.
const followPoll = 150 * time.Millisecond

// stopGrace is how long a process group stopped with SIGTERM gets before
// SIGKILL (exec.Cmd.WaitDelay in RunDown).
const stopGrace = 10 * time.Second

// incidentName is what an incident id may be to name a run directory.
var incidentName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`)

// runDirPath is incident's run directory, and checks its parent,
// creating it (0700) with mkdir.
func runDirPath(incident string, mkdir bool) (string, error) {
	if !incidentName.MatchString(incident) {
		return "", fmt.Errorf("down run directory: incident id %q is not a plain file name", incident)
	}
	root := filepath.Join(os.TempDir(), runDirRoot)
	if mkdir {
		if err := os.MkdirAll(root, 0o700); err != nil {
			return "", fmt.Errorf("down run directory: %w", err)
		}
	}
	if err := checkOwnDir(root); err != nil {
		return "", err
	}
	return filepath.Join(root, incident), nil
}

// checkOwnDir checks that dir is a directory (not a symlink) that the
// bot's user owns, and makes it private (0700): the run directory holds
// the command's output, secrets included, in a directory others can
// write to (/tmp).
func checkOwnDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("down run directory: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("down run directory %s is a symbolic link", dir)
	case !fi.IsDir():
		return fmt.Errorf("down run directory %s is not a directory", dir)
	case !ok || int(st.Uid) != os.Geteuid():
		return fmt.Errorf("down run directory %s is not owned by the bot's user (uid %d)", dir, os.Geteuid())
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("down run directory: %w", err)
		}
	}
	return nil
}

// newRunDir creates incident's run directory for a new run. A directory
// left by a run that has ended (its bot died, and no replica on this host
// took it over) is removed; one whose command still runs is refused: the
// command never runs twice.
func newRunDir(incident string) (string, error) {
	dir, err := runDirPath(incident, true)
	if err != nil {
		return "", err
	}
	err = os.Mkdir(dir, 0o700)
	if errors.Is(err, fs.ErrExist) {
		if err := checkOwnDir(dir); err != nil {
			return "", err
		}
		held, herr := lockHeld(filepath.Join(dir, runningName))
		if herr != nil {
			return "", fmt.Errorf("down run directory: %w", herr)
		}
		if held {
			return "", platforms.Userf(fmt.Errorf("down run directory %s: its command is still running", dir),
				"a down command for %s is still running on the bot's host (started by an earlier attempt); rollbot does not start a second one", incident)
		}
		if err := os.RemoveAll(dir); err != nil {
			return "", fmt.Errorf("down run directory: remove a stale one: %w", err)
		}
		err = os.Mkdir(dir, 0o700)
	}
	if err != nil {
		return "", fmt.Errorf("down run directory: %w", err)
	}
	return dir, nil
}

// lockHeld reports whether the running lock at path is held: by the
// command or one of its descendants (or by the bot that started it, while
// it waits). A missing file is no lock: the command never started.
func lockHeld(path string) (bool, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close() // releases the lock if we got it
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case err == nil:
			return false, nil
		case errors.Is(err, unix.EWOULDBLOCK):
			return true, nil
		case errors.Is(err, unix.EINTR):
			continue
		default:
			return false, fmt.Errorf("flock %s: %w", path, err)
		}
	}
}

// follower reads an output file that its command is still writing: at
// its end it waits followPoll and reads on, until ended reports the
// command gone; then it reads what was written up to then and ends.
type follower struct {
	f     *os.File
	ended func() bool
	off   int64
	limit int64 // the file's size once ended; -1 before
}

func newFollower(f *os.File, ended func() bool) *follower {
	return &follower{f: f, ended: ended, limit: -1}
}

func (r *follower) Read(p []byte) (int, error) {
	for {
		if r.limit >= 0 {
			if r.off >= r.limit {
				return 0, io.EOF
			}
			p = p[:min(int64(len(p)), r.limit-r.off)]
		}
		n, err := r.f.Read(p)
		r.off += int64(n)
		switch {
		case n > 0:
			return n, nil
		case err != nil && !errors.Is(err, io.EOF):
			return 0, err
		case r.limit >= 0:
			return 0, io.EOF // the file shrank: nothing more to read
		}
		// Checked before the size is read: everything the command wrote
		// before it ended is in the file then.
		if r.ended() {
			fi, err := r.f.Stat()
			if err != nil {
				return 0, err
			}
			r.limit = fi.Size()
			continue
		}
		time.Sleep(followPoll)
	}
}

// ErrNoDownRun: the incident has no down command run directory on this
// host (its command ran on another host, or never started).
var ErrNoDownRun = errors.New("no down command run on this host")

// DownRun is a down command that RunDown started for an incident in a
// process that has stopped (a replica killed with kill -9), found on the
// same host by its run directory.
type DownRun struct {
	incident string
	dir      string
}

// OpenDownRun finds incident's down command run directory on this host;
// ErrNoDownRun when there is none.
func OpenDownRun(incident string) (*DownRun, error) {
	dir, err := runDirPath(incident, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoDownRun
	}
	if err != nil {
		return nil, err
	}
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoDownRun
	}
	if err := checkOwnDir(dir); err != nil {
		return nil, err
	}
	return &DownRun{incident: incident, dir: dir}, nil
}

// Follow relays the command's output from its beginning into out, as
// RunDown does (line by line, secret values of cfg redacted, lines cut),
// until the command and its descendants have all exited, and removes the
// run directory. It never starts the command. A nil error says the
// command has ended, not how: its exit status was lost with the process
// that started it, so the caller decides from the migration table.
//
// When the command still runs cfg.Timeout after the call, its process
// group is stopped (SIGTERM, SIGKILL after a grace) and the error is like
// RunDown's timeout. When ctx ends first, Follow returns ctx.Err() and
// leaves the command running and its run directory in place for the next
// replica to follow.
func (r *DownRun) Follow(ctx context.Context, cfg DownConfig, out io.Writer) error {
	name := "(unknown)"
	if len(cfg.Command) > 0 {
		name = cfg.Command[0]
	}
	_, secrets, err := commandEnv(cfg, nil)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(r.dir, outputName), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		f, err = os.Open(os.DevNull) // the bot stopped before it created the file
	}
	if err != nil {
		return fmt.Errorf("follow down %s: %w", name, err)
	}
	defer f.Close()

	running := filepath.Join(r.dir, runningName)
	limit := cfg.timeout()
	deadline := time.Now().Add(limit)
	var (
		stopped   bool  // the timeout stopped the group
		stopErr   error // why it could not be
		termAt    time.Time
		killed    bool
		lockErr   error
		cancelled bool
	)
	ended := func() bool {
		if ctx.Err() != nil {
			cancelled = true
			return true
		}
		held, err := lockHeld(running)
		if err != nil {
			lockErr = err
			return true
		}
		if !held {
			return true
		}
		now := time.Now()
		switch {
		case now.Before(deadline):
			return false
		case termAt.IsZero():
			termAt, stopped = now, true
			if stopErr = r.signal(syscall.SIGTERM); stopErr != nil {
				return true
			}
			return false
		case !killed && now.Sub(termAt) >= stopGrace:
			killed = true
			if stopErr = r.signal(syscall.SIGKILL); stopErr != nil {
				return true
			}
			return false
		case killed && now.Sub(termAt) >= stopGrace+5*time.Second:
			// Something that escaped the group holds the lock; what
			// rollbot started is gone.
			return true
		}
		return false
	}
	copyErr := copyLines(out, newFollower(f, ended), secrets)
	switch {
	case cancelled:
		return fmt.Errorf("follow down %s: %w", name, ctx.Err())
	case lockErr != nil:
		return fmt.Errorf("follow down %s: %w", name, lockErr)
	case stopErr != nil:
		return platforms.Userf(fmt.Errorf("follow down %s: stop after %s: %w", name, limit, stopErr),
			"the down command %s started by the replica that stopped did not finish within %s after the takeover, and rollbot could not stop it: stop it by hand on the bot's host, then check the migration table before anything else", name, limit)
	}
	if err := os.RemoveAll(r.dir); err != nil {
		return fmt.Errorf("follow down %s: remove its run directory: %w", name, err)
	}
	switch {
	case stopped:
		return platforms.Userf(fmt.Errorf("follow down %s: timed out after %s: %w", name, limit, context.DeadlineExceeded),
			"the down command %s started by the replica that stopped did not finish within %s after the takeover and was stopped: check the migration table before anything else", name, limit)
	case copyErr != nil:
		return fmt.Errorf("follow down %s: write output: %w", name, copyErr)
	}
	return nil
}

// signal sends sig to the command's process group, named by the pid file.
func (r *DownRun) signal(sig syscall.Signal) error {
	b, err := os.ReadFile(filepath.Join(r.dir, pidName))
	if err != nil {
		return fmt.Errorf("read the command's pid: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return fmt.Errorf("pid file holds %q", b)
	}
	if err := syscall.Kill(-pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal process group %d: %w", pid, err)
	}
	return nil
}
