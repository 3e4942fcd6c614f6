package dagwrap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sort"

	"github.com/ipfs/go-cid"
	carindex "github.com/ipld/go-car/v2/index"
	"github.com/multiformats/go-multicodec"
	"github.com/multiformats/go-multihash"
	"github.com/multiformats/go-varint"
	"golang.org/x/exp/mmap"
)

// mappedIndex is a CARv2 MultihashIndexSorted index file (the codec the
// dagstore writes, `.full.idx`) read in place from a memory map instead of
// being decoded into the heap: opening it reads only its bucket headers, a
// lookup binary-searches the mapped entries. A loaded shard then holds no
// index in memory, and its first block costs the same whatever the piece's
// block count.
//
// The format, after the codec varint: int32 number of multihash codes;
// per code, uint64 code and int32 number of widths; per width, uint32 width,
// int64 byte length, then that many bytes of fixed-width entries (digest,
// uint64 offset), sorted by digest. All integers little-endian.
type mappedIndex struct {
	path    string
	m       *mmap.ReaderAt
	buckets []mappedBucket // by code, then width: the order of the file
}

// mappedBucket is one (code, width) run of entries.
type mappedBucket struct {
	code  uint64
	width uint32
	off   int64 // of the first entry
	n     int64 // entries
}

var (
	_ carindex.IterableIndex = (*mappedIndex)(nil)

	errMappedReadOnly = errors.New("a memory-mapped index is read-only")
)

// openMappedIndex maps the index file at path and checks its structure:
// every bucket must lie within the file, so a truncated index is an error
// here, not a fault later. An index of another codec is reported with
// errNotMapped, for the caller to decode it the usual way.
func openMappedIndex(path string) (idx *mappedIndex, err error) {
	m, err := mmap.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = m.Close()
		}
	}()
	r := &headerReader{m: m}
	codec, err := varint.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("codec: %w", noEOF(err))
	}
	if multicodec.Code(codec) != multicodec.CarMultihashIndexSorted {
		return nil, errNotMapped
	}
	idx = &mappedIndex{path: path, m: m}
	codes, err := r.int32()
	if err != nil {
		return nil, err
	}
	for i := int32(0); i < codes; i++ {
		code, err := r.uint64()
		if err != nil {
			return nil, err
		}
		widths, err := r.int32()
		if err != nil {
			return nil, err
		}
		for j := int32(0); j < widths; j++ {
			width, err := r.uint32()
			if err != nil {
				return nil, err
			}
			size, err := r.uint64()
			if err != nil {
				return nil, err
			}
			if width < 8 || size%uint64(width) != 0 || size > uint64(m.Len())-uint64(r.off) {
				return nil, fmt.Errorf("malformed bucket (code %#x, width %d, %d bytes at offset %d of %d): %w",
					code, width, size, r.off, m.Len(), io.ErrUnexpectedEOF)
			}
			idx.buckets = append(idx.buckets, mappedBucket{code: code, width: width, off: r.off, n: int64(size / uint64(width))})
			r.off += int64(size)
		}
	}
	if r.off != int64(m.Len()) {
		return nil, fmt.Errorf("%d bytes after the last bucket", int64(m.Len())-r.off)
	}
	return idx, nil
}

// errNotMapped says an index file has a codec mappedIndex does not read.
var errNotMapped = errors.New("index codec is not MultihashIndexSorted")

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// headerReader reads the little-endian header fields of a mapped index.
type headerReader struct {
	m   *mmap.ReaderAt
	off int64
}

func (h *headerReader) ReadByte() (byte, error) {
	if h.off >= int64(h.m.Len()) {
		return 0, io.EOF
	}
	b := h.m.At(int(h.off))
	h.off++
	return b, nil
}

func (h *headerReader) read(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := h.m.ReadAt(b, h.off); err != nil {
		return nil, fmt.Errorf("header at offset %d: %w", h.off, noEOF(err))
	}
	h.off += int64(n)
	return b, nil
}

