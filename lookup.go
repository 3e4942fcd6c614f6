package dagwrap

import (
	"fmt"
	"slices"
	"strings"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
	carindex "github.com/ipld/go-car/v2/index"
)

// ShardInfo describes one piece's shard.
type ShardInfo struct {
	PieceCID cid.Cid
	State    dagstore.ShardState
	Error    error
}

// GetPiecesContainingBlock returns the registered pieces that hold the
// block, or an error wrapping ErrBlockNotFound. With an index database
// (Config.IndexDSN) it returns every piece in the shared directory that
// holds the block, whichever node indexed it.
func (w *Wrapper) GetPiecesContainingBlock(blockCID cid.Cid) ([]cid.Cid, error) {
	if err := checkCID("block", blockCID); err != nil {
		return nil, err
	}
	done, err := w.begin()
	if err != nil {
		return nil, fmt.Errorf("look up block %s: %w", blockCID, err)
	}
	defer done()
	// A shared directory reports every node's pieces (see the doc above).
	pieces, err := (&allPieces{w: w}).lookup(w.ctx, blockCID.Hash(), w.st.indexDB == nil)
	if err != nil {
		return nil, fmt.Errorf("look up block %s: %w", blockCID, err)
	}
	if len(pieces) == 0 {
		return nil, fmt.Errorf("look up block %s: %w", blockCID, ErrBlockNotFound)
	}
	return pieces, nil
}

// GetIterableIndexForPiece returns the piece's CAR index (multihash ->
// offset). The shard must have been initialised.
func (w *Wrapper) GetIterableIndexForPiece(pieceCid cid.Cid) (carindex.IterableIndex, error) {
	if err := checkCID("piece", pieceCid); err != nil {
		return nil, err
	}
	done, err := w.begin()
	if err != nil {
		return nil, fmt.Errorf("index of piece %s: %w", pieceCid, err)
	}
	defer done()
	key := shard.KeyFromCID(pieceCid)
	if _, err := w.shards.info(key); err != nil {
		return nil, fmt.Errorf("index of piece %s: %w", pieceCid, err)
	}
	idx, err := w.shards.index(key)
	if err != nil {
		return nil, fmt.Errorf("index of piece %s: %w", pieceCid, err)
	}
	return idx, nil
}

// ShardInfo returns the state of the piece's shard, or an error wrapping
// ErrShardUnknown.
func (w *Wrapper) ShardInfo(pieceCid cid.Cid) (ShardInfo, error) {
	if err := checkCID("piece", pieceCid); err != nil {
		return ShardInfo{}, err
	}
	done, err := w.begin()
	if err != nil {
		return ShardInfo{}, fmt.Errorf("shard info of piece %s: %w", pieceCid, err)
	}
	defer done()
	key := shard.KeyFromCID(pieceCid)
	info, err := w.shards.info(key)
	if err != nil {
		if bad, ok := w.shards.unrestorable(key); ok {
			return ShardInfo{PieceCID: pieceCid, State: dagstore.ShardStateErrored, Error: bad}, nil
		}
		return ShardInfo{}, fmt.Errorf("shard info of piece %s: %w", pieceCid, err)
	}
	return toShardInfo(pieceCid, info), nil
}

func toShardInfo(pieceCid cid.Cid, info dagstore.ShardInfo) ShardInfo {
	si := ShardInfo{PieceCID: pieceCid, State: info.ShardState}
	if info.Error != nil {
		si.Error = fmt.Errorf("piece %s: %w", pieceCid, info.Error)
	}
	return si
}

// ListShards returns every shard, sorted by piece CID, including records
// that could not be restored (as errored shards).
func (w *Wrapper) ListShards() ([]ShardInfo, error) {
	done, err := w.begin()
	if err != nil {
		return nil, fmt.Errorf("list shards: %w", err)
	}
	defer done()
	all, bad := w.shards.all()
	// Sorted by key, the piece CID's string: encoding CIDs in the
	// comparisons took most of the time at 10^6 shards.
	type listed struct {
		key  string
		info ShardInfo
	}
	rows := make([]listed, 0, len(all)+len(bad))
	for k, info := range all {
		c, err := cid.Decode(k.String())
		if err != nil {
			w.log.Warnw("shard key is not a piece CID; not listed", "key", k)
			continue
		}
		rows = append(rows, listed{k.String(), toShardInfo(c, info)})
	}
	for k, err := range bad {
		if _, known := all[k]; known {
			continue
		}
		if c, derr := cid.Decode(k.String()); derr == nil {
			rows = append(rows, listed{k.String(), ShardInfo{PieceCID: c, State: dagstore.ShardStateErrored, Error: err}})
		}
	}
	slices.SortFunc(rows, func(a, b listed) int { return strings.Compare(a.key, b.key) })
	out := make([]ShardInfo, len(rows))
	for i, r := range rows {
		out[i] = r.info
	}
	return out, nil
}
