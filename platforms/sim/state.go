package sim

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"rollbot/platforms"
)

// state is everything about the simulated deployment that changes. Without
// a state_file it lives in the Sim; with one, in that JSON file.
type state struct {
	History  []platforms.Revision `json:"history"` // oldest first
	Current  int                  `json:"current"` // index into History
	Ready    int                  `json:"ready"`
	Replicas int                  `json:"replicas"`
	Paused   bool                 `json:"paused"`
	Version  int64                `json:"version"` // bumped on every write: the compare-and-set token
	Spans    []span               `json:"spans"`   // which artifact served when, for the metrics
	Bad      map[string]bool      `json:"bad"`
	Marks    map[string]string    `json:"marks"`
	// Rollout is the rollback in progress, from its template write until
	// its last pod is replaced; it outlives the process that started it.
	Rollout *rollout `json:"rollout,omitempty"`
}

type span struct {
	At       time.Time `json:"at"`
	Bad      bool      `json:"bad"`
	Artifact string    `json:"artifact"`
}

// rollout is the progress of a rollback whose template has been written.
type rollout struct {
	Target    string    `json:"target"` // revision ID
	Artifact  string    `json:"artifact"`
	Replaced  int       `json:"replaced"` // pods replaced so far, the template write counting as the first
	Desired   int       `json:"desired"`
	Token     int64     `json:"token"` // Version right after the template write
	StartedAt time.Time `json:"started_at"`
	PID       int       `json:"pid"` // the process that wrote the template
}

// Write ops, as recorded in the write log.
const (
	OpStop            = "stop"               // the rollout paused
	OpRollback        = "rollback"           // the template write of a Rollback
	OpSetArtifact     = "set_artifact"       // the template write of a SetArtifact
	OpScaleToZero     = "scale_to_zero"      // replicas set to 0
	OpDeploy          = "deploy"             // the template write of a Deploy (drills)
	OpMarkDoNotDeploy = "mark_do_not_deploy" // the do-not-deploy annotation
)

// Write is one line of the write log: one change the simulated platform
// accepted, counted on the platform's side.
type Write struct {
	Time    time.Time `json:"time"`
	PID     int       `json:"pid"` // the process that made it
	Op      string    `json:"op"`
	Detail  string    `json:"detail"`
	Version int64     `json:"version"` // the deployment's version after the write
}

// WritesPath is where the write log of stateFile lives.
func WritesPath(stateFile string) string { return stateFile + ".writes" }

// ReadWrites returns the write log of the deployment kept in stateFile,
// oldest first; none if nothing was written yet.
func ReadWrites(stateFile string) ([]Write, error) {
	b, err := os.ReadFile(WritesPath(stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read simulated write log: %w", err)
	}
	var ws []Write
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		var w Write
		if err := json.Unmarshal(sc.Bytes(), &w); err != nil {
			return nil, fmt.Errorf("read simulated write log %s line %d: %w", WritesPath(stateFile), n, err)
		}
		ws = append(ws, w)
	}
	return ws, sc.Err()
}

// tx is one operation on the state; it collects the writes to log.
type tx struct {
	*state
	writes []Write
}

func (t *tx) wrote(op, detail string) {
	t.writes = append(t.writes, Write{Op: op, Detail: detail, Version: t.Version})
}

// stateFile keeps the state in a JSON file that every process configured
// with the same path shares. Each operation locks the sibling .lock file,
// loads, acts, saves (temp file + rename, so a reader or a killed writer
// never sees half a file) and unlocks.
type stateFile struct {
	path string
}

func (f stateFile) lockPath() string { return f.path + ".lock" }

// rolloutLockPath is held by the process driving a rollout to revision id,
// for as long as it drives it; the kernel drops it when that process dies.
func (f stateFile) rolloutLockPath(id string) string {
	return fmt.Sprintf("%s.rollout-%x.lock", f.path, id)
}

// init writes initial unless the file exists: the first process wins, the
// others load what it wrote.
func (f stateFile) init(initial *state) error {
	lk, _, err := flock(f.lockPath(), true, true)
	if err != nil {
		return err
	}
	defer lk.Close()
	if _, err := os.Stat(f.path); err == nil {
		_, err = f.load()
		return err
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return f.save(initial)
}

// do runs fn on the state under the file lock; when write is set and fn
// succeeds, it saves the state and then appends fn's writes to the log
// (saved first: the log lists writes that took effect).
func (f stateFile) do(write bool, fn func(*tx) error) error {
	lk, _, err := flock(f.lockPath(), write, true)
	if err != nil {
		return err
	}
	defer lk.Close()
	st, err := f.load()
	if err != nil {
		return err
	}
	t := &tx{state: st}
	if err := fn(t); err != nil || !write {
		return err
	}
	if err := f.save(st); err != nil {
		return err
	}
	return f.log(t.writes)
}

func (f stateFile) load() (*state, error) {
	b, err := os.ReadFile(f.path)
	if err != nil {
		return nil, fmt.Errorf("load simulated state: %w", err)
	}
	st := &state{}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("load simulated state %s: %w", f.path, err)
	}
	if len(st.History) == 0 || st.Current < 0 || st.Current >= len(st.History) {
		return nil, fmt.Errorf("load simulated state %s: no current revision", f.path)
	}
	if st.Bad == nil {
		st.Bad = map[string]bool{}
	}
	if st.Marks == nil {
		st.Marks = map[string]string{}
	}
	return st, nil
}

func (f stateFile) save(st *state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("save simulated state: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(f.path), filepath.Base(f.path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("save simulated state: %w", err)
	}
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), f.path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("save simulated state: %w", err)
	}
	return nil
}

func (f stateFile) log(ws []Write) error {
	if len(ws) == 0 {
		return nil
	}
	var buf bytes.Buffer
	now, pid := time.Now(), os.Getpid()
	for _, w := range ws {
		w.Time, w.PID = now, pid
		b, err := json.Marshal(w)
		if err != nil {
			return fmt.Errorf("log simulated write: %w", err)
		}
		buf.Write(append(b, '\n'))
	}
	lf, err := os.OpenFile(WritesPath(f.path), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("log simulated write: %w", err)
	}
	_, err = lf.Write(buf.Bytes())
	if cerr := lf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("log simulated write: %w", err)
	}
	return nil
}
