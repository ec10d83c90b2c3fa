package migrations

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // time_zone names resolve on minimal hosts and images too

	"rollbot/platforms"
)

// Detect reads the migration table over db (open it with Open) and reports
// what ran since the bad deploy started. since is when the bad deploy
// started (zero when unknown); knownAtLastGood is rollbot's record of the
// versions applied at the last good deploy (AppliedVersions), which the
// tools that store no time (Rails, golang-migrate) are compared against.
// Detect only reads.
func Detect(ctx context.Context, db *sql.DB, cfg Config, since time.Time, knownAtLastGood []string) (Report, error) {
	r, err := newReader(ctx, db, cfg)
	if err != nil {
		return Report{}, err
	}
	var rep Report
	switch r.tool {
	case ToolFlyway:
		rep, err = r.flyway(ctx, since)
	case ToolLiquibase:
		rep, err = r.liquibase(ctx, since)
	case ToolDjango:
		rep, err = r.django(ctx, since)
	case ToolRails:
		rep, err = r.rails(ctx, knownAtLastGood)
	case ToolGolangMigrate:
		rep, err = r.golangMigrate(ctx, knownAtLastGood)
	default:
		err = fmt.Errorf("tool %q: unknown", r.tool)
	}
	if err != nil {
		return Report{}, err
	}
	rep.Tool, rep.Table = r.tool, r.table.String()
	for _, m := range rep.Ran {
		if !m.Failed && !m.Repeatable {
			rep.Steps++
		}
	}
	rep.Notes = append(rep.Notes, r.notes...)
	return rep, nil
}

// AppliedVersions lists what is applied now, in the form Detect takes as
// knownAtLastGood: record it when a deploy is confirmed good.
// golang-migrate has a single version; the others list every applied one.
func AppliedVersions(ctx context.Context, db *sql.DB, cfg Config) (tool string, versions []string, err error) {
	r, err := newReader(ctx, db, cfg)
	if err != nil {
		return "", nil, err
	}
	versions, err = r.applied(ctx)
	return r.tool, versions, err
}

// Verify re-reads the migration table after a down run and returns an error
// unless the current version is wantCurrent (Report.Target) and the table
// is clean. For Django wantCurrent is "app.name" (or "app.zero") per app,
// comma separated; each app's newest applied migration must match.
func Verify(ctx context.Context, db *sql.DB, cfg Config, wantCurrent string) error {
	r, err := newReader(ctx, db, cfg)
	if err != nil {
		return err
	}
	cur, dirty, err := r.current(ctx)
	if err != nil {
		return err
	}
	if dirty {
		return platforms.Userf(fmt.Errorf("verify %s: dirty at %s", r.table, orNone(cur)),
			"the down migration left %s dirty at %s: fix the schema by hand", r.table, orNone(cur))
	}
	if r.tool == ToolDjango {
		return r.verifyDjango(ctx, wantCurrent)
	}
	if cur != wantCurrent {
		return platforms.Userf(fmt.Errorf("verify %s: current version %s, want %s", r.table, orNone(cur), orNone(wantCurrent)),
			"the database did not go back: %s shows %s, expected %s", r.table, orNone(cur), orNone(wantCurrent))
	}
	return nil
}

// dialect is the little that differs between PostgreSQL and MySQL.
type dialect string

func (d dialect) ph(i int) string {
	if d == DriverPostgres {
		return "$" + strconv.Itoa(i)
	}
	return "?"
}

func (d dialect) quote(id string) string {
	if d == DriverPostgres {
		return `"` + strings.ReplaceAll(id, `"`, `""`) + `"`
	}
	return "`" + strings.ReplaceAll(id, "`", "``") + "`"
}

type tableRef struct{ schema, name string }

func (t tableRef) String() string { return t.name }

func (d dialect) qualified(t tableRef) string { return d.quote(t.schema) + "." + d.quote(t.name) }

// reader holds what one Detect/Verify learned about the table.
type reader struct {
	db    *sql.DB
	d     dialect
	cfg   Config
	tool  string
	table tableRef
	cols  map[string]string // lower-case column name -> data type
	naive *time.Location    // zone of timestamps stored without one
	notes []string
}

var defaultTables = map[string]string{
	ToolFlyway:        "flyway_schema_history",
	ToolLiquibase:     "databasechangelog",
	ToolDjango:        "django_migrations",
	ToolRails:         "schema_migrations",
	ToolGolangMigrate: "schema_migrations",
}

