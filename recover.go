package dagwrap

import (
	"context"
	"errors"
	"fmt"
	"sort"

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
	if err := w.shards.recover(ctx, shard.KeyFromCID(pieceCid)); err != nil {
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

	res, running, err := w.shards.recoverAll(ctx)
	if err != nil {
		return res, fmt.Errorf("recover all shards: %d recoveries still running: %w", running, err)
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
