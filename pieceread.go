package dagwrap

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/filecoin-project/dagstore/mount"
	"github.com/ipfs/go-cid"
	format "github.com/ipfs/go-ipld-format"
)

// PieceReader is an open unsealed piece: random access over its bytes (the
// CAR and its zero padding, as the MinerAPI serves them). Close it when
// done.
type PieceReader interface {
	io.ReaderAt
	io.Closer
	// Size is the piece's length in bytes.
	Size() int64
}

// ErrNotUnsealed is returned by OpenPiece for a piece the MinerAPI has no
// unsealed copy of: serving it would mean unsealing a sector.
var ErrNotUnsealed = errors.New("piece has no unsealed copy")

// OpenPiece opens the piece's unsealed bytes through the MinerAPI (with the
// Wrapper's throttles), for whole-piece downloads. It needs a
// RandomAccessMinerAPI and never unseals. A piece the MinerAPI does not
// have, or has only sealed, is an error that satisfies go-ipld-format's
// IsNotFound (and errors.Is(err, ErrNotUnsealed) for a sealed one).
func (w *Wrapper) OpenPiece(ctx context.Context, pieceCid cid.Cid) (PieceReader, error) {
	if err := checkCID("piece", pieceCid); err != nil {
		return nil, err
	}
	done, err := w.beginCtx(ctx)
	if err != nil {
		return nil, fmt.Errorf("open piece %s: %w", pieceCid, err)
	}
	defer done()
	if !isRandomAccess(w.api.inner) {
		return nil, fmt.Errorf("open piece %s: the MinerAPI gives no random access", pieceCid)
	}
	if _, err := w.api.GetUnpaddedCARSize(ctx, pieceCid); err != nil {
		return nil, fmt.Errorf("open piece %s: the miner API does not have it: %w: %w", pieceCid, err, format.ErrNotFound{Cid: pieceCid})
	}
	unsealed, err := w.api.IsUnsealed(ctx, pieceCid)
	if err != nil {
		return nil, fmt.Errorf("open piece %s: check whether it is unsealed: %w", pieceCid, err)
	}
	if !unsealed {
		return nil, fmt.Errorf("open piece %s: %w: %w", pieceCid, ErrNotUnsealed, format.ErrNotFound{Cid: pieceCid})
	}
	r, err := w.api.FetchUnsealedPiece(ctx, pieceCid)
	if err != nil {
		return nil, fmt.Errorf("open piece %s: %w", pieceCid, err)
	}
	size, err := r.Seek(0, io.SeekEnd)
	if err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("open piece %s: find its length: %w", pieceCid, err)
	}
	return &pieceReader{Reader: r, size: size}, nil
}

type pieceReader struct {
	mount.Reader
	size int64
}

func (p *pieceReader) Size() int64 { return p.size }
