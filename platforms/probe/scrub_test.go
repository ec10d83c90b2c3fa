package probe

import (
	"context"
	"strings"
	"testing"
	"time"
)

// A smoke test that prints credentials: the output kept for Slack has
// none of them, even a secret that crosses the line-length cut.
func TestSmokeOutputIsScrubbed(t *testing.T) {
	long := strings.Repeat("x", maxLineBytes-8) + " edge-known-value-77 and more" // crosses the display cut
	script := `echo "> Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig"
echo "> Proxy-Authorization: Basic dXNlcjpwYXNzd29yZA=="
echo "dialing postgres://app:url-pw-1234@db:5432/shop"
echo 'config: {"password": "json-pw-5678", "api_key": "key-9999"}'
echo "token=tok-abcdef&user=x"
echo "slack says xoxb-1111-2222-abcdef"
echo "known value known-secret-42 printed"
echo "` + long + `"
echo "health: ok at http://web:8080/health"
exit 1`
	r := Smoke{Command: []string{"sh", "-c", script}, Timeout: 30 * time.Second, Redact: []string{"known-secret-42", "edge-known-value-77"}}.Run(context.Background())
	if r.OK || r.ExitCode != 1 {
		t.Fatalf("smoke = %+v", r)
	}
	for _, s := range []string{"eyJhbGciOiJIUzI1NiJ9", "dXNlcjpwYXNzd29yZA", "url-pw-1234", "json-pw-5678", "key-9999", "tok-abcdef",
		"xoxb-1111", "known-secret-42", "edge-k"} {
		if strings.Contains(r.Output, s) {
			t.Errorf("output shows %q:\n%s", s, r.Output)
		}
	}
	// What is not a credential stays readable.
	for _, s := range []string{"dialing postgres://app:[REDACTED]@db:5432/shop", "health: ok at http://web:8080/health", "Authorization: Bearer [REDACTED]"} {
		if !strings.Contains(r.Output, s) {
			t.Errorf("output lacks %q:\n%s", s, r.Output)
		}
	}
}
