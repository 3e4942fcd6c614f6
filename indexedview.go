package dagwrap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/filecoin-project/dagstore/mount"
	"github.com/filecoin-project/dagstore/shard"
	carv2 "github.com/ipld/go-car/v2"
)

// indexedView presents a CARv1 piece, indexed by dagwrap, to the dagstore as
// a CARv2 carrying that index. The dagstore initialises a shard with
// car.ReadOrGenerateIndex, which reads a CARv2's own index instead of
// generating one: so the dagstore keeps the shard's lifecycle while the
// index is dagwrap's (faster to build, and leaving out blocks the
// blockstore could not serve). Only the header and the index are read
// through the view; its data section maps onto the piece's bytes, so its
// offsets are the piece's own, as in a CARv1 index.
type indexedView struct {
	piece mount.Reader
	head  []byte // pragma and CARv2 header
	data  int64  // the CARv1's length
	index []byte // the index file's bytes
	pos   int64
}

var _ mount.Reader = (*indexedView)(nil)

func newIndexedView(piece mount.Reader, px *pieceIndex) (*indexedView, error) {
	var idx bytes.Buffer
	idx.Grow(px.encodedSize())
	if _, err := px.WriteTo(&idx); err != nil {
		return nil, fmt.Errorf("write index: %w", err)
	}
	var head bytes.Buffer
	head.Write(carv2.Pragma)
	if _, err := carv2.NewHeader(uint64(px.dataEnd)).WriteTo(&head); err != nil {
		return nil, err
	}
	return &indexedView{piece: piece, head: head.Bytes(), data: px.dataEnd, index: idx.Bytes()}, nil
}

func (v *indexedView) size() int64 { return int64(len(v.head)) + v.data + int64(len(v.index)) }

func (v *indexedView) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("indexed view: negative offset")
	}
	n := 0
	for n < len(p) {
		at := off + int64(n)
		var m int
		var err error
		switch h, d := int64(len(v.head)), int64(len(v.head))+v.data; {
		case at < h:
			m = copy(p[n:], v.head[at:])
		case at < d:
			want := min(int64(len(p)-n), d-at)
			m, err = v.piece.ReadAt(p[n:n+int(want)], at-h)
			if err != nil && !(errors.Is(err, io.EOF) && m == int(want)) {
				return n + m, err
			}
		case at < v.size():
			m = copy(p[n:], v.index[at-d:])
		default:
			return n, io.EOF
		}
		n += m
	}
	return n, nil
}

func (v *indexedView) Read(p []byte) (int, error) {
	n, err := v.ReadAt(p, v.pos)
	v.pos += int64(n)
	if errors.Is(err, io.EOF) && n > 0 {
		err = nil
	}
	return n, err
}

func (v *indexedView) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += v.pos
	case io.SeekEnd:
		offset += v.size()
	default:
		return 0, fmt.Errorf("indexed view: bad whence %d", whence)
	}
	if offset < 0 {
		return 0, errors.New("indexed view: negative position")
	}
	v.pos = offset
	return offset, nil
}

func (v *indexedView) Close() error { return v.piece.Close() }

// withIndex presents a random-access CARv1 piece that has no index yet with
// the index dagwrap builds (an indexedView), so that the dagstore's
// initialisation reads it instead of generating its own. Anything else (a
// piece already indexed, a stream, a CARv2) is returned as it is.
func (m *pieceMount) withIndex(ctx context.Context, r mount.Reader) (mount.Reader, error) {
	if m.Indexes == nil || !m.PieceCid.Defined() {
		return r, nil
	}
	_, isFile := r.(*os.File)
	if !isFile && !isRandomAccess(m.API) {
		return r, nil
	}
	if st, err := m.Indexes.StatFullIndex(shard.KeyFromCID(m.PieceCid)); err == nil && st.Exists {
		return m.segmentView(r)
	}
	size, err := r.Seek(0, io.SeekEnd)
	if err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("piece %s: seek: %w", m.PieceCid, err)
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("piece %s: seek: %w", m.PieceCid, err)
	}
	var px *pieceIndex
	var agg *aggregateIndex
	index := func(context.Context) (err error) {
		if agg, err = m.indexAggregate(r, size); agg != nil || err != nil {
			return err
		}
		px, err = indexPiece(r, size) // one sequential pass
		return err
	}
	if m.IndexThrottle != nil {
		err = m.IndexThrottle.Do(ctx, index)
	} else {
		err = index(ctx)
	}
	if errors.Is(err, errNotCARv1) {
		if _, err := r.Seek(0, io.SeekStart); err != nil {
			_ = r.Close()
			return nil, fmt.Errorf("piece %s: seek: %w", m.PieceCid, err)
		}
		return r, nil
	}
	if err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("piece %s: index: %w", m.PieceCid, err)
	}
	if agg != nil {
		return m.serveAggregate(r, size, agg)
	}
	for _, b := range px.skipped {
		log.Warnw("block left out of the piece's index: larger than the blockstore serves",
			"piece", m.PieceCid, "block", b.CID, "size", b.Size, "limit", maxServedSection)
	}
	if err := writeOversized(m.Oversized, shard.KeyFromCID(m.PieceCid), px.skipped); err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("piece %s: %w", m.PieceCid, err)
	}
	view, err := newIndexedView(r, px)
	if err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("piece %s: %w", m.PieceCid, err)
	}
	return view, nil
}
