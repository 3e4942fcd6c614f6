package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/index"
	"github.com/filecoin-project/dagstore/shard"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	levelds "github.com/ipfs/go-ds-leveldb"
	carv2 "github.com/ipld/go-car/v2"
	carindex "github.com/ipld/go-car/v2/index"
	"github.com/multiformats/go-multihash"
	ldbopts "github.com/syndtr/goleveldb/leveldb/opt"

	"github.com/spstack/dagwrap"
	"github.com/spstack/dagwrap/internal/cargen"
	"github.com/spstack/dagwrap/internal/testkit"
)

var none = math.NaN()

// floorIndex writes go-car's index of the piece next to it, once, as the
// prebuilt index of the floor measurements.
func (b *bench) floorIndex(p cargen.Piece) (string, error) {
	path := p.Path + ".idx"
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	return path, testkit.FloorIndex(p.Path, path)
}

// openWrapper opens and starts a Wrapper on a fresh root under the work dir.
func (b *bench) openWrapper(api dagwrap.MinerAPI, gc time.Duration) (*dagwrap.Wrapper, string, error) {
	root, err := os.MkdirTemp(b.work, "root-")
	if err != nil {
		return nil, "", err
	}
	cfg := dagwrap.Config{RootDir: root, GCInterval: gc}
	var opts []dagwrap.Option
	if b.pg { // case 14: the piece directory in the database
		cfg.IndexDSN = b.cfg.indexDSN
		opts = append(opts, dagwrap.WithIndexSchema(b.pgSchema))
	}
	w, err := dagwrap.New(cfg, api, opts...)
	if err != nil {
		return nil, "", err
	}
	if err := w.Start(context.Background()); err != nil {
		_ = w.Close()
		return nil, "", err
	}
	return w, root, nil
}

func closeWrapper(w *dagwrap.Wrapper, root string) {
	if err := w.Close(); err != nil {
		logf("closing wrapper: %v", err)
	}
	_ = os.RemoveAll(root)
}

// eagerTimes are the medians of eager registrations of a piece.
type eagerTimes struct {
	avail   time.Duration // until available (RegisterShard's result: offsets durable)
	found   time.Duration // until lookups find its last block
	written time.Duration // until its top-level entries are durable (RegisterShardSync's return)
	// transient is the most bytes found in transients/ afterwards.
	transient int64
}

