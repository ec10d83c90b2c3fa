package rollbotbin

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// With the release tags the standard library's plugin package is not
// linked (a kustomize upgrade that renamed its tag would bring it back).
func TestReleaseTagsDropPlugin(t *testing.T) {
	deps := func(args ...string) []string {
		out, err := exec.Command("go", append(append([]string{"list", "-deps"}, args...), "rollbot")...).Output()
		if err != nil {
			t.Fatalf("go list -deps %v: %v", args, err)
		}
		return strings.Fields(string(out))
	}
	if !slices.Contains(deps(), "plugin") {
		t.Fatal("without the tags rollbot no longer links plugin: the tag may be unneeded, drop it from Tags and the Dockerfile")
	}
	if slices.Contains(deps("-tags", Tags), "plugin") {
		t.Fatalf("with -tags %s rollbot still links the plugin package", Tags)
	}
}
