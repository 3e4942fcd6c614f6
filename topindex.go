package dagwrap

import (
	"context"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/filecoin-project/dagstore/index"
	"github.com/filecoin-project/dagstore/shard"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	levelds "github.com/ipfs/go-ds-leveldb"
	"github.com/multiformats/go-multihash"

	"github.com/spstack/dagwrap/internal/toplevel"
)

// Key layout of the top-level index, in the shard-state LevelDB:
//
//	/dagwrap/tli/m/<base32 multihash>/<piece key>  -> empty   one per (multihash, piece)
//	/dagwrap/tli/p/<piece key>                     -> empty   the piece's entries are complete
//
// One key per pair means an insert never reads and never rewrites another
// piece's data, and a lookup is one prefix scan. The "complete" marker is
// written after the piece's last entry, so a crash mid-insert is detected and
// redone on the next start.
const (
	tliEntryPrefix = "/dagwrap/tli/m/"
	tliDonePrefix  = "/dagwrap/tli/p/"
	// legacyPrefix is where the dagstore's stock index (and so Lotus) kept
	// a JSON list of shard keys per multihash.
	legacyPrefix = "/inverted/index"

	// tliBatchSize bounds the memory of one write batch; a 64 GiB piece of
	// small blocks has millions of multihashes.
	tliBatchSize = 16384
)

var mhEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// topIndex is dagwrap's multihash -> pieces index. It implements the
// dagstore's index.Inverted, and adds removal.
type topIndex struct {
	ds ds.Batching

	// legacy is set while a stock (Lotus) index still holds entries: lookups
	// also read it until the rebuild into this layout has finished.
	legacy atomic.Bool
}

var _ index.Inverted = (*topIndex)(nil)

func newTopIndex(d ds.Batching) *topIndex {
	return &topIndex{ds: d}
}

// NewTopLevelIndex returns a top-level index over d, for a dagstore of
// one's own or to compare with the dagstore's index.NewInverted; a Wrapper
// builds its own and needs nothing from the caller. Over a go-ds-leveldb
// datastore it is the compact index a Wrapper uses (binary keys on the
// LevelDB handle, outside go-datastore's key space; its adds return once the
// piece is searchable; close it through io.Closer to stop its background
// reclaims); over any other datastore, one go-datastore key per
// (multihash, piece). Both can remove a shard (RemoveShard).
func NewTopLevelIndex(d ds.Batching) index.Inverted {
	if l, ok := d.(*levelds.Datastore); ok {
		if x, err := toplevel.Open(l.DB, log); err == nil {
			return &standaloneTopLevel{x}
		}
	}
	return newTopIndex(d)
}

// standaloneTopLevel is the compact index with synchronous adds.
type standaloneTopLevel struct{ *toplevel.Index }

func (s *standaloneTopLevel) AddMultihashesForShard(ctx context.Context, it index.MultihashIterator, k shard.Key) error {
	if err := s.Index.AddMultihashesForShard(ctx, it, k); err != nil {
		return err
	}
	return s.Wait(ctx, k)
}

func mhKeyPrefix(mh multihash.Multihash) string {
	return tliEntryPrefix + mhEncoding.EncodeToString(mh)
}

func doneKey(k shard.Key) ds.Key { return ds.RawKey(tliDonePrefix + k.String()) }

// AddMultihashesForShard records every multihash of the shard, in batches,
// then marks the shard complete. Adding the same pair twice is harmless.
func (t *topIndex) AddMultihashesForShard(ctx context.Context, it index.MultihashIterator, k shard.Key) error {
	suffix := "/" + k.String()
	return t.writeBatches(ctx, func(put func(ds.Key) error) error {
		return it.ForEach(func(mh multihash.Multihash) error {
			return put(ds.RawKey(mhKeyPrefix(mh) + suffix))
		})
	}, func(b ds.Batch, key ds.Key) error { return b.Put(ctx, key, nil) },
		func(b ds.Batch) error { return b.Put(ctx, doneKey(k), nil) })
}

// RemoveShard deletes the shard's entries (those yielded by it) and its
// completion marker.
func (t *topIndex) RemoveShard(ctx context.Context, it index.MultihashIterator, k shard.Key) error {
	suffix := "/" + k.String()
	return t.writeBatches(ctx, func(put func(ds.Key) error) error {
		if it == nil {
			return nil
		}
		return it.ForEach(func(mh multihash.Multihash) error {
			return put(ds.RawKey(mhKeyPrefix(mh) + suffix))
		})
	}, func(b ds.Batch, key ds.Key) error { return b.Delete(ctx, key) },
		func(b ds.Batch) error { return b.Delete(ctx, doneKey(k)) })
}

