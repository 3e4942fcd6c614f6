// Package toplevel is dagwrap's multihash -> pieces index, kept compact in a
// LevelDB: one binary key per (multihash, piece), with pieces numbered.
//
// Key layout (raw LevelDB keys: a go-datastore key always starts with '/',
// these never do, so they can share the shard-state LevelDB):
//
//	'm' <multihash> <uvarint piece number>  -> ""                one per (multihash, piece)
//	'n' <big-endian uint32 piece number>    -> <state> <piece key>   the piece table
//
// A piece is searchable only in state complete: its entries are written in
// unsynced batches in the background, then its state is written synced, so a
// lookup never sees a piece with part of its entries, and a crash leaves the
// piece "adding", to be added again. A destroyed piece is marked removed at
// once (lookups stop reporting it) and its entries are reclaimed in the
// background; a piece registered again gets a new number, so a reclaim in
// progress never touches its entries.
package toplevel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/filecoin-project/dagstore/index"
	"github.com/filecoin-project/dagstore/shard"
	ds "github.com/ipfs/go-datastore"
	"github.com/multiformats/go-multihash"
	"github.com/multiformats/go-varint"
	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/opt"
	"github.com/syndtr/goleveldb/leveldb/util"
)

const (
	entryPrefix = 'm'
	piecePrefix = 'n'
)

// batchEntries bounds one write batch: a 64 GiB piece of small blocks has
// tens of millions of multihashes. A variable for the tests.
var batchEntries = 1 << 16

type state byte

const (
	adding   state = 0
	complete state = 1
	removed  state = 2
)

// Logger is what Index logs its background failures to.
type Logger interface {
	Errorw(msg string, keysAndValues ...any)
	Infow(msg string, keysAndValues ...any)
}

// Index is the top-level index. It implements the dagstore's
// index.Inverted, adds removal, and tells when a piece's entries are
// complete. Its methods are safe for concurrent use; Close stops its
// background work.
type Index struct {
	db  *leveldb.DB
	log Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	byKey   map[shard.Key]uint32 // the live number of each piece
	pieces  map[uint32]*piece
	next    uint32
	toPurge []purge       // removed pieces whose entries are still to reclaim
	kick    chan struct{} // wakes the reclaimer
	// reclaimed is closed, and replaced, after each reclaim round.
	reclaimed chan struct{}
	// hold, when set, is what inserts wait for before they write (see
	// HoldInserts).
	hold chan struct{}
}

type piece struct {
	key   shard.Key
	state state
	stop  context.CancelFunc // of the insert in progress, if any
	done  chan struct{}      // closed when the piece becomes complete, is removed or its insert fails
	err   error              // why its insert failed; set before done is closed
}

type purge struct {
	num uint32
	it  index.MultihashIterator // nil: find the entries by a scan
}

var _ index.Inverted = (*Index)(nil)

// Open loads the piece table from db and resumes the reclaims of removed
// pieces. Pieces left "adding" by a crash stay unsearchable until added
// again (see Complete).
func Open(db *leveldb.DB, log Logger) (*Index, error) {
	x := &Index{db: db, log: log, byKey: map[shard.Key]uint32{}, pieces: map[uint32]*piece{}, kick: make(chan struct{}, 1), reclaimed: make(chan struct{})}
	x.ctx, x.cancel = context.WithCancel(context.Background())
	it := db.NewIterator(util.BytesPrefix([]byte{piecePrefix}), nil)
	var pending []uint32
	for it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) != 5 || len(v) < 1 {
			continue
		}
		num := binary.BigEndian.Uint32(k[1:])
		p := &piece{key: shard.KeyFromString(string(v[1:])), state: state(v[0]), done: make(chan struct{})}
		x.pieces[num] = p
		x.next = max(x.next, num+1)
		if p.state == removed {
			pending = append(pending, num)
			close(p.done)
			continue
		}
		if p.state == complete {
			close(p.done)
		}
		x.byKey[p.key] = num
	}
	it.Release()
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("top-level index: read piece table: %w", err)
	}
	x.wg.Add(1)
	go x.reclaim()
	for _, num := range pending {
		x.toPurge = append(x.toPurge, purge{num: num})
	}
	x.kick <- struct{}{}
	return x, nil
}

