package platformtest

import (
	"testing"

	"rollbot/platforms"
)

// UserMessage is the text a Slack user sees of err (platforms.UserMessage);
// it fails t when err is nil or carries no user message, so an adapter's
// test can assert on the words without a copy of this check.
func UserMessage(t testing.TB, err error) string {
	t.Helper()
	if err == nil {
		t.Fatal("got no error")
	}
	msg, ok := platforms.UserMessage(err)
	if !ok {
		t.Fatalf("error %q carries no user message", err)
	}
	return msg
}
