package dagwrap

import "path/filepath"

// resolveLink returns path with symlinks resolved, or path itself if that
// fails (it does not exist yet, say). The dagstore's start-up sweep of the
// transients folder would delete the folder itself if it were a symlink,
// as operators make it to put transients on another disk.
func resolveLink(path string) string {
	if resolved, err := filepath.EvalSymlinks(path); err == nil {
		return resolved
	}
	return path
}
