package platforms

import (
	"regexp"
	"strconv"
	"strings"
)

// appliedLine matches a log line of a migration tool saying that it
// applied a migration (not that there was nothing to do): Flyway,
// Liquibase, Django, golang-migrate, Rails.
var appliedLine = []*regexp.Regexp{
	regexp.MustCompile(`Successfully applied (\d+) migrations?`),           // Flyway (N > 0, checked below)
	regexp.MustCompile(`Migrating schema .* to version`),                   // Flyway
	regexp.MustCompile(`ChangeSet .* ran successfully|Running Changeset:`), // Liquibase
	regexp.MustCompile(`^\s*Applying [\w.]+\.\d{4}_\w+\.{3}\s*OK`),         // Django
	regexp.MustCompile(`^\d+/u \S+ \(`),                                    // golang-migrate
	regexp.MustCompile(`^==\s+\d+\s+\w+: migrated`),                        // Rails
}

// AppliedInLog returns the lines of a migration container's log that show
// migrations being applied (at most 20); none when the log shows nothing
// applied ("No migration necessary", "No migrations to apply", "no
// change") or shows no migration tool at all. It is the evidence that
// migrations ran, for the runbook's decision gate, when the database
// cannot be asked (none configured) or disagrees.
func AppliedInLog(log string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		l = strings.TrimRight(l, "\r")
		for i, re := range appliedLine {
			m := re.FindStringSubmatch(l)
			if m == nil {
				continue
			}
			if i == 0 {
				if n, _ := strconv.Atoi(m[1]); n == 0 {
					break
				}
			}
			if len(out) < 20 {
				out = append(out, strings.TrimSpace(l))
			}
			break
		}
	}
	return out
}