// writeBatches applies op to every key produced by produce, committing every
// tliBatchSize keys, and applies last in the final batch.
func (t *topIndex) writeBatches(ctx context.Context, produce func(func(ds.Key) error) error,
	op func(ds.Batch, ds.Key) error, last func(ds.Batch) error) error {
	b, err := t.ds.Batch(ctx)
	if err != nil {
		return fmt.Errorf("top-level index: new batch: %w", err)
	}
	n := 0
	err = produce(func(key ds.Key) error {
		if err := op(b, key); err != nil {
			return err
		}
		if n++; n%tliBatchSize == 0 {
			if err := b.Commit(ctx); err != nil {
				return err
			}
			if b, err = t.ds.Batch(ctx); err != nil {
				return err
			}
		}
		return ctx.Err()
	})
	if err != nil {
		return fmt.Errorf("top-level index: %w", err)
	}
	if err := last(b); err != nil {
		return fmt.Errorf("top-level index: %w", err)
	}
	if err := b.Commit(ctx); err != nil {
		return fmt.Errorf("top-level index: commit: %w", err)
	}
	return nil
}

// GetShardsForMultihash returns every shard recorded for mh, or
// ds.ErrNotFound when there is none.
func (t *topIndex) GetShardsForMultihash(ctx context.Context, mh multihash.Multihash) ([]shard.Key, error) {
	prefix := mhKeyPrefix(mh)
	res, err := t.ds.Query(ctx, query.Query{Prefix: prefix, KeysOnly: true})
	if err != nil {
		return nil, fmt.Errorf("top-level index: query %s: %w", mh, err)
	}
	defer res.Close()
	var keys []shard.Key
	for r, ok := res.NextSync(); ok; r, ok = res.NextSync() {
		if r.Error != nil {
			return nil, fmt.Errorf("top-level index: query %s: %w", mh, r.Error)
		}
		keys = append(keys, shard.KeyFromString(strings.TrimPrefix(r.Key, prefix+"/")))
	}
	if t.legacy.Load() {
		keys = appendNew(keys, t.legacyShards(ctx, mh)...)
	}
	if len(keys) == 0 {
		return nil, ds.ErrNotFound
	}
	return keys, nil
}

func appendNew(keys []shard.Key, more ...shard.Key) []shard.Key {
	for _, m := range more {
		dup := false
		for _, k := range keys {
			if k == m {
				dup = true
				break
			}
		}
		if !dup {
			keys = append(keys, m)
		}
	}
	return keys
}

// legacyShards reads the stock index's JSON list for mh; errors count as
// "nothing there", since the new layout is authoritative.
func (t *topIndex) legacyShards(ctx context.Context, mh multihash.Multihash) []shard.Key {
	v, err := t.ds.Get(ctx, ds.NewKey(legacyPrefix).Child(ds.NewKey(string(mh))))
	if err != nil {
		return nil
	}
	var keys []shard.Key
	if json.Unmarshal(v, &keys) != nil {
		return nil
	}
	return keys
}

// completeShards returns the shards whose entries are all recorded.
func (t *topIndex) completeShards(ctx context.Context) (map[shard.Key]struct{}, error) {
	res, err := t.ds.Query(ctx, query.Query{Prefix: tliDonePrefix, KeysOnly: true})
	if err != nil {
		return nil, fmt.Errorf("top-level index: list complete pieces: %w", err)
	}
	defer res.Close()
	done := make(map[shard.Key]struct{})
	for r, ok := res.NextSync(); ok; r, ok = res.NextSync() {
		if r.Error != nil {
			return nil, fmt.Errorf("top-level index: list complete pieces: %w", r.Error)
		}
		done[shard.KeyFromString(strings.TrimPrefix(r.Key, tliDonePrefix))] = struct{}{}
	}
	return done, nil
}

// detectLegacy sets the legacy flag if the stock index has any entry.
func (t *topIndex) detectLegacy(ctx context.Context) error {
	res, err := t.ds.Query(ctx, query.Query{Prefix: legacyPrefix, KeysOnly: true, Limit: 1})
	if err != nil {
		return fmt.Errorf("top-level index: look for a legacy index: %w", err)
	}
	defer res.Close()
	_, found := res.NextSync()
	t.legacy.Store(found)
	return nil
}

// dropLegacy deletes the stock index's entries, in batches, once every
// piece has been re-added in the current layout.
func (t *topIndex) dropLegacy(ctx context.Context) error {
	if err := t.dropPrefix(ctx, legacyPrefix); err != nil {
		return err
	}
	t.legacy.Store(false)
	return nil
}

// dropPrefix deletes every key under prefix, in batches, as it lists them:
// an old layout may hold billions of entries.
func (t *topIndex) dropPrefix(ctx context.Context, prefix string) error {
	res, err := t.ds.Query(ctx, query.Query{Prefix: prefix, KeysOnly: true})
	if err != nil {
		return fmt.Errorf("top-level index: list entries under %s: %w", prefix, err)
	}
	defer res.Close()
	return t.writeBatches(ctx, func(put func(ds.Key) error) error {
		for r, ok := res.NextSync(); ok; r, ok = res.NextSync() {
			if r.Error != nil {
				return fmt.Errorf("list entries under %s: %w", prefix, r.Error)
			}
			if err := put(ds.RawKey(r.Key)); err != nil {
				return err
			}
		}
		return nil
	}, func(b ds.Batch, key ds.Key) error { return b.Delete(ctx, key) },
		func(ds.Batch) error { return nil })
}
