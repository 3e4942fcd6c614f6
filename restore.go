package dagwrap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	carindex "github.com/ipld/go-car/v2/index"
)

// prepareRecords checks the persisted shard records before the dagstore
// restores them. A record that cannot be restored is logged with its piece
// and cause and kept for ShardInfo and ListShards, and hidden from the
// dagstore (see shardRecords.Query): it would skip bad JSON or URLs, but
// revive a record under its "k" field rather than its datastore key, and
// one in a state it does not know would never answer an acquire.
// A shard persisted mid-recovery would stay "recovering" forever, so it is
// reset to errored, to be recovered on its next acquire.
func (w *Wrapper) prepareRecords(ctx context.Context) error {
	w.bad.reset() // a Start being retried reads them afresh
	prefix := dagstore.StoreNamespace.String()
	res, err := w.store.Query(ctx, query.Query{Prefix: prefix})
	if err != nil {
		return fmt.Errorf("read shard records: %w", err)
	}
	defer res.Close()
	for r, ok := res.NextSync(); ok; r, ok = res.NextSync() {
		if r.Error != nil {
			return fmt.Errorf("read shard records: %w", r.Error)
		}
		key := recordShardKey(r.Key)
		var ps dagstore.PersistedShard
		if err := json.Unmarshal(r.Value, &ps); err != nil {
			w.badRecord(key, fmt.Errorf("shard record is not valid JSON: %w", err))
			continue
		}
		if ps.Key != key.String() {
			w.badRecord(key, fmt.Errorf("its key field names piece %q, not the key it is stored under", ps.Key))
			continue
		}
		if err := checkMountURL(ps.URL); err != nil {
			w.badRecord(key, err)
			continue
		}
		if !knownState(ps.State) {
			w.badRecord(key, fmt.Errorf("unknown shard state %d (written by another version?)", ps.State))
			continue
		}
		if ps.State == dagstore.ShardStateRecovering {
			ps.State = dagstore.ShardStateErrored
			ps.Error = "recovery interrupted by a restart"
			b, err := json.Marshal(ps)
			if err == nil {
				err = w.store.Put(ctx, ds.RawKey(r.Key), b)
			}
			if err != nil {
				return fmt.Errorf("piece %s: reset interrupted recovery: %w", key, err)
			}
			w.log.Infow("shard was recovering at shutdown; it will recover on next acquire", "piece", key)
		}
	}
	return nil
}

// recordShardKey is the shard key of a record's datastore key.
func recordShardKey(dsKey string) shard.Key {
	return shard.KeyFromString(strings.TrimPrefix(dsKey, dagstore.StoreNamespace.String()+"/"))
}

// knownState reports whether the dagstore (v0.7.0) handles a persisted state.
func knownState(s dagstore.ShardState) bool {
	switch s {
	case dagstore.ShardStateNew, dagstore.ShardStateInitializing, dagstore.ShardStateAvailable,
		dagstore.ShardStateServing, dagstore.ShardStateRecovering, dagstore.ShardStateErrored:
		return true
	}
	return false
}

// Query is how the dagstore reads its records, once, at Start. The records
// prepareRecords found unrestorable are filtered out by their datastore
// key, so the dagstore never has them in memory: nothing is rewritten or
// deleted on disk (a record of a newer version stays for it to read), they
// stay listed and destroyable under their real key, and the dagstore can
// neither revive one under its "k" field (out of reach of a destroy) nor
// hold a shard in a state it never answers acquires in.
func (r *shardRecords) Query(ctx context.Context, q query.Query) (query.Results, error) {
	res, err := r.Batching.Query(ctx, q)
	if err != nil || r.bad == nil {
		return res, err
	}
	return query.NaiveFilter(res, restorable{r.bad}), nil
}

// restorable is the query filter that drops unrestorable records.
type restorable struct{ bad *badRecords }

func (f restorable) Filter(e query.Entry) bool {
	_, bad := f.bad.get(recordShardKey(e.Key))
	return !bad
}

func (w *Wrapper) badRecord(key shard.Key, err error) {
	err = fmt.Errorf("piece %s: shard record cannot be restored: %w", key, err)
	w.log.Errorw("skipping shard record", "piece", key, "error", err)
	w.bad.add(key, err)
}

// badRecords holds the shard records that could not be restored, until
// they are destroyed or their piece is registered again.
type badRecords struct {
	mu sync.RWMutex
	m  map[shard.Key]error
}

func (b *badRecords) add(k shard.Key, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = make(map[shard.Key]error)
	}
	b.m[k] = err
}

func (b *badRecords) get(k shard.Key) (error, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	err, ok := b.m[k]
	return err, ok
}

