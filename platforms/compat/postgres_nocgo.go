//go:build !cgo

package compat

// Without cgo there is no PostgreSQL parser (libpg_query is C): every
// PostgreSQL migration is unreadable, so the gate stays.
func classifyPostgres(string) ([]Finding, error) {
	return nil, &ParseError{Dialect: Postgres, Msg: "this rollbot was built without cgo, so it has no PostgreSQL parser"}
}
