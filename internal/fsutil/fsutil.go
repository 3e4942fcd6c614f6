// Package fsutil holds the crash-safe file writes dagwrap and its piece
// folder share.
package fsutil

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteFileAtomic replaces dir/name so that a crash leaves either the old
// content or the new, never a mix: the content goes to a temporary file that
// is synced and renamed into place, and the folder is synced so the rename
// itself survives a power cut.
func WriteFileAtomic(dir, name string, content []byte) error {
	f, err := Create(dir, name+".tmp-*")
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	defer f.Abort()
	if _, err := f.Write(content); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return f.Commit(filepath.Join(dir, name))
}

// SyncDir fsyncs a folder so that entries created or renamed in it are durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s for sync: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