func newReader(ctx context.Context, db *sql.DB, cfg Config) (*reader, error) {
	if cfg.Driver != DriverPostgres && cfg.Driver != DriverMySQL {
		return nil, fmt.Errorf("driver %q: not postgres or mysql", cfg.Driver)
	}
	r := &reader{db: db, d: dialect(cfg.Driver), cfg: cfg, tool: cfg.tool()}
	if r.tool == ToolAuto {
		if err := r.autodetect(ctx); err != nil {
			return nil, err
		}
	} else {
		name := cfg.Table
		if name == "" {
			name = defaultTables[r.tool]
		}
		t, ok, err := r.findTable(ctx, name)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, platforms.Userf(fmt.Errorf("find %s table %s: %w", r.tool, name, platforms.ErrNotFound),
				"the %s table %s does not exist in this database (or the bot's role cannot see it)", r.tool, name)
		}
		r.table = t
	}
	cols, err := r.columns(ctx, r.table)
	if err != nil {
		return nil, err
	}
	r.cols = cols
	if r.tool == ToolRails {
		if _, ok := cols["dirty"]; ok {
			r.notes = append(r.notes, "schema_migrations has a dirty column, which is golang-migrate's, but tool: rails is configured")
		}
	}
	r.naive, err = r.naiveZone(ctx)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// autodetect picks the tool from the tables that exist.
func (r *reader) autodetect(ctx context.Context) error {
	var found []string
	for _, tool := range []string{ToolFlyway, ToolLiquibase, ToolDjango, ToolRails} {
		t, ok, err := r.findTable(ctx, defaultTables[tool])
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if tool == ToolRails {
			cols, err := r.columns(ctx, t)
			if err != nil {
				return err
			}
			if _, dirty := cols["dirty"]; dirty {
				tool = ToolGolangMigrate
			}
		}
		found = append(found, tool)
		r.tool, r.table = tool, t
	}
	switch len(found) {
	case 0:
		return platforms.Userf(fmt.Errorf("detect migration tool: no migration table: %w", platforms.ErrNotFound),
			"no migration table found (looked for flyway_schema_history, databasechangelog, django_migrations, schema_migrations); set tool: and table: in the service's database config")
	case 1:
		return nil
	default:
		return platforms.Userf(fmt.Errorf("detect migration tool: several candidates: %s", strings.Join(found, ", ")),
			"several migration tools' tables exist (%s); set tool: in the service's database config", strings.Join(found, ", "))
	}
}

// findTable looks a table up case-insensitively (Liquibase's table is
// DATABASECHANGELOG on MySQL, databasechangelog on PostgreSQL) in the
// given schema or the connection's current one.
func (r *reader) findTable(ctx context.Context, name string) (tableRef, bool, error) {
	schema, table, qualified := strings.Cut(name, ".")
	if !qualified {
		schema, table = "", name
	}
	cur := "current_schema()"
	if r.d == DriverMySQL {
		cur = "DATABASE()"
	}
	q := fmt.Sprintf(`SELECT table_schema, table_name FROM information_schema.tables
WHERE lower(table_name) = lower(%s) AND table_schema = COALESCE(NULLIF(%s, ''), %s)
ORDER BY CASE WHEN table_name = %s THEN 0 ELSE 1 END`, r.d.ph(1), r.d.ph(2), cur, r.d.ph(3))
	var t tableRef
	err := r.db.QueryRowContext(ctx, q, table, schema, table).Scan(&t.schema, &t.name)
	if errors.Is(err, sql.ErrNoRows) {
		return tableRef{}, false, nil
	}
	if err != nil {
		return tableRef{}, false, fmt.Errorf("look up table %s: %w", name, err)
	}
	return t, true, nil
}

func (r *reader) columns(ctx context.Context, t tableRef) (map[string]string, error) {
	q := fmt.Sprintf(`SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s AND table_name = %s`, r.d.ph(1), r.d.ph(2))
	rows, err := r.db.QueryContext(ctx, q, t.schema, t.name)
	if err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", t.name, err)
	}
	defer rows.Close()
	cols := map[string]string{}
	for rows.Next() {
		var n, typ string
		if err := rows.Scan(&n, &typ); err != nil {
			return nil, fmt.Errorf("read columns of %s: %w", t.name, err)
		}
		cols[strings.ToLower(n)] = strings.ToLower(typ)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", t.name, err)
	}
	return cols, nil
}

// naiveZone is the zone of timestamps stored without one: the configured
// time_zone, UTC for Django (which writes UTC), else the server's zone.
func (r *reader) naiveZone(ctx context.Context) (*time.Location, error) {
	if r.cfg.TimeZone != "" {
		loc, err := time.LoadLocation(r.cfg.TimeZone)
		if err != nil {
			return nil, fmt.Errorf("time_zone %q: %w", r.cfg.TimeZone, err)
		}
		return loc, nil
	}
	if r.tool == ToolDjango || r.tool == ToolRails || r.tool == ToolGolangMigrate {
		return time.UTC, nil
	}
	switch r.d {
	case DriverPostgres:
		var name string
		if err := r.db.QueryRowContext(ctx, `SELECT current_setting('TimeZone')`).Scan(&name); err != nil {
			return nil, fmt.Errorf("read server time zone: %w", err)
		}
		loc, err := time.LoadLocation(name)
		if err != nil {
			r.notes = append(r.notes, fmt.Sprintf("server time zone %q unknown here; times read as UTC (set time_zone)", name))
			return time.UTC, nil
		}
		return loc, nil
	default:
		// The session runs at +00:00 (see Open); the server's own zone is
		// the global one. SYSTEM and named zones resolve through CONVERT_TZ.
		var name string
		var off sql.NullInt64
		err := r.db.QueryRowContext(ctx, `SELECT @@global.time_zone,
 TIMESTAMPDIFF(SECOND, UTC_TIMESTAMP(), CONVERT_TZ(UTC_TIMESTAMP(), '+00:00', @@global.time_zone))`).Scan(&name, &off)
		if err != nil {
			return nil, fmt.Errorf("read server time zone: %w", err)
		}
		if !off.Valid {
			r.notes = append(r.notes, fmt.Sprintf("server time zone %q unknown to the server's zone tables; times read as UTC (set time_zone)", name))
			return time.UTC, nil
		}
		// Round to the minute: the two calls may straddle a second.
		sec := int((time.Duration(off.Int64) * time.Second).Round(time.Minute) / time.Second)
		return time.FixedZone(name, sec), nil
	}
}

