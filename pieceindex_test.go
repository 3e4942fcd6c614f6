package dagwrap

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	carindex "github.com/ipld/go-car/v2/index"
	"github.com/multiformats/go-multihash"
	"github.com/multiformats/go-varint"

	"github.com/spstack/dagwrap/internal/cargen"
)

// sortedEntries is an index's (multihash, offset) pairs in a fixed order.
func sortedEntries(t *testing.T, idx carindex.IterableIndex) []string {
	t.Helper()
	var out []string
	for _, e := range forEachAll(t, idx) {
		out = append(out, fmt.Sprintf("%x@%d", []byte(e.mh), e.off))
	}
	sort.Strings(out)
	return out
}

// indexFile runs indexPiece over the piece at path and reads its output
// back with go-car.
func indexFile(t *testing.T, path string) (*pieceIndex, carindex.IterableIndex) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	px, err := indexPiece(f, st.Size())
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var buf bytes.Buffer
	n, err := px.WriteTo(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(px.encodedSize()) || n != int64(buf.Len()) {
		t.Fatalf("%s: WriteTo wrote %d bytes (returned %d), encodedSize says %d", path, buf.Len(), n, px.encodedSize())
	}
	idx, err := carindex.ReadFrom(&buf)
	if err != nil {
		t.Fatalf("go-car cannot read the index of %s: %v", path, err)
	}
	return px, idx.(carindex.IterableIndex)
}

