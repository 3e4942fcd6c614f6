//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package dagwrap

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockRoot takes an exclusive, non-blocking advisory lock on path. flock
// locks belong to the open file description, so a second Wrapper in the same
// process conflicts just like another process does.
func lockRoot(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", path, ErrRootLocked)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}
