package migrations

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestScanSQL(t *testing.T) {
	tests := []struct {
		name string
		sql  string
		want []string
	}{
		{"add column", "ALTER TABLE users ADD COLUMN email varchar(255);", nil},
		{"drop column", "ALTER TABLE users DROP COLUMN email;", []string{"ALTER TABLE users DROP COLUMN email"}},
		{"mysql drop without COLUMN", "ALTER TABLE `users` DROP `email`, ADD INDEX (name);", []string{"ALTER TABLE `users` DROP `email`"}},
		{"drop one of several clauses", "ALTER TABLE ONLY public.users\n  ADD COLUMN a int,\n  DROP COLUMN IF EXISTS b CASCADE,\n  ALTER COLUMN c DROP NOT NULL;",
			[]string{"ALTER TABLE public.users DROP COLUMN IF EXISTS b CASCADE"}},
		{"drop constraint keeps data", "ALTER TABLE users DROP CONSTRAINT users_email_key, DROP INDEX x, ALTER COLUMN y DROP DEFAULT;", nil},
		{"drop partition", "ALTER TABLE events DROP PARTITION p2023;", []string{"ALTER TABLE events DROP PARTITION p2023"}},
		{"drop table", "DROP TABLE IF EXISTS legacy_sessions;", []string{"DROP TABLE IF EXISTS legacy_sessions"}},
		{"drop schema", "drop schema audit", []string{"drop schema audit"}},
		{"drop index and view are fine", "DROP INDEX users_email_idx; DROP VIEW active_orders; DROP FUNCTION f();", nil},
		{"drop type cascade", "DROP TYPE mood CASCADE;", []string{"DROP TYPE mood CASCADE"}},
		{"truncate", "TRUNCATE audit_log;", []string{"TRUNCATE audit_log"}},
		{"delete", "DELETE FROM orders WHERE status = 'test';", []string{"DELETE FROM orders WHERE status = 'test'"}},
		{"update without where", "UPDATE users SET active = false;", []string{"UPDATE users SET active = false (no WHERE)"}},
		{"update with where", "UPDATE users SET active = false WHERE id = 1;", nil},
		{"cte delete", "WITH old AS (SELECT id FROM s) DELETE FROM s USING old WHERE s.id = old.id;", []string{"WITH old AS (SELECT id FROM s) DELETE FROM s USING old WHERE s.id = old.id"}},
		{"keywords in strings", "INSERT INTO notes (body) VALUES ('DROP TABLE users; DELETE FROM x');", nil},
		{"keywords in comments", "-- DROP TABLE users;\n/* TRUNCATE x; */ CREATE TABLE a (id int);", nil},
		{"dollar-quoted body", "CREATE FUNCTION purge() RETURNS trigger AS $$ BEGIN DELETE FROM x; RETURN NULL; END $$ LANGUAGE plpgsql;", nil},
		{"quoted identifier", `ALTER TABLE "Users" DROP COLUMN "E-mail";`, []string{`ALTER TABLE "Users" DROP COLUMN "E-mail"`}},
		{"escaped quote", `INSERT INTO t VALUES ('it''s; DROP TABLE t'); DROP TABLE t2;`, []string{"DROP TABLE t2"}},
		{"several", "DROP TABLE a;\nTRUNCATE b;\nCREATE TABLE c (id int);", []string{"DROP TABLE a", "TRUNCATE b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ScanSQL(tt.sql)
			if !slices.Equal(got, tt.want) {
				t.Errorf("ScanSQL(%q)\n got %q\nwant %q", tt.sql, got, tt.want)
			}
		})
	}
}

func TestScanDjango(t *testing.T) {
	tests := []struct {
		file                           string
		destructive, irreversible, los []string
	}{
		{"0002_order_status.py", nil, nil, []string{"removes field order.status"}},
		{"0003_order_email.py", nil, nil, []string{"removes field order.email"}},
		{"0004_remove_order_legacy_code.py", []string{"RemoveField order.legacy_code"}, []string{"RunPython without reverse_code"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata/django/orders/migrations", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			s := scanDjango(string(b))
			if !slices.Equal(s.destructive, tt.destructive) || !slices.Equal(s.irreversible, tt.irreversible) || !slices.Equal(s.downLoses, tt.los) {
				t.Errorf("scanDjango = %+v, want destructive %q irreversible %q downLoses %q", s, tt.destructive, tt.irreversible, tt.los)
			}
		})
	}
	t.Run("RunSQL", func(t *testing.T) {
		s := scanDjango(`operations = [
    migrations.RunSQL(sql=["TRUNCATE audit", 'UPDATE t SET x = 1'], reverse_sql=migrations.RunSQL.noop),
    migrations.RunSQL("""DROP TABLE old_things"""),
]`)
		wantD := []string{"RunSQL TRUNCATE audit", "RunSQL UPDATE t SET x = 1 (no WHERE)", "RunSQL DROP TABLE old_things"}
		if !slices.Equal(s.destructive, wantD) || !slices.Equal(s.irreversible, []string{"RunSQL without reverse_sql"}) {
			t.Errorf("scanDjango = %+v", s)
		}
	})
}

