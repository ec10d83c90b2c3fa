package compose

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"rollbot/platforms"
	"rollbot/testkit/platformtest"
)

// TestComposeFileUnusableIsSaidInWords: with mode compose_file, a compose
// file rollbot cannot edit is refused with a message in rollbot's words
// (what is wrong with the file), not with the raw error text.
func TestComposeFileUnusableIsSaidInWords(t *testing.T) {
	file := strings.Replace(fmt.Sprintf(pinned, "v2"), "rollbot-sampleapp:v2", "rollbot-sampleapp:${WEB_TAG}", 1)
	p := newProject(t, file)
	p.Compose([]string{"WEB_TAG=v2"}, "up", "-d", "web")
	a := p.adapter(Config{Service: "web", Mode: ModeComposeFile})
	_, err := a.Rollback(context.Background(), platforms.Revision{ID: "v1"}, false, nil)
	msg := platformtest.UserMessage(t, err)
	for _, want := range []string{
		"cannot roll back compose service web through its compose file: ",
		"sets services.web.image through a variable (rollbot-sampleapp:${WEB_TAG}), which rollbot does not edit",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("user message %q lacks %q", msg, want)
		}
	}
	if strings.Count(msg, "which rollbot does not edit") != 1 {
		t.Errorf("user message repeats its cause: %q", msg)
	}
}
