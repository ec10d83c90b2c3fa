package compat

import (
	"errors"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name    string
		dialect Dialect
		sql     string
		want    Kind
		naming  []string // statements the verdict must name
	}{
		{"pg expand", Postgres, `BEGIN;
CREATE TABLE audit_log (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), what text);
ALTER TABLE users ADD COLUMN nickname varchar(50);
ALTER TABLE users ADD COLUMN score integer NOT NULL DEFAULT 0, ADD COLUMN seq bigserial;
CREATE INDEX CONCURRENTLY users_name_idx ON users (name);
ALTER TABLE users ALTER COLUMN email DROP NOT NULL;
COMMENT ON TABLE audit_log IS 'who did what; -- not a comment';
INSERT INTO audit_log (what) VALUES ('DROP TABLE users');
COMMIT;`, Expand, nil},
		{"pg drop column", Postgres, `ALTER TABLE users DROP COLUMN email;`, Contract, []string{"ALTER TABLE users DROP COLUMN email"}},
		{"pg rename", Postgres, `ALTER TABLE users RENAME COLUMN email TO email_address;`, Contract, []string{"ALTER TABLE users RENAME COLUMN email TO email_address (renames"}},
		{"pg not null without default", Postgres, `ALTER TABLE users ADD COLUMN tenant_id integer NOT NULL;`, Contract, []string{"ALTER TABLE users ADD COLUMN tenant_id NOT NULL (NOT NULL without a default"}},
		{"pg type change", Postgres, `ALTER TABLE users ALTER COLUMN name TYPE varchar(20);`, Contract, []string{"ALTER TABLE users ALTER COLUMN name TYPE varchar(20) (a type change)"}},
		{"pg set not null", Postgres, `ALTER TABLE public.users ALTER COLUMN email SET NOT NULL`, Contract, []string{"ALTER TABLE public.users ALTER COLUMN email SET NOT NULL"}},
		{"pg unique index", Postgres, `CREATE UNIQUE INDEX users_email ON users (email);`, Contract, []string{"CREATE UNIQUE INDEX users_email ON users (email)"}},
		{"pg drop table", Postgres, `DROP TABLE legacy;`, Contract, []string{"DROP TABLE legacy (drops table"}},
		{"pg mixed names only the contracting", Postgres, `CREATE TABLE t (a int); ALTER TABLE users ADD COLUMN x int, DROP COLUMN y;`, Contract, []string{"ALTER TABLE users DROP COLUMN y"}},
		{"pg unknown", Postgres, `GRANT SELECT ON users TO reporting;`, Unknown, []string{"GRANT SELECT ON users TO reporting (a statement rollbot does not classify)"}},
		{"pg only comments", Postgres, `-- nothing here`, Unknown, []string{"(no statement)"}},

		{"mysql expand", MySQL, `CREATE TABLE audit_log (id BIGINT AUTO_INCREMENT PRIMARY KEY, what TEXT);
ALTER TABLE users ADD COLUMN nickname VARCHAR(50) NULL, ADD COLUMN score INT NOT NULL DEFAULT 0;
CREATE INDEX users_name_idx ON users (name);
ALTER TABLE users ADD INDEX users_score (score);
INSERT INTO audit_log (what) VALUES ('x');`, Expand, nil},
		{"mysql drop column", MySQL, "ALTER TABLE `users` DROP COLUMN email;", Contract, []string{"ALTER TABLE users DROP COLUMN email"}},
		{"mysql rename column", MySQL, `ALTER TABLE users RENAME COLUMN email TO email_address;`, Contract, []string{"ALTER TABLE users RENAME COLUMN email TO email_address"}},
		{"mysql change column", MySQL, `ALTER TABLE users CHANGE email mail VARCHAR(200);`, Contract, []string{"ALTER TABLE users CHANGE COLUMN email mail"}},
		{"mysql modify type", MySQL, `ALTER TABLE users MODIFY name VARCHAR(20) NOT NULL;`, Contract, []string{"ALTER TABLE users MODIFY COLUMN name"}},
		{"mysql not null without default", MySQL, `ALTER TABLE users ADD COLUMN tenant_id INT NOT NULL;`, Contract, []string{"ALTER TABLE users ADD COLUMN tenant_id NOT NULL"}},
		{"mysql rename table", MySQL, `RENAME TABLE users TO accounts;`, Contract, []string{"RENAME TABLE users TO accounts"}},
		{"mysql unique", MySQL, `ALTER TABLE users ADD UNIQUE KEY users_email (email);`, Contract, []string{"ALTER TABLE users ADD CONSTRAINT users_email"}},
		{"mysql truncate", MySQL, `TRUNCATE TABLE sessions;`, Contract, []string{"TRUNCATE TABLE sessions (deletes rows)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, err := Classify(tt.dialect, tt.sql)
			if err != nil {
				t.Fatalf("Classify: %v", err)
			}
			got, decisive := Verdict(fs)
			if got != tt.want {
				t.Fatalf("verdict %s, want %s; findings: %+v", got, tt.want, fs)
			}
			names := Names(decisive)
			for _, w := range tt.naming {
				if !strings.Contains(names, w) {
					t.Errorf("names %q, want it to contain %q", names, w)
				}
			}
		})
	}
}

func TestClassifyUnreadable(t *testing.T) {
	for _, d := range []Dialect{Postgres, MySQL} {
		_, err := Classify(d, "ALTER TABLE users DROPP COLUMN email;")
		var pe *ParseError
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), "cannot read the SQL") {
			t.Errorf("%s: Classify = %v, want a ParseError", d, err)
		}
	}
	// PostgreSQL-only syntax is not MySQL.
	if _, err := Classify(MySQL, `CREATE INDEX CONCURRENTLY i ON t (a);`); err == nil {
		t.Error("the MySQL parser accepted CREATE INDEX CONCURRENTLY")
	}
}
