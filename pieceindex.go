package dagwrap

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	"github.com/multiformats/go-multicodec"
	"github.com/multiformats/go-varint"
)

// Indexing a piece.
//
// go-car's GenerateIndex builds its index through a slice of records, each
// holding a decoded CID, and then groups, copies and sorts them: most of
// the time of an eager registration of a piece of small blocks went there.
// indexPiece reads the sections in one pass through a large buffer, keeps
// each entry as the fixed-width (digest, offset) bytes the index file holds,
// sorts each bucket in place and writes the file's bytes directly: the
// same MultihashIndexSorted format, so the dagstore and go-car read it.

// maxServedSection is the largest section go-car's read-only blockstore
// (the dagstore's) serves; a larger block is left out of the index, so
// that no piece announces a block it cannot serve.
const maxServedSection = carv2.DefaultMaxAllowedSectionSize

// maxIndexedCID is go-car's bound on an indexed CID's size.
const maxIndexedCID = carv2.DefaultMaxIndexCidSize

// pieceIndex is a piece's index being built.
type pieceIndex struct {
	buckets map[bucketKey][]byte // fixed-width entries: digest, then uint64 LE offset
	entries int64
	// skipped lists the blocks left out because the blockstore could not
	// serve them (over maxServedSection).
	skipped []skippedBlock
	// dataEnd is where the CARv1's last section ends (the padding starts).
	dataEnd int64
}

type bucketKey struct {
	code  uint64
	width uint32
}

// skippedBlock is a block left out of the index.
type skippedBlock struct {
	CID    cid.Cid
	Offset int64
	Size   uint64
}

// errNotCARv1 says a piece is not a CARv1 (a CARv2, say): the caller
// indexes it the generic way.
var errNotCARv1 = errors.New("not a CARv1")

// indexPiece reads the CARv1 in r from its start (up to size bytes; zero
// padding or the end ends it) and returns its index. Identity CIDs are indexed, as the dagstore
// asks go-car to. A section cut short by the end of the piece is indexed as
// go-car does: its reads fail later, naming the piece.
func indexPiece(r io.Reader, size int64) (*pieceIndex, error) {
	src := newPieceSource(r, size)
	br := bufio.NewReaderSize(src, indexBufSize)
	hlen, err := varint.ReadUvarint(br)
	if err != nil {
		return nil, fmt.Errorf("CAR header: %w", noEOF(err))
	}
	if hlen == 0 || hlen > carv2.DefaultMaxAllowedHeaderSize {
		return nil, fmt.Errorf("CAR header: bad length %d", hlen)
	}
	head := make([]byte, hlen)
	if _, err := io.ReadFull(br, head); err != nil {
		return nil, fmt.Errorf("CAR header: %w", noEOF(err))
	}
	pre := append(varint.ToUvarint(hlen), head...)
	version, err := carv2.ReadVersion(bytes.NewReader(pre))
	if err != nil {
		return nil, fmt.Errorf("CAR header: %w", err)
	}
	if version != 1 {
		return nil, errNotCARv1
	}

	px := &pieceIndex{buckets: make(map[bucketKey][]byte)}
	off := int64(len(pre))
	for {
		start := off
		slen, err := varint.ReadUvarint(br)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("section at offset %d: length: %w", start, noEOF(err))
		}
		if slen == 0 {
			break // zero padding
		}
		off += int64(varint.UvarintSize(slen))
		// The CID is at most maxIndexedCID bytes; a shorter section or the
		// end of the piece bounds what there is to look at.
		peek, err := br.Peek(int(min(slen, maxIndexedCID)))
		if err != nil && len(peek) == 0 {
			return nil, fmt.Errorf("section at offset %d: CID: %w", start, noEOF(err))
		}
		clen, c, err := cid.CidFromBytes(peek)
		if err != nil {
			return nil, fmt.Errorf("section at offset %d: CID: %w", start, err)
		}
		if slen > maxServedSection {
			px.skipped = append(px.skipped, skippedBlock{CID: c, Offset: start, Size: slen - uint64(clen)})
		} else if err := px.add(c, start); err != nil {
			return nil, fmt.Errorf("section at offset %d: %w", start, err)
		}
		if rest := int64(slen) - int64(br.Buffered()); rest >= skipAtLeast && off+int64(slen) <= size && src.canSkip() {
			// A big block: pass over its data rather than read it.
			if err := src.skip(rest); err != nil {
				return nil, fmt.Errorf("section at offset %d: seek: %w", start, err)
			}
			br.Reset(src)
			off += int64(slen)
			px.dataEnd = off
			continue
		}
		src.grow()
		n, err := br.Discard(int(slen))
		off += int64(n)
		if err != nil {
			break // cut short by the end of the piece: go-car indexes it too
		}
		px.dataEnd = off
	}
	if px.dataEnd == 0 {
		px.dataEnd = off
	}
	px.sort()
	return px, nil
}

const (
	// indexBufSize is the indexer's read buffer: one read brings in many
	// sections of small blocks.
	indexBufSize = 64 << 10
	// skipAtLeast is the unread rest of a section past which the indexer
	// seeks over it instead of reading it.
	skipAtLeast = indexBufSize / 2
	// headerRead is what one read brings in after a skipped block: the
	// next section's length and CID (at most maxIndexedCID) with room to
	// spare, not the next block's data.
	headerRead = 4 << 10
)

