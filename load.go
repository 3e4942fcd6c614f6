package dagwrap

import (
	"context"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
)

// LoadShard returns a read-only blockstore over the piece. A piece the
// dagstore does not know is registered (lazily) and then loaded. Close the
// blockstore to release the shard. If ctx ends first, LoadShard returns its
// error and the accessor that arrives later is closed.
func (w *Wrapper) LoadShard(ctx context.Context, pieceCid cid.Cid) (_ ClosableBlockstore, err error) {
	start := w.m.now()
	defer func() { w.m.observe(opAcquire, start, err) }()
	pieceCid, err = pieceV1(pieceCid)
	if err != nil {
		return nil, fmt.Errorf("load piece: %w", err)
	}
	done, err := w.beginCtx(ctx)
	if err != nil {
		return nil, fmt.Errorf("load piece %s: %w", pieceCid, err)
	}
	defer done()

	unknown := func() error {
		// Only a piece the node has is registered: a load of anything else
		// would leave an errored shard behind for good.
		if _, err := w.api.GetUnpaddedCARSize(ctx, pieceCid); err != nil {
			return fmt.Errorf("not registered, and the miner API does not have it: %w", err)
		}
		w.log.Infow("piece not registered; registering it lazily", "piece", pieceCid)
		if err := w.registerSync(ctx, pieceCid, "", false); err != nil && !errors.Is(err, ErrShardExists) {
			return err
		}
		return nil
	}
	bs, err := w.shards.open(ctx, pieceCid, unknown)
	if err != nil {
		return nil, fmt.Errorf("load piece %s: %w", pieceCid, err)
	}
	return withAggregateKeys(w, bs), nil
}
