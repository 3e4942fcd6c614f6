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

// collectTransients deletes the transient copies of shards not being
// served (available or errored, no acquire pending) and whatever else is
// left in the transients folder by shards that are gone, copies a crash
// interrupted, or the dagstore's own copier in older versions. A copy in
// flight is never touched. The dagstore's GC has nothing to do: it makes no
// copies (see pieceMount). Deleting a copy a reader still has open is
// harmless: the reader keeps the data until it closes.
func (w *Wrapper) collectTransients(ctx context.Context) (GCResult, error) {
	out := GCResult{Failed: map[cid.Cid]error{}}
	ents, err := os.ReadDir(w.transients.dir)
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
		size, err := w.collectTransient(key, complete, filepath.Join(w.transients.dir, e.Name()))
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

// collectTransient deletes one file of the piece's if it is not in use
// and returns its size, or -1 if it was left alone. The piece lock orders
// it with acquires being queued.
func (w *Wrapper) collectTransient(key shard.Key, complete bool, path string) (int64, error) {
	unlock := w.pieces.lock(key)
	defer unlock()
	if w.transients.copying(key) {
		return -1, nil
	}
	if info, err := w.shardInfo(key); err == nil && complete {
		idle := info.ShardState == dagstore.ShardStateAvailable || info.ShardState == dagstore.ShardStateErrored
		if !idle || w.pieces.held(key) {
			return -1, nil
		}
	}
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
