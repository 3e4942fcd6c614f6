package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/gofrs/flock"

	"github.com/spstack/dagwrap/internal/fsutil"
)

// An export is written to a temporary file named exportTempPrefix + random
// + exportTempSuffix in the output's folder, then renamed. Its writer holds
// a lock file next to it (the temporary file's name + exportLockSuffix,
// locked with gofrs/flock: flock on Unix, LockFileEx on Windows), so the
// next export to that folder can tell the leftover of a killed export
// (unlocked) from one being written, and removes it. The lock is a file of
// its own because LockFileEx locks bytes: a lock on the temporary file
// itself would stop its writer on Windows.
const (
	exportTempPrefix = ".dagwrap-export-"
	exportTempSuffix = ".tmp"
	exportLockSuffix = ".lock"
)

// exportTemp is an export's temporary file, locked while it is written.
type exportTemp struct {
	*fsutil.File
	lock *flock.Flock
}

// createExportTemp creates a locked temporary file for an export in dir. A
// remover of leftovers may lock and delete the file between its creation
// and its lock; then another is made.
func createExportTemp(dir string) (*exportTemp, error) {
	for attempt := 0; ; attempt++ {
		f, err := fsutil.Create(dir, exportTempPrefix+"*"+exportTempSuffix)
		if err != nil {
			return nil, err
		}
		lock := flock.New(f.Name()+exportLockSuffix, flock.SetPermissions(0o600))
		locked, err := lock.TryLock()
		if err != nil {
			f.Abort()
			return nil, fmt.Errorf("temporary file %s: lock it: %w", f.Name(), err)
		}
		// A remover deletes a temporary file only while it holds its lock.
		if locked && stillAt(f.File) {
			return &exportTemp{File: f, lock: lock}, nil
		}
		_ = lock.Close()
		_ = f.Close() // the remover that took it deletes it
		if attempt == 2 {
			return nil, fmt.Errorf("temporary file %s: cannot lock it", f.Name())
		}
	}
}

// Commit renames the temporary file to path (see fsutil.File.Commit) and
// drops its lock.
func (t *exportTemp) Commit(path string) error {
	err := t.File.Commit(path)
	t.unlock()
	return err
}

// Abort removes the temporary file, if not committed, and drops its lock.
func (t *exportTemp) Abort() {
	t.File.Abort()
	t.unlock()
}

func (t *exportTemp) unlock() {
	if t.lock != nil {
		_ = os.Remove(t.lock.Path()) // while held: no remover is at it
		_ = t.lock.Close()
		t.lock = nil
	}
}

// stillAt reports whether f's path still names f.
func stillAt(f *os.File) bool {
	a, err1 := f.Stat()
	b, err2 := os.Stat(f.Name())
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

// removeStaleExportTemps deletes the temporary files of killed exports in
// dir, and their lock files: those no export holds locked. It is best
// effort: a file it cannot remove is only left behind.
func removeStaleExportTemps(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		name := strings.TrimSuffix(e.Name(), exportLockSuffix)
		if !e.Type().IsRegular() || !strings.HasPrefix(name, exportTempPrefix) || !strings.HasSuffix(name, exportTempSuffix) {
			continue
		}
		temp := filepath.Join(dir, name)
		if name != e.Name() {
			if _, err := os.Lstat(temp); err == nil {
				continue // the lock of a temporary file listed on its own
			}
		}
		lock := flock.New(temp+exportLockSuffix, flock.SetPermissions(0o600))
		if locked, err := lock.TryLock(); err == nil && locked {
			_ = os.Remove(temp)
			_ = os.Remove(lock.Path())
		}
		_ = lock.Close()
	}
}
