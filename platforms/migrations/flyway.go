package migrations

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"rollbot/platforms/compat"
)

type flywayRow struct {
	rank        int64
	version     string // "" for repeatable migrations
	description string
	typ         string
	script      string
	installedOn time.Time
	success     bool
}

func (r *reader) flywayRows(ctx context.Context) ([]flywayRow, error) {
	q := `SELECT installed_rank, version, description, type, script, installed_on, success FROM ` + r.from() + ` ORDER BY installed_rank`
	rows, err := r.db.QueryContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", r.table, err)
	}
	defer rows.Close()
	var out []flywayRow
	for rows.Next() {
		var f flywayRow
		var v sql.NullString
		if err := rows.Scan(&f.rank, &v, &f.description, &f.typ, &f.script, &f.installedOn, &f.success); err != nil {
			return nil, fmt.Errorf("read %s: %w", r.table, err)
		}
		f.version = v.String
		f.installedOn = r.fixTime("installed_on", f.installedOn)
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", r.table, err)
	}
	return out, nil
}

// fwState is the schema state the history adds up to.
type fwState struct {
	applied map[string]flywayRow // version -> the row that applied it
	undone  map[string]bool      // versions with an UNDO_* row: an undo script exists
	failed  *flywayRow
	current string
}

func (s fwState) appliedVersions() []string {
	vs := make([]string, 0, len(s.applied))
	for v := range s.applied {
		vs = append(vs, v)
	}
	slices.SortFunc(vs, compareVersions)
	return vs
}

func isUndo(typ string) bool { return strings.HasPrefix(typ, "UNDO_") }

// fwBookkeeping are history rows that are not migrations.
func fwBookkeeping(typ string) bool {
	return typ == "SCHEMA" || typ == "BASELINE" || typ == "DELETE" || isUndo(typ)
}

func flywayState(rows []flywayRow) fwState {
	s := fwState{applied: map[string]flywayRow{}, undone: map[string]bool{}}
	for _, row := range rows {
		switch {
		case row.typ == "SCHEMA":
		case isUndo(row.typ):
			s.undone[row.version] = true
			if row.success {
				delete(s.applied, row.version)
			}
		case row.typ == "DELETE": // flyway repair removed a missing migration
			delete(s.applied, row.version)
		case row.version == "": // repeatable
			if !row.success {
				s.failed = &row
			}
		case row.success:
			s.applied[row.version] = row
			if s.failed != nil && s.failed.version == row.version {
				s.failed = nil
			}
		default:
			s.failed = &row
		}
	}
	for v := range s.applied {
		if s.current == "" || compareVersions(v, s.current) > 0 {
			s.current = v
		}
	}
	return s
}

func (r *reader) flyway(ctx context.Context, since time.Time) (Report, error) {
	rows, err := r.flywayRows(ctx)
	if err != nil {
		return Report{}, err
	}
	st := flywayState(rows)
	rep := Report{Current: st.current}
	if st.failed != nil {
		rep.Dirty = true
		rep.Notes = append(rep.Notes, fmt.Sprintf("migration %s (%s) failed at %s; the schema may be half changed: fix it, then flyway repair",
			orNone(st.failed.version), st.failed.script, st.failed.installedOn.Format(time.RFC3339)))
	}
	if since.IsZero() {
		rep.Uncertain = "the bad deploy's start time is not known"
		return rep, nil
	}
	undo := r.flywayUndoFiles()
	ranVersions := map[string]bool{}
	for _, row := range rows {
		if fwBookkeeping(row.typ) || !r.after(row.installedOn, since) {
			continue
		}
		stillApplied := row.version != "" && st.applied[row.version].rank == row.rank
		failed := st.failed != nil && st.failed.rank == row.rank
		if row.version != "" && !stillApplied && !failed {
			continue // applied and undone since
		}
		m := Migration{
			ID: row.version, Description: row.description, Script: row.script,
			AppliedAt: row.installedOn, Failed: failed, Repeatable: row.version == "",
		}
		if row.version == "" {
			m.ID = row.script
		}
		switch {
		case failed:
			m.ReversibleWhy = "the migration failed: flyway undo does not apply; repair first"
		case row.version == "":
			m.ReversibleWhy = "repeatable migration: re-applied when changed, no undo"
		case undo[canonicalVersion(row.version)] != "":
			m.Reversible, m.ReversibleWhy = true, "undo script "+filepath.Base(undo[canonicalVersion(row.version)])
		case st.undone[row.version]:
			m.Reversible, m.ReversibleWhy = true, fmt.Sprintf("%s has an undo row for version %s (the undo script exists)", r.table, row.version)
		case r.cfg.AssumeReversible:
			m.Reversible, m.ReversibleWhy = true, "assume_reversible is set for this service"
		case r.undoDir() == "":
			m.ReversibleWhy = "no undo script known: no undo_dir or migrations_dir configured and no undo row in " + r.table.String()
		default:
			m.ReversibleWhy = fmt.Sprintf("no undo script U%s__*.sql in %s", strings.ReplaceAll(row.version, ".", "_"), r.undoDir())
		}
		if p := findFile(r.cfg.MigrationsDir, row.script); p != "" {
			r.readSQL(&m, p)
		}
		if p := undo[canonicalVersion(row.version)]; p != "" {
			if b, err := os.ReadFile(p); err == nil {
				m.DownLosesData = strings.Join(ScanSQL(string(b)), "; ")
			}
		}
		if row.version != "" && !failed {
			ranVersions[row.version] = true
		}
		rep.Ran = append(rep.Ran, m)
	}
	for _, v := range st.appliedVersions() {
		if !ranVersions[v] {
			rep.Target = v
		}
	}
	return rep, nil
}

