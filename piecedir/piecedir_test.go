package piecedir

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/spstack/dagwrap/internal/cargen"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/ipld/go-car/v2/blockstore"

	"github.com/spstack/dagwrap"
)

const (
	sampleCAR  = "../testdata/sample.car"
	paddedCAR  = "../testdata/padded.car"
	corruptCAR = "../testdata/corrupt.car"
)

// commP computes the piece CID and padded size of data, independently of
// the folder's own hashing.
func commP(t *testing.T, data []byte) (cid.Cid, uint64) {
	t.Helper()
	pc, size, err := cargen.CommP(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return pc, size
}

func carBlocks(t *testing.T, path string) []blocks.Block {
	t.Helper()
	_, blks, err := cargen.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	return blks
}

func startDir(t *testing.T, path string) *Dir {
	t.Helper()
	d := New(path)
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return d
}

func writeFile(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestImportPadsAndComputesCommP(t *testing.T) {
	d := startDir(t, t.TempDir())
	ctx := context.Background()
	for _, tc := range []struct {
		car              string
		size, paddedSize uint64
	}{
		{sampleCAR, 32512, 32768}, // 22237 bytes: padded to the 32 KiB piece's unpadded size
		{paddedCAR, 65024, 65536}, // already padded to the 64 KiB piece's unpadded size
	} {
		src, err := os.ReadFile(tc.car)
		if err != nil {
			t.Fatal(err)
		}
		wantCID, wantPadded := commP(t, src)
		p, status, err := d.Import(ctx, tc.car)
		if err != nil || status != Imported {
			t.Fatalf("%s: import: %v, %v", tc.car, err, status)
		}
		if !p.PieceCID.Equals(wantCID) || p.PaddedSize != wantPadded || p.PaddedSize != tc.paddedSize || p.Size != tc.size {
			t.Fatalf("%s: piece %+v, want %s padded %d size %d", tc.car, p, wantCID, tc.paddedSize, tc.size)
		}
		blks := carBlocks(t, tc.car)
		if p.Blocks != len(blks) || len(p.Roots) != 1 || !p.Roots[0].Equals(blks[0].Cid()) {
			t.Fatalf("%s: %d blocks, roots %v; want %d blocks, root %s", tc.car, p.Blocks, p.Roots, len(blks), blks[0].Cid())
		}
		path, err := d.FilePath(p.PieceCID)
		if err != nil {
			t.Fatal(err)
		}
		onDisk, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if uint64(len(onDisk)) != tc.size || !bytes.Equal(onDisk[:len(src)], src) ||
			!bytes.Equal(onDisk[p.CARSize:], make([]byte, tc.size-p.CARSize)) {
			t.Fatalf("%s: the file is not the CAR followed by zeros up to %d bytes", tc.car, tc.size)
		}
		// The padding does not change the commitment.
		if got, _ := commP(t, onDisk); !got.Equals(p.PieceCID) {
			t.Fatalf("%s: CommP of the padded file is %s, want %s", tc.car, got, p.PieceCID)
		}
		if size, err := d.GetUnpaddedCARSize(ctx, p.PieceCID); err != nil || size != tc.size {
			t.Fatalf("%s: GetUnpaddedCARSize = %d, %v", tc.car, size, err)
		}
		r, err := d.FetchUnsealedPiece(ctx, p.PieceCID)
		if err != nil {
			t.Fatal(err)
		}
		served, _ := io.ReadAll(r)
		_ = r.Close()
		if !bytes.Equal(served, onDisk) {
			t.Fatalf("%s: served bytes differ from the file", tc.car)
		}
		if ok, err := d.IsUnsealed(ctx, p.PieceCID); !ok || err != nil {
			t.Fatalf("%s: IsUnsealed = %v, %v", tc.car, ok, err)
		}
	}
	// The CAR of sample.car ends where the file did.
	if p, _, _ := d.Import(ctx, sampleCAR); p.CARSize != 22237 {
		t.Fatalf("sample.car CAR size %d, want 22237", p.CARSize)
	}
}

func TestImportTwiceAndConcurrently(t *testing.T) {
	dir := t.TempDir()
	d := startDir(t, dir)
	const n = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	fresh := 0
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, status, err := d.Import(context.Background(), sampleCAR)
			if err != nil {
				t.Error(err)
				return
			}
			if status == Imported {
				mu.Lock()
				fresh++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if fresh != 1 {
		t.Fatalf("%d imports created the piece, want 1", fresh)
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != 2 { // the piece and the manifest; no temporary files
		t.Fatalf("folder holds %v", names)
	}
}

func TestImportRejectsBadFiles(t *testing.T) {
	dir := t.TempDir()
	d := startDir(t, dir)
	src := t.TempDir()
	sample, _ := os.ReadFile(sampleCAR)
	corrupt, _ := os.ReadFile(corruptCAR)
	corruptCID, _ := commP(t, corrupt)
	trailing := append(append([]byte{}, sample...), make([]byte, 100)...)
	trailing[len(sample)+50] = 7
	for _, tc := range []struct {
		name, path, want string
	}{
		{"corrupt CAR", corruptCAR, corruptCID.String()},
		{"not a CAR", writeFile(t, filepath.Join(src, "text.car"), bytes.Repeat([]byte("hello world "), 20)), "not a CAR"},
		{"too small", writeFile(t, filepath.Join(src, "tiny.car"), sample[:40]), "tiny.car"},
		{"data after the CAR", writeFile(t, filepath.Join(src, "trailing.car"), trailing), "non-zero data at offset 22287"},
		{"CARv2", carV2(t, filepath.Join(src, "v2.car")), "CARv2"},
		{"missing", filepath.Join(src, "missing.car"), "missing.car"},
		{"folder", src, "not a regular file"},
	} {
		_, _, err := d.Import(context.Background(), tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), filepath.Base(tc.path)) {
			t.Fatalf("%s: import error %v, want one naming the file and %q", tc.name, err, tc.want)
		}
		// Pins issue 9 item 3: a file that is not a CARv1 is not named by
		// the CommP of its bytes.
		if (tc.name == "not a CAR" || tc.name == "CARv2") && strings.Contains(err.Error(), "baga") {
			t.Fatalf("%s: import error names a piece CID: %v", tc.name, err)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 0 {
		t.Fatalf("failed imports left %d files in the folder", len(ents))
	}
	if ps, _ := d.Pieces(); len(ps) != 0 {
		t.Fatalf("failed imports listed %v", ps)
	}
}

// carV2 writes a small CARv2 file.
func carV2(t *testing.T, path string) string {
	t.Helper()
	blks := carBlocks(t, sampleCAR)
	bs, err := blockstore.OpenReadWrite(path, []cid.Cid{blks[0].Cid()})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blks[:5] {
		if err := bs.Put(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	if err := bs.Finalize(); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRestartReadsManifestWithoutRehashing(t *testing.T) {
	dir := t.TempDir()
	d := startDir(t, dir)
	p, _, err := d.Import(context.Background(), sampleCAR)
	if err != nil {
		t.Fatal(err)
	}
	// Garble the file, keeping its size: a rehash would no longer find the piece.
	path, _ := d.FilePath(p.PieceCID)
	if err := os.WriteFile(path, make([]byte, p.Size), 0o644); err != nil {
		t.Fatal(err)
	}
	d2 := startDir(t, dir)
	got, err := d2.Piece(p.PieceCID)
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if got.Size != p.Size || got.CARSize != p.CARSize || got.Blocks != p.Blocks || got.File != p.File || !got.Roots[0].Equals(p.Roots[0]) {
		t.Fatalf("after restart %+v, before %+v", got, p)
	}
}

func TestFetchRechecksFileSize(t *testing.T) {
	dir := t.TempDir()
	d := startDir(t, dir)
	ctx := context.Background()
	p, _, err := d.Import(ctx, paddedCAR)
	if err != nil {
		t.Fatal(err)
	}
	path, _ := d.FilePath(p.PieceCID)
	if err := os.Truncate(path, int64(p.Size)-1); err != nil {
		t.Fatal(err)
	}
	if _, err := d.FetchUnsealedPiece(ctx, p.PieceCID); err == nil || !strings.Contains(err.Error(), p.PieceCID.String()) || !strings.Contains(err.Error(), "changed") {
		t.Fatalf("fetch of a shrunk file: %v", err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := d.FetchUnsealedPiece(ctx, p.PieceCID); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), p.PieceCID.String()) {
		t.Fatalf("fetch of a missing file: %v", err)
	}
}

func TestUnknownPiecesAndNotStarted(t *testing.T) {
	ctx := context.Background()
	d := New(t.TempDir())
	pc, _ := commP(t, make([]byte, 200))
	if _, err := d.FetchUnsealedPiece(ctx, pc); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("fetch before Start: %v", err)
	}
	if _, _, err := d.Import(ctx, sampleCAR); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("import before Start: %v", err)
	}
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := d.FetchUnsealedPiece(ctx, pc); !errors.Is(err, ErrUnknownPiece) || !strings.Contains(err.Error(), pc.String()) {
		t.Fatalf("fetch of an unknown piece: %v", err)
	}
	if _, err := d.GetUnpaddedCARSize(ctx, pc); !errors.Is(err, ErrUnknownPiece) {
		t.Fatalf("size of an unknown piece: %v", err)
	}
	if _, err := d.IsUnsealed(ctx, pc); !errors.Is(err, ErrUnknownPiece) {
		t.Fatalf("IsUnsealed of an unknown piece: %v", err)
	}
	if err := d.Remove(pc); !errors.Is(err, ErrUnknownPiece) {
		t.Fatalf("remove of an unknown piece: %v", err)
	}
}

func TestStartAdoptsFilesPlacedByHand(t *testing.T) {
	dir := t.TempDir()
	sample, _ := os.ReadFile(sampleCAR)
	writeFile(t, filepath.Join(dir, "by-hand.car"), sample)
	writeFile(t, filepath.Join(dir, "broken.car"), []byte("this is not a CAR file at all, not even close to one"))
	writeFile(t, filepath.Join(dir, importPrefix+"123"), []byte("left by a crash"))
	writeFile(t, filepath.Join(dir, "notes.txt"), []byte("not a .car"))
	d := startDir(t, dir)
	want, _ := commP(t, sample)
	ps, err := d.Pieces()
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || !ps[0].PieceCID.Equals(want) || ps[0].File != "by-hand.car" || ps[0].Size != 32512 {
		t.Fatalf("adopted %+v, want by-hand.car as %s", ps, want)
	}
	if st, err := os.Stat(filepath.Join(dir, "by-hand.car")); err != nil || st.Size() != 32512 {
		t.Fatalf("adopted file not padded in place: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, importPrefix+"123")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("leftover import not removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "broken.car")); err != nil {
		t.Fatalf("an invalid file was touched: %v", err)
	}
	// Adopted once: the manifest lists it for the next start.
	d2 := startDir(t, dir)
	if _, err := d2.Piece(want); err != nil {
		t.Fatal(err)
	}
}

func TestRemove(t *testing.T) {
	dir := t.TempDir()
	d := startDir(t, dir)
	p, _, err := d.Import(context.Background(), sampleCAR)
	if err != nil {
		t.Fatal(err)
	}
	path, _ := d.FilePath(p.PieceCID)
	if err := d.Remove(p.PieceCID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("file still there: %v", err)
	}
	if _, err := startDir(t, dir).Piece(p.PieceCID); !errors.Is(err, ErrUnknownPiece) {
		t.Fatalf("removed piece after restart: %v", err)
	}
}

func TestBadManifestFailsStart(t *testing.T) {
	pc, _ := commP(t, make([]byte, 200))
	for name, content := range map[string]string{
		"not JSON":    "{",
		"bad version": `{"version": 9, "pieces": []}`,
		"bad CID":     `{"version": 1, "pieces": [{"piece_cid": "nope", "file": "x.car"}]}`,
		"not a piece": `{"version": 1, "pieces": [{"piece_cid": "bafkqaaa", "file": "x.car"}]}`,
		"bad file":    `{"version": 1, "pieces": [{"piece_cid": "` + pc.String() + `", "file": "../x.car"}]}`,
	} {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, ManifestName), []byte(content))
		err := New(dir).Start(context.Background())
		if err == nil || !strings.Contains(err.Error(), ManifestName) {
			t.Fatalf("%s: Start = %v, want an error naming the manifest", name, err)
		}
		if name == "bad file" && !strings.Contains(err.Error(), "not a name in the folder") {
			t.Fatalf("bad file: %v", err)
		}
	}
}

// TestServesThroughDagwrap runs the folder under a real Wrapper: the
// dagstore indexes the padded files in place and serves every block.
func TestServesThroughDagwrap(t *testing.T) {
	root := t.TempDir()
	d := New(filepath.Join(root, "pieces"))
	w, err := dagwrap.New(dagwrap.Config{RootDir: root}, d)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx := context.Background()
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, car := range []string{sampleCAR, paddedCAR} {
		p, _, err := d.Import(ctx, car)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.RegisterShardSync(ctx, p.PieceCID, "", true); err != nil {
			t.Fatal(err)
		}
		bs, err := w.LoadShard(ctx, p.PieceCID)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range carBlocks(t, car) {
			got, err := bs.Get(ctx, b.Cid())
			if err != nil || !bytes.Equal(got.RawData(), b.RawData()) {
				t.Fatalf("%s: block %s: %v", car, b.Cid(), err)
			}
		}
		if err := bs.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestImportRestoresAMissingFile pins issue 9 item 4 (piece folder part):
// importing a piece the manifest lists but whose file is gone, or changed
// size, puts the file back; an intact one is left alone.
func TestImportRestoresAMissingFile(t *testing.T) {
	dir := t.TempDir()
	d := startDir(t, dir)
	ctx := context.Background()
	p, _, err := d.Import(ctx, sampleCAR)
	if err != nil {
		t.Fatal(err)
	}
	path, _ := d.FilePath(p.PieceCID)
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, damage := range map[string]func() error{
		"removed":   func() error { return os.Remove(path) },
		"truncated": func() error { return os.Truncate(path, int64(p.Size)/2) },
	} {
		if err := damage(); err != nil {
			t.Fatal(err)
		}
		got, status, err := d.Import(ctx, sampleCAR)
		if err != nil || status != Restored || got.File != p.File {
			t.Fatalf("%s: re-import: %+v, %v, %v; want the piece restored", name, got, status, err)
		}
		if b, err := os.ReadFile(path); err != nil || !bytes.Equal(b, want) {
			t.Fatalf("%s: file not restored as it was: %v", name, err)
		}
		r, err := d.FetchUnsealedPiece(ctx, p.PieceCID)
		if err != nil {
			t.Fatalf("%s: fetch after the restore: %v", name, err)
		}
		_ = r.Close()
	}
	if _, status, err := d.Import(ctx, sampleCAR); err != nil || status != Existed {
		t.Fatalf("import of an intact piece: %v, %v; want Existed", status, err)
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 2 {
		t.Fatalf("folder holds %d entries (%v), want the piece and the manifest", len(ents), err)
	}
}
