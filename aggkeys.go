package dagwrap

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// aggregateBlockstore is the blockstore of an aggregated piece. go-car's
// AllKeysChan walks the data payload section by section from its CAR
// header; an aggregate's payload is the synthetic header followed by the
// piece, whose segments (each with its own CAR header, and padding between
// them) are no one CAR, so the walk would stop at the first segment. Its
// keys are listed from the piece's index instead, as go-car names them
// (raw CIDs of the multihashes).
type aggregateBlockstore struct {
	*shardBlockstore
	w *Wrapper
}

// withAggregateKeys returns b, made to list an aggregate's keys from its
// index if the piece is one.
func withAggregateKeys(w *Wrapper, b *shardBlockstore) ClosableBlockstore {
	if _, found, err := w.segs.header(shard.KeyFromCID(b.piece)); err != nil || !found {
		return b // an unreadable record fails this piece's fetches, and so its loads
	}
	return &aggregateBlockstore{shardBlockstore: b, w: w}
}

// AllKeysChan lists every block the piece's index holds (a block stored
// twice, twice). The channel closes when they are all sent, or ctx ends,
// or the Wrapper closes.
func (b *aggregateBlockstore) AllKeysChan(ctx context.Context) (<-chan cid.Cid, error) {
	idx, err := b.w.GetIterableIndexForPiece(b.piece)
	if err != nil {
		return nil, err
	}
	done, err := b.w.begin()
	if err != nil {
		return nil, fmt.Errorf("keys of piece %s: %w", b.piece, err)
	}
	defer done()
	ch := make(chan cid.Cid, 16)
	stop := errors.New("stopped")
	b.w.shards.spawn(func() { // under begin: Close waits for it
		defer close(ch)
		if c, ok := idx.(io.Closer); ok {
			defer c.Close() // a mapped index: unmap it
		}
		err := idx.ForEach(func(mh multihash.Multihash, _ uint64) error {
			select {
			case ch <- cid.NewCidV1(cid.Raw, mh):
				return nil
			case <-ctx.Done():
				return stop
			case <-b.w.ctx.Done():
				return stop
			}
		})
		if err != nil && !errors.Is(err, stop) {
			b.w.log.Warnw("listing an aggregate's keys failed", "piece", b.piece, "error", err)
		}
	})
	return ch, nil
}
