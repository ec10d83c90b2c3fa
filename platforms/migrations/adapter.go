package migrations

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// Adapter is one service's database: a read-only pool plus its config.
type Adapter struct {
	cfg Config
	db  *sql.DB
	log *slog.Logger
}

// New validates cfg and opens the read-only connection (Open).
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Adapter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("database config: %w", err)
	}
	db, err := Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &Adapter{cfg: cfg, db: db, log: log}, nil
}

// Close closes the pool.
func (a *Adapter) Close() error { return a.db.Close() }

// Target names the database for messages, without the DSN.
func (a *Adapter) Target() string {
	return fmt.Sprintf("%s database ($%s, tool %s)", a.cfg.Driver, a.cfg.DSNEnv, a.cfg.tool())
}

// Detect is Detect on the adapter's pool.
func (a *Adapter) Detect(ctx context.Context, since time.Time, knownAtLastGood []string) (Report, error) {
	rep, err := Detect(ctx, a.db, a.cfg, since, knownAtLastGood)
	if err != nil {
		return Report{}, err
	}
	d := rep.Decide()
	a.log.InfoContext(ctx, "migrations detected", "op", "db-detect", "tool", rep.Tool, "current", rep.Current,
		"ran", len(rep.Ran), "dirty", rep.Dirty, "action", string(d.Action))
	return rep, nil
}

// AppliedVersions is AppliedVersions on the adapter's pool.
func (a *Adapter) AppliedVersions(ctx context.Context) (string, []string, error) {
	return AppliedVersions(ctx, a.db, a.cfg)
}

// Verify is Verify on the adapter's pool.
func (a *Adapter) Verify(ctx context.Context, wantCurrent string) error {
	return Verify(ctx, a.db, a.cfg, wantCurrent)
}

// RunDown runs the configured kind: command down command for incident
// (RunDown).
func (a *Adapter) RunDown(ctx context.Context, incident string, rep Report, out io.Writer) error {
	if err := a.cfg.Down.Validate(); err != nil {
		return fmt.Errorf("database down config: %w", err)
	}
	a.log.InfoContext(ctx, "down command starting", "op", "db-down", "incident", incident, "command", a.cfg.Down.Command[0], "steps", rep.Steps, "target", rep.Target)
	return RunDown(ctx, a.cfg.Down, incident, rep.DownVars(), out)
}