func (r *reader) undoDir() string {
	if r.cfg.UndoDir != "" {
		return r.cfg.UndoDir
	}
	return r.cfg.MigrationsDir
}

var fwUndoRe = regexp.MustCompile(`^U([0-9][0-9._]*)__.*\.sql$`)

// flywayUndoFiles maps canonical version -> undo script path.
func (r *reader) flywayUndoFiles() map[string]string {
	out := map[string]string{}
	dir := r.undoDir()
	if dir == "" {
		return out
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if m := fwUndoRe.FindStringSubmatch(d.Name()); m != nil {
			out[canonicalVersion(strings.ReplaceAll(m[1], "_", "."))] = p
		}
		return nil
	})
	return out
}

func canonicalVersion(v string) string {
	parts := strings.FieldsFunc(v, isVersionSep)
	for i, p := range parts {
		if isDigits(p) {
			p = strings.TrimLeft(p, "0")
			if p == "" {
				p = "0"
			}
		}
		parts[i] = p
	}
	return strings.Join(parts, ".")
}

// readSQL reads a migration's SQL and fills the destructive fields.
func (r *reader) readSQL(m *Migration, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		r.notes = append(r.notes, fmt.Sprintf("cannot read %s: %v", path, err))
		return
	}
	m.SourceRead, m.Source = true, path
	if f := ScanSQL(string(b)); len(f) > 0 {
		m.Destructive, m.DestructiveWhy = true, strings.Join(f, "; ")
	}
	m.Compat, m.CompatWhy = classifySQL(r.cfg.Driver, filepath.Base(path), string(b))
}

// classifySQL asks package compat whether the previous release runs on
// the schema src leaves.
func classifySQL(driver, file, src string) (kind, why string) {
	d := compat.Postgres
	if driver == DriverMySQL {
		d = compat.MySQL
	}
	fs, err := compat.Classify(d, src)
	if err != nil {
		var pe *compat.ParseError
		if errors.As(err, &pe) {
			return string(compat.Unknown), fmt.Sprintf("%s cannot be read as %s SQL (%s)", file, d, pe.Msg)
		}
		return string(compat.Unknown), fmt.Sprintf("%s could not be classified", file)
	}
	k, decisive := compat.Verdict(fs)
	return string(k), compat.Names(decisive)
}

// findFile resolves a recorded script name against dir: as a relative path,
// then by the longest path suffix, then by base name.
func findFile(dir, name string) string {
	if dir == "" || name == "" {
		return ""
	}
	name = strings.TrimPrefix(name, "classpath:")
	name = strings.TrimLeft(filepath.ToSlash(name), "/")
	if p := filepath.Join(dir, filepath.FromSlash(name)); fileExists(p) {
		return p
	}
	var best string
	bestLen := 0
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != filepath.Base(name) {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		n := commonSuffix(filepath.ToSlash(rel), name)
		if n > bestLen {
			best, bestLen = p, n
		}
		return nil
	})
	return best
}

func commonSuffix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[len(a)-1-n] == b[len(b)-1-n] {
		n++
	}
	return n
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}
