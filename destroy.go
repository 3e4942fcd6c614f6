package dagwrap

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/index"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
	carindex "github.com/ipld/go-car/v2/index"
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
	if !w.known(key) {
		return fmt.Errorf("destroy piece %s: %w", pieceCid, ErrShardUnknown)
	}
	ch := make(chan dagstore.ShardResult, 1)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		ch <- dagstore.ShardResult{Key: key, Error: w.destroy(ctx, pieceCid)}
	}()
	w.forward(ctx, pieceCid, ch, resch, nil)
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
	if err := w.destroy(ctx, pieceCid); err != nil {
		return fmt.Errorf("destroy piece %s: %w", pieceCid, err)
	}
	return nil
}

func (w *Wrapper) destroy(ctx context.Context, pieceCid cid.Cid) error {
	key := shard.KeyFromCID(pieceCid)
	unlock := w.pieces.lock(key)
	defer unlock()
	// The cross-piece blockstore's copy closes once its requests in flight
	// end; new ones wait for the piece lock and then find the piece gone.
	for _, gone := range w.cache.evict(key) {
		select {
		case <-gone:
		case <-ctx.Done():
			return fmt.Errorf("%w: requests through Blockstore are reading it: %w", ErrShardInUse, ctx.Err())
		case <-w.ctx.Done():
			return ErrClosed
		}
	}
	// A caller's open blockstore keeps the shard: refuse at once.
	if n := w.pieces.openCount(key); n > 0 {
		return fmt.Errorf("%w: %d blockstores open", ErrShardInUse, n)
	}
	// A queued acquire or recovery may start an initialisation before the
	// dagstore gets to the destroy, and a late accessor nobody waited for
	// is still being closed: both end on their own, so wait for them. New
	// ones queue under the piece lock, which is held here.
	select {
	case <-w.pieces.whenIdle(key):
	case <-ctx.Done():
		return fmt.Errorf("%w: an acquire or recovery is pending: %w", ErrShardInUse, ctx.Err())
	case <-w.ctx.Done():
		return ErrClosed
	}
	if n := w.pieces.openCount(key); n > 0 { // an acquire that ended in a caller's hands
		return fmt.Errorf("%w: %d blockstores open", ErrShardInUse, n)
	}
	info, err := w.shardInfo(key)
	if err != nil {
		if _, bad := w.bad.get(key); bad && errors.Is(err, dagstore.ErrShardUnknown) {
			return w.destroyRecord(key)
		}
		return err
	}
	// The dagstore would destroy a shard mid-initialisation and then write
	// its record back when the initialisation completes.
	if info.ShardState == dagstore.ShardStateInitializing || info.ShardState == dagstore.ShardStateRecovering {
		return fmt.Errorf("%w: shard is %s", ErrShardInUse, info.ShardState)
	}
	// Every release of an accessor was queued before this destroy (the
	// counts above), and the dagstore handles both in order.
	res, err := w.destroyShard(key)
	if err != nil {
		return err
	}
	if res.Error != nil {
		return res.Error
	}
	// An initialisation the destroy raced with writes the record back when
	// it completes; from now on such writes are dropped.
	if err := w.records.forget(w.ctx, key); err != nil {
		return err
	}
	// The dagstore deleted only the shard's record; remove the rest.
	return w.purge(w.ctx, key)
}

// destroyRecord removes a shard record the dagstore could not restore, and
// what its shard left on disk. Callers hold the piece lock.
func (w *Wrapper) destroyRecord(key shard.Key) error {
	if err := w.records.forget(w.ctx, key); err != nil {
		return err
	}
	if err := w.purge(w.ctx, key); err != nil {
		return err
	}
	w.bad.remove(key)
	return nil
}

// purge removes what a destroyed shard leaves on disk: its top-level index
// entries (listed by its index, so they go first), its index and its
// transient. Callers hold the piece lock.
func (w *Wrapper) purge(ctx context.Context, key shard.Key) error {
	var mhs index.MultihashIterator
	if idx, err := w.irepo.GetFullIndex(key); err == nil {
		if it, ok := idx.(carindex.IterableIndex); ok {
			mhs = indexMultihashes{it}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		// The entries are found by a scan instead: a destroy must never be
		// stopped by the index it is removing.
		w.log.Warnw("destroy: the piece's index cannot be read; its lookups are reclaimed by a scan", "piece", key, "error", err)
	}
	if r, ok := w.top.(shardRemover); ok {
		if err := r.RemoveShard(ctx, mhs, key); err != nil {
			return err
		}
	}
	if _, err := w.irepo.DropFullIndex(key); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("drop index: %w", err)
	}
	if err := removeOversized(filepath.Join(w.cfg.RootDir, oversizedDir), key); err != nil {
		return err
	}
	if err := w.segmentStore().remove(ctx, key); err != nil {
		return err
	}
	return w.transients.remove(key)
}

// indexMultihashes adapts a CAR index to the dagstore's multihash iterator.
type indexMultihashes struct{ idx carindex.IterableIndex }
