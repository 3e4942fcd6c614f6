package dagwrap

// Benchmarks of the cases cmd/dagwrap-bench prints, in testing.B form, on
// small pieces so that `go test -run '^$' -bench . -benchtime 3x` is quick.
// Sizes are flags: -dagwrap.big-piece, -dagwrap.small-piece. The command
// runs the full-size suite and prints the table with its baselines.

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/dustin/go-humanize"
	"github.com/filecoin-project/dagstore/index"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
	levelds "github.com/ipfs/go-ds-leveldb"
	carv2 "github.com/ipld/go-car/v2"
	"github.com/ipld/go-car/v2/blockstore"
	ldbopts "github.com/syndtr/goleveldb/leveldb/opt"

	"github.com/spstack/dagwrap/internal/cargen"
	"github.com/spstack/dagwrap/internal/testkit"
)

var (
	benchBigPiece   = flag.String("dagwrap.big-piece", "16MiB", "padded size of the benchmarks' piece of 256 KiB blocks")
	benchSmallPiece = flag.String("dagwrap.small-piece", "4MiB", "padded size of the benchmarks' piece of 1 KiB blocks")
)

// pieces generates the benchmarks' two pieces in a folder removed when b
// ends.
func pieces(b *testing.B) (big, small cargen.Piece) {
	b.Helper()
	bigSize, err := humanize.ParseBytes(*benchBigPiece)
	if err != nil {
		b.Fatal(err)
	}
	smallSize, err := humanize.ParseBytes(*benchSmallPiece)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	big, err = cargen.Write(filepath.Join(dir, "big.car"),
		cargen.Spec{PieceSize: bigSize, BlockSize: 256 << 10, NodeEvery: 8, Seed: 1, RecordCIDs: true})
	if err != nil {
		b.Fatal(err)
	}
	small, err = cargen.Write(filepath.Join(dir, "small.car"),
		cargen.Spec{PieceSize: smallSize, BlockSize: 1 << 10, NodeEvery: 8, Seed: 2, RecordCIDs: true})
	if err != nil {
		b.Fatal(err)
	}
	return big, small
}

// serve makes the fake API serve a generated piece from its file.
func serve(a *fakeAPI, p cargen.Piece) {
	a.files.Add(p.CID, p.Path, uint64(p.Size))
}

func benchCases(b *testing.B, fn func(b *testing.B, p cargen.Piece)) {
	big, small := pieces(b)
	b.Run("256KiB-blocks", func(b *testing.B) { fn(b, big) })
	b.Run("1KiB-blocks", func(b *testing.B) { fn(b, small) })
}

