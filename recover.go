package dagwrap

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
)

// RecoverShard re-fetches and re-indexes an errored shard and returns once
// it is available again, or the recovery's error. A shard that is not
// errored is an error wrapping ErrShardNotErrored. If ctx ends first the
// recovery goes on in the background.
func (w *Wrapper) RecoverShard(ctx context.Context, pieceCid cid.Cid) error {
	if err := checkCID("piece", pieceCid); err != nil {
		return err
	}
	done, err := w.beginCtx(ctx)
	if err != nil {
		return fmt.Errorf("recover piece %s: %w", pieceCid, err)
	}
	defer done()
	// An automatic recovery (or an acquire) may be running: wait for it
	// rather than be refused, and count it if it recovered the shard.
	key := shard.KeyFromCID(pieceCid)
	if err := w.shards.fails.waitKey(ctx, key); err != nil {
		return fmt.Errorf("recover piece %s: %w", pieceCid, err)
	}
	before, _ := w.shards.state(key)
	if busy := w.shards.pieces.held(key); busy || before.ShardState == dagstore.ShardStateErrored {
		select {
		case <-w.shards.pieces.whenIdle(key):
		case <-ctx.Done():
			return fmt.Errorf("recover piece %s: %w", pieceCid, ctx.Err())
		case <-w.ctx.Done():
			return fmt.Errorf("recover piece %s: %w", pieceCid, ErrClosed)
		}
		if now, err := w.shards.state(key); err == nil && busy && now.ShardState == dagstore.ShardStateAvailable {
			return nil
		}
	}
	ch := make(chan dagstore.ShardResult, 1)
	if err := w.shards.queueRecover(pieceCid, ch); err != nil {
		return fmt.Errorf("recover piece %s: %w", pieceCid, err)
	}
	res, err := w.shards.wait(ctx, ch)
	if err != nil {
		w.shards.unholdLate(ch, 1)
		return fmt.Errorf("recover piece %s: %w", pieceCid, err)
	}
	w.shards.pieces.unhold(res.Key)
	if err := res.Error; err != nil {
		// Refused because an automatic recovery started meanwhile: its
		// outcome is this call's.
		if now, serr := w.shards.state(key); serr == nil && now.ShardState != dagstore.ShardStateErrored {
			select {
			case <-w.shards.pieces.whenIdle(key):
			case <-ctx.Done():
				return fmt.Errorf("recover piece %s: %w", pieceCid, ctx.Err())
			}
			if now, serr = w.shards.state(key); serr == nil && (now.ShardState == dagstore.ShardStateAvailable || now.ShardState == dagstore.ShardStateServing) {
				return nil
			}
		}
		return fmt.Errorf("recover piece %s: %w", pieceCid, err)
	}
	return nil
}

// AwaitRecovery returns once the automatic recovery dagwrap runs after a
// failure of the piece has ended (at once if none is due, queued or
// running), with the shard's state then: available if it recovered,
// errored if not (dagwrap recovers each failure once automatically; an
// operator's RecoverShard may follow). A failure the caller saw before the
// call is always waited for. It returns ctx's error if ctx ends first, and
// an error wrapping ErrShardUnknown for a piece that is not registered.
func (w *Wrapper) AwaitRecovery(ctx context.Context, pieceCid cid.Cid) (ShardInfo, error) {
	if err := checkCID("piece", pieceCid); err != nil {
		return ShardInfo{}, err
	}
	done, err := w.beginCtx(ctx)
	if err != nil {
		return ShardInfo{}, fmt.Errorf("await recovery of piece %s: %w", pieceCid, err)
	}
	defer done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(w.ctx, cancel)()
	info, err := w.shards.awaitRecovery(ctx, shard.KeyFromCID(pieceCid))
	if err != nil {
		if w.ctx.Err() != nil {
			err = ErrClosed
		}
		return ShardInfo{}, fmt.Errorf("await recovery of piece %s: %w", pieceCid, err)
	}
	return toShardInfo(pieceCid, info), nil
}

// RecoverAllResult says what RecoverAllShards did with each errored piece.
type RecoverAllResult struct {
	Recovered []cid.Cid
	Failed    map[cid.Cid]error // each error names its piece
}

// RecoverAllShards recovers every errored shard, including records that
// could not be restored at start (which fail with their cause, as no
// recovery can revive them). The dagstore's limits bound how many run at
// once. The error, if any, joins the failures.
func (w *Wrapper) RecoverAllShards(ctx context.Context) (RecoverAllResult, error) {
	res := RecoverAllResult{Failed: map[cid.Cid]error{}}
	done, err := w.beginCtx(ctx)
	if err != nil {
		return res, fmt.Errorf("recover all shards: %w", err)
	}
	defer done()

	var errored []cid.Cid
	for k, info := range w.shards.all() {
		if info.ShardState != dagstore.ShardStateErrored {
			continue
		}
		if c, err := cid.Decode(k.String()); err == nil {
			errored = append(errored, c)
		}
	}
	for k, bad := range w.shards.bad.all() {
		if c, err := cid.Decode(k.String()); err == nil {
			res.Failed[c] = bad
		}
	}
	sort.Slice(errored, func(i, j int) bool { return errored[i].String() < errored[j].String() })

	// One buffered channel for every result: the dagstore never waits on
	// it, even after this call has given up.
	ch := make(chan dagstore.ShardResult, len(errored))
	pending := 0
	for _, pc := range errored {
		if err := w.shards.queueRecover(pc, ch); err != nil {
			res.Failed[pc] = fmt.Errorf("piece %s: %w", pc, err)
			continue
		}
		pending++
	}
	for ; pending > 0; pending-- {
		r, err := w.shards.wait(ctx, ch)
		if err != nil {
			w.shards.unholdLate(ch, pending)
			return res, fmt.Errorf("recover all shards: %d recoveries still running: %w", pending, err)
		}
		w.shards.pieces.unhold(r.Key)
		pc, err := cid.Decode(r.Key.String())
		if err != nil {
			continue
		}
		if r.Error != nil {
			res.Failed[pc] = fmt.Errorf("piece %s: %w", pc, r.Error)
		} else {
			res.Recovered = append(res.Recovered, pc)
		}
	}
	sort.Slice(res.Recovered, func(i, j int) bool { return res.Recovered[i].String() < res.Recovered[j].String() })
	if len(res.Failed) > 0 {
		errs := make([]error, 0, len(res.Failed))
		for _, err := range res.Failed {
			errs = append(errs, err)
		}
		sortErrors(errs)
		return res, fmt.Errorf("recover all shards: %d of %d failed: %w", len(res.Failed), len(res.Failed)+len(res.Recovered), errors.Join(errs...))
	}
	return res, nil
}
