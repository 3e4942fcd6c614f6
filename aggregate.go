package dagwrap

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/filecoin-project/dagstore/mount"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	"github.com/multiformats/go-varint"

	"github.com/spstack/dagwrap/internal/segindex"
)

// Aggregated pieces (FRC-0058).
//
// An aggregate holds several segments (sub-pieces, usually CARs) at aligned
// offsets and a data segment index at the end. go-car's blockstore, the
// dagstore's, reads a CAR header at offset 0 of its data payload and each
// block at its index offset, and the dagstore indexes only through
// car.ReadOrGenerateIndex over the whole piece. So an aggregate is presented
// as a CARv2 (see aggregateView) whose data payload is a small synthetic
// CARv1 header, listing the roots of every indexed segment, followed by the
// piece's bytes unchanged; each segment's blocks are indexed at
// len(header) + the segment's offset + their offset in the segment. The
// synthetic header is needed because the piece's first bytes may be a
// segment that is not a CAR, and because it makes Roots list every
// segment's roots; the piece bytes are not copied or rewritten.
//
// The index entries are untrusted input: an entry that fails go-data-segment's
// validation, a segment outside the piece's data area and a segment that is
// not a CARv1 are skipped, logged and listed by Segments.

// aggregateIndex is what indexing an aggregate establishes.
type aggregateIndex struct {
	px       *pieceIndex
	header   []byte // the synthetic CARv1 header, with its length varint
	segments []Segment
}

// indexAggregate indexes the piece r of size bytes if it is an aggregate; a
// piece without a valid data segment index returns nil (and no error).
// Only ReadAt is used, so r's position is left where it was.
func indexAggregate(r io.ReaderAt, size int64) (*aggregateIndex, error) {
	entries, ok, err := segindex.Read(r, size)
	if err != nil || !ok {
		return nil, err
	}
	type sub struct {
		px  *pieceIndex
		off int64
		seg int // in segs
	}
	var subs []sub
	var roots []cid.Cid
	seen := make(map[cid.Cid]bool)
	segs := make([]Segment, 0, len(entries))
	for _, e := range entries {
		s := Segment{Number: e.Number, Offset: e.Offset(), Size: e.Size(), PieceCID: e.PieceCID()}
		if e.Err != nil {
			s.Reason = e.Err.Error()
			segs = append(segs, s)
			continue
		}
		off, n := int64(s.Offset), int64(s.Size)
		br, err := carv2.NewBlockReader(io.NewSectionReader(r, off, n), carv2.ZeroLengthSectionAsEOF(true))
		switch {
		case err != nil:
			s.Reason = fmt.Sprintf("not a CAR: %v", err)
		case br.Version != 1:
			s.Reason = fmt.Sprintf("a CARv%d: only CARv1 segments are indexed", br.Version)
		}
		if s.Reason != "" {
			segs = append(segs, s)
			continue
		}
		px, err := indexPiece(io.NewSectionReader(r, off, n), n)
		if err != nil {
			s.Reason = fmt.Sprintf("CAR cannot be indexed: %v", err)
			segs = append(segs, s)
			continue
		}
		s.Roots, s.Indexed, s.Blocks, s.CARSize = br.Roots, true, px.entries, px.dataEnd
		for _, c := range br.Roots {
			if !seen[c] {
				seen[c] = true
				roots = append(roots, c)
			}
		}
		segs = append(segs, s)
		subs = append(subs, sub{px, off, len(segs) - 1})
	}
	header := carv1Header(roots)
	px := &pieceIndex{buckets: make(map[bucketKey][]byte), dataEnd: int64(len(header)) + size}
	// Each segment's buckets come sorted (indexPiece sorts them), and
	// shifting and filtering keep them so: the runs are merged, not sorted
	// again (the re-sort was 40% of an aggregate's indexing).
	runs := make(map[bucketKey][]int)
	for _, s := range subs {
		shift := uint64(len(header)) + uint64(s.off)
		for k, b := range s.px.buckets {
			w := int(k.width)
			kept := px.buckets[k]
			if len(runs[k]) == 0 {
				runs[k] = []int{len(kept)}
			}
			for i := 0; i < len(b); i += w {
				off := binary.LittleEndian.Uint64(b[i+w-8:])
				if int64(off) >= s.px.dataEnd {
					// Cut short by the segment's end: unlike a piece's end,
					// it does not stop a read, which would return the
					// next segment's bytes. Never announced.
					segs[s.seg].Blocks--
					continue
				}
				kept = append(kept, b[i:i+w-8]...)
				kept = binary.LittleEndian.AppendUint64(kept, off+shift)
				px.entries++
			}
			px.buckets[k] = kept
			runs[k] = append(runs[k], len(kept))
		}
		for _, b := range s.px.skipped {
			b.Offset += s.off // an offset in the piece, as IndexStats says
			px.skipped = append(px.skipped, b)
		}
	}
	for k, b := range px.buckets {
		px.buckets[k] = mergeRuns(b, int(k.width), runs[k])
	}
	return &aggregateIndex{px: px, header: header, segments: segs}, nil
}

