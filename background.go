package dagwrap

import (
	"context"
	"sync"
	"time"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
)

// background runs the owner's goroutines beside the dagstore's event loop:
// the trace drain, the automatic recovery of failed shards and the
// scheduled GC. Each is started by the owner (start, spawn) and ends
// by the time its close returns.
type background struct{ s *shards }

// gcEvery reclaims transient copies of inactive shards every interval,
// until the Wrapper closes.
func (b background) gcEvery(interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			res, err := b.s.gc(b.s.ctx)
			if err != nil && b.s.ctx.Err() == nil {
				b.s.log.Warnw("transients GC failed", "error", err)
			}
			if n := len(res.Reclaimed); n > 0 {
				b.s.log.Infow("GC reclaimed transients", "pieces", n, "bytes", res.Bytes, "failures", len(res.Failed))
			}
		case <-b.s.ctx.Done():
			return
		}
	}
}

// trace logs every dagstore event at debug level, and tells
// recoverFailures of every shard that became available (however it recovered).
// It drains until the dagstore has closed: the event loop blocks on an
// undrained trace channel, and so would Close.
func (b background) trace(available chan<- shard.Key) {
	for {
		select {
		case t := <-b.s.traceCh:
			b.event(t, available)
		case done := <-b.s.fence:
			// Every event the dagstore has sent by now is handled first.
			for len(b.s.traceCh) > 0 {
				b.event(<-b.s.traceCh, available)
			}
			close(done)
		case <-b.s.dagstClosed:
			return
		}
	}
}

// event handles one dagstore event (see trace).
func (b background) event(t dagstore.Trace, available chan<- shard.Key) {
	b.s.m.trace(t)
	if t.Op == dagstore.OpShardFail {
		b.s.recoveries.failed(t.Key) // before the failure settles: see recoveries
	}
	b.s.fails.observe(t)
	b.s.releases.observe(t)
	if t.Op == dagstore.OpShardMakeAvailable {
		select {
		case available <- t.Key:
		default: // recoverFailures is busy; the shard just stays disarmed
		}
	}
	b.s.traceLog.Debugw("shard event", "piece", t.Key, "op", t.Op.String(),
		"state", t.After.ShardState.String(), "error", t.After.Error)
}

// recoverFailures gives each shard failure one automatic recovery attempt: a
// shard whose recovery fails stays errored until an operator (or the next
// acquire after a restart) recovers it; a shard that becomes available
// again, by any recovery, is re-armed.
// Like trace it drains failures until the dagstore has closed, and it
// never calls into the dagstore itself, so it cannot block the event loop:
// recoverWorker queues the recoveries.
func (b background) recoverFailures(recoverCh chan<- shard.Key, results <-chan dagstore.ShardResult, available <-chan shard.Key) {
	attempted := make(map[shard.Key]bool)
	var queue []shard.Key
	for {
		var out chan<- shard.Key
		var next shard.Key
		if len(queue) > 0 && b.s.ctx.Err() == nil {
			out, next = recoverCh, queue[0]
		}
		select {
		case f := <-b.s.failureCh:
			again := attempted[f.Key]
			b.s.recoveries.took(f.Key, !again)
			if again {
				b.s.log.Warnw("shard failed again after its automatic recovery; leaving it errored", "piece", f.Key, "error", f.Error)
				continue
			}
			b.s.log.Warnw("shard failed; recovering it", "piece", f.Key, "error", f.Error)
			attempted[f.Key] = true
			queue = append(queue, f.Key)
		case out <- next:
			queue = queue[1:]
		case k := <-available:
			delete(attempted, k)
		case r := <-results:
			b.s.pieces.unhold(r.Key)
			b.s.recoveries.ended(r.Key)
			if r.Error == nil {
				b.s.log.Infow("shard recovered", "piece", r.Key)
			} else {
				b.s.log.Warnw("shard recovery failed", "piece", r.Key, "error", r.Error)
			}
		case <-b.s.dagstClosed:
			return
		}
	}
}

// recoverWorker asks the dagstore to recover the shards it is handed; the
// outcomes arrive on results, which recoverFailures drains.
func (b background) recoverWorker(keys <-chan shard.Key, results chan dagstore.ShardResult) {
	for {
		select {
		case k := <-keys:
			if err := b.s.recoverHeld(k, results); err != nil {
				b.s.recoveries.ended(k)
				b.s.log.Warnw("could not queue shard recovery", "piece", k, "error", err)
			}
		case <-b.s.ctx.Done():
			return
		}
	}
}

// recoveries tells when the automatic recovery of a failed shard has ended
// (see Wrapper.AwaitRecovery). The trace loop counts each failure the
// dagstore records; the recovery loop counts each failure it takes from the
// dagstore's failure channel, and whether it queued a recovery. A shard is
// settled once both counts agree and no automatic recovery of it is queued
// or running. The trace loop counts a failure before it marks the failure
// recorded (failures.observe), so a caller that has waited for the failure
// it saw to be recorded never finds the shard settled before that failure's
// recovery is queued.
type recoveries struct {
	mu      sync.Mutex
	seen    map[shard.Key]int // failures traced
	taken   map[shard.Key]int // failures the recovery loop took
	running map[shard.Key]bool
	changed chan struct{} // closed and replaced at every change
}

func (r *recoveries) update(k shard.Key, fn func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen, r.taken, r.running = map[shard.Key]int{}, map[shard.Key]int{}, map[shard.Key]bool{}
	}
	fn()
	if r.seen[k] == r.taken[k] && !r.running[k] {
		delete(r.seen, k)
		delete(r.taken, k)
		delete(r.running, k)
	}
	if r.changed != nil {
		close(r.changed)
		r.changed = nil
	}
}

// failed counts a failure of k the dagstore recorded.
func (r *recoveries) failed(k shard.Key) { r.update(k, func() { r.seen[k]++ }) }

// took counts a failure of k the recovery loop took; recovering says it
// queues k's automatic recovery.
func (r *recoveries) took(k shard.Key, recovering bool) {
	r.update(k, func() {
		r.taken[k]++
		if recovering {
			r.running[k] = true
		}
	})
}

// ended marks k's automatic recovery as over.
func (r *recoveries) ended(k shard.Key) { r.update(k, func() { delete(r.running, k) }) }

// await returns once k is settled, or ctx ends.
func (r *recoveries) await(ctx context.Context, k shard.Key) error {
	for {
		r.mu.Lock()
		if r.seen[k] == r.taken[k] && !r.running[k] {
			r.mu.Unlock()
			return nil
		}
		if r.changed == nil {
			r.changed = make(chan struct{})
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
