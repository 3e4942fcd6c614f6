package piecedir

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spstack/dagwrap/internal/fsutil"
)

// Import copies the CAR at src into the folder as the piece it makes: the
// CAR followed by zeros up to its unpadded piece size, named <piece CID>.car.
// The file is checked (a CARv1 whose blocks match their CIDs, then nothing
// but zeros) and its piece CID computed in the same single pass as the copy.
// Importing a piece the folder already holds changes nothing and reports
// existed. The source file is never modified.
//
// The folder keeps its own padded copy, rather than pointing at src, so
// that it serves exactly the bytes that were hashed for as long as the
// piece is registered, whatever becomes of the source.
func (d *Dir) Import(ctx context.Context, src string) (p Piece, existed bool, err error) {
	d.mu.RLock()
	started := d.started
	d.mu.RUnlock()
	if !started {
		return Piece{}, false, ErrNotStarted
	}
	in, err := os.Open(src)
	if err != nil {
		return Piece{}, false, fmt.Errorf("import %s: %w", src, err)
	}
	defer in.Close()
	if st, err := in.Stat(); err != nil {
		return Piece{}, false, fmt.Errorf("import %s: %w", src, err)
	} else if !st.Mode().IsRegular() {
		return Piece{}, false, fmt.Errorf("import %s: not a regular file", src)
	}

	tmp, err := os.CreateTemp(d.path, importPrefix+"*")
	if err != nil {
		return Piece{}, false, fmt.Errorf("import %s: %w", src, err)
	}
	defer func() {
		if tmp != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	s, err := scanPiece(&ctxReader{ctx: ctx, f: in}, tmp)
	if err != nil {
		if s.pieceCID.Defined() {
			return Piece{}, false, fmt.Errorf("import %s (piece %s): %w", src, s.pieceCID, err)
		}
		return Piece{}, false, fmt.Errorf("import %s: %w", src, err)
	}
	name := s.pieceCID.String() + ".car"
	p = pieceOf(s, name)

	d.mu.Lock()
	defer d.mu.Unlock()
	if prev, ok := d.pieces[p.PieceCID]; ok {
		return prev, true, nil
	}
	if err := padTo(tmp, p.Size); err != nil {
		return Piece{}, false, fmt.Errorf("import %s (piece %s): %w", src, p.PieceCID, err)
	}
	if err := tmp.Close(); err != nil {
		return Piece{}, false, fmt.Errorf("import %s (piece %s): %w", src, p.PieceCID, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(d.path, name)); err != nil {
		return Piece{}, false, fmt.Errorf("import %s (piece %s): %w", src, p.PieceCID, err)
	}
	tmp = nil
	// The file is in place before the manifest names it: a crash in
	// between leaves a file that the next start adopts.
	if err := fsutil.SyncDir(d.path); err != nil {
		return Piece{}, false, fmt.Errorf("import %s (piece %s): %w", src, p.PieceCID, err)
	}
	d.pieces[p.PieceCID] = p
	if err := writeManifest(d.path, d.pieces); err != nil {
		delete(d.pieces, p.PieceCID)
		return Piece{}, false, fmt.Errorf("import %s (piece %s): %w", src, p.PieceCID, err)
	}
	return p, false, nil
}

// ctxReader stops a long copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	f   *os.File
}

func (r *ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.f.Read(p)
}
