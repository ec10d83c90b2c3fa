//go:build !unix

package sim

import (
	"errors"
	"os"
)

func flock(path string, exclusive, wait bool) (*os.File, bool, error) {
	return nil, false, errors.New("state_file needs advisory file locks (flock), which only Unix systems have")
}
