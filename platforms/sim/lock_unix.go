//go:build unix

package sim

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// flock opens path (creating it) and takes an advisory lock on it: shared
// or exclusive, waiting for it unless wait is false. The lock belongs to
// the open file: closing it, or the process dying, releases it. locked is
// false only when wait is false and another holder has it.
func flock(path string, exclusive, wait bool) (f *os.File, locked bool, err error) {
	f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, false, err
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	if !wait {
		how |= syscall.LOCK_NB
	}
	for {
		err = syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, true, nil
}
