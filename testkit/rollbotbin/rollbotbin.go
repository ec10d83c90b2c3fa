// Package rollbotbin builds the rollbot command the way the Dockerfile
// does, for tests and benchmarks that run it as a real process.
package rollbotbin

import (
	"fmt"
	"os"
	"os/exec"
)

// Tags are the build tags of a rollbot release (the Dockerfile's, less
// netgo and osusergo, which only matter for its static link).
// kustomize_disable_go_plugin_support: Helm's action package reaches
// kustomize, whose Go-plugin loader imports the standard library's
// plugin package; a binary that links it exports every symbol (a 24 MB
// dynamic symbol table) and keeps methods the linker would otherwise
// drop. rollbot loads no kustomize plugins.
const Tags = "kustomize_disable_go_plugin_support"

// Build builds the rollbot command into out, and flushes it to disk as
// a deployed executable is: while the kernel is still writing a new file
// back, it cannot release its pages, and rollbot's memory after start-up
// (bot/pages_linux.go) would not be what it is in production.
func Build(out string) error {
	b, err := exec.Command("go", "build", "-tags", Tags, "-o", out, "rollbot").CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build rollbot: %v\n%s", err, b)
	}
	f, err := os.Open(out)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
