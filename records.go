package dagwrap

import (
	"context"
	"fmt"
	"sync"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
	ds "github.com/ipfs/go-datastore"
)

// shardRecords is the datastore the dagstore keeps its shard records in. It
// passes everything through to the shard-state store and fixes two gaps in
// the dagstore's bookkeeping:
//
//   - The dagstore reports a lazy registration before it writes the shard's
//     record, so a crash right after a registration returned could lose the
//     shard. Registrations here wait for that write (see shards.register).
//   - A shard destroyed while an initialisation or recovery is running is
//     written back when that work completes, and would reappear after a
//     restart. Writes for destroyed shards are dropped (see forget) until
//     the piece is registered again.
//
// Its writes go through the Wrapper's write gate (see writeGate).
type shardRecords struct {
	ds.Batching
	gate *writeGate

	mu      sync.Mutex
	gone    map[ds.Key]uint64       // destroyed shards (their writes are dropped), by destroy number
	goneSeq []goneKey               // gone's entries, oldest first, to bound it
	goneN   uint64                  // destroys so far
	goneMax int                     // how many destroyed keys are remembered
	waiting map[ds.Key][]chan error // registrations waiting for their first write

	// Group commit (see groupcommit.go).
	grouped    map[ds.Key]struct{} // registrations whose first write joins a group
	group      map[ds.Key][]byte   // grouped writes queued for the next commit
	committing map[ds.Key]struct{} // keys of the commit in progress
	committed  *sync.Cond          // on mu: a commit finished
	kick       chan struct{}       // wakes the committer

	bad *badRecords // hidden from the dagstore's Query (see Query)
}

func newShardRecords(store ds.Batching, gate *writeGate) *shardRecords {
	r := &shardRecords{
		Batching: store,
		gate:     gate,
		gone:     make(map[ds.Key]uint64),
		waiting:  make(map[ds.Key][]chan error),
		goneMax:  maxGoneRecords,
		grouped:  make(map[ds.Key]struct{}),
		group:    make(map[ds.Key][]byte),
		kick:     make(chan struct{}, 1),
	}
	r.committed = sync.NewCond(&r.mu)
	return r
}

// maxGoneRecords bounds the destroyed keys whose late writes are dropped.
// A late write comes from dagstore work that raced the destroy, so only
// recent destroys need remembering; the oldest are forgotten first.
const maxGoneRecords = 1 << 16

type goneKey struct {
	key ds.Key
	n   uint64
}

// markGone adds key to gone, forgetting the oldest destroyed keys beyond
// goneMax. Callers hold r.mu.
func (r *shardRecords) markGone(key ds.Key) {
	r.goneN++
	r.gone[key] = r.goneN
	r.goneSeq = append(r.goneSeq, goneKey{key, r.goneN})
	for len(r.goneSeq) > r.goneMax {
		old := r.goneSeq[0]
		if r.gone[old.key] == old.n {
			delete(r.gone, old.key)
		}
		r.goneSeq = r.goneSeq[1:]
	}
}

// recordKey is where the dagstore (which namespaces our store) keeps k.
func recordKey(k shard.Key) ds.Key {
	return dagstore.StoreNamespace.Child(ds.NewKey(k.String()))
}

// Put writes a shard record, unless its shard was destroyed, and tells the
// registrations waiting for it how the write went.
func (r *shardRecords) Put(ctx context.Context, key ds.Key, value []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, gone := r.gone[key]; gone {
		log.Debugw("dropping the record of a destroyed shard", "key", key)
		return nil
	}
	if r.groupPut(key, value) {
		return nil
	}
	r.settleGroupedLocked(key)
	err := r.write(func() error { return r.Batching.Put(ctx, key, value) })
	r.notifyLocked(key, err)
	return err
}

// Delete deletes a shard record.
func (r *shardRecords) Delete(ctx context.Context, key ds.Key) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.settleGroupedLocked(key)
	return r.write(func() error { return r.Batching.Delete(ctx, key) })
}

// Batch refuses to start a batch once the gate is closed.
func (r *shardRecords) Batch(ctx context.Context) (ds.Batch, error) {
	done, err := r.gate.enter()
	if err != nil {
		return nil, fmt.Errorf("shard records: %w", err)
	}
	defer done()
	return r.Batching.Batch(ctx)
}

// write runs fn inside the gate.
func (r *shardRecords) write(fn func() error) error {
	done, err := r.gate.enter()
	if err != nil {
		return fmt.Errorf("write shard record: %w", err)
	}
	defer done()
	return fn()
}

// pendingWrite is a registration's wait for its shard's first record write.
type pendingWrite struct {
	key     ds.Key
	written chan error
	wasGone bool
}

// expect readies a wait for the next write of k's record, and lets writes
// for k through again. Call it before queueing the registration. With
// grouped, that write joins a group commit (see groupcommit.go).
func (r *shardRecords) expect(k shard.Key, grouped bool) *pendingWrite {
	p := &pendingWrite{key: recordKey(k), written: make(chan error, 1)}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, p.wasGone = r.gone[p.key]
	delete(r.gone, p.key)
	if grouped {
		r.grouped[p.key] = struct{}{}
	}
	r.waiting[p.key] = append(r.waiting[p.key], p.written)
	return p
}

// abandon undoes expect for a registration that was not queued.
func (r *shardRecords) abandon(p *pendingWrite) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ws := r.waiting[p.key]
	for i, ch := range ws {
		if ch == p.written {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(r.waiting, p.key)
	} else {
		r.waiting[p.key] = ws
	}
	delete(r.grouped, p.key)
	if p.wasGone {
		r.markGone(p.key)
	}
}

// forget drops every later write of k's record, and deletes whatever a
// late write has put back since the dagstore destroyed the shard. Callers
// hold the piece lock, so no registration of k runs meanwhile.
func (r *shardRecords) forget(ctx context.Context, k shard.Key) error {
	key := recordKey(k)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.markGone(key)
	delete(r.grouped, key)
	r.settleGroupedLocked(key)
	r.notifyLocked(key, errDestroyedBeforeWritten)
	if err := r.Batching.Delete(ctx, key); err != nil {
		return fmt.Errorf("delete shard record: %w", err)
	}
	return nil
}
