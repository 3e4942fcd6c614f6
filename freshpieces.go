package dagwrap

import (
	"sync"
	"sync/atomic"

	"github.com/filecoin-project/dagstore/shard"
	"github.com/multiformats/go-multihash"
)

// Lookups of pieces whose top-level entries are still being written.
//
// The compact index writes a piece's entries in the background once the
// shard is indexed, at about 1.3M entries/s (LevelDB's memtable insert
// bounds it): for a piece of small blocks, about as long again as indexing
// it. Until they are complete, the piece's own index file answers for it:
// the file is complete and synced before the insert starts, sorted by
// digest and memory-mapped, so a lookup is one binary search in it. A piece
// leaves the set once its entries are complete, when its insert fails (it is
// found again once added again), and at once when it is removed.

// maxFresh bounds the pieces served so, and with them the binary searches
// a lookup makes; a piece beyond it is found once its entries are written.
const maxFresh = 64

// freshPieces is that set. Its methods are safe for concurrent use.
type freshPieces struct {
	n  atomic.Int32 // len(m): lookups skip the lock while it is zero
	mu sync.RWMutex // lookups hold it for reading: no index is unmapped under them
	m  map[shard.Key]*mappedIndex
}

// add serves k from idx, unless k is served already or the set is full.
func (f *freshPieces) add(k shard.Key, idx *mappedIndex) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.m[k]; ok || len(f.m) >= maxFresh {
		return false
	}
	if f.m == nil {
		f.m = make(map[shard.Key]*mappedIndex)
	}
	f.m[k] = idx
	f.n.Store(int32(len(f.m)))
	return true
}

// remove stops serving k (from idx only, unless idx is nil) and unmaps its
// index.
func (f *freshPieces) remove(k shard.Key, idx *mappedIndex) {
	f.mu.Lock()
	cur, ok := f.m[k]
	if !ok || (idx != nil && cur != idx) {
		f.mu.Unlock()
		return
	}
	delete(f.m, k)
	f.n.Store(int32(len(f.m)))
	f.mu.Unlock()
	_ = cur.Close()
}

// has reports whether k is served.
func (f *freshPieces) has(k shard.Key) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	_, ok := f.m[k]
	return ok
}

// lookup adds to keys the served pieces whose index holds mh. An index
// that cannot be read (its file was cut short in place) is passed over: the
// piece is found once its entries are written.
func (f *freshPieces) lookup(mh multihash.Multihash, keys []shard.Key) []shard.Key {
	if f.n.Load() == 0 {
		return keys
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	for k, idx := range f.m {
		if ok, err := idx.has(mh); ok && err == nil {
			keys = appendNew(keys, k)
		}
	}
	return keys
}
