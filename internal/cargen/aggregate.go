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
	return writeAggregate(path, minPadded, len(parts), func(i int) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(parts[i])), nil
	})
}

// WriteAggregateFiles is WriteAggregate with each segment read from a file
// (a CAR, or a piece: a CAR and its zero padding), streamed rather than
// held in memory. Zero runs are left as holes in the output.
func WriteAggregateFiles(path string, minPadded uint64, files ...string) (Aggregate, error) {
	return writeAggregate(path, minPadded, len(files), func(i int) (io.ReadCloser, error) {
		return os.Open(files[i])
	})
}

func writeAggregate(path string, minPadded uint64, n int, open func(int) (io.ReadCloser, error)) (Aggregate, error) {
	infos := make([]abi.PieceInfo, n)
	var total uint64
	for i := range infos {
		r, err := open(i)
		if err != nil {
			return Aggregate{}, fmt.Errorf("cargen: segment %d: %w", i, err)
		}
		c, padded, err := CommP(r)
		_ = r.Close()
		if err != nil {
			return Aggregate{}, fmt.Errorf("cargen: segment %d: %w", i, err)
		}
		infos[i] = abi.PieceInfo{PieceCID: c, Size: abi.PaddedPieceSize(padded)}
		total += padded
	}
	deal := uint64(2048)
	for deal < minPadded || deal < total {
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
	readers := make([]io.Reader, n)
	for i := range readers {
		r, err := open(i)
		if err != nil {
			return Aggregate{}, fmt.Errorf("cargen: segment %d: %w", i, err)
		}
		defer r.Close()
		readers[i] = r
	}
	r, err := agg.AggregateObjectReader(readers)
	if err != nil {
		return Aggregate{}, fmt.Errorf("cargen: aggregate: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return Aggregate{}, err
	}
	sw := &sparseWriter{f: f}
	_, err = io.CopyBuffer(sw, r, make([]byte, 64<<10))
	if err == nil {
		err = f.Truncate(sw.off)
	}
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
	out := Aggregate{PieceCID: pc, PaddedSize: deal, Size: uint64(sw.off), IndexStart: start}
	for _, e := range agg.Index.Entries {
		out.Segments = append(out.Segments, e.PieceCID())
		out.Offsets = append(out.Offsets, e.UnpaddedOffest())
		out.Lengths = append(out.Lengths, e.UnpaddedLength())
	}
	return out, nil
}

// sparseWriter writes to f, skipping writes of zeros (left as holes).
type sparseWriter struct {
	f   *os.File
	off int64
}

func (w *sparseWriter) Write(p []byte) (int, error) {
	for _, b := range p {
		if b != 0 {
			if _, err := w.f.WriteAt(p, w.off); err != nil {
				return 0, err
			}
			break
		}
	}
	w.off += int64(len(p))
	return len(p), nil
}
