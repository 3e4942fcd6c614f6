package dagwrap

import (
	"context"
	"errors"
	"fmt"

	"github.com/filecoin-project/dagstore"
	ds "github.com/ipfs/go-datastore"
)

// Group commit of registration records.
//
// The dagstore persists each shard record with its own synced write, one at
// a time from its event loop, so a migration of 100k deals ran at the disk's
// synced-write rate. A registration marked grouped (see expect) instead has
// its first record write queued and returned from at once; a committer
// writes every queued record in one batch with one sync, and only then are
// those registrations acknowledged. Nothing is reported done before it is on
// disk, and the event loop never waits for a sync of someone else's record.
//
// Order is kept per key: a later write of a key whose grouped write is still
// queued replaces it (the newer record wins, written at once); one whose
// grouped write is being committed waits for that commit first. A destroyed
// key's queued write is dropped.

var errDestroyedBeforeWritten = errors.New("shard destroyed before its record was written")

// groupPut queues value as key's grouped write if key expects one, and
// reports whether it did. Callers hold r.mu.
func (r *shardRecords) groupPut(key ds.Key, value []byte) bool {
	if _, ok := r.grouped[key]; !ok {
		return false
	}
	delete(r.grouped, key)
	r.group[key] = value
	select {
	case r.kick <- struct{}{}:
	default:
	}
	return true
}

// settleGroupedLocked makes key safe to write directly: it waits for a
// commit of key in progress and drops a queued grouped write, which the
// caller's write supersedes. Callers hold r.mu.
func (r *shardRecords) settleGroupedLocked(key ds.Key) {
	for {
		if _, ok := r.committing[key]; !ok {
			break
		}
		r.committed.Wait()
	}
	delete(r.group, key)
}

// commitGroups runs the committer until stop is closed, then commits what
// is still queued and returns.
func (r *shardRecords) commitGroups(stop <-chan struct{}) {
	for {
		select {
		case <-r.kick:
			r.commitGroup()
		case <-stop:
			r.commitGroup()
			return
		}
	}
}

// commitGroup writes every queued grouped record in one batch and one sync,
// then tells their registrations how it went.
func (r *shardRecords) commitGroup() {
	r.mu.Lock()
	taken := r.group
	if len(taken) == 0 {
		r.mu.Unlock()
		return
	}
	r.group = make(map[ds.Key][]byte)
	r.committing = make(map[ds.Key]struct{}, len(taken))
	for k := range taken {
		r.committing[k] = struct{}{}
	}
	r.mu.Unlock()

	err := r.writeBatch(taken)

	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range taken {
		r.notifyLocked(k, err)
	}
	r.committing = nil
	r.committed.Broadcast()
}

func (r *shardRecords) writeBatch(recs map[ds.Key][]byte) error {
	ctx := context.Background()
	b, err := r.Batching.Batch(ctx)
	if err != nil {
		return fmt.Errorf("new batch: %w", err)
	}
	for k, v := range recs {
		if err := b.Put(ctx, k, v); err != nil {
			return fmt.Errorf("batch put %s: %w", k, err)
		}
	}
	if err := b.Commit(ctx); err != nil {
		return fmt.Errorf("commit %d records: %w", len(recs), err)
	}
	// A node's datastore may make a batch durable only on Sync.
	if err := r.Batching.Sync(ctx, dagstore.StoreNamespace); err != nil {
		return fmt.Errorf("sync %d records: %w", len(recs), err)
	}
	return nil
}

// notifyLocked tells the registrations waiting for key's first write how
// it went. Callers hold r.mu.
func (r *shardRecords) notifyLocked(key ds.Key, err error) {
	for _, ch := range r.waiting[key] {
		ch <- err
	}
	delete(r.waiting, key)
}
