package dagwrap

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spstack/dagwrap/internal/fsutil"
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

// writeMarker durably creates the marker (see fsutil.WriteFileAtomic).
func writeMarker(dir string, content []byte) error {
	if err := fsutil.WriteFileAtomic(dir, markerName, content); err != nil {
		return fmt.Errorf("migration marker: %w", err)
	}
	return nil
}
