package cargen

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	"github.com/ipld/go-car/v2/blockstore"
	"github.com/multiformats/go-multihash"
)

func TestWriteMakesAPaddedCARWithItsCommP(t *testing.T) {
	dir := t.TempDir()
	spec := Spec{PieceSize: 256 << 10, BlockSize: 1024, NodeEvery: 4, Seed: 7, RecordCIDs: true}
	p, err := Write(filepath.Join(dir, "a.car"), spec)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p.Path)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(b)) != UnpaddedSize(spec.PieceSize) || p.Size != int64(len(b)) {
		t.Fatalf("file is %d bytes, Size %d, want %d", len(b), p.Size, UnpaddedSize(spec.PieceSize))
	}
	if p.CARSize >= p.Size || !bytes.Equal(b[p.CARSize:], make([]byte, p.Size-p.CARSize)) {
		t.Fatalf("no zero padding after the CAR (CAR %d of %d bytes)", p.CARSize, p.Size)
	}
	// The piece CID is the CommP of the file, computed independently.
	got, padded, err := CommP(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equals(p.CID) || padded != spec.PieceSize {
		t.Fatalf("CommP %s (%d), Write said %s", got, padded, p.CID)
	}
	if p.CID.Prefix().Codec != cid.FilCommitmentUnsealed || p.CID.Prefix().MhType != multihash.SHA2_256_TRUNC254_PADDED {
		t.Fatalf("piece CID %s has the wrong codec or hash", p.CID)
	}

	// go-car reads it back: every block verifies, in order, nodes included.
	br, err := carv2.NewBlockReader(bytes.NewReader(b), carv2.ZeroLengthSectionAsEOF(true))
	if err != nil {
		t.Fatal(err)
	}
	if len(br.Roots) != 1 || !br.Roots[0].Equals(p.Root) {
		t.Fatalf("roots %v, want [%s]", br.Roots, p.Root)
	}
	codecs := map[uint64]int{}
	var n int
	for {
		blk, err := br.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		want, err := blk.Cid().Prefix().Sum(blk.RawData())
		if err != nil || !want.Equals(blk.Cid()) {
			t.Fatalf("block %d: CID does not match its data", n)
		}
		if !blk.Cid().Equals(p.CIDs[n]) {
			t.Fatalf("block %d is %s, recorded %s", n, blk.Cid(), p.CIDs[n])
		}
		codecs[blk.Cid().Prefix().Codec]++
		n++
	}
	if n != p.Blocks || n != len(p.CIDs) {
		t.Fatalf("read %d blocks, Write said %d", n, p.Blocks)
	}
	if codecs[cid.Raw] == 0 || codecs[cid.DagProtobuf] == 0 || codecs[cid.DagCBOR] < 2 {
		t.Fatalf("codec mix %v: want raw, dag-pb and dag-cbor blocks", codecs)
	}

	// The same spec writes the same bytes; another seed, another piece.
	again, err := Write(filepath.Join(dir, "b.car"), spec)
	if err != nil || !again.CID.Equals(p.CID) {
		t.Fatalf("same spec gave %s, want %s (%v)", again.CID, p.CID, err)
	}
	spec.Seed++
	other, err := Write(filepath.Join(dir, "c.car"), spec)
	if err != nil || other.CID.Equals(p.CID) {
		t.Fatalf("another seed gave the same piece %s (%v)", other.CID, err)
	}
}

func TestMaxBlocksAndIndexing(t *testing.T) {
	p, err := Write(filepath.Join(t.TempDir(), "small.car"), Spec{PieceSize: 128 << 10, BlockSize: 64, MaxBlocks: 1000, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if p.Blocks != 1000 {
		t.Fatalf("%d blocks, want 1000", p.Blocks)
	}
	bs, err := blockstore.OpenReadOnly(p.Path, carv2.ZeroLengthSectionAsEOF(true))
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	if ok, err := bs.Has(context.Background(), p.Root); err != nil || !ok {
		t.Fatalf("root not found: %v", err)
	}
}

func TestWriteRejectsBadSpecs(t *testing.T) {
	dir := t.TempDir()
	for _, s := range []Spec{
		{PieceSize: 1000, BlockSize: 10},
		{PieceSize: 64, BlockSize: 10},
		{PieceSize: 1 << 20, BlockSize: 0},
		{PieceSize: 128, BlockSize: 1 << 20}, // no block fits
	} {
		if _, err := Write(filepath.Join(dir, "x.car"), s); err == nil {
			t.Errorf("spec %+v accepted", s)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x.car")); !os.IsNotExist(err) {
		t.Fatalf("a failed Write left its file: %v", err)
	}
}

func TestWriteSmall(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.car"), filepath.Join(dir, "b.car")
	if err := WriteSmall(a, 1, 5); err != nil {
		t.Fatal(err)
	}
	if err := WriteSmall(b, 2, 5); err != nil {
		t.Fatal(err)
	}
	rootsA, blksA, err := Read(a)
	if err != nil || len(blksA) != 5 || !rootsA[0].Equals(blksA[0].Cid()) {
		t.Fatalf("read back: %d blocks, roots %v, %v", len(blksA), rootsA, err)
	}
	_, blksB, _ := Read(b)
	for _, x := range blksA {
		for _, y := range blksB {
			if x.Cid().Equals(y.Cid()) {
				t.Fatal("two seeds share a block")
			}
		}
	}
	if err := WriteSmall(filepath.Join(dir, "c.car"), 3, 0); err == nil {
		t.Fatal("a CAR of no blocks was written")
	}
}

func TestMultihashes(t *testing.T) {
	l := Multihashes{CounterMultihash(1), CounterMultihash(2)}
	if l[0].B58String() == l[1].B58String() {
		t.Fatal("counter multihashes collide")
	}
	n := 0
	stop := errors.New("stop")
	if err := l.ForEach(func(multihash.Multihash) error { n++; return stop }); err != stop || n != 1 {
		t.Fatalf("ForEach did not stop at the first error: %v after %d", err, n)
	}
}
