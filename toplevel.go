package dagwrap

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/filecoin-project/dagstore/index"
	"github.com/filecoin-project/dagstore/shard"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	logging "github.com/ipfs/go-log/v2"
	"github.com/multiformats/go-multihash"
	"github.com/syndtr/goleveldb/leveldb"
	ldbopts "github.com/syndtr/goleveldb/leveldb/opt"

	"github.com/spstack/dagwrap/internal/toplevel"
)

// topLevelDir holds the compact top-level index's LevelDB.
const topLevelDir = "toplevel"

// oldLayoutPrefix holds every key of the previous layout (see topIndex).
const oldLayoutPrefix = "/dagwrap/tli/"

// topLevel is the top-level index a Wrapper gives its dagstore: the compact
// index of internal/toplevel, in its own LevelDB under RootDir/toplevel
// (binary keys stay out of the shard-state datastore, which nodes may
// provide, and its compactions out of the shard records' way).
//
// Roots written by an earlier dagwrap (one text key per pair in the
// shard-state datastore) or by Lotus (the stock index) are converted at
// start by the reconciliation, piece by piece from their index files, so an
// interrupted conversion resumes; until it is done, lookups also read the old
// entries, so they stay right throughout. Then the old entries are deleted.
type topLevel struct {
	db      *leveldb.DB
	compact *toplevel.Index
	old     *topIndex // the earlier layouts, read while converting

	// converting is set while old entries remain (either layout).
	converting atomic.Bool

	// indexes holds the shard indexes, from which lookups read the pieces
	// whose entries are still being written (fresh); nil: none are read so.
	indexes *indexRepo
	fresh   freshPieces

	// mu orders the start of fresh's watchers with close, which ends them.
	mu      sync.Mutex
	closed  bool
	ctx     context.Context
	cancel  context.CancelFunc
	watches sync.WaitGroup
}

var (
	_ index.Inverted = (*topLevel)(nil)
	_ shardRemover   = (*topLevel)(nil)
)

// openTopLevel opens (creating) the compact index in dir; old is the
// shard-state datastore, which may hold entries of the earlier layouts.
func openTopLevel(dir string, old ds.Batching, log *logging.ZapEventLogger) (*topLevel, error) {
	// Entries are written unsynced and made durable by the piece's synced
	// completion record: a torn journal tail after a kill holds nothing
	// that was reported complete, so it is dropped rather than refused.
	opts := &ldbopts.Options{
		Compression: ldbopts.NoCompression,
		Strict:      ldbopts.StrictAll &^ ldbopts.StrictJournal &^ ldbopts.StrictJournalChecksum,
	}
	db, err := leveldb.OpenFile(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("open top-level index %s: %w", dir, err)
	}
	x, err := toplevel.Open(db, log)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	t := &topLevel{db: db, compact: x, old: newTopIndex(old)}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	return t, nil
}

func (t *topLevel) close() error {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.cancel()
	t.watches.Wait()
	return errors.Join(t.compact.Close(), t.db.Close())
}

// AddMultihashesForShard records the shard's multihashes in the background
// and returns once the piece is numbered, so the dagstore makes the shard
// available without waiting for them. Meanwhile lookups read the piece's
// index file (see freshPieces), complete by then.
func (t *topLevel) AddMultihashesForShard(ctx context.Context, it index.MultihashIterator, k shard.Key) error {
	if err := t.compact.AddMultihashesForShard(ctx, it, k); err != nil {
		return err
	}
	t.serveFresh(k)
	return nil
}

