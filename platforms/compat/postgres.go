//go:build cgo

package compat

import (
	"fmt"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

func classifyPostgres(src string) ([]Finding, error) {
	tree, err := pg.Parse(src)
	if err != nil {
		return nil, &ParseError{Dialect: Postgres, Msg: err.Error()}
	}
	var out []Finding
	for _, raw := range tree.GetStmts() {
		text := stmtText(src, raw)
		out = append(out, pgStatement(raw.GetStmt(), text)...)
	}
	return out, nil
}

// stmtText is the statement's own source, one line.
func stmtText(src string, raw *pg.RawStmt) string {
	from := int(raw.GetStmtLocation())
	to := len(src)
	if n := int(raw.GetStmtLen()); n > 0 && from+n <= len(src) {
		to = from + n
	}
	if from < 0 || from > to {
		return ""
	}
	return oneLine(src[from:to])
}

func rel(r *pg.RangeVar) string {
	if r == nil {
		return "?"
	}
	if r.GetSchemaname() != "" {
		return r.GetSchemaname() + "." + r.GetRelname()
	}
	return r.GetRelname()
}

func pgStatement(n *pg.Node, text string) []Finding {
	f := func(k Kind, why string) []Finding { return []Finding{{Kind: k, Statement: text, Why: why}} }
	switch {
	case n.GetTransactionStmt() != nil, n.GetVariableSetStmt() != nil:
		return f(Neutral, "")
	case n.GetCreateStmt() != nil, n.GetCreateSeqStmt() != nil, n.GetViewStmt() != nil, n.GetCreateSchemaStmt() != nil,
		n.GetCommentStmt() != nil, n.GetCreateEnumStmt() != nil, n.GetCreateExtensionStmt() != nil, n.GetCreateFunctionStmt() != nil,
		n.GetCompositeTypeStmt() != nil, n.GetCreateDomainStmt() != nil, n.GetCreateTableAsStmt() != nil:
		if v := n.GetViewStmt(); v != nil && v.GetReplace() {
			return f(Contract, "replaces a view the old release may read")
		}
		if fn := n.GetCreateFunctionStmt(); fn != nil && fn.GetReplace() {
			return f(Contract, "replaces a function the old release may call")
		}
		return f(Expand, "")
	case n.GetIndexStmt() != nil:
		if n.GetIndexStmt().GetUnique() {
			return f(Contract, "a unique index the old release's writes may violate")
		}
		return f(Expand, "")
	case n.GetInsertStmt() != nil:
		return f(Expand, "")
	case n.GetUpdateStmt() != nil:
		return f(Contract, "rewrites existing rows")
	case n.GetDeleteStmt() != nil, n.GetTruncateStmt() != nil:
		return f(Contract, "deletes rows")
	case n.GetDropStmt() != nil:
		return f(Contract, "drops "+strings.ToLower(strings.TrimPrefix(n.GetDropStmt().GetRemoveType().String(), "OBJECT_"))+" the old release may use")
	case n.GetRenameStmt() != nil:
		return f(Contract, "renames what the old release uses by its old name")
	case n.GetAlterTableStmt() != nil:
		a := n.GetAlterTableStmt()
		var out []Finding
		for _, c := range a.GetCmds() {
			out = append(out, pgAlter(rel(a.GetRelation()), c.GetAlterTableCmd()))
		}
		if len(out) == 0 {
			return f(Unknown, "an ALTER TABLE rollbot does not classify")
		}
		return out
	case n.GetAlterEnumStmt() != nil:
		if n.GetAlterEnumStmt().GetOldVal() != "" {
			return f(Contract, "renames an enum value")
		}
		return f(Expand, "")
	}
	return f(Unknown, "a statement rollbot does not classify")
}

// pgAlter classifies one clause of ALTER TABLE t.
func pgAlter(t string, c *pg.AlterTableCmd) Finding {
	stmt := func(clause string) string { return "ALTER TABLE " + t + " " + clause }
	switch c.GetSubtype() {
	case pg.AlterTableType_AT_AddColumn:
		col := c.GetDef().GetColumnDef()
		s := stmt("ADD COLUMN " + col.GetColname())
		if notNull, hasDefault := pgColumn(col); notNull && !hasDefault {
			return Finding{Kind: Contract, Statement: s + " NOT NULL", Why: "NOT NULL without a default: the old release's inserts do not set it"}
		}
		if why := pgColumnConstraint(col); why != "" {
			return Finding{Kind: Contract, Statement: s, Why: why}
		}
		return Finding{Kind: Expand, Statement: s}
	case pg.AlterTableType_AT_DropColumn:
		return Finding{Kind: Contract, Statement: stmt("DROP COLUMN " + c.GetName()), Why: "the old release reads or writes it"}
	case pg.AlterTableType_AT_AlterColumnType:
		return Finding{Kind: Contract, Statement: stmt("ALTER COLUMN " + c.GetName() + " TYPE " + typeName(c.GetDef().GetColumnDef().GetTypeName())), Why: "a type change"}
	case pg.AlterTableType_AT_SetNotNull:
		return Finding{Kind: Contract, Statement: stmt("ALTER COLUMN " + c.GetName() + " SET NOT NULL"), Why: "the old release may write NULL"}
	case pg.AlterTableType_AT_DropNotNull:
		return Finding{Kind: Expand, Statement: stmt("ALTER COLUMN " + c.GetName() + " DROP NOT NULL")}
	case pg.AlterTableType_AT_ColumnDefault:
		if c.GetDef() == nil {
			return Finding{Kind: Contract, Statement: stmt("ALTER COLUMN " + c.GetName() + " DROP DEFAULT"), Why: "the old release's inserts may rely on it"}
		}
		return Finding{Kind: Expand, Statement: stmt("ALTER COLUMN " + c.GetName() + " SET DEFAULT")}
	case pg.AlterTableType_AT_AddConstraint, pg.AlterTableType_AT_AddIndex:
		return Finding{Kind: Contract, Statement: stmt("ADD CONSTRAINT"), Why: "a new constraint the old release's writes may violate"}
	case pg.AlterTableType_AT_DropConstraint:
		return Finding{Kind: Expand, Statement: stmt("DROP CONSTRAINT " + c.GetName())}
	}
	return Finding{Kind: Unknown, Statement: stmt(strings.TrimPrefix(c.GetSubtype().String(), "AT_")), Why: "an ALTER TABLE clause rollbot does not classify"}
}

// pgColumn reports a column definition's NOT NULL and whether it has a
// value without the insert naming it (a default, identity, serial,
// generated).
func pgColumn(col *pg.ColumnDef) (notNull, hasDefault bool) {
	notNull = col.GetIsNotNull()
	if col.GetRawDefault() != nil || col.GetIdentity() != "" || col.GetGenerated() != "" {
		hasDefault = true
	}
	switch strings.ToLower(typeName(col.GetTypeName())) {
	case "serial", "bigserial", "smallserial", "serial4", "serial8", "serial2":
		hasDefault = true
	}
	for _, cn := range col.GetConstraints() {
		switch cn.GetConstraint().GetContype() {
		case pg.ConstrType_CONSTR_NOTNULL, pg.ConstrType_CONSTR_PRIMARY:
			notNull = true
		case pg.ConstrType_CONSTR_DEFAULT, pg.ConstrType_CONSTR_IDENTITY, pg.ConstrType_CONSTR_GENERATED:
			hasDefault = true
		}
	}
	return notNull, hasDefault
}

// pgColumnConstraint names a constraint on a new column that existing
// writes may violate.
func pgColumnConstraint(col *pg.ColumnDef) string {
	for _, cn := range col.GetConstraints() {
		switch cn.GetConstraint().GetContype() {
		case pg.ConstrType_CONSTR_UNIQUE, pg.ConstrType_CONSTR_CHECK, pg.ConstrType_CONSTR_FOREIGN, pg.ConstrType_CONSTR_EXCLUSION:
			return "a new constraint the old release's writes may violate"
		}
	}
	return ""
}

func typeName(t *pg.TypeName) string {
	var parts []string
	for _, n := range t.GetNames() {
		if s := n.GetString_().GetSval(); s != "" && s != "pg_catalog" {
			parts = append(parts, s)
		}
	}
	name := strings.Join(parts, ".")
	var mods []string
	for _, m := range t.GetTypmods() {
		if c := m.GetAConst(); c != nil && c.GetIval() != nil {
			mods = append(mods, fmt.Sprint(c.GetIval().GetIval()))
		}
	}
	if len(mods) > 0 {
		name += "(" + strings.Join(mods, ",") + ")"
	}
	return name
}
