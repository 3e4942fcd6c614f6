package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/filecoin-project/dagstore/mount"
	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"

	"github.com/spstack/dagwrap"
	"github.com/spstack/dagwrap/internal/segindex"
)

// segmentJSON is one segment of an aggregated piece, as info shows it.
type segmentJSON struct {
	Number   int      `json:"number"`
	Offset   uint64   `json:"offset"`
	Size     uint64   `json:"size"`
	PieceCID string   `json:"piece_cid"`
	Roots    []string `json:"roots,omitempty"`
	Indexed  bool     `json:"indexed"`
	Blocks   int64    `json:"blocks,omitempty"`
	CARSize  int64    `json:"car_size,omitempty"`
	Reason   string   `json:"reason,omitempty"`
}

func toSegmentsJSON(segs []dagwrap.Segment) []segmentJSON {
	var out []segmentJSON
	for _, s := range segs {
		out = append(out, segmentJSON{Number: s.Number, Offset: s.Offset, Size: s.Size, PieceCID: s.PieceCID.String(),
			Roots: cidStrings(s.Roots), Indexed: s.Indexed, Blocks: s.Blocks, CARSize: s.CARSize, Reason: s.Reason})
	}
	return out
}

// printSegments adds an aggregate's segments to info's table.
func printSegments(tw *tabwriter.Writer, segs []segmentJSON) {
	if len(segs) == 0 {
		return
	}
	fmt.Fprintf(tw, "aggregate:\t%d segments (export one with: dagwrap export PIECE --segment N -o FILE)\n", len(segs))
	for _, s := range segs {
		state := fmt.Sprintf("indexed, %d blocks, CAR %d bytes, roots %s", s.Blocks, s.CARSize, strings.Join(s.Roots, " "))
		if !s.Indexed {
			state = "not indexed: " + s.Reason
		}
		fmt.Fprintf(tw, "segment %d:\tpiece %s, offset %d, size %d, %s\n", s.Number, s.PieceCID, s.Offset, s.Size, state)
	}
}

// pieceSegments reads the data segment index of a fetched piece: ok is
// false for a piece that is not an aggregate.
func pieceSegments(piece mount.Reader) (_ []segindex.Entry, ok bool, _ error) {
	size, err := piece.Seek(0, io.SeekEnd)
	if err == nil {
		_, err = piece.Seek(0, io.SeekStart)
	}
	if err != nil {
		return nil, false, err
	}
	return segindex.Read(piece, size)
}

// exportSegment writes segment seg's CAR of the aggregate pc to path: the
// CAR's bytes only, checked block by block as export does for a piece.
func exportSegment(ctx context.Context, n *node, pc cid.Cid, seg int, path string) (exported, error) {
	if _, err := n.shard(pc); err != nil {
		return exported{}, err
	}
	piece, err := n.dir.FetchUnsealedPiece(ctx, pc)
	if err != nil {
		return exported{}, fmt.Errorf("export to %s: %w", path, err)
	}
	defer piece.Close()
	entries, ok, err := pieceSegments(piece)
	if err != nil {
		return exported{}, fmt.Errorf("export segment %d of piece %s: data segment index: %w", seg, pc, err)
	}
	if !ok {
		return exported{}, fmt.Errorf("export segment %d of piece %s: the piece is not an aggregate (export it without --segment)", seg, pc)
	}
	if seg < 0 || seg >= len(entries) {
		return exported{}, fmt.Errorf("export segment %d of piece %s: the aggregate has segments 0 to %d", seg, pc, len(entries)-1)
	}
	e := entries[seg]
	if e.Err != nil {
		return exported{}, fmt.Errorf("export segment %d of piece %s: its index entry is not trusted: %w", seg, pc, e.Err)
	}
	if _, err := carv2.NewBlockReader(io.NewSectionReader(piece, int64(e.Offset()), int64(e.Size()))); err != nil {
		return exported{}, fmt.Errorf("export segment %d of piece %s: the segment is not a CAR: %w", seg, pc, err)
	}
	res, err := writeExport(ctx, pc, io.NewSectionReader(piece, int64(e.Offset()), int64(e.Size())), path)
	if err != nil {
		return exported{}, fmt.Errorf("segment %d (piece %s): %w", seg, e.PieceCID(), err)
	}
	return res, nil
}

// refuseAggregate fails a plain export of an aggregate: its bytes are not
// one CAR, so the operator picks a segment.
func refuseAggregate(pc cid.Cid, piece mount.Reader) error {
	entries, ok, err := pieceSegments(piece)
	if err != nil {
		return fmt.Errorf("export piece %s: data segment index: %w", pc, err)
	}
	if ok {
		return fmt.Errorf("piece %s is an aggregate of %d segments, not one CAR: pick one with --segment N (see: dagwrap info %s)", pc, len(entries), pc)
	}
	return nil
}
