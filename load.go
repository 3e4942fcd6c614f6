package dagwrap

import (
	"context"
	"errors"
	"fmt"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
)

// wait returns the first result on ch, unless ctx or the wrapper ends first.
func (w *Wrapper) wait(ctx context.Context, ch <-chan dagstore.ShardResult) (dagstore.ShardResult, error) {
	select {
	case res := <-ch:
		if res.Error != nil {
			w.sawFailure(res.Key)
		}
		return res, nil
	case <-ctx.Done():
		return dagstore.ShardResult{}, ctx.Err()
	case <-w.ctx.Done():
		return dagstore.ShardResult{}, ErrClosed
	}
}

// closeLate closes the accessor that will arrive on ch after its caller gave
// up waiting: results land in ch's buffer whether or not anyone listens.
// release ends the acquire's hold once the result is in.
func (w *Wrapper) closeLate(ch <-chan dagstore.ShardResult, release func()) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer release()
		select {
		case res := <-ch:
			w.closeAccessor(res)
		case <-w.dagstClosed:
			select {
			case res := <-ch:
				w.closeAccessor(res)
			default:
			}
		}
	}()
}

func (w *Wrapper) closeAccessor(res dagstore.ShardResult) {
	if res.Accessor != nil {
		if err := res.Accessor.Close(); err != nil {
			w.log.Warnw("closing an accessor nobody waited for", "piece", res.Key, "error", err)
		}
	}
}

// forward delivers the result arriving on ch to the caller's resch, giving up
// when ctx ends. The dagstore delivers into ch's buffer, so a slow or absent
// reader of resch never stalls the dagstore's dispatcher. observe, if not
// nil, sees the result's error first.
func (w *Wrapper) forward(ctx context.Context, pieceCid cid.Cid, ch <-chan dagstore.ShardResult, resch chan dagstore.ShardResult, observe func(error)) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		var res dagstore.ShardResult
		select {
		case res = <-ch:
		case <-w.dagstClosed:
			return
		}
		if observe != nil {
			observe(res.Error)
		}
		if res.Error != nil {
			res.Error = fmt.Errorf("piece %s: %w", pieceCid, res.Error)
		}
		if resch == nil {
			return
		}
		select {
		case resch <- res:
		case <-ctx.Done():
		case <-w.dagstClosed:
		}
	}()
}

// LoadShard returns a read-only blockstore over the piece. A piece the
// dagstore does not know is registered (lazily) and then loaded. Close the
// blockstore to release the shard. If ctx ends first, LoadShard returns its
// error and the accessor that arrives later is closed.
func (w *Wrapper) LoadShard(ctx context.Context, pieceCid cid.Cid) (ClosableBlockstore, error) {
	start := w.m.now()
	bs, err := w.openShard(ctx, pieceCid, true)
	w.m.observe(opAcquire, start, err)
	return bs, err
}

// openShard is LoadShard; with lazy unset, a piece the dagstore does not
// know is an error wrapping ErrShardUnknown instead of a registration.
func (w *Wrapper) openShard(ctx context.Context, pieceCid cid.Cid, lazy bool) (ClosableBlockstore, error) {
	pieceCid, err := pieceV1(pieceCid)
	if err != nil {
		return nil, fmt.Errorf("load piece: %w", err)
	}
	done, err := w.beginCtx(ctx)
	if err != nil {
		return nil, fmt.Errorf("load piece %s: %w", pieceCid, err)
	}
	defer done()

	key := shard.KeyFromCID(pieceCid)
	ch := make(chan dagstore.ShardResult, 1)
	// Acquire under the wrapper's context, not the caller's: the dagstore
	// drops (without closing) a reader fetched under a cancelled context.
	release, err := w.acquire(key, ch)
	if lazy && errors.Is(err, dagstore.ErrShardUnknown) {
		// Only a piece the node has is registered: a load of anything else
		// would leave an errored shard behind for good.
		if _, err := w.api.GetUnpaddedCARSize(ctx, pieceCid); err != nil {
			return nil, fmt.Errorf("load piece %s: not registered, and the miner API does not have it: %w", pieceCid, err)
		}
		w.log.Infow("piece not registered; registering it lazily", "piece", pieceCid)
		if err := w.registerSync(ctx, pieceCid, "", false); err != nil && !errors.Is(err, ErrShardExists) {
			return nil, fmt.Errorf("load piece %s: %w", pieceCid, err)
		}
		release, err = w.acquire(key, ch)
	}
	if err != nil {
		return nil, fmt.Errorf("load piece %s: acquire shard: %w", pieceCid, err)
	}
	res, err := w.wait(ctx, ch)
	if err != nil {
		w.closeLate(ch, release)
		return nil, fmt.Errorf("load piece %s: %w", pieceCid, err)
	}
	// The hold ends only once the accessor is closed or counted as open, so
	// a destroy never finds the piece free while the dagstore still serves it.
	defer release()
	if res.Error != nil {
		w.closeAccessor(res)
		return nil, fmt.Errorf("load piece %s: %w", pieceCid, res.Error)
	}
	bs, err := res.Accessor.Blockstore()
	if err != nil {
		w.closeAccessor(res)
		return nil, fmt.Errorf("load piece %s: open blockstore: %w", pieceCid, err)
	}
	closed := w.pieces.opened(key)
	released := func() <-chan struct{} { return w.releases.expect(key) }
	serving := func() bool {
		info, err := w.shardInfo(key)
		return err == nil && info.ShardState == dagstore.ShardStateServing
	}
	return w.withAggregateKeys(&shardBlockstore{ReadBlockstore: bs, piece: pieceCid, acc: res.Accessor,
		closed: closed, released: released, serving: serving, stopped: w.dagstClosed}), nil
}

// acquire queues an acquisition of the shard, held (see pieceLocks.hold)
// until the returned func is called. The piece lock orders it with
// destroys: the dagstore looks the shard up before queueing, and an acquire
// queued after the shard's destroy would run on the destroyed shard.
func (w *Wrapper) acquire(key shard.Key, ch chan dagstore.ShardResult) (func(), error) {
	unlock := w.pieces.lock(key)
	defer unlock()
	if bad, ok := w.bad.get(key); ok {
		return nil, bad // never registered anew over it, as LoadShard would
	}
	if err := w.dagst.AcquireShard(w.ctx, key, ch, dagstore.AcquireOpts{}); err != nil {
		return nil, err
	}
	return w.pieces.hold(key), nil
}
