package dagwrap

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/filecoin-project/dagstore/mount"
	carv2 "github.com/ipld/go-car/v2"
)

// A CARv2 piece may carry an index. The dagstore reads it instead of
// indexing the data, and go-car trusts its lengths: a corrupt one
// panics in a dagstore goroutine, taking the node down, or allocates
// gigabytes. A piece is untrusted input, so dagwrap hides that index (it
// reads the header's index offset as zero) and the dagstore indexes the data
// itself, as it does for every CARv1 piece.

// indexOffsetAt is where a CARv2 header keeps the index offset: after the
// pragma, the 16-byte characteristics and the data offset and size.
const indexOffsetAt = carv2.PragmaSize + 16 + 8 + 8

// headLen is how much of a piece's start maskIndex looks at.
const headLen = indexOffsetAt + 8

// maskIndex returns r (random access: the mount always declares it) reading
// as the same piece with any CARv2 index offset zeroed. A reader without one
// is returned as it is (the dagstore memory-maps files).
func maskIndex(r mount.Reader) (mount.Reader, error) {
	head := make([]byte, headLen)
	n, err := r.ReadAt(head, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read header: %w", err)
	}
	if !zeroIndexOffset(head[:n]) {
		return r, nil
	}
	return &maskedAt{Reader: r, head: head[:n]}, nil
}

// zeroIndexOffset zeroes the index offset in head if it is the start of a
// CARv2 with an index, and reports whether it did.
func zeroIndexOffset(head []byte) bool {
	if len(head) < headLen || !bytes.Equal(head[:carv2.PragmaSize], carv2.Pragma) {
		return false
	}
	off := head[indexOffsetAt:headLen]
	if bytes.Equal(off, make([]byte, 8)) {
		return false
	}
	copy(off, make([]byte, 8))
	return true
}

// maskedAt is a random-access CARv2 piece read with head (its start,
// masked) overlaid. Reads go through ReadAt at its own offset.
type maskedAt struct {
	mount.Reader
	head []byte
	pos  int64
}

func (m *maskedAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := m.Reader.ReadAt(p, off)
	if off < int64(len(m.head)) {
		copy(p[:n], m.head[off:])
	}
	return n, err
}

func (m *maskedAt) Read(p []byte) (int, error) {
	n, err := m.ReadAt(p, m.pos)
	m.pos += int64(n)
	if errors.Is(err, io.EOF) && n > 0 {
		err = nil
	}
	return n, err
}

func (m *maskedAt) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += m.pos
	case io.SeekEnd:
		size, err := m.Reader.Seek(0, io.SeekEnd)
		if err != nil {
			return 0, err
		}
		offset += size
	default:
		return 0, fmt.Errorf("seek: invalid whence %d", whence)
	}
	if offset < 0 {
		return 0, fmt.Errorf("seek: negative position %d", offset)
	}
	m.pos = offset
	return offset, nil
}
