package piecedir

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spstack/dagwrap/internal/fsutil"
)

// ImportStatus says what Import did.
type ImportStatus int

const (
	// Imported: the piece is new to the folder.
	Imported ImportStatus = iota
	// Existed: the folder already held the piece and its file; nothing changed.
	Existed
	// Restored: the folder listed the piece but its file was missing or no
	// longer of the recorded size; the file was put back from the import.
	Restored
)

func (s ImportStatus) String() string {
	switch s {
	case Imported:
		return "imported"
	case Existed:
		return "existed"
	case Restored:
		return "restored"
	}
	return fmt.Sprintf("ImportStatus(%d)", int(s))
}

// Import copies the CAR at src into the folder as the piece it makes: the
// CAR followed by zeros up to its unpadded piece size, named <piece CID>.car.
// The file is checked (a CARv1 whose blocks match their CIDs, then nothing
// but zeros) and its piece CID computed in the same single pass as the copy;
// a file that does not start with a CARv1 header is refused before anything
// is written to the folder. Importing a piece the folder already holds
// changes nothing (Existed), unless its file is gone or has changed size:
// then the verified copy takes its place (Restored). The source file is
// never modified.
//
// The folder keeps its own padded copy, rather than pointing at src, so
// that it serves exactly the bytes that were hashed for as long as the
// piece is registered, whatever becomes of the source.
func (d *Dir) Import(ctx context.Context, src string) (p Piece, status ImportStatus, err error) {
	d.mu.RLock()
	started := d.started
	d.mu.RUnlock()
	if !started {
		return Piece{}, 0, ErrNotStarted
	}
	in, err := os.Open(src)
	if err != nil {
		return Piece{}, 0, fmt.Errorf("import %s: %w", src, err)
	}
	defer in.Close()
	if st, err := in.Stat(); err != nil {
		return Piece{}, 0, fmt.Errorf("import %s: %w", src, err)
	} else if !st.Mode().IsRegular() {
		return Piece{}, 0, fmt.Errorf("import %s: not a regular file", src)
	}
	aggregate := isAggregate(in)
	if _, err := readCARv1Header(bufio.NewReader(in)); err != nil && !aggregate {
		return Piece{}, 0, fmt.Errorf("import %s: %w", src, err)
	}
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		return Piece{}, 0, fmt.Errorf("import %s: %w", src, err)
	}

	tmp, err := os.CreateTemp(d.path, importPrefix+"*")
	if err != nil {
		return Piece{}, 0, fmt.Errorf("import %s: %w", src, err)
	}
	defer func() {
		if tmp != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	scan := scanPiece
	if aggregate {
		scan = scanAggregate
	}
	s, err := scan(&ctxReader{ctx: ctx, f: in}, tmp)
	if err != nil {
		if s.pieceCID.Defined() {
			return Piece{}, 0, fmt.Errorf("import %s (piece %s): %w", src, s.pieceCID, err)
		}
		return Piece{}, 0, fmt.Errorf("import %s: %w", src, err)
	}
	name := s.pieceCID.String() + ".car"
	p = pieceOf(s, name)

	d.mu.Lock()
	defer d.mu.Unlock()
	prev, known := d.pieces[p.PieceCID]
	if known {
		if d.fileIntact(prev) {
			return prev, Existed, nil
		}
		// Same CommP, so same sizes: the copy replaces the lost file
		// under the name the manifest gives it.
		name, p = prev.File, prev
	}
	if err := padTo(tmp, p.Size); err != nil {
		return Piece{}, 0, fmt.Errorf("import %s (piece %s): %w", src, p.PieceCID, err)
	}
	if err := tmp.Close(); err != nil {
		return Piece{}, 0, fmt.Errorf("import %s (piece %s): %w", src, p.PieceCID, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(d.path, name)); err != nil {
		return Piece{}, 0, fmt.Errorf("import %s (piece %s): %w", src, p.PieceCID, err)
	}
	tmp = nil
	// The file is in place before the manifest names it: a crash in
	// between leaves a file that the next start adopts.
	if err := fsutil.SyncDir(d.path); err != nil {
		return Piece{}, 0, fmt.Errorf("import %s (piece %s): %w", src, p.PieceCID, err)
	}
	if known {
		log.Infow("restored the missing file of a piece", "file", name, "piece", p.PieceCID, "from", src)
		return p, Restored, nil
	}
	d.pieces[p.PieceCID] = p
	if err := writeManifest(d.path, d.pieces); err != nil {
		delete(d.pieces, p.PieceCID)
		return Piece{}, 0, fmt.Errorf("import %s (piece %s): %w", src, p.PieceCID, err)
	}
	return p, Imported, nil
}

// fileIntact reports whether the piece's file is there with the size
// recorded for it (what FetchUnsealedPiece checks). Callers hold d.mu.
func (d *Dir) fileIntact(p Piece) bool {
	st, err := os.Stat(filepath.Join(d.path, p.File))
	return err == nil && st.Mode().IsRegular() && uint64(st.Size()) == p.Size
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
