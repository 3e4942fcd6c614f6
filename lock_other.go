//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package dagwrap

import (
	"fmt"
	"os"
)

// lockRoot only creates the lock file here; LevelDB's own lock still refuses
// a second opener of the datastore.
func lockRoot(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file %s: %w", path, err)
	}
	return f, nil
}
