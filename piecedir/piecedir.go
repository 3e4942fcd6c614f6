// Package piecedir is a dagwrap MinerAPI backed by a folder of unsealed
// pieces: CARv1 files, each zero-padded to its unpadded piece size, named by
// piece CIDs that are real Filecoin piece commitments (CommP).
//
// A manifest in the folder (manifest.json: piece CID -> file, sizes, block
// count, roots) means a piece is hashed once, when it is imported or first
// found, not on every start. A file's size is checked against the manifest
// each time the piece is opened.
//
// Only one process may use a folder at a time. Kept under a dagwrap root
// (the dagwrap command uses <root>/pieces), the root's lock guarantees that.
package piecedir

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/filecoin-project/dagstore/mount"
	"github.com/ipfs/go-cid"
	logging "github.com/ipfs/go-log/v2"

	"github.com/spstack/dagwrap"
	"github.com/spstack/dagwrap/internal/fsutil"
)

var log = logging.Logger("piecedir")

var (
	// ErrUnknownPiece is returned for a piece the folder does not hold.
	ErrUnknownPiece = errors.New("piece not in the piece folder")

	// ErrNotStarted is returned by calls made before Start.
	ErrNotStarted = errors.New("piecedir: not started")
)

// importPrefix names the temporary file of an import in progress; Start
// removes any that a crash left behind.
const importPrefix = ".import-"

// Piece describes one piece of the folder.
type Piece struct {
	PieceCID   cid.Cid
	File       string    // file name in the folder
	Size       uint64    // bytes of the file: the unpadded piece size
	CARSize    uint64    // bytes of the CAR before the zero padding
	PaddedSize uint64    // the (padded) piece size that deals state
	Blocks     int       // blocks in the CAR
	Roots      []cid.Cid // the CAR header's roots
}

// Dir is a folder of unsealed pieces. It implements
// dagwrap.RandomAccessMinerAPI: pieces are served as files, which the
// dagstore reads in place. Its methods are safe for concurrent use.
type Dir struct {
	path string

	mu      sync.RWMutex
	started bool
	pieces  map[cid.Cid]Piece
}

var _ dagwrap.RandomAccessMinerAPI = (*Dir)(nil)

// New returns the piece folder at path. Nothing is read until Start.
func New(path string) *Dir {
	return &Dir{path: path}
}

// Path is the folder's path.
func (d *Dir) Path() string { return d.path }

// Start creates the folder if needed, loads the manifest and adds the .car
// files placed in the folder by hand since the last start: each is checked,
// hashed once and zero-padded in place to its unpadded piece size. Files
// that are not valid pieces are logged and left out. Later calls do nothing.
func (d *Dir) Start(context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.started {
		return nil
	}
	if err := os.MkdirAll(d.path, 0o755); err != nil {
		return fmt.Errorf("piecedir: create %s: %w", d.path, err)
	}
	pieces, err := readManifest(d.path)
	if err != nil {
		return fmt.Errorf("piecedir: %w", err)
	}
	d.pieces = pieces
	added, err := d.adoptNewFiles()
	if err != nil {
		return fmt.Errorf("piecedir: %w", err)
	}
	if added > 0 {
		if err := writeManifest(d.path, d.pieces); err != nil {
			return fmt.Errorf("piecedir: %w", err)
		}
	}
	d.started = true
	return nil
}

// adoptNewFiles adds the folder's .car files that the manifest does not
// list, and removes leftovers of interrupted imports. Callers hold d.mu.
func (d *Dir) adoptNewFiles() (int, error) {
	ents, err := os.ReadDir(d.path)
	if err != nil {
		return 0, fmt.Errorf("list %s: %w", d.path, err)
	}
	known := make(map[string]bool, len(d.pieces))
	for _, p := range d.pieces {
		known[p.File] = true
	}
	added := 0
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, importPrefix) {
			if err := os.Remove(filepath.Join(d.path, name)); err != nil {
				log.Warnw("cannot remove an interrupted import", "file", name, "error", err)
			}
			continue
		}
		if !e.Type().IsRegular() || !strings.HasSuffix(name, ".car") || known[name] {
			continue
		}
		p, err := d.adopt(name)
		if err != nil {
			log.Errorw("file in the piece folder is not a valid piece; ignored", "file", filepath.Join(d.path, name), "error", err)
			continue
		}
		if prev, dup := d.pieces[p.PieceCID]; dup {
			log.Warnw("file holds a piece the folder already has; ignored", "file", name, "piece", p.PieceCID, "existing", prev.File)
			continue
		}
		d.pieces[p.PieceCID] = p
		added++
		log.Infow("added piece found in the folder", "file", name, "piece", p.PieceCID)
	}
	return added, nil
}

