package dagwrap

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	logging "github.com/ipfs/go-log/v2"
)

// prepare checks the persisted shard records before the dagstore
// restores them. A record that cannot be restored is logged with its piece
// and cause and kept for ShardInfo and ListShards, and hidden from the
// dagstore (see shardRecords.Query): it would skip bad JSON or URLs, but
// revive a record under its "k" field rather than its datastore key, and
// one in a state it does not know would never answer an acquire.
// A shard persisted mid-recovery would stay "recovering" forever, so it is
// reset to errored, to be recovered on its next acquire.
func (rec *shardRecords) prepare(ctx context.Context, bad *badRecords, log *logging.ZapEventLogger) error {
	bad.reset() // a Start being retried reads them afresh
	prefix := dagstore.StoreNamespace.String()
	res, err := rec.Batching.Query(ctx, query.Query{Prefix: prefix})
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
			bad.unrestorable(log, key, fmt.Errorf("shard record is not valid JSON: %w", err))
			continue
		}
		if ps.Key != key.String() {
			bad.unrestorable(log, key, fmt.Errorf("its key field names piece %q, not the key it is stored under", ps.Key))
			continue
		}
		if err := checkMountURL(ps.URL); err != nil {
			bad.unrestorable(log, key, err)
			continue
		}
		if !knownState(ps.State) {
			bad.unrestorable(log, key, fmt.Errorf("unknown shard state %d (written by another version?)", ps.State))
			continue
		}
		if ps.State == dagstore.ShardStateRecovering {
			ps.State = dagstore.ShardStateErrored
			ps.Error = "recovery interrupted by a restart"
			b, err := json.Marshal(ps)
			if err == nil {
				err = rec.Batching.Put(ctx, ds.RawKey(r.Key), b)
			}
			if err != nil {
				return fmt.Errorf("piece %s: reset interrupted recovery: %w", key, err)
			}
			log.Infow("shard was recovering at shutdown; it will recover on next acquire", "piece", key)
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
// prepare found unrestorable are filtered out by their datastore
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

// unrestorable logs and keeps a record that cannot be restored.
func (b *badRecords) unrestorable(log *logging.ZapEventLogger, key shard.Key, err error) {
	err = fmt.Errorf("piece %s: shard record cannot be restored: %w", key, err)
	log.Errorw("skipping shard record", "piece", key, "error", err)
	b.add(key, err)
}
