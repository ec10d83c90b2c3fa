// Package compat answers the rollback's real question about a schema
// change: can the previous release run on the schema the bad release
// migrated to? It classifies each statement of a migration's SQL, read by
// the database's own grammar (not by patterns):
//
//   - expand: only adds what the old release does not know about and does
//     not need (a new table, view, sequence or plain index; a column that
//     is nullable or has a default; a dropped NOT NULL or a new default;
//     new rows). The old release runs on the new schema;
//   - contract: takes away or changes what the old release may use (DROP,
//     RENAME, a type change, NOT NULL without a default, a new constraint
//     or unique index the old release's writes may violate, rewritten or
//     deleted rows). The database step is needed.
//
// A statement the classifier does not know is neither: the gate stays.
//
// PostgreSQL is parsed with libpg_query (github.com/pganalyze/pg_query_go,
// PostgreSQL's own parser compiled in, so it accepts exactly what the
// server accepts); MySQL and MariaDB with TiDB's MySQL-compatible parser
// (github.com/pingcap/tidb/pkg/parser, pure Go).
package compat

import (
	"fmt"
	"strings"
)

// Dialect is the SQL grammar: the service's database driver.
type Dialect string

const (
	Postgres Dialect = "postgres"
	MySQL    Dialect = "mysql" // MySQL and MariaDB
)

// Kind classifies one statement (or one clause of an ALTER TABLE).
type Kind string

const (
	Expand   Kind = "expand"
	Contract Kind = "contract"
	Neutral  Kind = "neutral" // BEGIN, COMMIT, SET: no schema change
	Unknown  Kind = "unknown" // not classified: the gate stays
)

// Finding is one classified statement.
type Finding struct {
	Kind Kind `json:"kind"`
	// Statement names it: "ALTER TABLE users DROP COLUMN email".
	Statement string `json:"statement"`
	// Why is the reason for a contract or unknown finding.
	Why string `json:"why,omitempty"`
}

func (f Finding) String() string {
	if f.Why == "" {
		return f.Statement
	}
	return f.Statement + " (" + f.Why + ")"
}

// ParseError is SQL the grammar rejects.
type ParseError struct {
	Dialect Dialect
	Msg     string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("the %s parser cannot read the SQL: %s", e.Dialect, e.Msg)
}

// Classify parses src (one migration file) and classifies each statement.
func Classify(d Dialect, src string) ([]Finding, error) {
	switch d {
	case Postgres:
		return classifyPostgres(src)
	case MySQL:
		return classifyMySQL(src)
	}
	return nil, fmt.Errorf("classify: unknown dialect %q", d)
}

// Verdict sums up findings: Expand when every one is expand (or neutral),
// Contract when any is contract, else Unknown. The list holds what decided
// it (the contracting or unknown statements).
func Verdict(fs []Finding) (Kind, []Finding) {
	var contract, unknown []Finding
	expand := 0
	for _, f := range fs {
		switch f.Kind {
		case Contract:
			contract = append(contract, f)
		case Unknown:
			unknown = append(unknown, f)
		case Expand:
			expand++
		}
	}
	switch {
	case len(contract) > 0:
		return Contract, contract
	case len(unknown) > 0:
		return Unknown, unknown
	case expand == 0:
		return Unknown, []Finding{{Kind: Unknown, Statement: "(no statement)", Why: "the migration changes nothing rollbot can read"}}
	}
	return Expand, nil
}

// Names joins findings for a message.
func Names(fs []Finding) string {
	var s []string
	for _, f := range fs {
		s = append(s, f.String())
	}
	return strings.Join(s, "; ")
}

// oneLine collapses whitespace and cuts long statements.
func oneLine(s string) string {
	s = strings.TrimRight(strings.Join(strings.Fields(s), " "), "; ")
	if len(s) > 160 {
		s = s[:157] + "..."
	}
	return s
}