// newBenchWrapper opens a started Wrapper on a fresh root; the caller
// closes it.
func newBenchWrapper(b *testing.B, api MinerAPI) *Wrapper {
	b.Helper()
	w, err := New(Config{RootDir: b.TempDir()}, api)
	if err != nil {
		b.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	return w
}

// Case 1: eager registration (fetch, index, top-level index).
func BenchmarkRegisterEager(b *testing.B) {
	benchCases(b, func(b *testing.B, p cargen.Piece) {
		for _, random := range []bool{true, false} {
			b.Run(map[bool]string{true: "random-access", false: "sequential"}[random], func(b *testing.B) {
				api := newFakeAPI(random)
				serve(api, p)
				b.SetBytes(p.Size)
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					w := newBenchWrapper(b, api)
					b.StartTimer()
					if err := w.RegisterShardSync(context.Background(), p.CID, "", true); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					_ = w.Close()
					b.StartTimer()
				}
			})
		}
		b.Run("go-car-floor", func(b *testing.B) {
			b.SetBytes(p.Size)
			for i := 0; i < b.N; i++ {
				if _, err := carv2.GenerateIndexFromFile(p.Path, testkit.IndexOptions...); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

// Case 2: the first block after GC: LoadShard plus one Get.
func BenchmarkFirstBlockAfterGC(b *testing.B) {
	benchCases(b, func(b *testing.B, p cargen.Piece) {
		ctx := context.Background()
		blk := p.CIDs[len(p.CIDs)/2]
		for _, random := range []bool{true, false} {
			b.Run(map[bool]string{true: "random-access", false: "sequential"}[random], func(b *testing.B) {
				api := newFakeAPI(random)
				serve(api, p)
				w := newBenchWrapper(b, api)
				defer w.Close()
				if err := w.RegisterShardSync(ctx, p.CID, "", true); err != nil {
					b.Fatal(err)
				}
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					if _, err := w.shards.dagst.GC(ctx); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					bs, err := w.LoadShard(ctx, p.CID)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := bs.Get(ctx, blk); err != nil {
						b.Fatal(err)
					}
					_ = bs.Close()
				}
			})
		}
		b.Run("go-car-floor", func(b *testing.B) {
			idxPath := prebuiltIndex(b, p.Path)
			for i := 0; i < b.N; i++ {
				bs, done := floorBlockstore(b, p.Path, idxPath)
				if _, err := bs.Get(ctx, blk); err != nil {
					b.Fatal(err)
				}
				done()
			}
		})
	})
}

// Case 3: every block of a piece, through LoadShard's blockstore and
// through go-car's read-only blockstore.
func BenchmarkReadAllBlocks(b *testing.B) {
	benchCases(b, func(b *testing.B, p cargen.Piece) {
		ctx := context.Background()
		b.Run("dagwrap", func(b *testing.B) {
			api := newFakeAPI(true)
			serve(api, p)
			w := newBenchWrapper(b, api)
			defer w.Close()
			if err := w.RegisterShardSync(ctx, p.CID, "", true); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(p.DataBytes)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				bs, err := w.LoadShard(ctx, p.CID)
				if err != nil {
					b.Fatal(err)
				}
				for _, c := range p.CIDs {
					if _, err := bs.Get(ctx, c); err != nil {
						b.Fatal(err)
					}
				}
				_ = bs.Close()
			}
		})
		b.Run("go-car-floor", func(b *testing.B) {
			idxPath := prebuiltIndex(b, p.Path)
			b.SetBytes(p.DataBytes)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				bs, done := floorBlockstore(b, p.Path, idxPath)
				for _, c := range p.CIDs {
					if _, err := bs.Get(ctx, c); err != nil {
						b.Fatal(err)
					}
				}
				done()
			}
		})
	})
}

// Case 4: MigrateDeals; one op migrates 1,000 deals into a fresh root.
func BenchmarkMigrateDeals(b *testing.B) {
	const n = 1000
	rng := rand.New(rand.NewPCG(4, 4))
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		deals := make([]Deal, n)
		for j := range deals {
			deals[j] = Deal{DealID: uint64(j), PieceCID: testkit.RandomPieceCID(rng), HandedOff: true}
		}
		w := newBenchWrapper(b, newFakeAPI(true))
		b.StartTimer()
		if ok, err := w.MigrateDeals(context.Background(), deals); err != nil || !ok {
			b.Fatal(ok, err)
		}
		b.StopTimer()
		_ = w.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "deals/s")
}

// Case 5: GetPiecesContainingBlock among 20 indexed pieces of 1,000 blocks.
func BenchmarkGetPiecesContainingBlock(b *testing.B) {
	ctx := context.Background()
	api := newFakeAPI(true)
	w := newBenchWrapper(b, api)
	defer w.Close()
	var sample []cid.Cid
	for i := 0; i < 20; i++ {
		p, err := cargen.Write(filepath.Join(b.TempDir(), "p.car"), cargen.Spec{PieceSize: 128 << 10, BlockSize: 64, MaxBlocks: 1000, Seed: uint64(100 + i), RecordCIDs: true})
		if err != nil {
			b.Fatal(err)
		}
		serve(api, p)
		if err := w.RegisterShardSync(ctx, p.CID, "", true); err != nil {
			b.Fatal(err)
		}
		sample = append(sample, p.CIDs...)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := w.GetPiecesContainingBlock(sample[i%len(sample)]); err != nil {
			b.Fatal(err)
		}
	}
}

// Case 7: one op adds a piece of 1,000 multihashes, 100 of which every
// piece holds, to an index that grows with b.N; then lookups.
func BenchmarkTopLevelIndex(b *testing.B) {
	common := make(cargen.Multihashes, 100)
	for i := range common {
		common[i] = cargen.CounterMultihash(1<<62 + uint64(i))
	}
	piece := func(p int) cargen.Multihashes {
		l := append(cargen.Multihashes{}, common...)
		for j := len(common); j < 1000; j++ {
			l = append(l, cargen.CounterMultihash(uint64(p*1000+j)))
		}
		return l
	}
	for _, impl := range []struct {
		name string
		mk   func(*levelds.Datastore) index.Inverted
	}{
		{"dagwrap", func(d *levelds.Datastore) index.Inverted { return newTopIndex(d) }},
		{"stock", func(d *levelds.Datastore) index.Inverted { return index.NewInverted(d) }},
	} {
		open := func(b *testing.B) index.Inverted {
			d, err := levelds.NewDatastore(b.TempDir(), &levelds.Options{Compression: ldbopts.NoCompression, Strict: ldbopts.StrictAll})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = d.Close() })
			return impl.mk(d)
		}
		b.Run("insert/"+impl.name, func(b *testing.B) {
			idx := open(b)
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				mhs := piece(i)
				b.StartTimer()
				if err := idx.AddMultihashesForShard(context.Background(), mhs, shard.KeyFromString(fmt.Sprintf("piece-%d", i))); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("lookup/"+impl.name, func(b *testing.B) {
			idx := open(b)
			const pieces = 50
			for p := 0; p < pieces; p++ {
				if err := idx.AddMultihashesForShard(context.Background(), piece(p), shard.KeyFromString(fmt.Sprintf("piece-%d", p))); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := idx.GetShardsForMultihash(context.Background(), piece(i % pieces)[i%1000]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Case 8: the Go heap one loaded shard of the 1 KiB-block piece holds.
func BenchmarkLoadedShardHeap(b *testing.B) {
	_, p := pieces(b)
	ctx := context.Background()
	api := newFakeAPI(true)
	serve(api, p)
	w := newBenchWrapper(b, api)
	defer w.Close()
	if err := w.RegisterShardSync(ctx, p.CID, "", true); err != nil {
		b.Fatal(err)
	}
	var held uint64
	for i := 0; i < b.N; i++ {
		before := liveHeap()
		bs, err := w.LoadShard(ctx, p.CID)
		if err != nil {
			b.Fatal(err)
		}
		if after := liveHeap(); after > before {
			held = after - before
		}
		runtime.KeepAlive(bs)
		_ = bs.Close()
	}
	b.ReportMetric(float64(held), "heap-bytes/shard")
}

func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// prebuiltIndex writes go-car's index of the CAR for the floor.
func prebuiltIndex(b *testing.B, carPath string) string {
	path := filepath.Join(b.TempDir(), "piece.idx")
	if err := testkit.FloorIndex(carPath, path); err != nil {
		b.Fatal(err)
	}
	return path
}

// floorBlockstore is testkit.FloorBlockstore, failing b on an error.
func floorBlockstore(b *testing.B, carPath, idxPath string) (*blockstore.ReadOnly, func()) {
	bs, done, err := testkit.FloorBlockstore(carPath, idxPath)
	if err != nil {
		b.Fatal(err)
	}
	return bs, done
}
