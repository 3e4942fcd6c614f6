package dagwrap

import (
	"sync"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
)

// releases tells when the dagstore has processed the releases of accessors
// dagwrap closed: closing an accessor only queues its release, and a shard
// counts as being read until the event loop has run it. The trace loop
// reports each release it sees; a blockstore's Close waits for its own. A
// release the dagstore makes on its own (after a failed acquire of the same
// shard) may end a wait early: the shard then still counts as read for a
// moment, which only makes a GC skip it once.
//
// The dagstore drops, without any event, a release that finds the shard
// neither serving nor errored (recovering, say: it leaks the reference). So
// any event that leaves the shard not serving also ends the waits for it,
// and Close waits only while the shard is serving (see shardBlockstore).
type releases struct {
	mu sync.Mutex
	m  map[shard.Key]*releaseWait
}

type releaseWait struct {
	n    int
	done chan struct{}
}

// expect counts a release about to be queued for key and returns a channel
// closed once every expected release of key has been seen.
func (r *releases) expect(key shard.Key) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[shard.Key]*releaseWait)
	}
	rw := r.m[key]
	if rw == nil {
		rw = &releaseWait{done: make(chan struct{})}
		r.m[key] = rw
	}
	rw.n++
	return rw.done
}

// observe takes one dagstore event: a release ends one expected release;
// an event that leaves the shard not serving ends them all.
func (r *releases) observe(t dagstore.Trace) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rw := r.m[t.Key]
	if rw == nil {
		return
	}
	if t.Op == dagstore.OpShardRelease {
		rw.n--
	}
	if rw.n <= 0 || t.After.ShardState != dagstore.ShardStateServing {
		close(rw.done)
		delete(r.m, t.Key)
	}
}
