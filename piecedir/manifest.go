package piecedir

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/ipfs/go-cid"

	"github.com/spstack/dagwrap/internal/fsutil"
)

// ManifestName is the manifest's file name in the folder.
const ManifestName = "manifest.json"

const manifestVersion = 1

// manifest is the on-disk form: CIDs as strings, so operators can read it.
type manifest struct {
	Version int             `json:"version"`
	Pieces  []manifestEntry `json:"pieces"`
}

type manifestEntry struct {
	PieceCID   string   `json:"piece_cid"`
	File       string   `json:"file"`
	Size       uint64   `json:"size"`
	CARSize    uint64   `json:"car_size"`
	PaddedSize uint64   `json:"padded_size"`
	Blocks     int      `json:"blocks"`
	Roots      []string `json:"roots,omitempty"`
}

func (e manifestEntry) piece() (Piece, error) {
	pc, err := cid.Decode(e.PieceCID)
	if err != nil {
		return Piece{}, fmt.Errorf("piece CID %q: %w", e.PieceCID, err)
	}
	if pc.Prefix().Codec != cid.FilCommitmentUnsealed {
		return Piece{}, fmt.Errorf("%s is not an unsealed piece CID", pc)
	}
	if e.File == "" || filepath.Base(e.File) != e.File {
		return Piece{}, fmt.Errorf("piece %s: file %q is not a name in the folder", pc, e.File)
	}
	p := Piece{PieceCID: pc, File: e.File, Size: e.Size, CARSize: e.CARSize, PaddedSize: e.PaddedSize, Blocks: e.Blocks}
	for _, r := range e.Roots {
		c, err := cid.Decode(r)
		if err != nil {
			return Piece{}, fmt.Errorf("piece %s: root %q: %w", pc, r, err)
		}
		p.Roots = append(p.Roots, c)
	}
	return p, nil
}

func entryOf(p Piece) manifestEntry {
	e := manifestEntry{PieceCID: p.PieceCID.String(), File: p.File, Size: p.Size, CARSize: p.CARSize, PaddedSize: p.PaddedSize, Blocks: p.Blocks}
	for _, r := range p.Roots {
		e.Roots = append(e.Roots, r.String())
	}
	return e
}

// readManifest returns the pieces listed in the folder's manifest; a
// missing manifest is an empty folder.
func readManifest(dir string) (map[cid.Cid]Piece, error) {
	pieces := make(map[cid.Cid]Piece)
	b, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if errors.Is(err, fs.ErrNotExist) {
		return pieces, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest %s is not valid JSON: %w", filepath.Join(dir, ManifestName), err)
	}
	if m.Version != manifestVersion {
		return nil, fmt.Errorf("manifest %s has version %d, want %d", filepath.Join(dir, ManifestName), m.Version, manifestVersion)
	}
	for _, e := range m.Pieces {
		p, err := e.piece()
		if err != nil {
			return nil, fmt.Errorf("manifest %s: %w", filepath.Join(dir, ManifestName), err)
		}
		pieces[p.PieceCID] = p
	}
	return pieces, nil
}

// writeManifest durably replaces the manifest, sorted by piece CID.
func writeManifest(dir string, pieces map[cid.Cid]Piece) error {
	m := manifest{Version: manifestVersion, Pieces: make([]manifestEntry, 0, len(pieces))}
	for _, p := range pieces {
		m.Pieces = append(m.Pieces, entryOf(p))
	}
	sort.Slice(m.Pieces, func(i, j int) bool { return m.Pieces[i].PieceCID < m.Pieces[j].PieceCID })
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	return fsutil.WriteFileAtomic(dir, ManifestName, append(b, '\n'))
}
