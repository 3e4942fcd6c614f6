package dagwrap

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/filecoin-project/dagstore/index"
	"github.com/filecoin-project/dagstore/shard"
	carindex "github.com/ipld/go-car/v2/index"

	"github.com/spstack/dagwrap/internal/fsutil"
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
func (r *indexRepo) AddFullIndex(key shard.Key, idx carindex.Index) error {
	tmp, err := fsutil.Create(r.dir, "."+key.String()+indexTmpMarker+"*")
	if err != nil {
		return fmt.Errorf("create index file: %w", err)
	}
	defer tmp.Abort()
	bw := bufio.NewWriter(tmp)
	if _, err := carindex.WriteTo(idx, bw); err != nil {
		return fmt.Errorf("write index: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write index: %w", err)
	}
	if err := tmp.Commit(r.path(key)); err != nil {
		return fmt.Errorf("index: %w", err)
	}
	return nil
}

// GetFullIndex returns the shard's index read in place from a memory map
// (see mappedIndex): no index in memory, and the cost of opening it does
// not grow with the piece. An index of another codec is decoded the stock
// way. An index that cannot be read is an error naming the file, so its
// shard fails with a cause an operator can act on (recovery rebuilds it).
func (r *indexRepo) GetFullIndex(key shard.Key) (carindex.Index, error) {
	path := r.path(key)
	idx, err := openMappedIndex(path)
	if errors.Is(err, errNotMapped) {
		var full carindex.Index
		if full, err = r.FSIndexRepo.GetFullIndex(key); err == nil {
			return full, nil
		}
	}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("index %s of piece %s cannot be read: %w", path, key, err)
	}
	return idx, nil
}

func (r *indexRepo) path(key shard.Key) string {
	return filepath.Join(r.dir, key.String()+indexSuffix)
}

// mapped opens key's index file from a memory map, or fails (errNotMapped
// for an index of another codec) without decoding it.
func (r *indexRepo) mapped(key shard.Key) (*mappedIndex, error) {
	return openMappedIndex(r.path(key))
}

// indexFiles lists the repo's index files. The stock repo walks the folder
// with filepath.Walk and dereferences the FileInfo of an entry that vanished
// mid-walk (an index being renamed into place, say): a panic in whatever
// goroutine listed it. Entries that vanish are skipped here instead.
func (r *indexRepo) indexFiles(f func(name string, info os.FileInfo) (bool, error)) error {
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		return fmt.Errorf("list index folder %s: %w", r.dir, err)
	}
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, indexSuffix) || strings.HasPrefix(name, ".") {
			continue
		}
		info, err := e.Info()
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("stat index %s: %w", filepath.Join(r.dir, name), err)
		}
		if more, err := f(name, info); err != nil || !more {
			return err
		}
	}
	return nil
}

// ForEach calls f with the key of every index, until f returns false.
func (r *indexRepo) ForEach(f func(shard.Key) (bool, error)) error {
	return r.indexFiles(func(name string, _ os.FileInfo) (bool, error) {
		return f(shard.KeyFromString(strings.TrimSuffix(name, indexSuffix)))
	})
}

// Len counts the indexes.
func (r *indexRepo) Len() (int, error) {
	n := 0
	err := r.indexFiles(func(string, os.FileInfo) (bool, error) { n++; return true, nil })
	return n, err
}

// Size sums the indexes' sizes.
func (r *indexRepo) Size() (uint64, error) {
	var size uint64
	err := r.indexFiles(func(_ string, info os.FileInfo) (bool, error) { size += uint64(info.Size()); return true, nil })
	return size, err
}
