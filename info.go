package dagwrap

import (
	"fmt"
	"path/filepath"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// IndexStats describes a shard's index.
type IndexStats struct {
	Indexed   bool  // false until the shard has been initialised
	Blocks    int   // entries in the index: one per indexed section (a block stored twice counts twice)
	IndexSize int64 // bytes of the index file
	// Oversized lists the blocks left out of the index because they are
	// larger than the blockstore serves (8 MiB): never announced.
	Oversized []OversizedBlock
}

// IndexStats returns the statistics of the piece's index. A shard not
// initialised yet has Indexed false; an unknown piece is an error wrapping
// ErrShardUnknown.
func (w *Wrapper) IndexStats(pieceCid cid.Cid) (IndexStats, error) {
	if err := checkCID("piece", pieceCid); err != nil {
		return IndexStats{}, err
	}
	done, err := w.begin()
	if err != nil {
		return IndexStats{}, fmt.Errorf("index stats of piece %s: %w", pieceCid, err)
	}
	defer done()
	key := shard.KeyFromCID(pieceCid)
	if _, err := w.shards.state(key); err != nil {
		return IndexStats{}, fmt.Errorf("index stats of piece %s: %w", pieceCid, err)
	}
	st, err := w.st.irepo.StatFullIndex(key)
	if err != nil {
		return IndexStats{}, fmt.Errorf("index stats of piece %s: %w", pieceCid, err)
	}
	if !st.Exists {
		return IndexStats{}, nil
	}
	idx, err := w.shards.index(key)
	if err != nil {
		return IndexStats{}, fmt.Errorf("index stats of piece %s: %w", pieceCid, err)
	}
	n := 0
	if m, ok := idx.(*mappedIndex); ok {
		n = int(m.Entries()) // counted from its headers, without reading it
	} else if err := idx.ForEach(func(multihash.Multihash, uint64) error { n++; return nil }); err != nil {
		return IndexStats{}, fmt.Errorf("index stats of piece %s: read index: %w", pieceCid, err)
	}
	over, err := readOversized(filepath.Join(w.cfg.RootDir, oversizedDir), key)
	if err != nil {
		return IndexStats{}, fmt.Errorf("index stats of piece %s: %w", pieceCid, err)
	}
	return IndexStats{Indexed: true, Blocks: n, IndexSize: int64(st.Size), Oversized: over}, nil
}

// StateName is the short lower-case name of a shard state, as operators
// type it: new, initializing, available, serving, recovering, errored.
func StateName(s dagstore.ShardState) string {
	switch s {
	case dagstore.ShardStateNew:
		return "new"
	case dagstore.ShardStateInitializing:
		return "initializing"
	case dagstore.ShardStateAvailable:
		return "available"
	case dagstore.ShardStateServing:
		return "serving"
	case dagstore.ShardStateRecovering:
		return "recovering"
	case dagstore.ShardStateErrored:
		return "errored"
	default:
		return "unknown"
	}
}

// ParseState is the inverse of StateName.
func ParseState(name string) (dagstore.ShardState, error) {
	for _, s := range []dagstore.ShardState{
		dagstore.ShardStateNew, dagstore.ShardStateInitializing, dagstore.ShardStateAvailable,
		dagstore.ShardStateServing, dagstore.ShardStateRecovering, dagstore.ShardStateErrored,
	} {
		if StateName(s) == name {
			return s, nil
		}
	}
	return dagstore.ShardStateUnknown, fmt.Errorf("unknown shard state %q (want new, initializing, available, serving, recovering or errored)", name)
}
