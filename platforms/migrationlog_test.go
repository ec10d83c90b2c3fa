package platforms

import (
	"slices"
	"testing"
)

func TestAppliedInLog(t *testing.T) {
	tests := []struct {
		name, log string
		want      []string
	}{
		{"flyway applied", "Flyway Community Edition 10\nMigrating schema `app` to version \"2 - add email\"\nSuccessfully applied 1 migration to schema `app`, now at version v2 (execution time 00:00.012s)",
			[]string{"Migrating schema `app` to version \"2 - add email\"", "Successfully applied 1 migration to schema `app`, now at version v2 (execution time 00:00.012s)"}},
		{"flyway up to date", "Schema `app` is up to date. No migration necessary.\nSuccessfully applied 0 migrations", nil},
		{"django applied", "Operations to perform:\n  Apply all migrations: shop\nRunning migrations:\n  Applying shop.0002_add_email... OK", []string{"Applying shop.0002_add_email... OK"}},
		{"django none", "Operations to perform:\n  Apply all migrations: shop\nRunning migrations:\n  No migrations to apply.", nil},
		{"golang-migrate", "2/u add_email (12.3ms)", []string{"2/u add_email (12.3ms)"}},
		{"golang-migrate no change", "no change", nil},
		{"rails", "== 20260101000000 AddEmail: migrating ===\n== 20260101000000 AddEmail: migrated (0.0012s) ===", []string{"== 20260101000000 AddEmail: migrated (0.0012s) ==="}},
		{"liquibase", "Running Changeset: db/changelog.xml::2::alice\nLiquibase: Update has been successful.", []string{"Running Changeset: db/changelog.xml::2::alice"}},
		{"not a migration log", "starting server on :8080", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := AppliedInLog(tt.log); !slices.Equal(got, tt.want) {
				t.Errorf("AppliedInLog = %q, want %q", got, tt.want)
			}
		})
	}
}
