package dagwrap

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/filecoin-project/dagstore/shard"
	"github.com/filecoin-project/go-data-segment/datasegment"
	"github.com/filecoin-project/go-data-segment/fr32"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/multiformats/go-varint"

	"github.com/spstack/dagwrap/internal/cargen"
)

// testAggregate is an aggregate built by go-data-segment from real CARs:
// segment 0 is go-car's sample CAR, 1 a generated CAR, 2 not a CAR, 3 a
// generated CAR whose index entry is corrupted (so it must not be served),
// 4 another generated CAR.
type testAggregate struct {
	path     string
	agg      cargen.Aggregate
	cars     map[int]string // segment -> its CAR file
	notCAR   int
	corrupt  int
	pieceCID cid.Cid // CommP of the file as served (the corrupted index included)
}

func buildAggregate(t testing.TB, dir string) testAggregate {
	t.Helper()
	cars := map[int]string{0: filepath.Join("testdata", "sample.car")}
	for i, seed := range map[int]int64{1: 141, 3: 143, 4: 144} {
		cars[i] = writeCAR(t, dir, seed, 40+int(seed%7)*10, 0)
	}
	parts := make([][]byte, 5)
	for i := range parts {
		if p, ok := cars[i]; ok {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			parts[i] = b
		} else {
			parts[i] = bytes.Repeat([]byte("this segment is a text file, not a CAR\n"), 50)
		}
	}
	path := filepath.Join(dir, "aggregate.bin")
	agg, err := cargen.WriteAggregate(path, 0, parts...)
	if err != nil {
		t.Fatal(err)
	}
	corruptIndexEntry(t, path, agg.IndexStart, 3)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return testAggregate{path: path, agg: agg, cars: cars, notCAR: 2, corrupt: 3, pieceCID: pieceCID(t, b)}
}

// corruptIndexEntry flips a byte of entry n's checksum in the data segment
// index of the unpadded piece at path (the index starts at start).
func corruptIndexEntry(t testing.TB, path string, start uint64, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := int64(start) + int64(n/2)*127 // two entries per 127 unpadded bytes
	in := make([]byte, 127)
	if _, err := f.ReadAt(in, chunk); err != nil {
		t.Fatal(err)
	}
	padded := make([]byte, 128)
	fr32.Pad(in, padded)
	padded[(n%2)*datasegment.EntrySize+48] ^= 0x01 // the checksum's first byte
	fr32.Unpad(in, padded)
	if _, err := f.WriteAt(in, chunk); err != nil {
		t.Fatal(err)
	}
}

// checkAggregateServed loads the aggregate and checks every block of every
// indexed CAR segment is served with its bytes and looked up as the
// aggregate's, and the corrupted entry's segment is not served at all.
func checkAggregateServed(t *testing.T, w *Wrapper, ta testAggregate) {
	t.Helper()
	ctx := context.Background()
	bs, err := w.LoadShard(ctx, ta.pieceCID)
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	// go-car reads the synthetic CAR header: it lists every indexed
	// segment's roots.
	var wantRoots []cid.Cid
	for _, seg := range []int{0, 1, 4} {
		roots, _, err := cargen.Read(ta.cars[seg])
		if err != nil {
			t.Fatal(err)
		}
		wantRoots = append(wantRoots, roots...)
	}
	ab, ok := bs.(*aggregateBlockstore)
	if !ok {
		t.Fatalf("the aggregate's blockstore is a %T", bs)
	}
	if roots, err := ab.ReadBlockstore.(interface{ Roots() ([]cid.Cid, error) }).Roots(); err != nil || !sameCids(roots, wantRoots) {
		t.Fatalf("blockstore roots %v (%v), want %v", roots, err, wantRoots)
	}
	for seg, car := range ta.cars {
		for _, b := range carBlocks(t, car) {
			got, err := bs.Get(ctx, b.Cid())
			if seg == ta.corrupt {
				if err == nil {
					t.Fatalf("block %s of segment %d, whose index entry is corrupt, was served", b.Cid(), seg)
				}
				continue
			}
			if err != nil {
				t.Fatalf("segment %d block %s: %v", seg, b.Cid(), err)
			}
			if !bytes.Equal(got.RawData(), b.RawData()) {
				t.Fatalf("segment %d block %s: wrong bytes", seg, b.Cid())
			}
			pieces, err := w.GetPiecesContainingBlock(b.Cid())
			if err != nil {
				t.Fatalf("segment %d block %s: lookup: %v", seg, b.Cid(), err)
			}
			if len(pieces) != 1 || pieces[0] != ta.pieceCID {
				t.Fatalf("segment %d block %s: lookup names %v, want the aggregate %s", seg, b.Cid(), pieces, ta.pieceCID)
			}
		}
	}
}