func (h *headerReader) uint64() (uint64, error) {
	b, err := h.read(8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

func (h *headerReader) uint32() (uint32, error) {
	b, err := h.read(4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (h *headerReader) int32() (int32, error) {
	v, err := h.uint32()
	if err == nil && int32(v) < 0 {
		err = fmt.Errorf("negative count at offset %d", h.off-4)
	}
	return int32(v), err
}

// guard turns a fault on the mapped file (it was truncated in place under
// us) into an error instead of a crash of the process.
func (x *mappedIndex) guard(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("index %s changed while in use: %v", x.path, r)
	}
}

func (x *mappedIndex) Codec() multicodec.Code { return multicodec.CarMultihashIndexSorted }

// GetAll calls fn with every offset recorded for c's multihash, in order,
// until fn returns false; carindex.ErrNotFound if there is none.
func (x *mappedIndex) GetAll(c cid.Cid, fn func(uint64) bool) error {
	return x.getMultihash(c.Hash(), fn)
}

// has reports whether the index holds mh.
func (x *mappedIndex) has(mh multihash.Multihash) (bool, error) {
	err := x.getMultihash(mh, func(uint64) bool { return false })
	if errors.Is(err, carindex.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (x *mappedIndex) getMultihash(mh multihash.Multihash, fn func(uint64) bool) (err error) {
	dec, err := multihash.Decode(mh)
	if err != nil {
		return err
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer x.guard(&err)
	width := uint32(len(dec.Digest) + 8)
	for _, b := range x.buckets {
		if b.code != dec.Code || b.width != width {
			continue
		}
		return x.getAll(b, dec.Digest, fn)
	}
	return carindex.ErrNotFound
}

func (x *mappedIndex) getAll(b mappedBucket, digest []byte, fn func(uint64) bool) error {
	entry := make([]byte, b.width)
	dl := int(b.width) - 8
	at := func(i int64) []byte {
		_, _ = x.m.ReadAt(entry, b.off+i*int64(b.width))
		return entry
	}
	i := int64(sort.Search(int(b.n), func(i int) bool {
		return bytes.Compare(digest, at(int64(i))[:dl]) <= 0
	}))
	found := false
	for ; i < b.n; i++ {
		e := at(i)
		if !bytes.Equal(e[:dl], digest) {
			break
		}
		found = true
		if !fn(binary.LittleEndian.Uint64(e[dl:])) {
			break
		}
	}
	if !found {
		return carindex.ErrNotFound
	}
	return nil
}

// ForEach calls f with every multihash and offset, in the file's order.
func (x *mappedIndex) ForEach(f func(multihash.Multihash, uint64) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer x.guard(&err)
	for _, b := range x.buckets {
		entry := make([]byte, b.width)
		dl := int(b.width) - 8
		for i := int64(0); i < b.n; i++ {
			if _, err := x.m.ReadAt(entry, b.off+i*int64(b.width)); err != nil {
				return err
			}
			mh, err := multihash.Encode(entry[:dl], b.code)
			if err != nil {
				return err
			}
			if err := f(mh, binary.LittleEndian.Uint64(entry[dl:])); err != nil {
				return err
			}
		}
	}
	return nil
}

// Entries returns how many entries the index holds, without reading them.
func (x *mappedIndex) Entries() int64 {
	var n int64
	for _, b := range x.buckets {
		n += b.n
	}
	return n
}

// Marshal writes the index as go-car does (without the codec, which
// carindex.WriteTo adds): the mapped bytes after the codec, as they are.
func (x *mappedIndex) Marshal(w io.Writer) (n uint64, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer x.guard(&err)
	start := int64(varint.UvarintSize(uint64(multicodec.CarMultihashIndexSorted)))
	written, err := io.Copy(w, io.NewSectionReader(x.m, start, int64(x.m.Len())-start))
	return uint64(written), err
}

func (x *mappedIndex) Unmarshal(io.Reader) error    { return errMappedReadOnly }
func (x *mappedIndex) Load([]carindex.Record) error { return errMappedReadOnly }
func (x *mappedIndex) Close() error                 { return x.m.Close() }