// Close stops the background inserts and reclaims and waits for them. An
// insert cut short leaves its piece unsearchable until it is added again.
func (x *Index) Close() error {
	x.mu.Lock() // no insert starts after this
	x.cancel()
	x.mu.Unlock()
	x.wg.Wait()
	return nil
}

func pieceRecord(num uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{piecePrefix}, num)
}

func (x *Index) putPiece(num uint32, st state, k shard.Key) error {
	v := append([]byte{byte(st)}, k.String()...)
	return x.db.Put(pieceRecord(num), v, &opt.WriteOptions{Sync: true})
}

// AddMultihashesForShard records the shard's multihashes in the background
// and returns once the piece is numbered: the piece is searchable when its
// entries are complete (see Wait). Adding a complete piece again does
// nothing: a piece CID names its content, so its multihashes are the same.
func (x *Index) AddMultihashesForShard(_ context.Context, it index.MultihashIterator, k shard.Key) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.ctx.Err() != nil {
		return errors.New("top-level index: closed")
	}
	num, ok := x.byKey[k]
	if ok && x.pieces[num].state == complete {
		return nil
	}
	if ok && x.pieces[num].stop != nil {
		x.pieces[num].stop() // a newer add of the same entries replaces it
	}
	if ok && x.pieces[num].err != nil { // a failed insert: this add starts afresh
		x.pieces[num] = &piece{key: k, state: adding, done: make(chan struct{})}
	}
	if !ok {
		num = x.next
		x.next++
		if err := x.putPiece(num, adding, k); err != nil {
			return fmt.Errorf("top-level index: number piece %s: %w", k, err)
		}
		x.byKey[k] = num
		x.pieces[num] = &piece{key: k, state: adding, done: make(chan struct{})}
	}
	p := x.pieces[num]
	ctx, stop := context.WithCancel(x.ctx)
	p.stop = stop
	hold := x.hold
	x.wg.Add(1)
	go func() {
		defer x.wg.Done()
		defer stop()
		if hold != nil {
			select {
			case <-hold:
			case <-ctx.Done():
				return // replaced, removed or closed
			}
		}
		if err := x.insert(ctx, num, it); err != nil {
			if ctx.Err() != nil {
				return // replaced, removed or closed
			}
			x.log.Errorw("top-level index: adding a piece's multihashes failed; it is added again at the next start", "piece", k, "error", err)
			x.mu.Lock()
			defer x.mu.Unlock()
			if x.pieces[num] == p && p.state == adding {
				p.err, p.stop = fmt.Errorf("top-level index: add piece %s: %w", k, err), nil
				close(p.done) // waiters learn it failed rather than wait for good
			}
			return
		}
		x.mu.Lock()
		defer x.mu.Unlock()
		if x.pieces[num] != p || p.state != adding || ctx.Err() != nil {
			return // removed, or replaced by a newer add, meanwhile
		}
		if err := x.putPiece(num, complete, k); err != nil {
			x.log.Errorw("top-level index: marking a piece complete failed", "piece", k, "error", err)
			return
		}
		p.state, p.stop = complete, nil
		close(p.done)
	}()
	return nil
}

func entryKey(mh multihash.Multihash, num uint32) []byte {
	k := make([]byte, 0, 1+len(mh)+varint.UvarintSize(uint64(num)))
	k = append(append(k, entryPrefix), mh...)
	return binary.AppendUvarint(k, uint64(num))
}

// insert writes num's entries in unsynced batches; the synced write of
// the piece's state that follows makes them durable.
func (x *Index) insert(ctx context.Context, num uint32, it index.MultihashIterator) error {
	return x.writeEntries(ctx, it, func(b *leveldb.Batch, mh multihash.Multihash) { b.Put(entryKey(mh, num), nil) })
}

func (x *Index) writeEntries(ctx context.Context, it index.MultihashIterator, op func(*leveldb.Batch, multihash.Multihash)) error {
	b := new(leveldb.Batch)
	err := it.ForEach(func(mh multihash.Multihash) error {
		op(b, mh)
		if b.Len() >= batchEntries {
			if err := x.db.Write(b, nil); err != nil {
				return err
			}
			b.Reset()
			return ctx.Err()
		}
		return nil
	})
	if err == nil && b.Len() > 0 {
		err = x.db.Write(b, nil)
	}
	return err
}

