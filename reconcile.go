package dagwrap

import (
	"context"
	"errors"
	"fmt"

	"github.com/filecoin-project/dagstore/index"
	"github.com/filecoin-project/dagstore/shard"
	logging "github.com/ipfs/go-log/v2"
	carindex "github.com/ipld/go-car/v2/index"
)

// reconciler brings the top-level index in line with the shard indexes at
// start-up, in the background, and finishes the destroys a crash
// interrupted.
type reconciler struct {
	s     *shards
	tli   *topLevel // nil when another top-level index is in use
	irepo index.FullIndexRepo
	log   *logging.ZapEventLogger
}

// reconcile brings the top-level index in line with the shard indexes after
// a crash or on a root written by Lotus. It re-adds the entries of every
// indexed piece not marked complete (a crash mid-insert, or a Lotus root whose
// stock index is being rebuilt: resumable, as completion is per piece),
// finishes interrupted destroys, and drops the stock index once the rebuild
// is done. It runs in the background; lookups read the stock index meanwhile
// (Start sets that up before it returns).
func (r *reconciler) run(ctx context.Context) error {
	if r.tli == nil {
		return r.finishDestroys(ctx)
	}
	complete, err := r.tli.completeShards(ctx)
	if err != nil {
		return err
	}
	var indexed []shard.Key
	if err := r.irepo.ForEach(func(k shard.Key) (bool, error) {
		indexed = append(indexed, k)
		return true, nil
	}); err != nil {
		return fmt.Errorf("list shard indexes: %w", err)
	}
	hasIndex := make(map[shard.Key]bool, len(indexed))
	rebuilt := 0
	for _, k := range indexed {
		hasIndex[k] = true
		if _, ok := complete[k]; ok && r.s.known(k) {
			continue
		}
		if err := r.piece(ctx, k); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.log.Errorw("reconciling piece failed", "piece", k, "error", err)
			continue
		}
		rebuilt++
	}
	for k := range complete {
		if !hasIndex[k] && !r.s.known(k) {
			if err := r.piece(ctx, k); err != nil {
				r.log.Errorw("reconciling piece failed", "piece", k, "error", err)
			}
		}
	}
	if rebuilt > 0 {
		r.log.Infow("top-level index reconciled", "pieces", rebuilt)
	}
	if r.tli.converting.Load() {
		if err := r.tli.dropOld(ctx); err != nil {
			return err
		}
		r.log.Infow("top-level index converted from the shard indexes; the old entries were removed")
	}
	return nil
}

// finishDestroys is reconcile for a top-level index the node injected, which
// is trusted as it is: it only removes what interrupted destroys left behind.
func (r *reconciler) finishDestroys(ctx context.Context) error {
	var orphans []shard.Key
	if err := r.irepo.ForEach(func(k shard.Key) (bool, error) {
		if !r.s.known(k) {
			orphans = append(orphans, k)
		}
		return ctx.Err() == nil, nil
	}); err != nil {
		return fmt.Errorf("list shard indexes: %w", err)
	}
	for _, k := range orphans {
		unlock := r.s.pieces.lock(k)
		var err error
		if !r.s.known(k) { // it may have been registered since
			r.log.Infow("removing what an interrupted destroy left behind", "piece", k)
			err = r.s.files.purge(ctx, k)
		}
		unlock()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.log.Errorw("reconciling piece failed", "piece", k, "error", err)
		}
	}
	return nil
}

func (r *reconciler) piece(ctx context.Context, k shard.Key) error {
	unlock := r.s.pieces.lock(k)
	defer unlock()
	if !r.s.known(k) {
		r.log.Infow("removing what an interrupted destroy left behind", "piece", k)
		return r.s.files.purge(ctx, k)
	}
	idx, err := r.irepo.GetFullIndex(k)
	if err != nil {
		return fmt.Errorf("read index: %w", err)
	}
	it, ok := idx.(carindex.IterableIndex)
	if !ok {
		return errors.New("index is not iterable")
	}
	if err := r.tli.AddMultihashesForShard(ctx, indexMultihashes{it}, k); err != nil {
		return err
	}
	// One piece at a time, and complete before the old entries may go.
	return r.tli.Wait(ctx, k)
}