// writeSections writes a CARv1 of the given blocks, in order, with root
// roots[0], and returns its path.
func writeSections(t *testing.T, blks []blocks.Block, pad int) string {
	t.Helper()
	var buf bytes.Buffer
	hdr := []byte{0xa2, 0x65, 'r', 'o', 'o', 't', 's', 0x81, 0xd8, 0x2a}
	root := append([]byte{0}, blks[0].Cid().Bytes()...)
	hdr = append(hdr, 0x58, byte(len(root)))
	hdr = append(hdr, root...)
	hdr = append(hdr, 0x67, 'v', 'e', 'r', 's', 'i', 'o', 'n', 0x01)
	buf.Write(varint.ToUvarint(uint64(len(hdr))))
	buf.Write(hdr)
	for _, b := range blks {
		buf.Write(varint.ToUvarint(uint64(len(b.Cid().Bytes()) + len(b.RawData()))))
		buf.Write(b.Cid().Bytes())
		buf.Write(b.RawData())
	}
	buf.Write(make([]byte, pad))
	p := filepath.Join(t.TempDir(), "sections.car")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func block(t *testing.T, data []byte, codec uint64, mhType uint64) blocks.Block {
	t.Helper()
	mh, err := multihash.Sum(data, mhType, -1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := blocks.NewBlockWithCid(data, cid.NewCidV1(codec, mh))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestIndexPieceMatchesGoCar(t *testing.T) {
	data := []byte("the same bytes under several codecs")
	v1 := block(t, data, cid.Raw, multihash.SHA2_256)
	v0, _ := blocks.NewBlockWithCid(data, cid.NewCidV0(v1.Cid().Hash()))
	mixed := writeSections(t, []blocks.Block{
		block(t, []byte("root"), cid.DagCBOR, multihash.IDENTITY),
		v1, v0,
		block(t, data, cid.DagProtobuf, multihash.SHA2_256),
		block(t, data, cid.DagCBOR, multihash.SHA2_512),
		block(t, []byte("id"), cid.Raw, multihash.IDENTITY),
		v1, // the same section again
	}, 4096)
	for _, path := range []string{"testdata/sample.car", "testdata/padded.car", makeCAR(t, 7, 3000), mixed} {
		want, err := carv2.GenerateIndexFromFile(path, carv2.ZeroLengthSectionAsEOF(true), carv2.StoreIdentityCIDs(true))
		if err != nil {
			t.Fatal(err)
		}
		_, got := indexFile(t, path)
		w, g := sortedEntries(t, want.(carindex.IterableIndex)), sortedEntries(t, got)
		if len(w) == 0 || fmt.Sprint(w) != fmt.Sprint(g) {
			t.Fatalf("%s: %d entries, go-car has %d, or they differ", path, len(g), len(w))
		}
	}
}

// Pins issue 9 item 7 for this indexer: a block over the blockstore's
// section limit is left out of the index and reported; the rest indexes.
func TestIndexPieceLeavesOutBlocksTooBigToServe(t *testing.T) {
	big := block(t, bytes.Repeat([]byte{7}, int(maxServedSection)+1), cid.Raw, multihash.SHA2_256)
	small := block(t, []byte("small"), cid.Raw, multihash.SHA2_256)
	path := writeSections(t, []blocks.Block{small, big, block(t, []byte("after"), cid.Raw, multihash.SHA2_256)}, 0)
	px, idx := indexFile(t, path)
	if len(px.skipped) != 1 || !px.skipped[0].CID.Equals(big.Cid()) || px.skipped[0].Size != uint64(len(big.RawData())) {
		t.Fatalf("skipped = %+v, want the big block", px.skipped)
	}
	if n := len(forEachAll(t, idx)); n != 2 {
		t.Fatalf("%d entries, want the 2 small blocks", n)
	}
	if err := idx.GetAll(big.Cid(), func(uint64) bool { return true }); !errors.Is(err, carindex.ErrNotFound) {
		t.Fatalf("the big block is in the index: %v", err)
	}
}

func TestIndexPieceRefusesWhatIsNotCARv1(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"empty":    {},
		"garbage":  []byte("this is not a CAR file at all, just some text"),
		"carv2":    carv2.Pragma,
		"header":   {0x05, 0xa1, 0x01},
		"bigvarnt": {0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		f, _ := os.Open(p)
		_, err := indexPiece(f, int64(len(data)))
		f.Close()
		if err == nil {
			t.Errorf("%s: indexed", name)
		}
		if name == "carv2" && !errors.Is(err, errNotCARv1) {
			t.Errorf("carv2: %v, want errNotCARv1", err)
		}
	}
}

// The view the dagstore initialises a shard from: go-car's
// ReadOrGenerateIndex takes dagwrap's index from it, entry for entry, and
// its data section reads as the piece.
func TestIndexedViewCarriesTheIndex(t *testing.T) {
	path := makeCAR(t, 9, 500)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	px, err := indexPiece(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	view, err := newIndexedView(f, px)
	if err != nil {
		t.Fatal(err)
	}
	defer view.Close()
	got, err := carv2.ReadOrGenerateIndex(view, carv2.ZeroLengthSectionAsEOF(true), carv2.StoreIdentityCIDs(true))
	if err != nil {
		t.Fatal(err)
	}
	want, err := carv2.GenerateIndexFromFile(path, carv2.ZeroLengthSectionAsEOF(true), carv2.StoreIdentityCIDs(true))
	if err != nil {
		t.Fatal(err)
	}
	if w, g := sortedEntries(t, want.(carindex.IterableIndex)), sortedEntries(t, got.(carindex.IterableIndex)); fmt.Sprint(w) != fmt.Sprint(g) {
		t.Fatalf("index through the view: %d entries, go-car's own %d, or they differ", len(g), len(w))
	}
	r, err := carv2.NewReader(view)
	if err != nil {
		t.Fatal(err)
	}
	dr, err := r.DataReader()
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(dr)
	file, _ := os.ReadFile(path)
	if !bytes.Equal(data, file[:px.dataEnd]) {
		t.Fatal("the view's data section is not the piece's CAR")
	}
}

// countingFile counts the bytes read from a file, by Read and by ReadAt.
type countingFile struct {
	*os.File
	read int64
}

func (c *countingFile) Read(p []byte) (int, error) {
	n, err := c.File.Read(p)
	c.read += int64(n)
	return n, err
}

func (c *countingFile) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.File.ReadAt(p, off)
	c.read += int64(n)
	return n, err
}

// Pins issue 11 (case 1, pieces of big blocks): on a random-access reader
// the indexer reads the sections' headers and passes over the blocks'
// data; it read 64 KiB of every 256 KiB block, which made eager
// registration of a 4 GiB piece 2.2x go-car's GenerateIndexFromFile. The
// index stays the one go-car builds.
func TestIndexPieceReadsHeadersNotDataOfBigBlocks(t *testing.T) {
	p, err := cargen.Write(filepath.Join(t.TempDir(), "big.car"),
		cargen.Spec{PieceSize: 32 << 20, BlockSize: 256 << 10, NodeEvery: 8, Seed: 11})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cf := &countingFile{File: f}
	px, err := indexPiece(cf, p.Size)
	if err != nil {
		t.Fatal(err)
	}
	if limit := p.CARSize / 25; cf.read > limit {
		t.Fatalf("indexing read %d bytes of a CAR of %d bytes (%d blocks), want at most %d (4%%)",
			cf.read, p.CARSize, p.Blocks, limit)
	}
	var buf bytes.Buffer
	if _, err := px.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	got, err := carindex.ReadFrom(&buf)
	if err != nil {
		t.Fatal(err)
	}
	want, err := carv2.GenerateIndexFromFile(p.Path, carv2.ZeroLengthSectionAsEOF(true), carv2.StoreIdentityCIDs(true))
	if err != nil {
		t.Fatal(err)
	}
	w, g := sortedEntries(t, want.(carindex.IterableIndex)), sortedEntries(t, got.(carindex.IterableIndex))
	if len(w) != p.Blocks || fmt.Sprint(w) != fmt.Sprint(g) {
		t.Fatalf("%d entries, go-car has %d (%d blocks), or they differ", len(g), len(w), p.Blocks)
	}
	if px.dataEnd != p.CARSize {
		t.Fatalf("data ends at %d, the CAR at %d", px.dataEnd, p.CARSize)
	}
}