// registerEager times eager registrations of p on fresh roots.
func (b *bench) registerEager(p cargen.Piece, api dagwrap.MinerAPI, reps int) (eagerTimes, error) {
	var avail, searchable, written []time.Duration
	var transient int64
	last := p.Root
	if len(p.CIDs) > 0 {
		last = p.CIDs[len(p.CIDs)-1]
	}
	// The first round warms caches up and is not counted.
	for i := 0; i <= reps; i++ {
		// No GC during the measurement: what registration wrote stays.
		w, root, err := b.openWrapper(api, time.Hour)
		if err != nil {
			return eagerTimes{}, err
		}
		res := make(chan dagstore.ShardResult, 1)
		start := time.Now()
		if err = w.RegisterShard(context.Background(), p.CID, "", true, res); err == nil {
			err = (<-res).Error
		}
		took := time.Since(start)
		for err == nil { // a benchmark may poll: 1 ms against ~100 ms
			if _, lerr := w.GetPiecesContainingBlock(last); lerr == nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		found := time.Since(start)
		if err == nil {
			err = w.InitShard(context.Background(), p.CID) // waits for the entries
		}
		if i > 0 {
			avail = append(avail, took)
			searchable = append(searchable, found)
			written = append(written, time.Since(start))
		}
		transient = max(transient, dirBytes(filepath.Join(root, "transients")))
		closeWrapper(w, root)
		syscall.Sync() // the next round does not pay for this one's writeback
		if err != nil {
			return eagerTimes{}, err
		}
	}
	return eagerTimes{avail: median(avail), found: median(searchable), written: median(written), transient: transient}, nil
}

// firstBlockScaling times the first block after GC on a 16 MiB piece of
// the same blocks as the small piece, against the small piece's time from
// case 2 (rows): the first block must not grow with the piece.
func (b *bench) firstBlockScaling(small cargen.Piece, rows []row, label string) ([]row, error) {
	var smallTime float64
	for _, r := range rows {
		if r.Case == "2" && strings.Contains(r.What, "(floor)") {
			smallTime = r.Dagwrap
		}
	}
	tiny, err := b.generate("tiny", 16<<20, uint64(b.cfg.smallBlock), 3)
	if err != nil {
		return nil, err
	}
	defer os.Remove(tiny.Path)
	t, _, err := b.firstBlockAfterGC(tiny, b.store, tiny.CIDs[len(tiny.CIDs)/2], b.cfg.fbReps)
	if err != nil {
		return nil, err
	}
	return []row{{Case: "2", What: "first block after GC, " + label + " vs a 16 MiB piece of the same blocks",
		Unit: seconds, Dagwrap: smallTime, Baseline: t.Seconds(), Target: "ratio ≤ 3", met: ratioAtMost(3)}}, nil
}

// case1 is eager registration; it also yields case 6's first rows.
func (b *bench) case1(p cargen.Piece, label string, limit float64) ([]row, error) {
	logf("case 1: eager registration of %s", label)
	floor, err := timeReps(b.cfg.reps, func() error {
		_, err := carv2.GenerateIndexFromFile(p.Path, testkit.IndexOptions...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("go-car index: %w", err)
	}
	rt, err := b.registerEager(p, b.store, b.cfg.reps)
	if err != nil {
		return nil, fmt.Errorf("random-access mount: %w", err)
	}
	st, err := b.registerEager(p, testkit.Sequential{Files: b.store}, b.cfg.seqReps)
	if err != nil {
		return nil, fmt.Errorf("sequential mount: %w", err)
	}
	ra := rt.avail
	return []row{
		{Case: "1", What: "eager register, " + label + ": random-access mount vs go-car GenerateIndexFromFile (floor)",
			Unit: seconds, Dagwrap: ra.Seconds(), Baseline: median(floor).Seconds(),
			Target: fmt.Sprintf("ratio ≤ %g", limit), met: ratioAtMost(limit)},
		{Case: "1", What: "eager register, " + label + ": random-access mount vs sequential mount (original design)",
			Unit: seconds, Dagwrap: ra.Seconds(), Baseline: st.avail.Seconds()},
		{Case: "1", What: "eager register, " + label + ": until lookups find its last block vs until available",
			Unit: seconds, Dagwrap: rt.found.Seconds(), Baseline: ra.Seconds(), Target: "ratio ≤ 2", met: ratioAtMost(2)},
		{Case: "1", What: "eager register, " + label + ": until its top-level entries are durable (RegisterShardSync returns) vs until available",
			Unit: seconds, Dagwrap: rt.written.Seconds(), Baseline: ra.Seconds()},
		{Case: "1", What: "eager register, " + label + ": blocks indexed per second (until available)",
			Unit: perSec, Dagwrap: float64(p.Blocks) / ra.Seconds(), Baseline: none},
		{Case: "6", What: "bytes written to transients/ by case 1, " + label + ": random-access vs sequential mount",
			Unit: bytesU, Dagwrap: float64(rt.transient), Baseline: float64(st.transient), Target: "0 B", met: valueAtMost(0)},
	}, nil
}

const (
	// gcEvery is the GC interval of the first-block measurements.
	gcEvery = 100 * time.Millisecond
	// afterGCPause is long enough for a GC to have run.
	afterGCPause = gcEvery * 3 / 2
)

// firstBlockAfterGC registers p, then repeatedly lets the dagstore's GC
// reclaim what it can and times LoadShard plus one Get.
func (b *bench) firstBlockAfterGC(p cargen.Piece, api dagwrap.MinerAPI, blk cid.Cid, reps int) (time.Duration, int64, error) {
	// A real, periodic GC: the wrapper runs it every gcEvery.
	w, root, err := b.openWrapper(api, gcEvery)
	if err != nil {
		return 0, 0, err
	}
	defer closeWrapper(w, root)
	ctx := context.Background()
	if err := w.RegisterShardSync(ctx, p.CID, "", true); err != nil {
		return 0, 0, err
	}
	transients := filepath.Join(root, "transients")
	var times []time.Duration
	var written int64
	// The first round warms caches up and is not counted.
	for i := 0; i <= reps; i++ {
		// Once the last round's release is through, a GC runs (and, for
		// a sequential mount, deletes the transient) before this round.
		if err := waitAvailable(w, p.CID, time.Minute); err != nil {
			return 0, 0, err
		}
		time.Sleep(afterGCPause)
		if err := waitEmpty(transients, time.Minute); err != nil {
			return 0, 0, err
		}
		start := time.Now()
		bs, err := w.LoadShard(ctx, p.CID)
		if err != nil {
			return 0, 0, err
		}
		_, err = bs.Get(ctx, blk)
		if i > 0 {
			times = append(times, time.Since(start))
		}
		// A shard being served is never reclaimed: what is in transients/
		// now is what this load wrote.
		written = max(written, dirBytes(transients))
		_ = bs.Close()
		if err != nil {
			return 0, 0, err
		}
	}
	return median(times), written, nil
}

// case2 is the first block after GC; it also yields case 6's other rows.
func (b *bench) case2(p cargen.Piece, label string, vsSequential bool, floorLimit float64) ([]row, error) {
	logf("case 2: first block after GC, %s", label)
	blk := p.CIDs[len(p.CIDs)/2]
	idxPath, err := b.floorIndex(p)
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	floorOnce := func() error {
		bs, done, err := testkit.FloorBlockstore(p.Path, idxPath)
		if err != nil {
			return err
		}
		defer done()
		_, err = bs.Get(ctx, blk)
		return err
	}
	// Like the dagwrap rounds: one round to warm up, then each round after
	// a pause as long as theirs, so that no round finds the caches kept hot
	// by the round just before.
	if err := floorOnce(); err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	var floor []time.Duration
	for i := 0; i < b.cfg.fbReps; i++ {
		time.Sleep(afterGCPause)
		t, err := timeOnce(floorOnce)
		if err != nil {
			return nil, fmt.Errorf("floor: %w", err)
		}
		floor = append(floor, t)
	}
	ra, raBytes, err := b.firstBlockAfterGC(p, b.store, blk, b.cfg.fbReps)
	if err != nil {
		return nil, fmt.Errorf("random-access mount: %w", err)
	}
	seq, seqBytes, err := b.firstBlockAfterGC(p, testkit.Sequential{Files: b.store}, blk, b.cfg.seqReps)
	if err != nil {
		return nil, fmt.Errorf("sequential mount: %w", err)
	}
	vsSeq := row{Case: "2", What: "first block after GC, " + label + ": random-access vs sequential mount",
		Unit: seconds, Dagwrap: ra.Seconds(), Baseline: seq.Seconds()}
	if vsSequential {
		vsSeq.Target, vsSeq.met = "ratio ≤ 0.02 (50x faster)", ratioAtMost(0.02)
	}
	return []row{
		vsSeq,
		{Case: "2", What: "first block after GC, " + label + ": random-access vs go-car NewReadOnly, prebuilt index (floor)",
			Unit: seconds, Dagwrap: ra.Seconds(), Baseline: median(floor).Seconds(),
			Target: fmt.Sprintf("ratio ≤ %g", floorLimit), met: ratioAtMost(floorLimit)},
		{Case: "6", What: "bytes written to transients/ by case 2, " + label + ": random-access vs sequential mount",
			Unit: bytesU, Dagwrap: float64(raBytes), Baseline: float64(seqBytes), Target: "0 B", met: valueAtMost(0)},
	}, nil
}

// case3 reads every block of p through LoadShard's blockstore and through
// go-car's read-only blockstore, in alternating rounds.
func (b *bench) case3(p cargen.Piece, label string) ([]row, error) {
	logf("case 3: read every block, %s", label)
	idxPath, err := b.floorIndex(p)
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	w, root, err := b.openWrapper(b.store, 0)
	if err != nil {
		return nil, err
	}
	defer closeWrapper(w, root)
	if err := w.RegisterShardSync(ctx, p.CID, "", true); err != nil {
		return nil, err
	}
	readAll := func(get func(context.Context, cid.Cid) (blocks.Block, error)) error {
		var n int64
		for _, c := range p.CIDs {
			blk, err := get(ctx, c)
			if err != nil {
				return err
			}
			n += int64(len(blk.RawData()))
		}
		if n != p.DataBytes {
			return fmt.Errorf("read %d bytes of blocks, want %d", n, p.DataBytes)
		}
		return nil
	}
	floor := func() error {
		bs, done, err := testkit.FloorBlockstore(p.Path, idxPath)
		if err != nil {
			return err
		}
		defer done()
		return readAll(bs.Get)
	}
	viaLoadShard := func() error {
		bs, err := w.LoadShard(ctx, p.CID)
		if err != nil {
			return err
		}
		defer bs.Close()
		return readAll(bs.Get)
	}
	// One round each to warm up, then alternating timed rounds.
	if err := floor(); err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	if err := viaLoadShard(); err != nil {
		return nil, fmt.Errorf("dagwrap: %w", err)
	}
	var fl, dw []time.Duration
	for i := 0; i < b.cfg.reps; i++ {
		t, err := timeOnce(floor)
		if err != nil {
			return nil, fmt.Errorf("floor: %w", err)
		}
		fl = append(fl, t)
		if t, err = timeOnce(viaLoadShard); err != nil {
			return nil, fmt.Errorf("dagwrap: %w", err)
		}
		dw = append(dw, t)
	}
	mbps := func(d time.Duration) float64 { return float64(p.DataBytes) / 1e6 / d.Seconds() }
	return []row{{Case: "3", What: "read every block, " + label + ": LoadShard blockstore vs go-car read-only blockstore (floor)",
		Unit: mbPerSec, Dagwrap: mbps(median(dw)), Baseline: mbps(median(fl)),
		Target: "ratio ≥ 0.8", met: ratioAtLeast(0.8)}}, nil
}

// ldbOptions are the LevelDB options a Wrapper opens its datastore with:
// uncompressed, strict, every write synced.
var ldbOptions = levelds.Options{Compression: ldbopts.NoCompression, Strict: ldbopts.StrictAll}

func (b *bench) openLevelDB(name string) (ds.Batching, func(), error) {
	dir, err := os.MkdirTemp(b.work, name+"-")
	if err != nil {
		return nil, nil, err
	}
	opts := ldbOptions
	ldb, err := levelds.NewDatastore(dir, &opts)
	if err != nil {
		return nil, nil, err
	}
	return ldb, func() { _ = ldb.Close(); _ = os.RemoveAll(dir) }, nil
}

// case4 migrates deals: rate and peak memory, against the rate of synced
// LevelDB writes (the dagstore persists every registration with one).
func (b *bench) case4() ([]row, error) {
	n := b.cfg.deals
	logf("case 4: MigrateDeals of %d deals", n)
	rng := rand.New(rand.NewPCG(4, 4))
	deals := make([]dagwrap.Deal, n)
	for i := range deals {
		deals[i] = dagwrap.Deal{DealID: uint64(i + 1), PieceCID: testkit.RandomPieceCID(rng), HandedOff: true}
	}

	// The bound: one synced Put per registration, of a shard record's size.
	store, done, err := b.openLevelDB("synced-puts")
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	record := []byte(`{"Key":"baga6ea4seaqlyab2ga3qwpsm6fz3jtxe6kfpjpbqs3in62nd5afwuv57fa5nejy","URL":"lotus://baga6ea4seaqlyab2ga3qwpsm6fz3jtxe6kfpjpbqs3in62nd5afwuv57fa5nejy","TransientPath":"","State":0,"Lazy":true,"Error":""}`)
	puts := min(n, 20_000) // a rate: no need for all of them
	start := time.Now()
	for i := range deals[:puts] {
		if err := store.Put(ctx, ds.NewKey("/dagstore/shard/"+deals[i].PieceCID.String()), record); err != nil {
			done()
			return nil, err
		}
	}
	putRate := float64(puts) / time.Since(start).Seconds()
	done()

	w, root, err := b.openWrapper(&testkit.Files{}, 0)
	if err != nil {
		return nil, err
	}
	defer closeWrapper(w, root)
	before, _ := procStatusBytes("VmRSS")
	if err := resetPeakRSS(); err != nil {
		logf("cannot reset VmHWM (%v): peak RSS covers the whole run", err)
	}
	sampler := startHeapSampler(10 * time.Millisecond)
	start = time.Now()
	ok, err := w.MigrateDeals(ctx, deals)
	took := time.Since(start)
	peakHeap := sampler.Stop()
	peakRSS, rssErr := procStatusBytes("VmHWM")
	writeHeapProfile(b.cfg.memProf, "after case 4's migration")
	if err != nil || !ok {
		return nil, fmt.Errorf("MigrateDeals: ok=%v err=%v", ok, err)
	}
	if rssErr != nil {
		peakRSS = 0
	}
	rate := float64(n) / took.Seconds()
	const limit = 256 << 20
	return []row{
		{Case: "4", What: fmt.Sprintf("MigrateDeals, %s deals: deals/s vs synced LevelDB Puts/s (one per registration, the bound)", commas(n)),
			Unit: perSec, Dagwrap: rate, Baseline: putRate, Target: "≥ 50,000/s and ratio ≥ 5",
			met: func(v, r float64) bool { return v >= 50_000 && r >= 5 }},
		{Case: "4", What: "MigrateDeals peak memory: process peak RSS (VmHWM, reset before the call) vs RSS before",
			Unit: bytesU, Dagwrap: float64(peakRSS), Baseline: float64(before), Target: "< 256 MiB", met: valueAtMost(limit)},
		{Case: "4", What: "MigrateDeals peak Go heap in use (sampled every 10 ms)",
			Unit: bytesU, Dagwrap: float64(peakHeap), Baseline: none, Target: "< 256 MiB", met: valueAtMost(limit)},
	}, nil
}

// case5 looks blocks up among many indexed pieces, through the Wrapper and
// through the dagstore's stock index holding the same multihashes.
func (b *bench) case5() ([]row, error) {
	pieces, perPiece := b.cfg.lookupPieces, b.cfg.lookupBlocks
	logf("case 5: GetPiecesContainingBlock, %d pieces of %d blocks", pieces, perPiece)
	dir := filepath.Join(b.work, "lookup-pieces")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	// The smallest piece size that holds the blocks.
	size := uint64(128)
	for cargen.UnpaddedSize(size) < uint64(perPiece*(64+40)+256) {
		size *= 2
	}
	store := &testkit.Files{}
	var sample []cid.Cid
	rng := rand.New(rand.NewPCG(5, 5))
	for i := 0; i < pieces; i++ {
		p, err := cargen.Write(filepath.Join(dir, fmt.Sprintf("p%05d.car", i)),
			cargen.Spec{PieceSize: size, BlockSize: 64, MaxBlocks: perPiece, Seed: uint64(1_000_000 + i), RecordCIDs: true})
		if err != nil {
			return nil, err
		}
		for j := 0; j < 10; j++ {
			sample = append(sample, p.CIDs[rng.IntN(len(p.CIDs))])
		}
		p.CIDs = nil
		store.Add(p.CID, p.Path, uint64(p.Size))
	}

	w, root, err := b.openWrapper(store, 0)
	if err != nil {
		return nil, err
	}
	defer closeWrapper(w, root)
	ctx := context.Background()
	// RegisterShardSync returns once lookups find the piece (RegisterShard's
	// result comes when it is available, before its top-level entries).
	start := time.Now()
	todo := make(chan cid.Cid)
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			var first error
			for pc := range todo {
				if err := w.RegisterShardSync(ctx, pc, "", true); err != nil && first == nil {
					first = err
				}
			}
			errs <- first
		}()
	}
	for _, pc := range store.Pieces() {
		todo <- pc
	}
	close(todo)
	for range 8 {
		if err := <-errs; err != nil {
			return nil, err
		}
	}
	regTook := time.Since(start)

	lookups := make([]cid.Cid, b.cfg.lookups)
	for i := range lookups {
		lookups[i] = sample[rng.IntN(len(sample))]
	}
	dw := make([]time.Duration, 0, len(lookups))
	for _, c := range lookups {
		t := time.Now()
		got, err := w.GetPiecesContainingBlock(c)
		dw = append(dw, time.Since(t))
		if err != nil || len(got) != 1 {
			return nil, fmt.Errorf("lookup %s: %v pieces, %v", c, len(got), err)
		}
	}

	// The stock index, filled with the same multihashes, shard by shard.
	ldb, done, err := b.openLevelDB("stock-lookup")
	if err != nil {
		return nil, err
	}
	defer done()
	stock := index.NewInverted(ldb)
	start = time.Now()
	for _, pc := range store.Pieces() {
		idx, err := w.GetIterableIndexForPiece(pc)
		if err != nil {
			return nil, err
		}
		if err := stock.AddMultihashesForShard(ctx, iterable{idx}, shard.KeyFromCID(pc)); err != nil {
			return nil, err
		}
	}
	stockBuild := time.Since(start)
	st := make([]time.Duration, 0, len(lookups))
	for _, c := range lookups {
		t := time.Now()
		got, err := stock.GetShardsForMultihash(ctx, c.Hash())
		st = append(st, time.Since(t))
		if err != nil || len(got) != 1 {
			return nil, fmt.Errorf("stock lookup %s: %v pieces, %v", c, len(got), err)
		}
	}
	logf("case 5: registered %d pieces in %s (%.0f/s); stock index filled in %s", pieces, regTook.Round(time.Millisecond),
		float64(pieces)/regTook.Seconds(), stockBuild.Round(time.Millisecond))
	what := fmt.Sprintf("GetPiecesContainingBlock, %s pieces / %s multihashes, %s lookups: ", commas(pieces), commas(pieces*perPiece), commas(len(lookups)))
	return []row{
		{Case: "5", What: what + "median, vs the stock index's own lookup",
			Unit: seconds, Dagwrap: median(dw).Seconds(), Baseline: median(st).Seconds()},
		{Case: "5", What: what + "p99, vs the stock index's own lookup",
			Unit: seconds, Dagwrap: percentile(dw, 99).Seconds(), Baseline: percentile(st, 99).Seconds(),
			Target: "< 1 ms", met: valueAtMost(0.001)},
	}, nil
}

// iterable adapts a CAR index to the dagstore's multihash iterator.
type iterable struct{ idx carindex.IterableIndex }

func (it iterable) ForEach(fn func(multihash.Multihash) error) error {
	return it.idx.ForEach(func(mh multihash.Multihash, _ uint64) error { return fn(mh) })
}

// case7 fills dagwrap's top-level index and the stock one with the same
// pieces, a share of whose multihashes is common to all of them.
func (b *bench) case7() ([]row, error) {
	pieces, perPiece := b.cfg.tliPieces, b.cfg.tliMHs
	shared := int(float64(perPiece) * b.cfg.tliShared)
	logf("case 7: top-level index, %d pieces of %d multihashes, %d in every piece", pieces, perPiece, shared)
	common := make(cargen.Multihashes, shared)
	for i := range common {
		common[i] = cargen.CounterMultihash(1<<62 + uint64(i))
	}
	keys := make([]shard.Key, pieces)
	rng := rand.New(rand.NewPCG(7, 7))
	for i := range keys {
		keys[i] = shard.KeyFromCID(testkit.RandomPieceCID(rng))
	}
	mhsOf := func(p int) cargen.Multihashes {
		l := append(make(cargen.Multihashes, 0, perPiece), common...)
		for j := shared; j < perPiece; j++ {
			l = append(l, cargen.CounterMultihash(uint64(p*perPiece+j)))
		}
		return l
	}
	// Lookups drawn from every (piece, multihash) pair: a share of them hit
	// the common multihashes, which every piece holds.
	lookups := make([]multihash.Multihash, b.cfg.lookups)
	wantPieces := make([]int, len(lookups))
	for i := range lookups {
		p, j := rng.IntN(pieces), rng.IntN(perPiece)
		if j < shared {
			lookups[i], wantPieces[i] = common[j], pieces
		} else {
			lookups[i], wantPieces[i] = cargen.CounterMultihash(uint64(p*perPiece+j)), 1
		}
	}

	run := func(name string, mk func(ds.Batching) index.Inverted) (time.Duration, []time.Duration, error) {
		store, done, err := b.openLevelDB(name)
		if err != nil {
			return 0, nil, err
		}
		defer done()
		idx := mk(store)
		if c, ok := idx.(io.Closer); ok {
			defer c.Close()
		}
		ctx := context.Background()
		start := time.Now()
		for p := 0; p < pieces; p++ {
			if err := idx.AddMultihashesForShard(ctx, mhsOf(p), keys[p]); err != nil {
				return 0, nil, err
			}
			if p > 0 && p%(max(pieces/10, 1)) == 0 {
				logf("case 7: %s index: %d pieces in %s", name, p, time.Since(start).Round(time.Millisecond))
			}
		}
		insert := time.Since(start)
		lat := make([]time.Duration, 0, len(lookups))
		for i, mh := range lookups {
			t := time.Now()
			got, err := idx.GetShardsForMultihash(ctx, mh)
			lat = append(lat, time.Since(t))
			if err != nil || len(got) != wantPieces[i] {
				return 0, nil, fmt.Errorf("%s: lookup: %d pieces, want %d (%v)", name, len(got), wantPieces[i], err)
			}
		}
		return insert, lat, nil
	}
	dwInsert, dwLat, err := run("dagwrap-tli", dagwrap.NewTopLevelIndex)
	if err != nil {
		return nil, err
	}
	stInsert, stLat, err := run("stock-tli", func(d ds.Batching) index.Inverted { return index.NewInverted(d) })
	if err != nil {
		return nil, err
	}
	what := fmt.Sprintf("top-level index, %s pieces x %s multihashes (%.0f%% in every piece): ", commas(pieces), commas(perPiece), 100*b.cfg.tliShared)
	return []row{
		{Case: "7", What: what + "total insert time, dagwrap vs stock index.NewInverted",
			Unit: seconds, Dagwrap: dwInsert.Seconds(), Baseline: stInsert.Seconds(),
			Target: "ratio ≤ 0.1 (10x faster)", met: ratioAtMost(0.1)},
		{Case: "7", What: what + "lookup median",
			Unit: seconds, Dagwrap: median(dwLat).Seconds(), Baseline: median(stLat).Seconds()},
		{Case: "7", What: what + "lookup p99",
			Unit: seconds, Dagwrap: percentile(dwLat, 99).Seconds(), Baseline: percentile(stLat, 99).Seconds()},
	}, nil
}

// case8 measures the Go heap one loaded shard holds, against go-car's
// read-only blockstore over the same file and index.
func (b *bench) case8(p cargen.Piece, label string) ([]row, error) {
	logf("case 8: heap of one loaded shard, %s", label)
	idxPath, err := b.floorIndex(p)
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	blk := p.CIDs[len(p.CIDs)/2]

	h0 := heapAlloc()
	fbs, done, err := testkit.FloorBlockstore(p.Path, idxPath)
	if err != nil {
		return nil, err
	}
	if _, err := fbs.Get(ctx, blk); err != nil {
		done()
		return nil, err
	}
	floor := int64(heapAlloc()) - int64(h0)
	runtime.KeepAlive(fbs)
	done()

	w, root, err := b.openWrapper(b.store, 0)
	if err != nil {
		return nil, err
	}
	defer closeWrapper(w, root)
	if err := w.RegisterShardSync(ctx, p.CID, "", true); err != nil {
		return nil, err
	}
	h0 = heapAlloc()
	_ = resetPeakRSS()
	rss0, _ := procStatusBytes("VmRSS")
	bs, err := w.LoadShard(ctx, p.CID)
	if err != nil {
		return nil, err
	}
	if _, err := bs.Get(ctx, blk); err != nil {
		_ = bs.Close()
		return nil, err
	}
	held := int64(heapAlloc()) - int64(h0)
	rss1, _ := procStatusBytes("VmRSS")
	runtime.KeepAlive(bs)
	_ = bs.Close()
	return []row{
		{Case: "8", What: "Go heap held by one loaded shard, " + label + ": LoadShard vs go-car read-only blockstore with its index",
			Unit: bytesU, Dagwrap: float64(max(held, 0)), Baseline: float64(max(floor, 0)), Target: "≤ 2 MiB", met: valueAtMost(2 << 20)},
		{Case: "8", What: "process RSS growth by one loaded shard and its first block, " + label + " (mapped index pages included)",
			Unit: bytesU, Dagwrap: float64(max(int64(rss1)-int64(rss0), 0)), Baseline: none},
	}, nil
}
