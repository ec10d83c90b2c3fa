package migrations

import (
	"context"
	"database/sql"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

type changeSet struct {
	id, author, filename string
	executed             time.Time
	order                int64
	execType             string
	description          string
}

func (r *reader) liquibaseRows(ctx context.Context) ([]changeSet, error) {
	q := `SELECT id, author, filename, dateexecuted, orderexecuted, exectype, description FROM ` + r.from() + ` ORDER BY orderexecuted, dateexecuted`
	rows, err := r.db.QueryContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", r.table, err)
	}
	defer rows.Close()
	var out []changeSet
	for rows.Next() {
		var c changeSet
		var desc sql.NullString
		if err := rows.Scan(&c.id, &c.author, &c.filename, &c.executed, &c.order, &c.execType, &desc); err != nil {
			return nil, fmt.Errorf("read %s: %w", r.table, err)
		}
		c.description = desc.String
		c.executed = r.fixTime("dateexecuted", c.executed)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", r.table, err)
	}
	return out, nil
}

func (r *reader) liquibase(ctx context.Context, since time.Time) (Report, error) {
	rows, err := r.liquibaseRows(ctx)
	if err != nil {
		return Report{}, err
	}
	var rep Report
	if len(rows) > 0 {
		rep.Current = rows[len(rows)-1].id
	}
	if since.IsZero() {
		rep.Uncertain = "the bad deploy's start time is not known"
		return rep, nil
	}
	first := -1
	for i, c := range rows {
		if !r.after(c.executed, since) {
			continue
		}
		if first < 0 {
			first = i
		}
		if c.execType != "EXECUTED" && c.execType != "RERAN" {
			rep.Notes = append(rep.Notes, fmt.Sprintf("changeset %s (%s) was recorded as %s, not run", c.id, c.filename, c.execType))
			continue
		}
		m := Migration{
			ID: c.id, Description: strings.TrimSpace(c.description + " by " + c.author),
			Script: c.filename, AppliedAt: c.executed,
		}
		r.liquibaseSource(&m, c)
		rep.Ran = append(rep.Ran, m)
	}
	switch {
	case first < 0:
		rep.Target = rep.Current
	case first > 0:
		rep.Target = rows[first-1].id
	}
	return rep, nil
}

func (r *reader) liquibaseSource(m *Migration, c changeSet) {
	var cs lbChangeSet
	var err error
	path := findFile(r.cfg.MigrationsDir, c.filename)
	switch {
	case path == "":
		err = errNoSource
	case strings.HasSuffix(path, ".xml"):
		cs, err = lbFromXML(path, c.id, c.author)
	case strings.HasSuffix(path, ".sql"):
		cs, err = lbFromSQL(path, c.id, c.author)
	default:
		err = fmt.Errorf("changelog format of %s not read (xml and formatted sql are)", filepath.Base(path))
	}
	if err == nil {
		m.SourceRead, m.Source = true, path
		if len(cs.destructive) > 0 {
			m.Destructive, m.DestructiveWhy = true, strings.Join(cs.destructive, "; ")
		}
		m.DownLosesData = strings.Join(cs.downLoses, "; ")
	}
	switch {
	case err == nil && cs.rollback:
		m.Reversible, m.ReversibleWhy = true, "rollback block in "+filepath.Base(path)
	case err == nil && cs.auto != "":
		m.Reversible, m.ReversibleWhy = true, "Liquibase rolls back "+cs.auto+" by itself"
	case r.cfg.AssumeReversible:
		m.Reversible, m.ReversibleWhy = true, "assume_reversible is set for this service"
	case err == nil:
		m.ReversibleWhy = "no rollback block in " + filepath.Base(path) + " and " + cs.manual + " has no automatic rollback"
	case errors.Is(err, errNoSource) && r.cfg.MigrationsDir == "":
		m.ReversibleWhy = "rollback unknown: no migrations_dir configured to read the changelog"
	default:
		m.ReversibleWhy = "rollback unknown: " + err.Error()
	}
}

var errNoSource = errors.New("changelog not found in migrations_dir")

type lbChangeSet struct {
	rollback    bool
	auto        string // changes Liquibase reverses itself, when all are
	manual      string // a change without automatic rollback
	destructive []string
	downLoses   []string
}

// Changes Liquibase can roll back without a rollback block.
var lbAuto = []string{"createTable", "addColumn", "createIndex", "renameColumn", "renameTable", "renameView",
	"createView", "createSequence", "addForeignKeyConstraint", "addPrimaryKey", "addUniqueConstraint",
	"addNotNullConstraint", "dropNotNullConstraint", "addLookupTable", "tagDatabase", "addAutoIncrement",
	"dropDefaultValue", "setTableRemarks", "setColumnRemarks", "comment"}

