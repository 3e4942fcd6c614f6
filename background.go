package dagwrap

import (
	"time"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
)

// traceLoop logs every dagstore event at debug level. It drains until the
// dagstore has closed: the event loop blocks on an undrained trace channel,
// and so would Close.
func (w *Wrapper) traceLoop() {
	defer w.wg.Done()
	for {
		select {
		case t := <-w.traceCh:
			traceLog.Debugw("shard event", "piece", t.Key, "op", t.Op.String(),
				"state", t.After.ShardState.String(), "error", t.After.Error)
		case <-w.dagstClosed:
			return
		}
	}
}

// recoveryLoop gives each shard failure one automatic recovery attempt: a
// shard whose recovery fails stays errored until an operator (or the next
// acquire after a restart) recovers it; a successful recovery re-arms it.
// Like traceLoop it drains failures until the dagstore has closed, and it
// never calls into the dagstore itself, so it cannot block the event loop:
// recoverWorker queues the recoveries.
func (w *Wrapper) recoveryLoop(recoverCh chan<- shard.Key, results <-chan dagstore.ShardResult) {
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
				log.Warnw("shard failed again after its automatic recovery; leaving it errored", "piece", f.Key, "error", f.Error)
				continue
			}
			log.Warnw("shard failed; recovering it", "piece", f.Key, "error", f.Error)
			attempted[f.Key] = true
			queue = append(queue, f.Key)
		case out <- next:
			queue = queue[1:]
		case r := <-results:
			w.pieces.unhold(r.Key)
			if r.Error == nil {
				log.Infow("shard recovered", "piece", r.Key)
				delete(attempted, r.Key)
			} else {
				log.Warnw("shard recovery failed", "piece", r.Key, "error", r.Error)
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
			if isRandomAccess(w.api) {
				w.recoverShard(k, results)
				continue
			}
			// A remount may wait for the acquire that failed to end.
			w.wg.Add(1)
			go func() {
				defer w.wg.Done()
				if !w.remount(k, results) {
					w.recoverShard(k, results)
				}
			}()
		case <-w.ctx.Done():
			return
		}
	}
}

// recoverShard queues the dagstore's recovery of k, held like an acquire
// until recoveryLoop gets the result (which may come before RecoverShard
// returns).
func (w *Wrapper) recoverShard(k shard.Key, results chan dagstore.ShardResult) {
	unlock := w.pieces.lock(k)
	defer unlock()
	release := w.pieces.hold(k)
	if err := w.dagst.RecoverShard(w.ctx, k, results, dagstore.RecoverOpts{}); err != nil {
		release()
		log.Warnw("could not queue shard recovery", "piece", k, "error", err)
	}
}

// gcLoop reclaims transient copies of inactive shards every GCInterval.
func (w *Wrapper) gcLoop() {
	defer w.wg.Done()
	t := time.NewTicker(w.cfg.GCInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			res, err := w.dagst.GC(w.ctx)
			if err != nil {
				if w.ctx.Err() == nil {
					log.Warnw("dagstore GC failed", "error", err)
				}
				continue
			}
			if n := len(res.Shards); n > 0 {
				log.Infow("dagstore GC reclaimed transients", "shards", n, "failures", res.ShardFailures())
			}
		case <-w.ctx.Done():
			return
		}
	}
}
