package dagwrap

import (
	"context"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
)

// The dagstore (v0.7.0) takes its locks in opposite orders in two places:
// while it processes a destroy, its event loop holds the shard's lock and
// takes the store's; GetShardInfo and AllShardsInfo hold the store's lock
// and take a shard's. A lookup that runs while a destroy is processed
// deadlocks the whole dagstore. So lookups hold infoMu shared, and a
// destroy holds it exclusively from queueing until its result arrives,
// which the dagstore sends after releasing both locks.

// shardInfo is dagstore.GetShardInfo, safe against concurrent destroys.
func (w *Wrapper) shardInfo(k shard.Key) (dagstore.ShardInfo, error) {
	w.infoMu.RLock()
	defer w.infoMu.RUnlock()
	return w.dagst.GetShardInfo(k)
}

// allShardsInfo is dagstore.AllShardsInfo, safe against concurrent destroys.
func (w *Wrapper) allShardsInfo() dagstore.AllShardsInfo {
	w.infoMu.RLock()
	defer w.infoMu.RUnlock()
	return w.dagst.AllShardsInfo()
}

// destroyShard asks the dagstore to destroy the shard and waits for the
// answer. The dagstore answers every destroy it queued while it runs, so the
// wait ends; the request is not bound to w.ctx, or Close could leave the
// dagstore mid-destroy while lookups proceed.
func (w *Wrapper) destroyShard(key shard.Key) (dagstore.ShardResult, error) {
	w.infoMu.Lock()
	defer w.infoMu.Unlock()
	ch := make(chan dagstore.ShardResult, 1)
	if err := w.dagst.DestroyShard(context.Background(), key, ch, dagstore.DestroyOpts{}); err != nil {
		return dagstore.ShardResult{}, err
	}
	select {
	case res := <-ch:
		return res, nil
	case <-w.dagstClosed:
		return dagstore.ShardResult{}, ErrClosed
	}
}
