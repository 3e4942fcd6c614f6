package dagwrap

import (
	"context"
	"time"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
)

// traceLoop logs every dagstore event at debug level, and tells
// recoveryLoop of every shard that became available (however it recovered).
// It drains until the dagstore has closed: the event loop blocks on an
// undrained trace channel, and so would Close.
func (w *Wrapper) traceLoop(available chan<- shard.Key) {
	defer w.wg.Done()
	for {
		select {
		case t := <-w.traceCh:
			w.m.trace(t)
			w.fails.observe(t)
			w.releases.observe(t)
			if t.Op == dagstore.OpShardMakeAvailable {
				select {
				case available <- t.Key:
				default: // recoveryLoop is busy; the shard just stays disarmed
				}
			}
			w.traceLog.Debugw("shard event", "piece", t.Key, "op", t.Op.String(),
				"state", t.After.ShardState.String(), "error", t.After.Error)
		case <-w.dagstClosed:
			return
		}
	}
}

// recoveryLoop gives each shard failure one automatic recovery attempt: a
// shard whose recovery fails stays errored until an operator (or the next
// acquire after a restart) recovers it; a shard that becomes available
// again, by any recovery, is re-armed.
// Like traceLoop it drains failures until the dagstore has closed, and it
// never calls into the dagstore itself, so it cannot block the event loop:
// recoverWorker queues the recoveries.
func (w *Wrapper) recoveryLoop(recoverCh chan<- shard.Key, results <-chan dagstore.ShardResult, available <-chan shard.Key) {
	defer w.wg.Done()
	attempted := make(map[shard.Key]bool)
	var queue []shard.Key
	for {
		var out chan<- shard.Key
		var next shard.Key
		if len(queue) > 0 && w.ctx.Err() == nil {
			out, next = recoverCh, queue[0]
		}
		select {
		case f := <-w.failureCh:
			if attempted[f.Key] {
				w.log.Warnw("shard failed again after its automatic recovery; leaving it errored", "piece", f.Key, "error", f.Error)
				continue
			}
			w.log.Warnw("shard failed; recovering it", "piece", f.Key, "error", f.Error)
			attempted[f.Key] = true
			queue = append(queue, f.Key)
		case out <- next:
			queue = queue[1:]
		case k := <-available:
			delete(attempted, k)
		case r := <-results:
			w.pieces.unhold(r.Key)
			if r.Error == nil {
				w.log.Infow("shard recovered", "piece", r.Key)
			} else {
				w.log.Warnw("shard recovery failed", "piece", r.Key, "error", r.Error)
			}
		case <-w.dagstClosed:
			return
		}
	}
}

// recoverWorker asks the dagstore to recover the shards it is handed; the
// outcomes arrive on results, which recoveryLoop drains.
func (w *Wrapper) recoverWorker(keys <-chan shard.Key, results chan dagstore.ShardResult) {
	defer w.wg.Done()
	for {
		select {
		case k := <-keys:
			if err := w.recoverShard(k, results); err != nil {
				w.log.Warnw("could not queue shard recovery", "piece", k, "error", err)
			}
		case <-w.ctx.Done():
			return
		}
	}
}

// recoverShard queues the dagstore's recovery of k, held like an acquire
// until the receiver of results unholds it (the result may come before
// RecoverShard returns).
func (w *Wrapper) recoverShard(k shard.Key, results chan dagstore.ShardResult) error {
	unlock := w.pieces.lock(k)
	defer unlock()
	release := w.pieces.hold(k)
	if err := w.dagst.RecoverShard(w.ctx, k, results, dagstore.RecoverOpts{}); err != nil {
		release()
		return err
	}
	return nil
}

// unholdLate unholds the shards of the n results still to arrive on ch after
// their caller stopped waiting.
func (w *Wrapper) unholdLate(ch <-chan dagstore.ShardResult, n int) {
	if n <= 0 {
		return
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for ; n > 0; n-- {
			select {
			case r := <-ch:
				w.pieces.unhold(r.Key)
			case <-w.dagstClosed:
				return
			}
		}
	}()
}

// gcLoop reclaims transient copies of inactive shards every GCInterval.
func (w *Wrapper) gcLoop() {
	defer w.wg.Done()
	t := time.NewTicker(w.cfg.GCInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			res, err := w.gc(w.ctx)
			if err != nil && w.ctx.Err() == nil {
				w.log.Warnw("transients GC failed", "error", err)
			}
			if n := len(res.Reclaimed); n > 0 {
				w.log.Infow("GC reclaimed transients", "pieces", n, "bytes", res.Bytes, "failures", len(res.Failed))
			}
		case <-w.ctx.Done():
			return
		}
	}
}

// gc runs one GC of the transients and counts it in the metrics.
func (w *Wrapper) gc(ctx context.Context) (GCResult, error) {
	start := w.m.now()
	res, err := w.collectTransients(ctx)
	w.m.observe(opGC, start, err)
	return res, err
}
