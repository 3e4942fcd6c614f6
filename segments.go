package dagwrap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
)

// Segment is one entry of an aggregated piece's data segment index
// (FRC-0058), as the piece was indexed.
type Segment struct {
	Number   int       // position in the index, from 0
	Offset   uint64    // where the segment starts in the (unpadded) piece
	Size     uint64    // its length in the piece, padding included
	PieceCID cid.Cid   // the segment's own piece CID (CommDs), as the index states it
	Roots    []cid.Cid // its CAR's roots
	Indexed  bool      // its blocks are in the piece's index
	Blocks   int64     // sections indexed
	CARSize  int64     // bytes of its CAR: where its last section ends, from Offset
	// Reason says why the segment was not indexed: an entry failing
	// validation (checksum) or outside the piece, or a segment that is not
	// a CARv1.
	Reason string `json:",omitempty"`
}

// Segments returns the segments of an aggregated piece, in index order, as
// found when the piece was indexed. A piece that is not an aggregate, or
// not indexed yet, has none; an unknown piece is an error wrapping
// ErrShardUnknown.
func (w *Wrapper) Segments(ctx context.Context, pieceCid cid.Cid) ([]Segment, error) {
	pieceCid, err := pieceV1(pieceCid)
	if err != nil {
		return nil, fmt.Errorf("segments: %w", err)
	}
	done, err := w.beginCtx(ctx)
	if err != nil {
		return nil, fmt.Errorf("segments of piece %s: %w", pieceCid, err)
	}
	defer done()
	key := shard.KeyFromCID(pieceCid)
	if _, err := w.shards.info(key); err != nil {
		if _, bad := w.shards.unrestorable(key); !bad {
			return nil, fmt.Errorf("segments of piece %s: %w", pieceCid, err)
		}
	}
	segs, err := w.segs.list(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("segments of piece %s: %w", pieceCid, err)
	}
	return segs, nil
}

// An aggregate's records in the shard-state datastore: its segments (for
// Segments) and the synthetic CAR header its view starts with (read at
// every fetch of the piece once it is indexed, so kept apart and small).
const (
	segmentsPrefix  = "/dagwrap/segments/"
	segHeaderPrefix = "/dagwrap/segheader/"
)

// segmentStore keeps aggregates' records; its writes go through the
// Wrapper's write gate.
type segmentStore struct {
	store ds.Batching
	gate  *writeGate
}

// put records an aggregate's segments and header, in one synced batch.
func (s *segmentStore) put(key shard.Key, header []byte, segs []Segment) error {
	data, err := json.Marshal(segs)
	if err != nil {
		return fmt.Errorf("record segments: %w", err)
	}
	done, err := s.gate.enter()
	if err != nil {
		return fmt.Errorf("record segments: %w", err)
	}
	defer done()
	ctx := s.gate.ctx
	b, err := s.store.Batch(ctx)
	if err == nil {
		err = b.Put(ctx, ds.NewKey(segmentsPrefix+key.String()), data)
	}
	if err == nil {
		err = b.Put(ctx, ds.NewKey(segHeaderPrefix+key.String()), header)
	}
	if err == nil {
		err = b.Commit(ctx)
	}
	if err == nil {
		err = s.store.Sync(ctx, ds.NewKey("/dagwrap"))
	}
	if err != nil {
		return fmt.Errorf("record segments: %w", err)
	}
	return nil
}

// header returns the synthetic header of an aggregate; found is false for
// any other piece.
func (s *segmentStore) header(key shard.Key) (_ []byte, found bool, _ error) {
	b, err := s.store.Get(s.gate.ctx, ds.NewKey(segHeaderPrefix+key.String()))
	if errors.Is(err, ds.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read aggregate header: %w", err)
	}
	return b, true, nil
}

func (s *segmentStore) list(ctx context.Context, key shard.Key) ([]Segment, error) {
	b, err := s.store.Get(ctx, ds.NewKey(segmentsPrefix+key.String()))
	if errors.Is(err, ds.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read segments: %w", err)
	}
	var segs []Segment
	if err := json.Unmarshal(b, &segs); err != nil {
		return nil, fmt.Errorf("read segments: %w", err)
	}
	return segs, nil
}

// remove deletes an aggregate's records (a destroy); there may be none.
func (s *segmentStore) remove(ctx context.Context, key shard.Key) error {
	done, err := s.gate.enter()
	if err != nil {
		return fmt.Errorf("remove segments: %w", err)
	}
	defer done()
	for _, p := range []string{segHeaderPrefix, segmentsPrefix} {
		if err := s.store.Delete(ctx, ds.NewKey(p+key.String())); err != nil && !errors.Is(err, ds.ErrNotFound) {
			return fmt.Errorf("remove segments: %w", err)
		}
	}
	return nil
}
