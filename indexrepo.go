package dagwrap

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/filecoin-project/dagstore/index"
	"github.com/filecoin-project/dagstore/shard"
	carindex "github.com/ipld/go-car/v2/index"
)

// Names in the index folder: the dagstore's FS repo keeps <key>.full.idx;
// an index being written lives in a hidden temporary file until renamed.
const (
	indexSuffix    = ".full.idx"
	indexTmpMarker = ".idx-tmp-"
)

// indexRepo is the dagstore's file index repo with crash-safe writes. The
// stock repo writes an index in place, so a crash mid-write leaves a
// truncated index that the dagstore takes for a complete one on restart,
// and the shard's next acquire fails. Here an index appears under its name
// only once it is completely written and synced.
type indexRepo struct {
	*index.FSIndexRepo
	dir string
}

var _ index.FullIndexRepo = (*indexRepo)(nil)

// newIndexRepo opens the repo in dir and removes the temporary files of
// writes a crash interrupted.
func newIndexRepo(dir string) (*indexRepo, error) {
	fsr, err := index.NewFSRepo(dir)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list index folder: %w", err)
	}
	for _, e := range ents {
		if strings.Contains(e.Name(), indexTmpMarker) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return nil, fmt.Errorf("remove interrupted index write: %w", err)
			}
		}
	}
	return &indexRepo{FSIndexRepo: fsr, dir: dir}, nil
}

// AddFullIndex writes the index to a temporary file, syncs it and renames
// it into place, so the shard's index is either absent or complete.
func (r *indexRepo) AddFullIndex(key shard.Key, idx carindex.Index) (err error) {
	tmp, err := os.CreateTemp(r.dir, "."+key.String()+indexTmpMarker+"*")
	if err != nil {
		return fmt.Errorf("create index file: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	bw := bufio.NewWriter(tmp)
	if _, err := carindex.WriteTo(idx, bw); err != nil {
		return fmt.Errorf("write index: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write index: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync index: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close index: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(r.dir, key.String()+indexSuffix)); err != nil {
		return fmt.Errorf("rename index into place: %w", err)
	}
	return nil
}
