package dagwrap

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
)

// gc deletes the transient copies of shards not being
// served (available or errored, no acquire pending) and whatever else is
// left in the transients folder by shards that are gone, copies a crash
// interrupted, or the dagstore's own copier in older versions. A copy in
// flight is never touched. The dagstore's GC has nothing to do: it makes no
// copies (see pieceMount). Deleting a copy a reader still has open is
// harmless: the reader keeps the data until it closes.
// The run is counted in the metrics.
func (s *shards) gc(ctx context.Context) (GCResult, error) {
	start := s.m.now()
	res, err := s.files.transients.collect(ctx, func(key shard.Key, complete bool, path string) (int64, error) {
		unlock := s.pieces.lock(key)
		defer unlock()
		if s.files.transients.copying(key) {
			return -1, nil
		}
		if info, err := s.info(key); err == nil && complete {
			idle := info.ShardState == dagstore.ShardStateAvailable || info.ShardState == dagstore.ShardStateErrored
			if !idle || s.pieces.held(key) {
				return -1, nil
			}
		}
		return removeFile(path)
	})
	s.m.observe(opGC, start, err)
	return res, err
}

// collect removes each transient that try allows (try returns its size, or
// -1 to keep it).
func (t *transients) collect(ctx context.Context, try func(key shard.Key, complete bool, path string) (int64, error)) (GCResult, error) {
	out := GCResult{Failed: map[cid.Cid]error{}}
	ents, err := os.ReadDir(t.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return out, fmt.Errorf("list transients: %w", err)
	}
	reclaimed := map[cid.Cid]int64{}
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		key, complete, ok := transientKey(e.Name())
		if !ok || e.IsDir() {
			continue
		}
		pc, err := cid.Decode(key.String())
		if err != nil {
			continue
		}
		size, err := try(key, complete, filepath.Join(t.dir, e.Name()))
		if err != nil {
			out.Failed[pc] = fmt.Errorf("piece %s: remove transient: %w", pc, err)
		} else if size >= 0 {
			reclaimed[pc] += size
		}
	}
	for pc, size := range reclaimed {
		out.Reclaimed = append(out.Reclaimed, ReclaimedTransient{PieceCID: pc, Bytes: size})
		out.Bytes += size
	}
	sort.Slice(out.Reclaimed, func(i, j int) bool {
		return out.Reclaimed[i].PieceCID.String() < out.Reclaimed[j].PieceCID.String()
	})
	if len(out.Failed) > 0 {
		errs := make([]error, 0, len(out.Failed))
		for _, err := range out.Failed {
			errs = append(errs, err)
		}
		sortErrors(errs)
		return out, fmt.Errorf("%d transients could not be removed: %w", len(out.Failed), errors.Join(errs...))
	}
	return out, nil
}

// removeFile removes path and returns its size, or -1 if it was gone.
func removeFile(path string) (int64, error) {
	st, err := os.Lstat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return -1, nil
		}
		return -1, err
	}
	if err := os.Remove(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return -1, nil
		}
		return -1, err
	}
	return st.Size(), nil
}
