package redistest

import "syscall"

// deathSignal makes the kernel kill redis-server when the test binary exits.
func deathSignal() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