// Pins issue 14 (detect and index, visible): every valid CAR segment of an
// aggregate is indexed and served through the aggregate, through both
// mounts; the non-CAR segment and the corrupted entry are skipped and
// listed with their reasons; the view is the same after a release and a
// restart (the index is then read, not rebuilt).
func TestAggregateServesEveryCARSegment(t *testing.T) {
	for _, random := range []bool{true, false} {
		name := map[bool]string{true: "random-access", false: "sequential"}[random]
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			ta := buildAggregate(t, t.TempDir())
			api := newFakeAPI(random)
			if got := api.servePath(t, ta.path); got != ta.pieceCID {
				t.Fatalf("served as %s, want %s", got, ta.pieceCID)
			}
			root := t.TempDir()
			w := openWrapper(t, root, api)
			if err := w.RegisterShardSync(ctx, ta.pieceCID, "", true); err != nil {
				t.Fatal(err)
			}
			checkAggregateServed(t, w, ta)
			checkSegments(t, w, ta)
			checkAggregateServed(t, w, ta) // a second acquire: the index exists
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			w = openWrapper(t, root, api)
			checkAggregateServed(t, w, ta)
			checkSegments(t, w, ta)
		})
	}
}

func checkSegments(t *testing.T, w *Wrapper, ta testAggregate) {
	t.Helper()
	segs, err := w.Segments(context.Background(), ta.pieceCID)
	if err != nil {
		t.Fatal(err)
	}
	if len(segs) != len(ta.agg.Segments) {
		t.Fatalf("%d segments listed, want %d: %+v", len(segs), len(ta.agg.Segments), segs)
	}
	for i, s := range segs {
		if s.Number != i || s.Offset != ta.agg.Offsets[i] || s.Size != ta.agg.Lengths[i] {
			t.Fatalf("segment %d listed as %+v, want number %d offset %d size %d", i, s, i, ta.agg.Offsets[i], ta.agg.Lengths[i])
		}
		switch {
		case i == ta.notCAR:
			if s.Indexed || !strings.Contains(s.Reason, "not a CAR") {
				t.Fatalf("non-CAR segment listed as %+v", s)
			}
		case i == ta.corrupt:
			if s.Indexed || !strings.Contains(s.Reason, "checksum") {
				t.Fatalf("segment with a corrupt entry listed as %+v", s)
			}
		default:
			roots, blks, err := cargen.Read(ta.cars[i])
			if err != nil {
				t.Fatal(err)
			}
			if !s.Indexed || s.PieceCID != ta.agg.Segments[i] || s.Blocks != int64(len(blks)) || !sameCids(s.Roots, roots) {
				t.Fatalf("segment %d listed as %+v, want indexed, piece %s, %d blocks, roots %v", i, s, ta.agg.Segments[i], len(blks), roots)
			}
			if st, _ := os.Stat(ta.cars[i]); s.CARSize != st.Size() {
				t.Fatalf("segment %d: CAR size %d, want %d", i, s.CARSize, st.Size())
			}
		}
	}
}