func lbFromXML(path, id, author string) (lbChangeSet, error) {
	f, err := os.Open(path)
	if err != nil {
		return lbChangeSet{}, err
	}
	defer f.Close()
	dec := xml.NewDecoder(f)
	var cs lbChangeSet
	var changes []string
	depth, inside, found := 0, false, false
	var text strings.Builder
	var inRollback, inSQL bool
	var lastTable string
	attr := func(e xml.StartElement, n string) string {
		for _, a := range e.Attr {
			if a.Name.Local == n {
				return a.Value
			}
		}
		return ""
	}
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return lbChangeSet{}, fmt.Errorf("parse %s: %w", filepath.Base(path), err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			n := t.Name.Local
			if n == "changeSet" && attr(t, "id") == id && attr(t, "author") == author {
				inside, found, depth = true, true, 1
				continue
			}
			if !inside {
				continue
			}
			if depth == 2 {
				switch n {
				case "rollback":
					cs.rollback, inRollback = true, true
				case "comment", "preConditions", "validCheckSum":
				default:
					changes = append(changes, n)
					table := attr(t, "tableName")
					switch n {
					case "dropTable":
						cs.destructive = append(cs.destructive, "dropTable "+table)
					case "dropColumn":
						lastTable = table
						if c := attr(t, "columnName"); c != "" {
							cs.destructive = append(cs.destructive, "dropColumn "+table+"."+c)
						}
					case "delete":
						cs.destructive = append(cs.destructive, "delete from "+table)
					case "dropSequence":
						cs.destructive = append(cs.destructive, "dropSequence "+attr(t, "sequenceName"))
					case "addColumn":
						cs.downLoses = append(cs.downLoses, "rollback drops the columns added to "+table)
					case "createTable":
						cs.downLoses = append(cs.downLoses, "rollback drops table "+table)
					}
				}
			}
			if n == "sql" {
				inSQL = true
				text.Reset()
			}
			if n == "column" && depth == 3 && len(changes) > 0 && changes[len(changes)-1] == "dropColumn" && !inRollback {
				cs.destructive = append(cs.destructive, "dropColumn "+lastTable+"."+attr(t, "name"))
			}
		case xml.CharData:
			if inside && inSQL {
				text.Write(t)
			}
		case xml.EndElement:
			if inside && t.Name.Local == "sql" {
				inSQL = false
				for _, f := range ScanSQL(text.String()) {
					if inRollback {
						cs.downLoses = append(cs.downLoses, f)
					} else {
						cs.destructive = append(cs.destructive, f)
					}
				}
			}
			if inside && depth == 2 && t.Name.Local == "rollback" {
				inRollback = false
			}
			depth--
			if inside && depth == 0 {
				inside = false
			}
		}
	}
	if !found {
		return lbChangeSet{}, fmt.Errorf("changeset %s:%s not in %s", author, id, filepath.Base(path))
	}
	if !cs.rollback {
		all := true
		for _, c := range changes {
			if !slices.Contains(lbAuto, c) {
				all, cs.manual = false, c
				break
			}
		}
		if all && len(changes) > 0 {
			cs.auto = strings.Join(slices.Compact(changes), ", ")
		}
	} else {
		cs.downLoses = slices.DeleteFunc(cs.downLoses, func(s string) bool { return strings.HasPrefix(s, "rollback drops") })
	}
	return cs, nil
}

var lbChangesetRe = regexp.MustCompile(`^--\s*changeset\s+(?:"([^"]+)"|([^:\s]+)):(\S+)`)
var lbRollbackRe = regexp.MustCompile(`^--\s*rollback\b\s*(.*)$`)

// lbFromSQL reads a "--liquibase formatted sql" changelog.
func lbFromSQL(path, id, author string) (lbChangeSet, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return lbChangeSet{}, err
	}
	var cs lbChangeSet
	var body, rollback []string
	inside, found, inRollbackComment := false, false, false
	for _, line := range strings.Split(string(b), "\n") {
		trim := strings.TrimSpace(line)
		if m := lbChangesetRe.FindStringSubmatch(trim); m != nil {
			a := m[1] + m[2]
			inside = a == author && m[3] == id
			found = found || inside
			continue
		}
		if !inside {
			continue
		}
		switch {
		case inRollbackComment:
			if i := strings.Index(trim, "*/"); i >= 0 {
				rollback = append(rollback, trim[:i])
				inRollbackComment = false
			} else {
				rollback = append(rollback, trim)
			}
		case strings.HasPrefix(trim, "/* liquibase rollback"):
			cs.rollback, inRollbackComment = true, true
		case lbRollbackRe.MatchString(trim):
			cs.rollback = true
			rollback = append(rollback, lbRollbackRe.FindStringSubmatch(trim)[1])
		case strings.HasPrefix(trim, "--"):
		default:
			body = append(body, line)
		}
	}
	if !found {
		return lbChangeSet{}, fmt.Errorf("changeset %s:%s not in %s", author, id, filepath.Base(path))
	}
	cs.destructive = ScanSQL(strings.Join(body, "\n"))
	cs.downLoses = ScanSQL(strings.Join(rollback, "\n"))
	cs.manual = "sql"
	return cs, nil
}
