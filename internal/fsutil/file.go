package fsutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// File is the next content of a file, written to a temporary file in the
// target's folder: Commit makes it the target's (sync, rename, folder
// sync), so a crash leaves the target either as it was or complete, and the
// temporary file is all that an interrupted write leaves.
type File struct {
	*os.File
	done bool
}

// Create makes the temporary file in dir, named by pattern as
// os.CreateTemp names it.
func Create(dir, pattern string) (*File, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	return &File{File: f}, nil
}

// Commit syncs and closes the file and renames it to path, then syncs
// path's folder: the rename is durable only once its folder is. On an error
// the temporary file is removed.
func (f *File) Commit(path string) error {
	if f.done {
		return errors.New("fsutil: file already committed or aborted")
	}
	f.done = true
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return SyncDir(filepath.Dir(path))
}

// Abort closes and removes the temporary file; after Commit it does nothing,
// so it can be deferred.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	_ = f.Close()
	_ = os.Remove(f.Name())
}