// Wait returns once k's entries are complete (nil), k was removed or is
// unknown (ds.ErrNotFound), its insert failed (that error), or ctx ended.
func (x *Index) Wait(ctx context.Context, k shard.Key) error {
	x.mu.Lock()
	num, ok := x.byKey[k]
	var p *piece
	if ok {
		p = x.pieces[num]
	}
	x.mu.Unlock()
	if p == nil {
		return ds.ErrNotFound
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if x.Complete(k) {
		return nil
	}
	if p.err != nil {
		return p.err
	}
	return ds.ErrNotFound
}

// Complete reports whether k's entries are all recorded.
func (x *Index) Complete(k shard.Key) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	num, ok := x.byKey[k]
	return ok && x.pieces[num].state == complete
}

// HoldInserts makes the inserts that start from now on wait before they
// write, until release is called or they are cancelled: a window in which
// the index takes no writes, and how tests look at a piece whose entries
// are not written yet.
func (x *Index) HoldInserts() (release func()) {
	ch := make(chan struct{})
	x.mu.Lock()
	x.hold = ch
	x.mu.Unlock()
	return sync.OnceFunc(func() {
		x.mu.Lock()
		if x.hold == ch {
			x.hold = nil
		}
		x.mu.Unlock()
		close(ch)
	})
}

// Unfinished returns the pieces whose entries are not all recorded: being
// added, or left so by a crash or a failed insert.
func (x *Index) Unfinished() []shard.Key {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []shard.Key
	for k, num := range x.byKey {
		if x.pieces[num].state != complete {
			out = append(out, k)
		}
	}
	return out
}

// CompleteShards returns the pieces whose entries are all recorded.
func (x *Index) CompleteShards() map[shard.Key]struct{} {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make(map[shard.Key]struct{}, len(x.byKey))
	for k, num := range x.byKey {
		if x.pieces[num].state == complete {
			out[k] = struct{}{}
		}
	}
	return out
}

// GetShardsForMultihash returns the complete pieces holding mh, or
// ds.ErrNotFound.
func (x *Index) GetShardsForMultihash(_ context.Context, mh multihash.Multihash) ([]shard.Key, error) {
	prefix := append([]byte{entryPrefix}, mh...)
	it := x.db.NewIterator(util.BytesPrefix(prefix), &opt.ReadOptions{DontFillCache: false})
	defer it.Release()
	var keys []shard.Key
	x.mu.Lock()
	defer x.mu.Unlock()
	for it.Next() {
		rest := it.Key()[len(prefix):]
		num, n := binary.Uvarint(rest)
		if n <= 0 || n != len(rest) || num > uint64(^uint32(0)) {
			continue // a longer multihash sharing this prefix
		}
		if p := x.pieces[uint32(num)]; p != nil && p.state == complete {
			keys = append(keys, p.key)
		}
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("top-level index: look up %s: %w", mh, err)
	}
	if len(keys) == 0 {
		return nil, ds.ErrNotFound
	}
	return keys, nil
}

// RemoveShard stops reporting k at once and reclaims its entries in the
// background: those it yields, or, with a nil it (its index is gone or
// unreadable), those a scan of the whole index finds.
func (x *Index) RemoveShard(_ context.Context, it index.MultihashIterator, k shard.Key) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	num, ok := x.byKey[k]
	if !ok {
		return nil
	}
	p := x.pieces[num]
	if err := x.putPiece(num, removed, k); err != nil {
		return fmt.Errorf("top-level index: remove piece %s: %w", k, err)
	}
	if p.stop != nil {
		p.stop()
	}
	if p.state != complete && p.err == nil {
		close(p.done)
	}
	p.state, p.stop = removed, nil
	delete(x.byKey, k)
	x.toPurge = append(x.toPurge, purge{num: num, it: it})
	select {
	case x.kick <- struct{}{}:
	default:
	}
	return nil
}
