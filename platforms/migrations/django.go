package migrations

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"rollbot/platforms"
)

type djangoRow struct {
	pk        int64
	app, name string
	applied   time.Time
}

func (d djangoRow) id() string { return d.app + "." + d.name }

func (r *reader) djangoRows(ctx context.Context) ([]djangoRow, error) {
	q := `SELECT id, app, name, applied FROM ` + r.from() + ` ORDER BY id`
	rows, err := r.db.QueryContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", r.table, err)
	}
	defer rows.Close()
	var out []djangoRow
	for rows.Next() {
		var d djangoRow
		if err := rows.Scan(&d.pk, &d.app, &d.name, &d.applied); err != nil {
			return nil, fmt.Errorf("read %s: %w", r.table, err)
		}
		d.applied = r.fixTime("applied", d.applied)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", r.table, err)
	}
	return out, nil
}

func (r *reader) django(ctx context.Context, since time.Time) (Report, error) {
	rows, err := r.djangoRows(ctx)
	if err != nil {
		return Report{}, err
	}
	var rep Report
	if len(rows) > 0 {
		rep.Current = rows[len(rows)-1].id()
	}
	if since.IsZero() {
		rep.Uncertain = "the bad deploy's start time is not known"
		return rep, nil
	}
	before := map[string]string{} // app -> newest migration applied before the deploy
	var apps []string
	for _, d := range rows {
		if !r.after(d.applied, since) {
			before[d.app] = d.name
			continue
		}
		if !slices.Contains(apps, d.app) {
			apps = append(apps, d.app)
		}
		m := Migration{ID: d.id(), Description: strings.ReplaceAll(d.name, "_", " "), AppliedAt: d.applied}
		r.djangoSource(&m, d)
		rep.Ran = append(rep.Ran, m)
	}
	slices.Sort(apps)
	var targets []string
	for _, app := range apps {
		t := before[app]
		if t == "" {
			t = "zero"
		}
		targets = append(targets, app+"."+t)
	}
	rep.Target = strings.Join(targets, ",")
	return rep, nil
}

func (r *reader) djangoSource(m *Migration, d djangoRow) {
	if r.cfg.MigrationsDir == "" {
		m.ReversibleWhy = "reverse unknown: no migrations_dir configured to read " + d.app + "/migrations/" + d.name + ".py"
		r.assume(m)
		return
	}
	path := findFile(r.cfg.MigrationsDir, d.app+"/migrations/"+d.name+".py")
	if path == "" {
		m.ReversibleWhy = fmt.Sprintf("reverse unknown: %s/migrations/%s.py not found in %s", d.app, d.name, r.cfg.MigrationsDir)
		r.assume(m)
		return
	}
	b, err := os.ReadFile(path)
	if err != nil {
		m.ReversibleWhy = "reverse unknown: " + err.Error()
		r.assume(m)
		return
	}
	s := scanDjango(string(b))
	m.SourceRead, m.Source, m.Script = true, path, filepath.Base(path)
	if len(s.destructive) > 0 {
		m.Destructive, m.DestructiveWhy = true, strings.Join(s.destructive, "; ")
	}
	m.DownLosesData = strings.Join(s.downLoses, "; ")
	if len(s.irreversible) > 0 {
		m.ReversibleWhy = strings.Join(slices.Compact(s.irreversible), "; ")
		return
	}
	m.Reversible, m.ReversibleWhy = true, "every operation in "+filepath.Base(path)+" has a reverse"
}

// assume applies assume_reversible when the source could not be read.
func (r *reader) assume(m *Migration) {
	if r.cfg.AssumeReversible {
		m.Reversible, m.ReversibleWhy = true, "assume_reversible is set for this service"
	}
}

func (r *reader) verifyDjango(ctx context.Context, want string) error {
	rows, err := r.djangoRows(ctx)
	if err != nil {
		return err
	}
	newest := map[string]string{}
	for _, d := range rows {
		newest[d.app] = d.name
	}
	var wrong []string
	for _, w := range strings.Split(want, ",") {
		w = strings.TrimSpace(w)
		if w == "" {
			continue
		}
		app, name, ok := strings.Cut(w, ".")
		if !ok {
			return fmt.Errorf("verify %s: %q is not app.name", r.table, w)
		}
		got := newest[app]
		if got == "" {
			got = "zero"
		}
		if got != name {
			wrong = append(wrong, fmt.Sprintf("%s is at %s, expected %s", app, got, name))
		}
	}
	if len(wrong) > 0 {
		return platforms.Userf(fmt.Errorf("verify %s: %s", r.table, strings.Join(wrong, "; ")),
			"the database did not go back: %s", strings.Join(wrong, "; "))
	}
	return nil
}
