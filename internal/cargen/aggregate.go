package cargen

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/filecoin-project/go-data-segment/datasegment"
	"github.com/filecoin-project/go-state-types/abi"
	"github.com/ipfs/go-cid"
)

// Aggregate is an aggregated piece (FRC-0058) written by WriteAggregate.
type Aggregate struct {
	PieceCID   cid.Cid   // as go-data-segment computes it: the root over every segment and the index
	PaddedSize uint64    // the deal size
	Size       uint64    // bytes of the file: the unpadded piece
	Segments   []cid.Cid // each segment's piece CID, in index order
	// Offsets and Lengths are each segment's place in the file (unpadded).
	Offsets, Lengths []uint64
	// IndexStart is where the data segment index starts in the file.
	IndexStart uint64
}

// WriteAggregate writes to path the aggregate go-data-segment builds from
// parts (each part's bytes become one segment, zero-padded to its piece
// size), in the smallest deal size that holds them, at least minPadded.
func WriteAggregate(path string, minPadded uint64, parts ...[]byte) (Aggregate, error) {
	infos := make([]abi.PieceInfo, len(parts))
	var total uint64
	for i, p := range parts {
		c, padded, err := CommP(bytes.NewReader(p))
		if err != nil {
			return Aggregate{}, fmt.Errorf("cargen: segment %d: %w", i, err)
		}
		infos[i] = abi.PieceInfo{PieceCID: c, Size: abi.PaddedPieceSize(padded)}
		total += padded
	}
	deal := uint64(2048)
	for deal < minPadded || deal < 2*total {
		deal <<= 1
	}
	var agg *datasegment.Aggregate
	for {
		var err error
		agg, err = datasegment.NewAggregate(abi.PaddedPieceSize(deal), infos)
		if err == nil {
			break
		}
		if deal >= 1<<40 {
			return Aggregate{}, fmt.Errorf("cargen: aggregate: %w", err)
		}
		deal <<= 1
	}
	readers := make([]io.Reader, len(parts))
	for i, p := range parts {
		readers[i] = bytes.NewReader(p)
	}
	r, err := agg.AggregateObjectReader(readers)
	if err != nil {
		return Aggregate{}, fmt.Errorf("cargen: aggregate: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return Aggregate{}, err
	}
	n, err := io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Aggregate{}, fmt.Errorf("cargen: write aggregate: %w", err)
	}
	pc, err := agg.PieceCID()
	if err != nil {
		return Aggregate{}, fmt.Errorf("cargen: aggregate piece CID: %w", err)
	}
	start, _ := agg.IndexStartPosition()
	out := Aggregate{PieceCID: pc, PaddedSize: deal, Size: uint64(n), IndexStart: start}
	for _, e := range agg.Index.Entries {
		out.Segments = append(out.Segments, e.PieceCID())
		out.Offsets = append(out.Offsets, e.UnpaddedOffest())
		out.Lengths = append(out.Lengths, e.UnpaddedLength())
	}
	return out, nil
}
