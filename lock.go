package dagwrap

import (
	"errors"
	"fmt"

	"github.com/gofrs/flock"
)

// rootLock holds RootDir/.lock while the Wrapper is open.
type rootLock struct {
	f *flock.Flock // nil where the platform has no file locks
}

// lockRoot takes an exclusive, non-blocking lock on path: flock(2) on Unix,
// LockFileEx on Windows. Both belong to the open file, so a second Wrapper
// in the same process conflicts just like another process does.
func lockRoot(path string) (*rootLock, error) {
	f := flock.New(path, flock.SetPermissions(0o644))
	ok, err := f.TryLock()
	switch {
	case errors.Is(err, errors.ErrUnsupported):
		// No file locks on this platform (Plan 9): LevelDB's own lock
		// still refuses a second opener of the shard-state datastore.
		return &rootLock{}, nil
	case err != nil:
		return nil, fmt.Errorf("lock %s: %w", path, err)
	case !ok:
		return nil, fmt.Errorf("%s: %w", path, ErrRootLocked)
	}
	return &rootLock{f: f}, nil
}

// Close releases the lock; the file stays, for the next Wrapper.
func (l *rootLock) Close() error {
	if l.f == nil {
		return nil
	}
	return l.f.Close()
}
