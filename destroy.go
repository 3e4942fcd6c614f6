package dagwrap

import (
	"context"
	"fmt"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
)

// DestroyShard removes the shard, its index, any transient copy and its
// top-level index entries, then sends the result on resch (which may be
// nil). An unknown piece is an error wrapping ErrShardUnknown, returned at
// once; a shard with open accessors fails with ErrShardInUse.
func (w *Wrapper) DestroyShard(ctx context.Context, pieceCid cid.Cid, resch chan dagstore.ShardResult) error {
	if err := checkCID("piece", pieceCid); err != nil {
		return err
	}
	done, err := w.beginCtx(ctx)
	if err != nil {
		return fmt.Errorf("destroy piece %s: %w", pieceCid, err)
	}
	defer done()
	key := shard.KeyFromCID(pieceCid)
	if !w.shards.known(key) {
		return fmt.Errorf("destroy piece %s: %w", pieceCid, ErrShardUnknown)
	}
	ch := make(chan dagstore.ShardResult, 1)
	w.shards.spawn(func() {
		ch <- dagstore.ShardResult{Key: key, Error: w.shards.destroy(ctx, key)}
	})
	w.shards.forward(ctx, pieceCid, ch, resch, nil)
	return nil
}

// DestroyShardSync is DestroyShard that waits for the result.
func (w *Wrapper) DestroyShardSync(ctx context.Context, pieceCid cid.Cid) error {
	if err := checkCID("piece", pieceCid); err != nil {
		return err
	}
	done, err := w.beginCtx(ctx)
	if err != nil {
		return fmt.Errorf("destroy piece %s: %w", pieceCid, err)
	}
	defer done()
	if err := w.shards.destroy(ctx, shard.KeyFromCID(pieceCid)); err != nil {
		return fmt.Errorf("destroy piece %s: %w", pieceCid, err)
	}
	return nil
}
