package logtest

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

var refRE = regexp.MustCompile(`see the bot log, ref ([0-9a-f]{8})\b`)

// Ref returns the reference id of a text a user sees ("… see the bot log,
// ref 1a2b3c4d"), failing t when the text has none: a text that cannot say
// what went wrong must point at the log line that does.
func Ref(t testing.TB, text string) string {
	t.Helper()
	m := refRE.FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no reference into the bot log in %q", text)
	}
	return m[1]
}

// RefLine returns the line of a JSON log (slog.JSONHandler) whose ref
// attribute is ref, failing t when there is none.
func RefLine(t testing.TB, logs, ref string) string {
	t.Helper()
	for _, line := range strings.Split(logs, "\n") {
		var rec struct {
			Ref string `json:"ref"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Ref == ref {
			return line
		}
	}
	t.Fatalf("no log line with ref %s in:\n%s", ref, logs)
	return ""
}
