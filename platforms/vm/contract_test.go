package vm

import (
	"testing"

	"rollbot/testkit/platformtest"
)

// TestContract runs the shared adapter contract on two real sshd hosts
// (backup strategy): v2 runs, v1 is in the backup directory.
func TestContract(t *testing.T) {
	f := newFleet(t, Backup, "hostA", "hostB")
	platformtest.Contract(t, platformtest.Env{Platform: f.adapter(t), Good: "/opt/myapp/backup/v1/myapp", Bad: "/opt/myapp/backup/v2/myapp", StopMayBeSkipped: true})
}
