//go:build !linux

package bot

import "errors"

// releaseStartupPages is Linux only (MADV_PAGEOUT).
func releaseStartupPages() (before, after int, err error) {
	return 0, 0, errors.ErrUnsupported
}

// readAheadTables is Linux only.
func readAheadTables() error {
	return errors.ErrUnsupported
}

// unmapIdlePages is Linux only.
func unmapIdlePages() error {
	return errors.ErrUnsupported
}

// fileRange is a run of pages of the executable file.
type fileRange struct{ off, n int64 }

// mappedExePages is Linux only.
func mappedExePages() ([]fileRange, error) {
	return nil, errors.ErrUnsupported
}

// touchPageCache is Linux only.
func touchPageCache([]fileRange) error {
	return errors.ErrUnsupported
}
