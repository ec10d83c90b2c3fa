package probe

import (
	"regexp"
	"strings"
)

// A smoke test's output goes into the incident thread, and smoke tests
// print what they use: a curl -v shows its Authorization header, a client
// logs the URL it dials with its password. Each line is scrubbed before it
// is kept: credentials of the usual shapes, and the known secret values
// the bot passes in Smoke.Redact.

// scrubLineBytes of a line are kept for scrubbing; only the first
// maxLineBytes of the scrubbed line are shown, so a secret that crosses
// the display cut is replaced before the cut.
const scrubLineBytes = 4 << 10

const scrubbed = "[REDACTED]"

var credentialPatterns = []struct {
	re   *regexp.Regexp
	repl string
}{
	// Authorization: Bearer …, Proxy-Authorization: Basic …
	{regexp.MustCompile(`(?i)\b((?:proxy-)?authorization\s*[:=]\s*(?:(?:bearer|basic|token|digest)\s+)?)\S+`), "${1}" + scrubbed},
	// A bare "Bearer <token>".
	{regexp.MustCompile(`(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}`), "${1}" + scrubbed},
	// scheme://user:password@host
	{regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@`), "${1}" + scrubbed + "@"},
	// password=…, "token": "…", api_key: …
	{regexp.MustCompile(`(?i)\b((?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?token)"?\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s&,;"']+)`), "${1}" + scrubbed},
	// Slack tokens.
	{regexp.MustCompile(`\bx(?:ox[abposre]|app)-[A-Za-z0-9-]+`), scrubbed},
}

// scrub replaces credentials and the known secrets in one line of output.
func scrub(line string, secrets []string) string {
	for _, s := range secrets {
		if s != "" {
			line = strings.ReplaceAll(line, s, scrubbed)
		}
	}
	for _, p := range credentialPatterns {
		line = p.re.ReplaceAllString(line, p.repl)
	}
	return line
}