// adopt hashes a file placed in the folder and pads it in place.
func (d *Dir) adopt(name string) (Piece, error) {
	path := filepath.Join(d.path, name)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return Piece{}, err
	}
	defer f.Close()
	scan := scanPiece
	if isAggregate(f) {
		scan = scanAggregate
	}
	s, err := scan(f, nil)
	if err != nil {
		return Piece{}, err
	}
	if err := padTo(f, s.unpaddedSize()); err != nil {
		return Piece{}, err
	}
	return pieceOf(s, name), nil
}

func pieceOf(s scanned, file string) Piece {
	return Piece{PieceCID: s.pieceCID, File: file, Size: s.unpaddedSize(), CARSize: s.carSize,
		PaddedSize: s.paddedSize, Blocks: s.blocks, Roots: s.roots}
}

// padTo extends f with zeros to size and syncs it. Extending leaves a hole
// on most filesystems, so a small CAR in a large piece costs no disk.
func padTo(f *os.File, size uint64) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if uint64(st.Size()) > size {
		return fmt.Errorf("%d bytes is more than the unpadded piece size %d", st.Size(), size)
	}
	if uint64(st.Size()) < size {
		if err := f.Truncate(int64(size)); err != nil {
			return fmt.Errorf("zero-pad to %d bytes: %w", size, err)
		}
	}
	return f.Sync()
}

func (d *Dir) piece(pc cid.Cid) (Piece, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if !d.started {
		return Piece{}, ErrNotStarted
	}
	p, ok := d.pieces[pc]
	if !ok {
		return Piece{}, fmt.Errorf("piece %s: %w", pc, ErrUnknownPiece)
	}
	return p, nil
}

// Piece returns what the folder knows of the piece, or an error wrapping
// ErrUnknownPiece.
func (d *Dir) Piece(pc cid.Cid) (Piece, error) { return d.piece(pc) }

// FilePath returns the path of the piece's file.
func (d *Dir) FilePath(pc cid.Cid) (string, error) {
	p, err := d.piece(pc)
	if err != nil {
		return "", err
	}
	return filepath.Join(d.path, p.File), nil
}

// Pieces returns every piece of the folder, sorted by piece CID.
func (d *Dir) Pieces() ([]Piece, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if !d.started {
		return nil, ErrNotStarted
	}
	out := make([]Piece, 0, len(d.pieces))
	for _, p := range d.pieces {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PieceCID.String() < out[j].PieceCID.String() })
	return out, nil
}

// Remove deletes the piece's file and its manifest entry.
func (d *Dir) Remove(pc cid.Cid) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.started {
		return ErrNotStarted
	}
	p, ok := d.pieces[pc]
	if !ok {
		return fmt.Errorf("piece %s: %w", pc, ErrUnknownPiece)
	}
	// The entry goes first: a crash in between leaves a stray file, which
	// the next start adopts again, never an entry without its file.
	delete(d.pieces, pc)
	if err := writeManifest(d.path, d.pieces); err != nil {
		d.pieces[pc] = p
		return fmt.Errorf("piece %s: %w", pc, err)
	}
	if err := os.Remove(filepath.Join(d.path, p.File)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("piece %s: remove file: %w", pc, err)
	}
	return fsutil.SyncDir(d.path)
}

// FetchUnsealedPiece opens the piece's file, after checking that its size
// is still the one recorded: a file that changed since it was hashed is an
// error naming the piece, not wrong data.
func (d *Dir) FetchUnsealedPiece(_ context.Context, pc cid.Cid) (mount.Reader, error) {
	p, err := d.piece(pc)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(d.path, p.File)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("piece %s: %w", pc, err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("piece %s: %w", pc, err)
	}
	if uint64(st.Size()) != p.Size {
		_ = f.Close()
		return nil, fmt.Errorf("piece %s: file %s is %d bytes, but %d when it was added: it changed since", pc, path, st.Size(), p.Size)
	}
	return f, nil
}

// GetUnpaddedCARSize returns the unpadded piece size: the size of the file.
func (d *Dir) GetUnpaddedCARSize(_ context.Context, pc cid.Cid) (uint64, error) {
	p, err := d.piece(pc)
	if err != nil {
		return 0, err
	}
	return p.Size, nil
}

// IsUnsealed reports true for every piece of the folder: they are all
// unsealed copies.
func (d *Dir) IsUnsealed(_ context.Context, pc cid.Cid) (bool, error) {
	if _, err := d.piece(pc); err != nil {
		return false, err
	}
	return true, nil
}

// RandomAccess reports that readers are files, with ReadAt and Seek.
func (d *Dir) RandomAccess() bool { return true }