// mergeRuns merges the sorted runs of w-byte entries of b (run i is
// b[bounds[i]:bounds[i+1]]) into one run ordered as fixedEntries orders,
// pairwise: log2(runs) linear passes.
func mergeRuns(b []byte, w int, bounds []int) []byte {
	if len(bounds) <= 2 {
		return b
	}
	src, dst := b, make([]byte, len(b))
	for len(bounds) > 2 {
		next := []int{0}
		for i := 0; i+1 < len(bounds); i += 2 {
			lo, mid := bounds[i], bounds[i+1]
			hi := mid
			if i+2 < len(bounds) {
				hi = bounds[i+2]
			}
			mergeTwo(dst[lo:hi], src[lo:mid], src[mid:hi], w)
			next = append(next, hi)
		}
		bounds, src, dst = next, dst, src
	}
	return src
}

// mergeTwo merges the sorted runs a and b of w-byte entries into out.
func mergeTwo(out, a, b []byte, w int) {
	less := fixedEntries{w: w}.less
	for len(a) > 0 && len(b) > 0 {
		if less(b[:w], a[:w]) {
			out, b = out[copy(out, b[:w]):], b[w:]
		} else {
			out, a = out[copy(out, a[:w]):], a[w:]
		}
	}
	out = out[copy(out, a):]
	copy(out, b)
}

// carv1Header encodes a CARv1 header {roots, version: 1} in DAG-CBOR (keys
// in canonical order), prefixed with its length, as a CAR starts.
func carv1Header(roots []cid.Cid) []byte {
	b := []byte{0xa2} // map of 2
	b = cborHead(b, 3, 5)
	b = append(b, "roots"...)
	b = cborHead(b, 4, uint64(len(roots)))
	for _, c := range roots {
		cb := c.Bytes()
		b = append(b, 0xd8, 0x2a) // tag 42: a CID
		b = cborHead(b, 2, uint64(len(cb)+1))
		b = append(b, 0) // the multibase identity prefix
		b = append(b, cb...)
	}
	b = cborHead(b, 3, 7)
	b = append(b, "version"...)
	b = append(b, 0x01)
	return append(varint.ToUvarint(uint64(len(b))), b...)
}

func cborHead(b []byte, major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return append(b, m|byte(n))
	case n <= 0xff:
		return append(b, m|24, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, m|25), uint16(n))
	case n <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(b, m|26), uint32(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, m|27), n)
	}
}

// indexAggregate indexes the piece as an aggregate if it is one and the
// mount can record its segments (nil: index it as one CAR).
func (m *pieceMount) indexAggregate(r mount.Reader, size int64) (*aggregateIndex, error) {
	if m.Segments == nil {
		return nil, nil
	}
	agg, err := indexAggregate(r, size)
	if err != nil {
		return nil, fmt.Errorf("data segment index: %w", err)
	}
	return agg, nil
}

// serveAggregate records an aggregate's segments (before the dagstore can
// report the shard available) and returns the view that carries its index.
// It closes r on failure.
func (m *pieceMount) serveAggregate(r mount.Reader, size int64, agg *aggregateIndex) (mount.Reader, error) {
	key := shard.KeyFromCID(m.PieceCid)
	fail := func(err error) (mount.Reader, error) {
		_ = r.Close()
		return nil, fmt.Errorf("piece %s: %w", m.PieceCid, err)
	}
	indexed := 0
	for _, s := range agg.segments {
		if s.Indexed {
			indexed++
			continue
		}
		log.Warnw("aggregate segment skipped", "piece", m.PieceCid, "segment", s.Number, "segment_piece", s.PieceCID, "offset", s.Offset, "size", s.Size, "reason", s.Reason)
	}
	log.Infow("indexed an aggregated piece", "piece", m.PieceCid, "segments", len(agg.segments), "indexed", indexed, "blocks", agg.px.entries)
	for _, b := range agg.px.skipped {
		log.Warnw("block left out of the piece's index: larger than the blockstore serves",
			"piece", m.PieceCid, "block", b.CID, "size", b.Size, "limit", maxServedSection)
	}
	if err := writeOversized(m.Oversized, key, agg.px.skipped); err != nil {
		return fail(err)
	}
	idx, err := indexBytes(agg.px)
	if err != nil {
		return fail(err)
	}
	if err := m.Segments.put(key, agg.header, agg.segments); err != nil {
		return fail(err)
	}
	return newAggregateView(r, agg.header, size, func() ([]byte, error) { return idx, nil }), nil
}

// segmentView presents a piece that is already indexed: an aggregate (its
// segments are recorded) as its view again, since its index's offsets are
// the view's; anything else as it is. The view's index is rebuilt from the
// piece only if read: the dagstore reads it when it re-initialises the
// shard (a recovery), never on an acquire.
func (m *pieceMount) segmentView(r mount.Reader) (mount.Reader, error) {
	if m.Segments == nil {
		return r, nil
	}
	header, found, err := m.Segments.header(shard.KeyFromCID(m.PieceCid))
	if err != nil || !found {
		if err != nil {
			_ = r.Close()
			return nil, fmt.Errorf("piece %s: %w", m.PieceCid, err)
		}
		return r, nil
	}
	size, err := r.Seek(0, io.SeekEnd)
	if err == nil {
		_, err = r.Seek(0, io.SeekStart)
	}
	if err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("piece %s: seek: %w", m.PieceCid, err)
	}
	return newAggregateView(r, header, size, func() ([]byte, error) {
		agg, err := indexAggregate(r, size)
		if err != nil {
			return nil, fmt.Errorf("piece %s: data segment index: %w", m.PieceCid, err)
		}
		if agg == nil || string(agg.header) != string(header) {
			return nil, fmt.Errorf("piece %s no longer holds the aggregate it was indexed as", m.PieceCid)
		}
		return indexBytes(agg.px)
	}), nil
}