func TestScanRails(t *testing.T) {
	tests := []struct {
		name         string
		src          string
		destructive  []string
		irreversible string
		loses        []string
	}{
		{"add column in change", readTestdata(t, "rails/db/migrate/20241120093000_add_email_to_users.rb"), nil, "", []string{"removes column :users, :email"}},
		{"up/down irreversible", readTestdata(t, "rails/db/migrate/20241121100000_remove_legacy_notes.rb"),
			[]string{"remove_column :users, :legacy_notes", "execute DELETE FROM orders WHERE status = 'test'"}, "def down raises ActiveRecord::IrreversibleMigration", nil},
		{"remove_column with type is reversible", "class X < ActiveRecord::Migration[7.1]\n  def change\n    remove_column :users, :nickname, :string\n  end\nend\n",
			[]string{"remove_column :users, :nickname, :string"}, "", nil},
		{"remove_column without type is not", "class X < ActiveRecord::Migration[7.1]\n  def change\n    remove_column :users, :nickname\n  end\nend\n",
			[]string{"remove_column :users, :nickname"}, "remove_column without a type in def change cannot be reversed", nil},
		{"drop_table with block", "class X < ActiveRecord::Migration[7.1]\n  def change\n    drop_table :sessions do |t|\n      t.string :token\n    end\n  end\nend\n",
			[]string{"drop_table :sessions do |t|"}, "", nil},
		{"data change", "class X < ActiveRecord::Migration[7.1]\n  def up\n    User.where(active: false).delete_all\n  end\n  def down\n  end\nend\n",
			[]string{"User.where(active: false).delete_all"}, "", nil},
		{"up without down", "class X < ActiveRecord::Migration[7.1]\n  def up\n    add_column :a, :b, :string\n  end\nend\n", nil, "def up without def down", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := scanRails(tt.src)
			if !slices.Equal(s.destructive, tt.destructive) || s.irreversible != tt.irreversible || !slices.Equal(s.downLoses, tt.loses) {
				t.Errorf("scanRails = %+v\nwant destructive %q irreversible %q loses %q", s, tt.destructive, tt.irreversible, tt.loses)
			}
		})
	}
}

func TestLiquibaseChangelogs(t *testing.T) {
	dir := "testdata/liquibase/db/changelog/changes"
	tests := []struct {
		file, id, author string
		rollback         bool
		auto             string
		destructive      []string
		loses            []string
	}{
		{"001-create-users.xml", "1", "alice", false, "createTable", nil, []string{"rollback drops table users"}},
		{"002-orders.sql", "orders-status-index", "bob", true, "", nil, nil},
		{"002-orders.sql", "2", "bob", true, "", nil, []string{"DROP TABLE orders"}},
		{"003-add-email.xml", "3", "carol", false, "addColumn", nil, []string{"rollback drops the columns added to users"}},
		{"004-drop-legacy.xml", "4", "carol", false, "", []string{"dropColumn users.legacy_notes", "DELETE FROM orders WHERE status = 'test'"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.file+"/"+tt.id, func(t *testing.T) {
			p := filepath.Join(dir, tt.file)
			var cs lbChangeSet
			var err error
			if strings.HasSuffix(p, ".xml") {
				cs, err = lbFromXML(p, tt.id, tt.author)
			} else {
				cs, err = lbFromSQL(p, tt.id, tt.author)
			}
			if err != nil {
				t.Fatal(err)
			}
			if cs.rollback != tt.rollback || cs.auto != tt.auto || !slices.Equal(cs.destructive, tt.destructive) || !slices.Equal(cs.downLoses, tt.loses) {
				t.Errorf("got %+v", cs)
			}
		})
	}
	if _, err := lbFromXML(filepath.Join(dir, "003-add-email.xml"), "3", "mallory"); err == nil {
		t.Error("a changeset by another author was found")
	}
}

func TestCompareVersions(t *testing.T) {
	ordered := []string{"1", "1.1", "1.2", "1.10", "2", "10", "20240101000000"}
	for i := range ordered {
		for j := range ordered {
			got := compareVersions(ordered[i], ordered[j])
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got != want {
				t.Errorf("compareVersions(%s, %s) = %d, want %d", ordered[i], ordered[j], got, want)
			}
		}
	}
	if canonicalVersion("01.002") != canonicalVersion("1.2") {
		t.Error("01.002 and 1.2 are the same version")
	}
}

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