// serveFresh has lookups read k's index file until its entries are
// complete, removed or their insert fails. An index of another codec than
// the one mappedIndex reads is not read so.
func (t *topLevel) serveFresh(k shard.Key) {
	if t.indexes == nil || t.compact.Complete(k) || t.fresh.has(k) {
		return
	}
	mi, err := t.indexes.mapped(k)
	if err != nil {
		return // another codec, or unreadable: found once its entries are written
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || !t.fresh.add(k, mi) {
		_ = mi.Close()
		return
	}
	t.watches.Add(1)
	go func() {
		defer t.watches.Done()
		_ = t.compact.Wait(t.ctx, k) // complete, removed, failed, or closing
		t.fresh.remove(k, mi)
	}()
}

// serveUnfinished has lookups read the index files of the pieces a crash
// left with their entries incomplete and that known reports, until the
// reconciliation has added them again: a piece found before the crash is
// found as soon as the Wrapper has started.
func (t *topLevel) serveUnfinished(known func(shard.Key) bool) {
	for _, k := range t.compact.Unfinished() {
		if known(k) {
			t.serveFresh(k)
		}
	}
}

// Wait returns once k's entries are written and durable (lookups may find
// k before), k was removed or is unknown (ds.ErrNotFound), its insert failed
// (its error), or ctx ended.
func (t *topLevel) Wait(ctx context.Context, k shard.Key) error {
	if err := t.compact.Wait(ctx, k); err != nil {
		return fmt.Errorf("top-level index: piece %s: %w", k, err)
	}
	return nil
}

// GetShardsForMultihash returns the pieces holding mh, or ds.ErrNotFound.
func (t *topLevel) GetShardsForMultihash(ctx context.Context, mh multihash.Multihash) ([]shard.Key, error) {
	keys, err := t.compact.GetShardsForMultihash(ctx, mh)
	if err != nil && !errors.Is(err, ds.ErrNotFound) {
		return nil, err
	}
	keys = t.fresh.lookup(mh, keys)
	if t.converting.Load() {
		more, err := t.old.GetShardsForMultihash(ctx, mh)
		if err != nil && !errors.Is(err, ds.ErrNotFound) {
			return nil, err
		}
		keys = appendNew(keys, more...)
	}
	if len(keys) == 0 {
		return nil, ds.ErrNotFound
	}
	return keys, nil
}

// RemoveShard stops reporting k at once; its entries are reclaimed in the
// background (by a scan when it is nil: the index is gone or unreadable).
func (t *topLevel) RemoveShard(ctx context.Context, it index.MultihashIterator, k shard.Key) error {
	t.fresh.remove(k, nil)
	if err := t.compact.RemoveShard(ctx, it, k); err != nil {
		return err
	}
	if t.converting.Load() {
		return t.old.RemoveShard(ctx, it, k)
	}
	return nil
}

// completeShards returns the pieces whose entries are all searchable.
func (t *topLevel) completeShards(context.Context) (map[shard.Key]struct{}, error) {
	return t.compact.CompleteShards(), nil
}

// detectOld sets converting if either earlier layout holds entries.
func (t *topLevel) detectOld(ctx context.Context) error {
	if err := t.old.detectLegacy(ctx); err != nil {
		return err
	}
	found, err := hasPrefix(ctx, t.old.ds, oldLayoutPrefix)
	if err != nil {
		return err
	}
	t.converting.Store(found || t.old.legacy.Load())
	return nil
}

// dropOld deletes the earlier layouts' entries, once every piece is in the
// compact index.
func (t *topLevel) dropOld(ctx context.Context) error {
	if t.old.legacy.Load() {
		if err := t.old.dropLegacy(ctx); err != nil {
			return err
		}
	}
	if err := t.old.dropPrefix(ctx, oldLayoutPrefix); err != nil {
		return err
	}
	t.converting.Store(false)
	return nil
}

func hasPrefix(ctx context.Context, d ds.Datastore, prefix string) (bool, error) {
	res, err := d.Query(ctx, query.Query{Prefix: prefix, KeysOnly: true, Limit: 1})
	if err != nil {
		return false, fmt.Errorf("top-level index: look for entries under %s: %w", prefix, err)
	}
	defer res.Close()
	r, found := res.NextSync()
	if found && r.Error != nil {
		return false, fmt.Errorf("top-level index: look for entries under %s: %w", prefix, r.Error)
	}
	return found, nil
}

// topLevelPath is where a Wrapper keeps its compact top-level index.
func topLevelPath(root string) string { return filepath.Join(root, topLevelDir) }
