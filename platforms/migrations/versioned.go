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
	"strconv"
	"strings"
)

// Rails and golang-migrate store versions without times: what ran since
// the bad deploy is what was not there at the last good one.

func (r *reader) railsVersions(ctx context.Context) ([]string, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT version FROM `+r.from())
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", r.table, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("read %s: %w", r.table, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", r.table, err)
	}
	slices.SortFunc(out, compareVersions)
	return out, nil
}

const noRecord = "rollbot has no record of the versions applied at the last good deploy, and %s records no times"

func (r *reader) rails(ctx context.Context, known []string) (Report, error) {
	vs, err := r.railsVersions(ctx)
	if err != nil {
		return Report{}, err
	}
	var rep Report
	if len(vs) > 0 {
		rep.Current = vs[len(vs)-1]
	}
	if len(known) == 0 {
		rep.Uncertain = fmt.Sprintf(noRecord, "Rails")
		return rep, nil
	}
	files := r.filesByVersion(`^([0-9]+)_(\w+)\.rb$`)
	for _, v := range vs {
		if slices.Contains(known, v) {
			rep.Target = v
			continue
		}
		m := Migration{ID: v}
		r.railsSource(&m, files[canonicalVersion(v)])
		rep.Ran = append(rep.Ran, m)
	}
	var gone []string
	for _, k := range known {
		if !slices.Contains(vs, k) {
			gone = append(gone, k)
		}
	}
	if len(gone) > 0 {
		rep.Notes = append(rep.Notes, "applied at the last good deploy but no longer: "+strings.Join(gone, ", "))
	}
	rep.ByHand = railsByHand(rep, r.cfg.MigrationsDir)
	return rep, nil
}

// railsByHand says why `rails db:rollback STEP=n` must not be run for rep,
// or "". Rails rolls back the n newest versions in db/migrate, whenever
// they were applied: a version the bad release applied that is older than
// one applied at the last good deploy (a branch merged late) is not among
// them, and STEP=n would undo the good release's migration instead. And
// without db/migrate Rails cannot roll anything back.
func railsByHand(rep Report, dir string) string {
	if len(rep.Ran) == 0 {
		return ""
	}
	if dir != "" {
		if _, err := os.ReadDir(dir); err != nil {
			what := "cannot be read"
			if errors.Is(err, fs.ErrNotExist) {
				what = "does not exist"
			}
			return fmt.Sprintf("migrations ran (%s), but migrations_dir %s %s on the bot's host, so rollbot cannot tell whether they can be undone and does not run the down command: check migrations_dir (the release's db/migrate) in the config, or roll the database back by hand, then approve",
				rep.ranIDs(), dir, what)
		}
	}
	var early []string
	for _, m := range rep.Ran {
		if compareVersions(m.ID, rep.Target) < 0 {
			early = append(early, m.ID)
		}
	}
	if len(early) == 0 {
		return ""
	}
	var downs []string // newest first, as a rollback goes
	for i := len(rep.Ran) - 1; i >= 0; i-- {
		downs = append(downs, "`bin/rails db:migrate:down VERSION="+rep.Ran[i].ID+"`")
	}
	return fmt.Sprintf("Rails migration(s) %s ran after the last good deploy but are older than %s, which was applied before it: `rails db:rollback STEP=%d` rolls back the newest versions and would undo the last good release's %s instead. Roll back by hand (%s), then approve",
		strings.Join(early, ", "), rep.Target, len(rep.Ran), rep.Target, strings.Join(downs, ", "))
}

func (r *reader) railsSource(m *Migration, path string) {
	if path == "" {
		if r.cfg.MigrationsDir == "" {
			m.ReversibleWhy = "reverse unknown: no migrations_dir configured (db/migrate)"
		} else {
			m.ReversibleWhy = fmt.Sprintf("reverse unknown: no %s_*.rb in %s", m.ID, r.cfg.MigrationsDir)
		}
		r.assume(m)
		return
	}
	b, err := os.ReadFile(path)
	if err != nil {
		m.ReversibleWhy = "reverse unknown: " + err.Error()
		r.assume(m)
		return
	}
	s := scanRails(string(b))
	base := filepath.Base(path)
	m.SourceRead, m.Source, m.Script = true, path, base
	m.Description = strings.ReplaceAll(strings.TrimSuffix(strings.TrimPrefix(base, m.ID+"_"), ".rb"), "_", " ")
	if len(s.destructive) > 0 {
		m.Destructive, m.DestructiveWhy = true, strings.Join(s.destructive, "; ")
	}
	m.DownLosesData = strings.Join(s.downLoses, "; ")
	if s.irreversible != "" {
		m.ReversibleWhy = s.irreversible
		return
	}
	m.Reversible, m.ReversibleWhy = true, s.how+" in "+base
}

// gmVersion reads golang-migrate's single row; ok is false when the table
// is empty (nothing applied).
func (r *reader) gmVersion(ctx context.Context) (v string, dirty, ok bool, err error) {
	var n int64
	err = r.db.QueryRowContext(ctx, `SELECT version, dirty FROM `+r.from()+` ORDER BY version DESC LIMIT 1`).Scan(&n, &dirty)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, false, nil
	}
	if err != nil {
		return "", false, false, fmt.Errorf("read %s: %w", r.table, err)
	}
	return strconv.FormatInt(n, 10), dirty, true, nil
}

func (r *reader) golangMigrate(ctx context.Context, known []string) (Report, error) {
	cur, dirty, _, err := r.gmVersion(ctx)
	if err != nil {
		return Report{}, err
	}
	rep := Report{Current: cur, Dirty: dirty}
	if dirty {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%s is dirty at version %s: that migration failed midway; fix the schema by hand, then migrate force", r.table, cur))
	}
	if len(known) == 0 {
		rep.Uncertain = fmt.Sprintf(noRecord, "golang-migrate")
		return rep, nil
	}
	var last uint64
	for _, k := range known {
		n, err := strconv.ParseUint(k, 10, 64)
		if err != nil {
			return Report{}, fmt.Errorf("version at last good deploy %q: not a golang-migrate version", k)
		}
		last = max(last, n)
	}
	var now uint64
	if cur != "" {
		now, _ = strconv.ParseUint(cur, 10, 64)
	}
	if last > 0 {
		rep.Target = strconv.FormatUint(last, 10)
	}
	switch {
	case now == last:
		return rep, nil
	case now < last:
		rep.Notes = append(rep.Notes, fmt.Sprintf("the version (%s) is older than at the last good deploy (%d): already rolled back?", orNone(cur), last))
		rep.Target = rep.Current
		return rep, nil
	}
	if r.cfg.MigrationsDir == "" {
		m := Migration{ID: cur, Failed: dirty,
			Description:   fmt.Sprintf("versions after %d up to %s", last, cur),
			ReversibleWhy: "down files unknown: no migrations_dir configured"}
		r.assume(&m)
		rep.Ran = append(rep.Ran, m)
		return rep, nil
	}
	ups := r.filesByVersion(`^([0-9]+)_(.*)\.up\.[a-z]+$`)
	downs := r.filesByVersion(`^([0-9]+)_(.*)\.down\.[a-z]+$`)
	var vs []uint64
	for v := range ups {
		n, _ := strconv.ParseUint(v, 10, 64)
		if n > last && n <= now {
			vs = append(vs, n)
		}
	}
	slices.Sort(vs)
	if len(vs) == 0 || vs[len(vs)-1] != now {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%s has no up file for the current version %s", r.cfg.MigrationsDir, cur))
	}
	if len(vs) == 0 {
		// The table moved on, but the files are not there (a wrong or
		// missing migrations_dir): never report "nothing ran".
		rep.Uncertain = fmt.Sprintf("golang-migrate is at version %s (after %d at the last good deploy), but migrations_dir %s has no up file for it: check migrations_dir in the config", cur, last, r.cfg.MigrationsDir)
		return rep, nil
	}
	for _, n := range vs {
		v := strconv.FormatUint(n, 10)
		up := ups[v]
		m := Migration{ID: v, Script: filepath.Base(up), Failed: dirty && v == cur}
		m.Description = gmDescription(filepath.Base(up))
		r.readSQL(&m, up)
		down := downs[v]
		switch {
		case m.Failed:
			m.ReversibleWhy = "the migration failed midway (dirty): migrate down does not run; fix by hand, then migrate force"
		case down == "":
			m.ReversibleWhy = fmt.Sprintf("no down file %s_*.down.sql in %s", v, r.cfg.MigrationsDir)
		default:
			b, err := os.ReadFile(down)
			switch {
			case err != nil:
				m.ReversibleWhy = "down file unreadable: " + err.Error()
			case strings.TrimSpace(stripSQLComments(string(b))) == "":
				m.ReversibleWhy = "down file " + filepath.Base(down) + " is empty: it undoes nothing"
			default:
				m.Reversible, m.ReversibleWhy = true, "down migration "+filepath.Base(down)
				m.DownLosesData = strings.Join(ScanSQL(string(b)), "; ")
			}
		}
		rep.Ran = append(rep.Ran, m)
	}
	return rep, nil
}

func gmDescription(base string) string {
	_, rest, _ := strings.Cut(base, "_")
	rest = strings.TrimSuffix(rest, filepath.Ext(rest))
	rest = strings.TrimSuffix(rest, ".up")
	return strings.ReplaceAll(rest, "_", " ")
}

func stripSQLComments(s string) string {
	clean, _ := maskSQL(s)
	return clean
}

// filesByVersion maps canonical version -> path for files in
// MigrationsDir (not recursive) whose name matches pattern (group 1 is the
// version).
func (r *reader) filesByVersion(pattern string) map[string]string {
	out := map[string]string{}
	if r.cfg.MigrationsDir == "" {
		return out
	}
	re := regexp.MustCompile(pattern)
	entries, err := os.ReadDir(r.cfg.MigrationsDir)
	if err != nil {
		r.notes = append(r.notes, fmt.Sprintf("cannot read migrations_dir: %v", err))
		return out
	}
	for _, e := range entries {
		if e.Type()&fs.ModeType != 0 {
			continue
		}
		if m := re.FindStringSubmatch(e.Name()); m != nil {
			out[canonicalVersion(m[1])] = filepath.Join(r.cfg.MigrationsDir, e.Name())
		}
	}
	return out
}
