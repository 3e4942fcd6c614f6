package dagwrap

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// markerName is the file whose presence says the one-time deal migration
// finished. The name is Lotus's, so a root Lotus migrated is not migrated again.
const markerName = ".shard-registration-complete"

// markerExists reports whether the migration marker is in dir.
func markerExists(dir string) (bool, error) {
	_, err := os.Stat(filepath.Join(dir, markerName))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("stat migration marker: %w", err)
	}
}

// writeMarker durably creates the marker: the content goes to a temporary
// file that is synced, renamed into place, and the folder is synced so the
// rename itself survives a power cut.
func writeMarker(dir string, content []byte) error {
	tmp, err := os.CreateTemp(dir, markerName+".tmp-*")
	if err != nil {
		return fmt.Errorf("create migration marker: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	if _, err := tmp.Write(content); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write migration marker: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("sync migration marker: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close migration marker: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, markerName)); err != nil {
		return fmt.Errorf("rename migration marker: %w", err)
	}
	return syncDir(dir)
}

// syncDir fsyncs a folder so that entries created or renamed in it are durable.
func syncDir(dir string) error {
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
