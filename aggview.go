package dagwrap

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/filecoin-project/dagstore/mount"
	carv2 "github.com/ipld/go-car/v2"
)

// aggregateView presents an aggregated piece to the dagstore as a CARv2
// (see aggregate.go): pragma and CARv2 header, then the data payload (the
// synthetic CARv1 header and the piece's bytes), then the index. The index
// is produced by index the first time it is read, so that an acquire,
// which never reads it, costs no indexing.
type aggregateView struct {
	piece  mount.Reader
	head   []byte // pragma and CARv2 header
	prefix []byte // the synthetic CARv1 header
	size   int64  // the piece's bytes

	once  sync.Once
	index func() ([]byte, error)
	idx   []byte
	err   error

	mu  sync.Mutex // pos
	pos int64
}

var _ mount.Reader = (*aggregateView)(nil)

func newAggregateView(piece mount.Reader, prefix []byte, size int64, index func() ([]byte, error)) *aggregateView {
	var head bytes.Buffer
	head.Write(carv2.Pragma)
	_, _ = carv2.NewHeader(uint64(int64(len(prefix)) + size)).WriteTo(&head) // a bytes.Buffer does not fail
	return &aggregateView{piece: piece, head: head.Bytes(), prefix: prefix, size: size, index: index}
}

// indexBytes returns the index file's bytes of px.
func indexBytes(px *pieceIndex) ([]byte, error) {
	var b bytes.Buffer
	if _, err := px.WriteTo(&b); err != nil {
		return nil, fmt.Errorf("write index: %w", err)
	}
	return b.Bytes(), nil
}

func (v *aggregateView) loadIndex() ([]byte, error) {
	v.once.Do(func() { v.idx, v.err = v.index() })
	return v.idx, v.err
}

func (v *aggregateView) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("aggregate view: negative offset")
	}
	h := int64(len(v.head))
	x := h + int64(len(v.prefix))
	d := x + v.size // where the index starts
	n := 0
	for n < len(p) {
		at := off + int64(n)
		var m int
		switch {
		case at < h:
			m = copy(p[n:], v.head[at:])
		case at < x:
			m = copy(p[n:], v.prefix[at-h:])
		case at < d:
			want := min(int64(len(p)-n), d-at)
			var err error
			m, err = v.piece.ReadAt(p[n:n+int(want)], at-x)
			if err != nil && !(errors.Is(err, io.EOF) && m == int(want)) {
				return n + m, err
			}
		default:
			idx, err := v.loadIndex()
			if err != nil {
				return n, err
			}
			if at-d >= int64(len(idx)) {
				return n, io.EOF
			}
			m = copy(p[n:], idx[at-d:])
		}
		n += m
	}
	return n, nil
}

func (v *aggregateView) Read(p []byte) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	n, err := v.ReadAt(p, v.pos)
	v.pos += int64(n)
	if errors.Is(err, io.EOF) && n > 0 {
		err = nil
	}
	return n, err
}

func (v *aggregateView) Seek(offset int64, whence int) (int64, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += v.pos
	case io.SeekEnd:
		idx, err := v.loadIndex()
		if err != nil {
			return 0, err
		}
		offset += int64(len(v.head)+len(v.prefix)) + v.size + int64(len(idx))
	default:
		return 0, fmt.Errorf("aggregate view: bad whence %d", whence)
	}
	if offset < 0 {
		return 0, errors.New("aggregate view: negative position")
	}
	v.pos = offset
	return offset, nil
}

func (v *aggregateView) Close() error { return v.piece.Close() }