func sameCids(a, b []cid.Cid) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Pins issue 14 (recovery): a recovery of an aggregate whose index file was
// truncated re-indexes the aggregate from the piece (the view's index is
// rebuilt when the dagstore reads it), and every segment serves again.
func TestAggregateRecoversFromATruncatedIndex(t *testing.T) {
	skipOnPG(t, "truncates the embedded index file under index/")
	ctx := context.Background()
	ta := buildAggregate(t, t.TempDir())
	api := newFakeAPI(true)
	api.servePath(t, ta.path)
	root := t.TempDir()
	w := openWrapper(t, root, api)
	if err := w.RegisterShardSync(ctx, ta.pieceCID, "", true); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	truncateIndex(t, root, shard.KeyFromCID(ta.pieceCID))
	w = openWrapper(t, root, api)
	if bs, err := w.LoadShard(ctx, ta.pieceCID); err == nil {
		_ = bs.Close()
		t.Fatal("an aggregate with a truncated index loaded")
	}
	if err := w.RecoverShard(ctx, ta.pieceCID); err != nil && !errors.Is(err, ErrShardNotErrored) {
		t.Fatal(err)
	}
	checkAggregateServed(t, w, ta)
}

// Pins issue 14 (destroy): destroying an aggregate removes its segment
// records, and the piece is then unknown to Segments.
func TestDestroyRemovesAggregateRecords(t *testing.T) {
	ctx := context.Background()
	ta := buildAggregate(t, t.TempDir())
	api := newFakeAPI(true)
	api.servePath(t, ta.path)
	w := openWrapper(t, t.TempDir(), api)
	if err := w.RegisterShardSync(ctx, ta.pieceCID, "", true); err != nil {
		t.Fatal(err)
	}
	key := shard.KeyFromCID(ta.pieceCID)
	for _, p := range []string{segmentsPrefix, segHeaderPrefix} {
		if ok, err := w.st.store.Has(ctx, ds.NewKey(p+key.String())); err != nil || !ok {
			t.Fatalf("record %s%s after indexing: %v %v", p, key, ok, err)
		}
	}
	if err := w.DestroyShardSync(ctx, ta.pieceCID); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{segmentsPrefix, segHeaderPrefix} {
		if ok, err := w.st.store.Has(ctx, ds.NewKey(p+key.String())); err != nil || ok {
			t.Fatalf("record %s%s after destroy: %v %v", p, key, ok, err)
		}
	}
	if _, err := w.Segments(ctx, ta.pieceCID); !errors.Is(err, ErrShardUnknown) {
		t.Fatalf("segments of a destroyed piece: %v, want ErrShardUnknown", err)
	}
}

// Pins issue 14 (a piece without an index): an ordinary padded CAR piece
// is indexed as one CAR and has no segments.
func TestOrdinaryPieceHasNoSegments(t *testing.T) {
	ctx := context.Background()
	api := newFakeAPI(true)
	pc := api.servePath(t, writeCAR(t, t.TempDir(), 151, 60, 127*256))
	w := openWrapper(t, t.TempDir(), api)
	if err := w.RegisterShardSync(ctx, pc, "", true); err != nil {
		t.Fatal(err)
	}
	segs, err := w.Segments(ctx, pc)
	if err != nil || len(segs) != 0 {
		t.Fatalf("segments of an ordinary piece: %v %v", segs, err)
	}
}

