package compat

import (
	"github.com/pingcap/tidb/pkg/parser"
	"github.com/pingcap/tidb/pkg/parser/ast"

	// Literal values in the AST (DEFAULT 0, INSERT ... VALUES): the
	// parser needs a value implementation; this is its own.
	_ "github.com/pingcap/tidb/pkg/parser/test_driver"
)

func classifyMySQL(src string) ([]Finding, error) {
	stmts, _, err := parser.New().Parse(src, "", "")
	if err != nil {
		return nil, &ParseError{Dialect: MySQL, Msg: oneLine(err.Error())}
	}
	var out []Finding
	for _, s := range stmts {
		out = append(out, myStatement(s)...)
	}
	return out, nil
}

func tableName(t *ast.TableName) string {
	if t == nil {
		return "?"
	}
	if t.Schema.O != "" {
		return t.Schema.O + "." + t.Name.O
	}
	return t.Name.O
}

func myStatement(s ast.StmtNode) []Finding {
	text := oneLine(s.Text())
	f := func(k Kind, why string) []Finding { return []Finding{{Kind: k, Statement: text, Why: why}} }
	switch n := s.(type) {
	case *ast.BeginStmt, *ast.CommitStmt, *ast.SetStmt, *ast.UseStmt:
		return f(Neutral, "")
	case *ast.CreateTableStmt, *ast.CreateDatabaseStmt, *ast.CreateSequenceStmt:
		return f(Expand, "")
	case *ast.CreateViewStmt:
		if n.OrReplace {
			return f(Contract, "replaces a view the old release may read")
		}
		return f(Expand, "")
	case *ast.CreateIndexStmt:
		if n.KeyType == ast.IndexKeyTypeUnique {
			return f(Contract, "a unique index the old release's writes may violate")
		}
		return f(Expand, "")
	case *ast.InsertStmt:
		if n.IsReplace {
			return f(Contract, "replaces existing rows")
		}
		return f(Expand, "")
	case *ast.UpdateStmt:
		return f(Contract, "rewrites existing rows")
	case *ast.DeleteStmt, *ast.TruncateTableStmt:
		return f(Contract, "deletes rows")
	case *ast.DropTableStmt, *ast.DropDatabaseStmt, *ast.DropIndexStmt, *ast.DropSequenceStmt:
		return f(Contract, "drops what the old release may use")
	case *ast.RenameTableStmt:
		return f(Contract, "renames what the old release uses by its old name")
	case *ast.AlterTableStmt:
		var out []Finding
		for _, spec := range n.Specs {
			out = append(out, myAlter(tableName(n.Table), spec)...)
		}
		if len(out) == 0 {
			return f(Unknown, "an ALTER TABLE rollbot does not classify")
		}
		return out
	}
	return f(Unknown, "a statement rollbot does not classify")
}

// myAlter classifies one clause of ALTER TABLE t.
func myAlter(t string, s *ast.AlterTableSpec) []Finding {
	stmt := func(clause string) string { return "ALTER TABLE " + t + " " + clause }
	one := func(k Kind, clause, why string) []Finding {
		return []Finding{{Kind: k, Statement: stmt(clause), Why: why}}
	}
	switch s.Tp {
	case ast.AlterTableAddColumns:
		var out []Finding
		for _, c := range s.NewColumns {
			clause := "ADD COLUMN " + c.Name.Name.O
			notNull, hasDefault, constraint := myColumn(c)
			switch {
			case notNull && !hasDefault:
				out = append(out, Finding{Kind: Contract, Statement: stmt(clause + " NOT NULL"), Why: "NOT NULL without a default: the old release's inserts do not set it"})
			case constraint:
				out = append(out, Finding{Kind: Contract, Statement: stmt(clause), Why: "a new constraint the old release's writes may violate"})
			default:
				out = append(out, Finding{Kind: Expand, Statement: stmt(clause)})
			}
		}
		return out
	case ast.AlterTableAddConstraint:
		switch s.Constraint.Tp {
		case ast.ConstraintKey, ast.ConstraintIndex, ast.ConstraintFulltext:
			return one(Expand, "ADD INDEX "+s.Constraint.Name, "")
		}
		return one(Contract, "ADD CONSTRAINT "+s.Constraint.Name, "a new constraint the old release's writes may violate")
	case ast.AlterTableDropColumn:
		return one(Contract, "DROP COLUMN "+s.OldColumnName.Name.O, "the old release reads or writes it")
	case ast.AlterTableModifyColumn:
		return one(Contract, "MODIFY COLUMN "+s.NewColumns[0].Name.Name.O, "a type or NULL change")
	case ast.AlterTableChangeColumn:
		return one(Contract, "CHANGE COLUMN "+s.OldColumnName.Name.O+" "+s.NewColumns[0].Name.Name.O, "a rename or type change")
	case ast.AlterTableRenameColumn:
		return one(Contract, "RENAME COLUMN "+s.OldColumnName.Name.O+" TO "+s.NewColumnName.Name.O, "renames what the old release uses by its old name")
	case ast.AlterTableRenameTable:
		return one(Contract, "RENAME TO "+tableName(s.NewTable), "renames what the old release uses by its old name")
	case ast.AlterTableRenameIndex:
		return one(Expand, "RENAME INDEX "+s.FromKey.O+" TO "+s.ToKey.O, "")
	case ast.AlterTableDropIndex:
		return one(Contract, "DROP INDEX "+s.Name, "a unique index the old release relies on may go")
	case ast.AlterTableDropPrimaryKey:
		return one(Expand, "DROP PRIMARY KEY", "")
	case ast.AlterTableDropForeignKey:
		return one(Expand, "DROP FOREIGN KEY "+s.Name, "")
	case ast.AlterTableAlterColumn:
		c := s.NewColumns[0]
		if len(c.Options) == 0 {
			return one(Contract, "ALTER COLUMN "+c.Name.Name.O+" DROP DEFAULT", "the old release's inserts may rely on it")
		}
		return one(Expand, "ALTER COLUMN "+c.Name.Name.O+" SET DEFAULT", "")
	}
	return one(Unknown, "(clause)", "an ALTER TABLE clause rollbot does not classify")
}

// myColumn reports a new column's NOT NULL, whether it gets a value
// without the insert naming it, and whether it carries a constraint
// existing writes may violate.
func myColumn(c *ast.ColumnDef) (notNull, hasDefault, constraint bool) {
	for _, o := range c.Options {
		switch o.Tp {
		case ast.ColumnOptionNotNull, ast.ColumnOptionPrimaryKey:
			notNull = true
		case ast.ColumnOptionDefaultValue, ast.ColumnOptionAutoIncrement, ast.ColumnOptionGenerated:
			hasDefault = true
		case ast.ColumnOptionUniqKey, ast.ColumnOptionCheck, ast.ColumnOptionReference:
			constraint = true
		}
	}
	return notNull, hasDefault, constraint
}