// pieceSource feeds the indexer's buffer. On a file it reads at its own
// offset (pread), so passing over a block costs no system call; any other
// reader is read in sequence, seeking over blocks if it can seek (a remote
// piece reader may serve a stream, which ReadAt calls would break up).
// After a skipped block one read brings in only headerRead bytes (the next
// section's header, not its data), growing back to the whole buffer over
// sections that are read: reading 64 KiB of every 256 KiB block took more
// time than go-car's whole indexing.
type pieceSource struct {
	r    io.Reader
	ra   io.ReaderAt // a file; nil: read r in sequence
	seek io.Seeker   // nil: cannot skip
	off  int64       // offset of the next byte read (r's position, from 0)
	end  int64
	max  int // most bytes one read brings in
}

func newPieceSource(r io.Reader, size int64) *pieceSource {
	s := &pieceSource{r: r, end: size, max: indexBufSize}
	if f, ok := r.(*os.File); ok {
		s.ra = f
	}
	s.seek, _ = r.(io.Seeker)
	return s
}

func (s *pieceSource) Read(p []byte) (int, error) {
	if s.off >= s.end {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), int64(s.max), s.end-s.off)]
	var n int
	var err error
	if s.ra != nil {
		if n, err = s.ra.ReadAt(p, s.off); n > 0 && errors.Is(err, io.EOF) {
			err = nil // the next read says it
		}
	} else {
		n, err = s.r.Read(p)
	}
	s.off += int64(n)
	return n, err
}

func (s *pieceSource) canSkip() bool { return s.ra != nil || s.seek != nil }

// skip passes over n bytes; the next read brings in only a header.
func (s *pieceSource) skip(n int64) error {
	if s.ra == nil {
		if _, err := s.seek.Seek(n, io.SeekCurrent); err != nil {
			return err
		}
	}
	s.off += n
	s.max = headerRead
	return nil
}

// grow doubles what one read brings in, up to the buffer, as sections are
// read rather than skipped.
func (s *pieceSource) grow() { s.max = min(2*s.max, indexBufSize) }

func (px *pieceIndex) add(c cid.Cid, offset int64) error {
	mh := []byte(c.Hash())
	code, n, err := varint.FromUvarint(mh)
	if err != nil {
		return fmt.Errorf("CID %s: multihash: %w", c, err)
	}
	dlen, m, err := varint.FromUvarint(mh[n:])
	if err != nil || uint64(len(mh)-n-m) != dlen {
		return fmt.Errorf("CID %s: malformed multihash", c)
	}
	digest := mh[n+m:]
	k := bucketKey{code: code, width: uint32(len(digest) + 8)}
	b := append(px.buckets[k], digest...)
	px.buckets[k] = binary.LittleEndian.AppendUint64(b, uint64(offset))
	px.entries++
	return nil
}

// sort orders each bucket by digest, then offset.
func (px *pieceIndex) sort() {
	for k, b := range px.buckets {
		sortEntries(fixedEntries{b: b, w: int(k.width), tmp: make([]byte, k.width)})
	}
}

// fixedEntries sorts fixed-width entries in place; with the offset last and
// little-endian, equal digests are ordered by a stable pass below.
type fixedEntries struct {
	b   []byte
	w   int
	tmp []byte
}

func (f fixedEntries) Len() int { return len(f.b) / f.w }
func (f fixedEntries) Less(i, j int) bool {
	return f.less(f.b[i*f.w:(i+1)*f.w], f.b[j*f.w:(j+1)*f.w])
}

// less orders two entries: by digest, then by offset.
func (f fixedEntries) less(a, b []byte) bool {
	if c := bytes.Compare(a[:f.w-8], b[:f.w-8]); c != 0 {
		return c < 0
	}
	return binary.LittleEndian.Uint64(a[f.w-8:]) < binary.LittleEndian.Uint64(b[f.w-8:])
}
func (f fixedEntries) Swap(i, j int) {
	a, b := f.b[i*f.w:(i+1)*f.w], f.b[j*f.w:(j+1)*f.w]
	copy(f.tmp, a)
	copy(a, b)
	copy(b, f.tmp)
}

// encodedSize is the length of what WriteTo writes, so that a buffer for it
// is allocated once (a piece of 55M blocks has a 2.2 GB index).
func (px *pieceIndex) encodedSize() int {
	n := varint.UvarintSize(uint64(multicodec.CarMultihashIndexSorted)) + 4
	codes := make(map[uint64]bool)
	for k, b := range px.buckets {
		if !codes[k.code] {
			codes[k.code] = true
			n += 8 + 4
		}
		n += 4 + 8 + len(b)
	}
	return n
}

// WriteTo writes the index as a MultihashIndexSorted index file, codec
// first, as carindex.WriteTo does.
func (px *pieceIndex) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriterSize(w, 1<<20)
	var n int64
	put := func(b []byte) {
		m, _ := bw.Write(b)
		n += int64(m)
	}
	le := binary.LittleEndian
	put(varint.ToUvarint(uint64(multicodec.CarMultihashIndexSorted)))
	byCode := make(map[uint64][]uint32)
	for k := range px.buckets {
		byCode[k.code] = append(byCode[k.code], k.width)
	}
	codes := make([]uint64, 0, len(byCode))
	for c := range byCode {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	put(le.AppendUint32(nil, uint32(len(codes))))
	for _, code := range codes {
		widths := byCode[code]
		slices.Sort(widths)
		put(le.AppendUint64(nil, code))
		put(le.AppendUint32(nil, uint32(len(widths))))
		for _, width := range widths {
			b := px.buckets[bucketKey{code, width}]
			put(le.AppendUint32(nil, width))
			put(le.AppendUint64(nil, uint64(len(b))))
			put(b)
		}
	}
	if err := bw.Flush(); err != nil {
		return n, err
	}
	return n, nil
}