func (b *badRecords) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.m = nil
}

func (b *badRecords) remove(k shard.Key) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.m, k)
}

// all returns a copy of the set.
func (b *badRecords) all() map[shard.Key]error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := make(map[shard.Key]error, len(b.m))
	for k, err := range b.m {
		out[k] = err
	}
	return out
}

// checkMountURL reports whether a persisted mount URL revives a piece mount.
func checkMountURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("malformed mount URL %q: %w", s, err)
	}
	if u.Scheme != MountScheme {
		return fmt.Errorf("malformed mount URL %q: scheme is not %q", s, MountScheme)
	}
	return (&pieceMount{}).Deserialize(u)
}

// reconcile brings the top-level index in line with the shard indexes after
// a crash or on a root written by Lotus. It re-adds the entries of every
// indexed piece not marked complete (a crash mid-insert, or a Lotus root whose
// stock index is being rebuilt: resumable, as completion is per piece),
// finishes interrupted destroys, and drops the stock index once the rebuild
// is done. It runs in the background; lookups read the stock index meanwhile
// (Start sets that up before it returns).
func (w *Wrapper) reconcile(ctx context.Context) error {
	if w.tli == nil {
		return w.finishDestroys(ctx)
	}
	complete, err := w.tli.completeShards(ctx)
	if err != nil {
		return err
	}
	var indexed []shard.Key
	if err := w.irepo.ForEach(func(k shard.Key) (bool, error) {
		indexed = append(indexed, k)
		return true, nil
	}); err != nil {
		return fmt.Errorf("list shard indexes: %w", err)
	}
	hasIndex := make(map[shard.Key]bool, len(indexed))
	rebuilt := 0
	for _, k := range indexed {
		hasIndex[k] = true
		if _, ok := complete[k]; ok && w.known(k) {
			continue
		}
		if err := w.reconcilePiece(ctx, k); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			w.log.Errorw("reconciling piece failed", "piece", k, "error", err)
			continue
		}
		rebuilt++
	}
	for k := range complete {
		if !hasIndex[k] && !w.known(k) {
			if err := w.reconcilePiece(ctx, k); err != nil {
				w.log.Errorw("reconciling piece failed", "piece", k, "error", err)
			}
		}
	}
	if rebuilt > 0 {
		w.log.Infow("top-level index reconciled", "pieces", rebuilt)
	}
	if w.tli.converting.Load() {
		if err := w.tli.dropOld(ctx); err != nil {
			return err
		}
		w.log.Infow("top-level index converted from the shard indexes; the old entries were removed")
	}
	return nil
}

// finishDestroys is reconcile for a top-level index the node injected, which
// is trusted as it is: it only removes what interrupted destroys left behind.
func (w *Wrapper) finishDestroys(ctx context.Context) error {
	var orphans []shard.Key
	if err := w.irepo.ForEach(func(k shard.Key) (bool, error) {
		if !w.known(k) {
			orphans = append(orphans, k)
		}
		return ctx.Err() == nil, nil
	}); err != nil {
		return fmt.Errorf("list shard indexes: %w", err)
	}
	for _, k := range orphans {
		unlock := w.pieces.lock(k)
		var err error
		if !w.known(k) { // it may have been registered since
			w.log.Infow("removing what an interrupted destroy left behind", "piece", k)
			err = w.purge(ctx, k)
		}
		unlock()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			w.log.Errorw("reconciling piece failed", "piece", k, "error", err)
		}
	}
	return nil
}

// known reports whether the dagstore has the shard, in memory or on disk (a
// record it could not revive still belongs to a shard).
func (w *Wrapper) known(k shard.Key) bool {
	if _, err := w.shardInfo(k); err == nil {
		return true
	}
	_, bad := w.bad.get(k)
	return bad
}

func (w *Wrapper) reconcilePiece(ctx context.Context, k shard.Key) error {
	unlock := w.pieces.lock(k)
	defer unlock()
	if !w.known(k) {
		w.log.Infow("removing what an interrupted destroy left behind", "piece", k)
		return w.purge(ctx, k)
	}
	idx, err := w.irepo.GetFullIndex(k)
	if err != nil {
		return fmt.Errorf("read index: %w", err)
	}
	it, ok := idx.(carindex.IterableIndex)
	if !ok {
		return errors.New("index is not iterable")
	}
	if err := w.tli.AddMultihashesForShard(ctx, indexMultihashes{it}, k); err != nil {
		return err
	}
	// One piece at a time, and complete before the old entries may go.
	return w.tli.Wait(ctx, k)
}