// fixTime gives a scanned timestamp its zone. Drivers return values of
// columns without a zone as UTC wall clock; they are in r.naive.
func (r *reader) fixTime(col string, t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	switch r.cols[col] {
	case "timestamp without time zone", "datetime", "timestamp(6) without time zone":
		y, mo, d := t.Date()
		h, mi, s := t.Clock()
		return time.Date(y, mo, d, h, mi, s, t.Nanosecond(), r.naive).UTC()
	}
	return t.UTC()
}

// since reports whether t is inside the window that starts at since.
func (r *reader) after(t, since time.Time) bool {
	return !t.Before(since.Add(-r.cfg.ClockSkew))
}

func (r *reader) from() string { return r.d.qualified(r.table) }

// current reads the current version and the dirty state.
func (r *reader) current(ctx context.Context) (string, bool, error) {
	switch r.tool {
	case ToolFlyway:
		rows, err := r.flywayRows(ctx)
		if err != nil {
			return "", false, err
		}
		st := flywayState(rows)
		return st.current, st.failed != nil, nil
	case ToolLiquibase:
		rows, err := r.liquibaseRows(ctx)
		if err != nil {
			return "", false, err
		}
		if len(rows) == 0 {
			return "", false, nil
		}
		return rows[len(rows)-1].id, false, nil
	case ToolDjango:
		rows, err := r.djangoRows(ctx)
		if err != nil {
			return "", false, err
		}
		if len(rows) == 0 {
			return "", false, nil
		}
		return rows[len(rows)-1].id(), false, nil
	case ToolRails:
		vs, err := r.railsVersions(ctx)
		if err != nil {
			return "", false, err
		}
		if len(vs) == 0 {
			return "", false, nil
		}
		return vs[len(vs)-1], false, nil
	case ToolGolangMigrate:
		v, dirty, ok, err := r.gmVersion(ctx)
		if err != nil || !ok {
			return "", false, err
		}
		return v, dirty, nil
	}
	return "", false, fmt.Errorf("tool %q: unknown", r.tool)
}

func (r *reader) applied(ctx context.Context) ([]string, error) {
	switch r.tool {
	case ToolFlyway:
		rows, err := r.flywayRows(ctx)
		if err != nil {
			return nil, err
		}
		return flywayState(rows).appliedVersions(), nil
	case ToolLiquibase:
		rows, err := r.liquibaseRows(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]string, len(rows))
		for i, c := range rows {
			out[i] = c.id
		}
		return out, nil
	case ToolDjango:
		rows, err := r.djangoRows(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]string, len(rows))
		for i, m := range rows {
			out[i] = m.id()
		}
		return out, nil
	case ToolRails:
		return r.railsVersions(ctx)
	case ToolGolangMigrate:
		v, _, ok, err := r.gmVersion(ctx)
		if err != nil || !ok {
			return nil, err
		}
		return []string{v}, nil
	}
	return nil, fmt.Errorf("tool %q: unknown", r.tool)
}

// compareVersions orders dotted numeric versions ("1.10" after "1.9"),
// falling back to string order for non-numeric parts.
func compareVersions(a, b string) int {
	as := strings.FieldsFunc(a, isVersionSep)
	bs := strings.FieldsFunc(b, isVersionSep)
	for i := 0; i < len(as) || i < len(bs); i++ {
		var x, y string
		if i < len(as) {
			x = as[i]
		}
		if i < len(bs) {
			y = bs[i]
		}
		if c := compareNumeric(x, y); c != 0 {
			return c
		}
	}
	return 0
}

func isVersionSep(r rune) bool { return r == '.' || r == '_' || r == '-' }

func compareNumeric(x, y string) int {
	if isDigits(x) && isDigits(y) {
		x, y = strings.TrimLeft(x, "0"), strings.TrimLeft(y, "0")
		if len(x) != len(y) {
			if len(x) < len(y) {
				return -1
			}
			return 1
		}
	}
	return strings.Compare(x, y)
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
