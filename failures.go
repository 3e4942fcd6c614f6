package dagwrap

import (
	"context"
	"sync"
	"time"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
)

// failures tracks shard failures a caller has seen but the dagstore may not
// have recorded yet, so that Close can wait for them to reach disk.
//
// The dagstore hands a failed acquire's result to its caller while the
// failure itself is still queued for its event loop, and it answers the
// waiters of a registration or recovery before it persists the errored
// state. Close stops that event loop: without this wait, a command that saw
// a piece fail and then exited left the shard recorded as available, and
// nothing would recover it.
type failures struct {
	mu      sync.Mutex
	pending map[shard.Key]chan struct{} // closed when the failure is recorded
}

// failureSettleLimit bounds Close's wait for failures to be recorded.
const failureSettleLimit = 5 * time.Second

// saw records that a caller saw k fail. settledNow tells whether the
// dagstore has already recorded it; it is asked after k is added, so a
// failure recorded in between is not missed.
func (f *failures) saw(k shard.Key, settledNow func() bool) {
	f.mu.Lock()
	if f.pending == nil {
		f.pending = make(map[shard.Key]chan struct{})
	}
	if _, ok := f.pending[k]; !ok {
		f.pending[k] = make(chan struct{})
	}
	f.mu.Unlock()
	if settledNow() {
		f.settle(k)
	}
}

// settle marks k's failure as recorded.
func (f *failures) settle(k shard.Key) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ch, ok := f.pending[k]; ok {
		close(ch)
		delete(f.pending, k)
	}
}

// observe settles the failure a trace event shows recorded: the dagstore
// sends a trace after it has persisted the shard's new state.
func (f *failures) observe(t dagstore.Trace) {
	if t.Op == dagstore.OpShardFail || t.After.ShardState == dagstore.ShardStateErrored {
		f.settle(t.Key)
	}
}

// wait returns once every failure seen is recorded, or after limit (a
// safety net: the event loop records a queued failure in microseconds). It
// reports whether all were recorded.
func (f *failures) wait(limit time.Duration) bool {
	t := time.NewTimer(limit)
	defer t.Stop()
	for {
		f.mu.Lock()
		var ch chan struct{}
		for _, c := range f.pending {
			ch = c
			break
		}
		f.mu.Unlock()
		if ch == nil {
			return true
		}
		select {
		case <-ch:
		case <-t.C:
			return false
		}
	}
}

// waitKey returns once k's failure, if one was seen, is recorded, or ctx
// ended: an operator's recovery right after a failed load must find the
// shard errored.
func (f *failures) waitKey(ctx context.Context, k shard.Key) error {
	f.mu.Lock()
	ch := f.pending[k]
	f.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