// Pins issue 14 (segment bounds): a segment whose CAR runs past the
// segment's end has its cut-short last block left out of the index (a read
// would go on into the next segment's bytes and serve them as the block);
// its other blocks serve. AllKeysChan lists the index's blocks.
func TestAggregateLeavesOutABlockCutBySegmentEnd(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	const cut = 2032 // the unpadded size of a 2 KiB segment
	var full []byte
	var blks []blocks.Block
	straddler := -1
	for n := 30; straddler < 0; n++ {
		p := writeCAR(t, dir, 161, n, 0)
		full, _ = os.ReadFile(p)
		blks = carBlocks(t, p)
		if len(full) <= cut+64 {
			continue
		}
		end := int64(len(full))
		for i := len(blks) - 1; i >= 0; i-- { // sections from the end back
			c, d := blks[i].Cid().Bytes(), blks[i].RawData()
			l := uint64(len(c) + len(d))
			start := end - int64(len(varintBytes(l))) - int64(l)
			if start < cut && end > cut {
				straddler = i
			}
			end = start
		}
	}
	next := writeCAR(t, dir, 162, 20, 0)
	nextBytes, _ := os.ReadFile(next)
	path := filepath.Join(dir, "aggregate.bin")
	agg, err := cargen.WriteAggregate(path, 0, full[:cut], nextBytes)
	if err != nil {
		t.Fatal(err)
	}
	api := newFakeAPI(true)
	if pc := api.servePath(t, path); pc != agg.PieceCID {
		t.Fatalf("served as %s, want %s", pc, agg.PieceCID)
	}
	w := openWrapper(t, t.TempDir(), api)
	if err := w.RegisterShardSync(ctx, agg.PieceCID, "", true); err != nil {
		t.Fatal(err)
	}
	bs, err := w.LoadShard(ctx, agg.PieceCID)
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	want := map[cid.Cid]bool{}
	for i, b := range blks[:straddler+1] {
		got, err := bs.Get(ctx, b.Cid())
		if i == straddler {
			if err == nil {
				t.Fatalf("block %s, cut short by its segment's end, was served (%d bytes)", b.Cid(), len(got.RawData()))
			}
			continue
		}
		if err != nil || !bytes.Equal(got.RawData(), b.RawData()) {
			t.Fatalf("block %d (%s) of the cut segment: %v", i, b.Cid(), err)
		}
		want[cid.NewCidV1(cid.Raw, b.Cid().Hash())] = true
	}
	for _, b := range carBlocks(t, next) {
		want[cid.NewCidV1(cid.Raw, b.Cid().Hash())] = true
	}
	keys, err := bs.AllKeysChan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[cid.Cid]bool{}
	for k := range keys {
		got[k] = true
	}
	if len(got) != len(want) {
		t.Fatalf("AllKeysChan listed %d keys, want %d", len(got), len(want))
	}
	for k := range want {
		if !got[k] {
			t.Fatalf("AllKeysChan did not list %s", k)
		}
	}
	segs, err := w.Segments(ctx, agg.PieceCID)
	if err != nil || len(segs) != 2 || segs[0].Blocks != int64(straddler) {
		t.Fatalf("segments %+v (%v), want the first with %d blocks", segs, err, straddler)
	}
}

func varintBytes(n uint64) []byte { return varint.ToUvarint(n) }

// mergeRuns gives what sorting the whole bucket gives, for any number of
// runs, empty ones and equal digests included.
func TestMergeRunsIsASort(t *testing.T) {
	const w = 4 + 8
	rng := rand.New(rand.NewPCG(7, 7))
	for _, nruns := range []int{1, 2, 3, 5, 16} {
		var b []byte
		bounds := []int{0}
		for r := 0; r < nruns; r++ {
			var run []byte
			for n := rng.IntN(50); n > 0; n-- { // some runs are empty
				e := make([]byte, w)
				binary.BigEndian.PutUint32(e, uint32(rng.IntN(40))) // repeats
				binary.LittleEndian.PutUint64(e[4:], rng.Uint64())
				run = append(run, e...)
			}
			sort.Sort(fixedEntries{b: run, w: w, tmp: make([]byte, w)})
			b = append(b, run...)
			bounds = append(bounds, len(b))
		}
		want := slices.Clone(b)
		sort.Sort(fixedEntries{b: want, w: w, tmp: make([]byte, w)})
		if got := mergeRuns(slices.Clone(b), w, bounds); !bytes.Equal(got, want) {
			t.Fatalf("%d runs: the merge differs from a sort", nruns)
		}
	}
}
