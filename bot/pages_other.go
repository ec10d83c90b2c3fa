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
