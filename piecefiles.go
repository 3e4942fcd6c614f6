package dagwrap

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/filecoin-project/dagstore/index"
	"github.com/filecoin-project/dagstore/shard"
	logging "github.com/ipfs/go-log/v2"
	carindex "github.com/ipld/go-car/v2/index"
	"github.com/multiformats/go-multihash"
)

// pieceFiles is what a shard keeps besides its record: its index, its
// top-level entries, its list of oversized blocks, its segment records and
// its transient copy.
type pieceFiles struct {
	irepo      index.FullIndexRepo
	top        index.Inverted
	oversized  string // the folder of oversized-block lists
	segs       *segmentStore
	transients *transients
	log        *logging.ZapEventLogger
}

// purge removes what a destroyed shard leaves on disk: its top-level index
// entries (listed by its index, so they go first), its index and its
// transient. Callers hold the piece lock.
func (f *pieceFiles) purge(ctx context.Context, key shard.Key) error {
	var mhs index.MultihashIterator
	if idx, err := f.irepo.GetFullIndex(key); err == nil {
		if it, ok := idx.(carindex.IterableIndex); ok {
			mhs = indexMultihashes{it}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		// The entries are found by a scan instead: a destroy must never be
		// stopped by the index it is removing.
		f.log.Warnw("destroy: the piece's index cannot be read; its lookups are reclaimed by a scan", "piece", key, "error", err)
	}
	if r, ok := f.top.(shardRemover); ok {
		if err := r.RemoveShard(ctx, mhs, key); err != nil {
			return err
		}
	}
	if _, err := f.irepo.DropFullIndex(key); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("drop index: %w", err)
	}
	if err := removeOversized(f.oversized, key); err != nil {
		return err
	}
	if err := f.segs.remove(ctx, key); err != nil {
		return err
	}
	return f.transients.remove(key)
}

// indexMultihashes adapts a CAR index to the dagstore's multihash iterator.
type indexMultihashes struct{ idx carindex.IterableIndex }

func (m indexMultihashes) ForEach(fn func(multihash.Multihash) error) error {
	return m.idx.ForEach(func(mh multihash.Multihash, _ uint64) error { return fn(mh) })
}
