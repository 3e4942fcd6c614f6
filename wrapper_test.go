package dagwrap

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/filecoin-project/dagstore"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

var fixtures = []string{"testdata/sample.car", "testdata/padded.car"}

// assertServes checks that the piece's blockstore returns every block of the
// CAR with its exact bytes, and nothing else.
func assertServes(t *testing.T, w *Wrapper, pc cid.Cid, car string) {
	t.Helper()
	ctx := context.Background()
	bs, err := w.LoadShard(ctx, pc)
	if err != nil {
		t.Fatalf("load %s: %v", car, err)
	}
	defer bs.Close()
	want := carBlocks(t, car)
	for _, b := range want {
		got, err := bs.Get(ctx, b.Cid())
		if err != nil {
			t.Fatalf("%s: get %s: %v", car, b.Cid(), err)
		}
		if !bytes.Equal(got.RawData(), b.RawData()) {
			t.Fatalf("%s: block %s bytes differ", car, b.Cid())
		}
		if n, err := bs.GetSize(ctx, b.Cid()); err != nil || n != len(b.RawData()) {
			t.Fatalf("%s: size of %s = %d, %v; want %d", car, b.Cid(), n, err, len(b.RawData()))
		}
	}
	keys, err := bs.AllKeysChan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range keys {
		n++
	}
	if n != len(want) {
		t.Fatalf("%s: AllKeysChan gave %d keys, want %d", car, n, len(want))
	}
}

func TestNewCreatesLayoutAndCloseIsSafe(t *testing.T) {
	skipOnPG(t, "checks the embedded layout under the root (index/, toplevel/)")
	root := filepath.Join(t.TempDir(), "root")
	w, err := New(Config{RootDir: root}, newFakeAPI(true))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{datastoreDir, indexDir, transientsDir} {
		if st, err := os.Stat(filepath.Join(root, d)); err != nil || !st.IsDir() {
			t.Fatalf("%s not created: %v", d, err)
		}
	}
	if _, err := w.ListShards(); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("ListShards before Start: %v, want ErrNotStarted", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close before Start: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := w.Start(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close: %v, want ErrClosed", err)
	}
	if _, err := w.LoadShard(context.Background(), pieceCID(t, make([]byte, 128))); !errors.Is(err, ErrClosed) {
		t.Fatalf("LoadShard after Close: %v, want ErrClosed", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := New(Config{}, newFakeAPI(true)); err == nil {
		t.Fatal("New without RootDir succeeded")
	}
	if _, err := New(Config{RootDir: t.TempDir()}, nil); err == nil {
		t.Fatal("New without MinerAPI succeeded")
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{RootDir: file}, newFakeAPI(true)); err == nil || !strings.Contains(err.Error(), file) {
		t.Fatalf("New on a file root: %v, want an error naming it", err)
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{GCInterval: -5, MaxConcurrentIndex: -1, MaxConcurrentReadyFetches: -1}.withDefaults()
	if c.GCInterval != DefaultGCInterval || c.MaxConcurrentIndex != DefaultMaxConcurrentIndex ||
		c.MaxConcurrencyStorageCalls != DefaultMaxConcurrencyStorageCalls ||
		c.MaxConcurrentUnseals != DefaultMaxConcurrentUnseals || c.MaxConcurrentReadyFetches != 0 {
		t.Fatalf("defaults not applied: %+v", c)
	}
}

func TestTwoWrappersOnOneRoot(t *testing.T) {
	root := t.TempDir()
	w := openWrapper(t, root, newFakeAPI(true))
	if _, err := New(Config{RootDir: root}, newFakeAPI(true)); !errors.Is(err, ErrRootLocked) {
		t.Fatalf("second New on a held root: %v, want ErrRootLocked", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w2, err := New(Config{RootDir: root}, newFakeAPI(true))
	if err != nil {
		t.Fatalf("New after the first Wrapper closed: %v", err)
	}
	_ = w2.Close()
}

func TestRegisterAndLoadServeExactBytes(t *testing.T) {
	for _, random := range []bool{true, false} {
		for _, eager := range []bool{true, false} {
			name := map[bool]string{true: "random", false: "sequential"}[random] + map[bool]string{true: "/eager", false: "/lazy"}[eager]
			t.Run(name, func(t *testing.T) {
				api := newFakeAPI(random)
				w := openWrapper(t, t.TempDir(), api)
				for _, car := range fixtures {
					pc := api.addPiece(t, car)
					if err := w.RegisterShardSync(context.Background(), pc, "", eager); err != nil {
						t.Fatal(err)
					}
					info, err := w.ShardInfo(pc)
					if err != nil {
						t.Fatal(err)
					}
					wantState := dagstore.ShardStateNew
					if eager {
						wantState = dagstore.ShardStateAvailable
					}
					if info.State != wantState || info.Error != nil {
						t.Fatalf("%s after register: %v %v, want %v", car, info.State, info.Error, wantState)
					}
					assertServes(t, w, pc, car)
					// Close returns once the release is processed (pins
					// issue 10: a completion, not a polling loop).
					if info, _ := w.ShardInfo(pc); info.State != dagstore.ShardStateAvailable {
						t.Fatalf("%s after Close: %v, want available", car, info.State)
					}
					for _, b := range carBlocks(t, car) {
						pieces, err := w.GetPiecesContainingBlock(b.Cid())
						if err != nil || len(pieces) != 1 || !pieces[0].Equals(pc) {
							t.Fatalf("pieces of %s = %v, %v; want [%s]", b.Cid(), pieces, err, pc)
						}
					}
				}
			})
		}
	}
}

func TestRegisterAsyncDeliversResult(t *testing.T) {
	api := newFakeAPI(true)
	w := openWrapper(t, t.TempDir(), api)
	pc := api.addPiece(t, "testdata/sample.car")
	resch := make(chan dagstore.ShardResult) // unbuffered: delivery is forwarded
	if err := w.RegisterShard(context.Background(), pc, "", true, resch); err != nil {
		t.Fatal(err)
	}
	if res := <-resch; res.Error != nil || res.Key.String() != pc.String() {
		t.Fatalf("result %+v", res)
	}
	if err := w.RegisterShard(context.Background(), pc, "", true, nil); !errors.Is(err, ErrShardExists) {
		t.Fatalf("second register: %v, want ErrShardExists", err)
	}
}

func TestRegisterWithCarPathIndexesInPlace(t *testing.T) {
	for _, random := range []bool{true, false} {
		api := newFakeAPI(random)
		w := openWrapper(t, t.TempDir(), api)
		// The API does not know this piece: everything must come from the file.
		car := filepath.Join(t.TempDir(), "deal.car")
		b, _ := os.ReadFile("testdata/sample.car")
		if err := os.WriteFile(car, b, 0o644); err != nil {
			t.Fatal(err)
		}
		pc := pieceCID(t, b)
		if err := w.RegisterShardSync(context.Background(), pc, car, true); err != nil {
			t.Fatalf("random=%v: %v", random, err)
		}
		assertServes(t, w, pc, car)
		if api.fetches.Load() != 0 {
			t.Fatalf("random=%v: the API was fetched %d times", random, api.fetches.Load())
		}
		// GC never touches the caller's file.
		if _, err := w.GC(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(car); err != nil || !bytes.Equal(got, b) {
			t.Fatalf("random=%v: the caller's CAR was touched: %v", random, err)
		}
	}
	api := newFakeAPI(true)
	w := openWrapper(t, t.TempDir(), api)
	if err := w.RegisterShardSync(context.Background(), pieceCID(t, make([]byte, 100)), "/no/such.car", true); err == nil {
		t.Fatal("register with a missing CAR succeeded")
	}
}

func TestCorruptAndTruncatedPiecesFailAlone(t *testing.T) {
	api := newFakeAPI(true)
	w := openWrapper(t, t.TempDir(), api)
	good := api.addPiece(t, "testdata/sample.car")
	if err := w.RegisterShardSync(context.Background(), good, "", true); err != nil {
		t.Fatal(err)
	}
	sample, _ := os.ReadFile("testdata/sample.car")
	truncated := filepath.Join(t.TempDir(), "truncated.car")
	if err := os.WriteFile(truncated, sample[:70], 0o644); err != nil {
		t.Fatal(err)
	}
	for _, car := range []string{"testdata/corrupt.car", truncated} {
		pc := api.addPiece(t, car)
		err := w.RegisterShardSync(context.Background(), pc, "", true)
		if err == nil || !strings.Contains(err.Error(), pc.String()) {
			t.Fatalf("%s: register error %v does not name the piece", car, err)
		}
		info, err := w.ShardInfo(pc)
		if err != nil {
			t.Fatal(err)
		}
		// The automatic recovery may be re-indexing it; it fails again.
		if info.State != dagstore.ShardStateErrored && info.State != dagstore.ShardStateRecovering {
			t.Fatalf("%s: state %v, want errored", car, info.State)
		}
		if _, err := w.LoadShard(context.Background(), pc); err == nil || !strings.Contains(err.Error(), pc.String()) {
			t.Fatalf("%s: load error %v does not name the piece", car, err)
		}
		assertServes(t, w, good, "testdata/sample.car")
	}
}

func TestRestartKeepsShards(t *testing.T) {
	root := t.TempDir()
	api := newFakeAPI(true)
	w := openWrapper(t, root, api)
	var pieces []cid.Cid
	for _, car := range fixtures {
		pc := api.addPiece(t, car)
		pieces = append(pieces, pc)
		if err := w.RegisterShardSync(context.Background(), pc, "", true); err != nil {
			t.Fatal(err)
		}
	}
	lazy := api.addPiece(t, "testdata/sample.car") // same bytes, same piece
	if !lazy.Equals(pieces[0]) {
		t.Fatal("piece CID is not deterministic")
	}
	before, _ := w.ListShards()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	w2 := openWrapper(t, root, api)
	after, err := w2.ListShards()
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) || len(after) != 2 {
		t.Fatalf("after restart %d shards, before %d", len(after), len(before))
	}
	for i := range after {
		if !after[i].PieceCID.Equals(before[i].PieceCID) || after[i].State != dagstore.ShardStateAvailable {
			t.Fatalf("shard %d: %+v, before %+v", i, after[i], before[i])
		}
	}
	for i, car := range fixtures {
		assertServes(t, w2, pieces[i], car)
		b := carBlocks(t, car)[3]
		if got, err := w2.GetPiecesContainingBlock(b.Cid()); err != nil || !got[0].Equals(pieces[i]) {
			t.Fatalf("lookup after restart: %v %v", got, err)
		}
	}
}

func TestLoadShardRegistersUnknownPiece(t *testing.T) {
	api := newFakeAPI(false)
	w := openWrapper(t, t.TempDir(), api)
	pc := api.addPiece(t, "testdata/padded.car")
	if _, err := w.ShardInfo(pc); !errors.Is(err, ErrShardUnknown) {
		t.Fatalf("ShardInfo of an unregistered piece: %v", err)
	}
	assertServes(t, w, pc, "testdata/padded.car")
	if info, err := w.ShardInfo(pc); err != nil || (info.State != dagstore.ShardStateAvailable && info.State != dagstore.ShardStateServing) {
		t.Fatalf("after load: %+v %v", info, err)
	}
	if _, err := w.LoadShard(context.Background(), pieceCID(t, make([]byte, 200))); err == nil {
		t.Fatal("loading a piece the API does not have succeeded")
	}
}

func TestCancelledLoadLeaksNothing(t *testing.T) {
	fds := openFDs(t)
	api := newFakeAPI(true)
	api.gate = make(chan struct{})
	w := openWrapper(t, t.TempDir(), api)
	pc := api.addPiece(t, "testdata/sample.car")
	if err := w.RegisterShardSync(context.Background(), pc, "", false); err != nil {
		t.Fatal(err)
	}

	const loads = 20
	errs := make(chan error, loads)
	ctx, cancel := context.WithCancel(context.Background())
	for i := 0; i < loads; i++ {
		go func() {
			_, err := w.LoadShard(ctx, pc)
			errs <- err
		}()
	}
	// Every load is parked; cancel them, then let the fetches through.
	cancel()
	for i := 0; i < loads; i++ {
		if err := <-errs; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled load: %v, want context.Canceled", err)
		}
	}
	close(api.gate)
	// The accessors arrive after their callers left; they must be closed.
	// Destroy waits for that itself (pins issue 10: a completion, not a
	// polling loop): it succeeds at once, with nothing for a caller to retry.
	if err := w.DestroyShardSync(context.Background(), pc); err != nil {
		t.Fatalf("destroy after cancelled loads: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := openFDs(t); n > fds {
		t.Fatalf("open files: %d before, %d after", fds, n)
	}
}

func TestDestroyRemovesEverything(t *testing.T) {
	for _, random := range []bool{true, false} {
		root := t.TempDir()
		api := newFakeAPI(random)
		w := openWrapper(t, root, api)
		pc := api.addPiece(t, "testdata/sample.car")
		other := api.addPiece(t, "testdata/padded.car")
		for _, p := range []cid.Cid{pc, other} {
			if err := w.RegisterShardSync(context.Background(), p, "", true); err != nil {
				t.Fatal(err)
			}
		}
		bs, err := w.LoadShard(context.Background(), pc)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.DestroyShardSync(context.Background(), pc); !errors.Is(err, ErrShardInUse) {
			t.Fatalf("destroy while loaded: %v, want ErrShardInUse", err)
		}
		_ = bs.Close()
		_ = bs.Close() // second Close is a no-op
		resch := make(chan dagstore.ShardResult, 1)
		if err := w.DestroyShard(context.Background(), pc, resch); err != nil {
			t.Fatal(err)
		}
		if res := <-resch; res.Error != nil {
			t.Fatal(res.Error)
		}
		if _, err := os.Stat(filepath.Join(root, indexDir, pc.String()+".full.idx")); !os.IsNotExist(err) {
			t.Fatalf("index file left behind: %v", err)
		}
		if ents, _ := os.ReadDir(filepath.Join(root, transientsDir)); len(ents) > 1 {
			t.Fatalf("transients left behind: %v", ents)
		}
		blk := carBlocks(t, "testdata/sample.car")[0].Cid()
		if _, err := w.GetPiecesContainingBlock(blk); !errors.Is(err, ErrBlockNotFound) {
			t.Fatalf("lookup after destroy: %v, want ErrBlockNotFound", err)
		}
		if err := w.DestroyShard(context.Background(), pc, nil); !errors.Is(err, ErrShardUnknown) {
			t.Fatalf("second destroy: %v, want ErrShardUnknown", err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		w2 := openWrapper(t, root, api)
		<-w2.reconciled
		if _, err := w2.ShardInfo(pc); !errors.Is(err, ErrShardUnknown) {
			t.Fatalf("destroyed shard after restart: %v", err)
		}
		if _, err := w2.GetPiecesContainingBlock(blk); !errors.Is(err, ErrBlockNotFound) {
			t.Fatalf("lookup after restart: %v", err)
		}
		assertServes(t, w2, other, "testdata/padded.car")
	}
}

func TestUndefinedCIDsAreErrors(t *testing.T) {
	w := openWrapper(t, t.TempDir(), newFakeAPI(true))
	ctx := context.Background()
	checks := map[string]error{
		"RegisterShard":     w.RegisterShard(ctx, cid.Undef, "", true, nil),
		"RegisterShardSync": w.RegisterShardSync(ctx, cid.Undef, "", true),
		"DestroyShard":      w.DestroyShard(ctx, cid.Undef, nil),
		"DestroyShardSync":  w.DestroyShardSync(ctx, cid.Undef),
	}
	_, checks["LoadShard"] = w.LoadShard(ctx, cid.Undef)
	_, checks["GetPiecesContainingBlock"] = w.GetPiecesContainingBlock(cid.Undef)
	_, checks["GetIterableIndexForPiece"] = w.GetIterableIndexForPiece(cid.Undef)
	_, checks["ShardInfo"] = w.ShardInfo(cid.Undef)
	for name, err := range checks {
		if !errors.Is(err, ErrUndefinedCID) {
			t.Errorf("%s(cid.Undef): %v, want ErrUndefinedCID", name, err)
		}
	}
}

func TestIterableIndexForPiece(t *testing.T) {
	api := newFakeAPI(true)
	w := openWrapper(t, t.TempDir(), api)
	pc := api.addPiece(t, "testdata/sample.car")
	if _, err := w.GetIterableIndexForPiece(pc); !errors.Is(err, ErrShardUnknown) {
		t.Fatalf("index of an unknown piece: %v", err)
	}
	if err := w.RegisterShardSync(context.Background(), pc, "", true); err != nil {
		t.Fatal(err)
	}
	idx, err := w.GetIterableIndexForPiece(pc)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	_ = idx.ForEach(func(_ multihash.Multihash, _ uint64) error { n++; return nil })
	if want := len(carBlocks(t, "testdata/sample.car")); n != want {
		t.Fatalf("index has %d entries, want %d", n, want)
	}
}

func TestCloseWithEventsInFlightReturns(t *testing.T) {
	api := newFakeAPI(false)
	w := openWrapper(t, t.TempDir(), api)
	pc := api.addPiece(t, "testdata/sample.car")
	ctx := context.Background()
	if err := w.RegisterShardSync(ctx, pc, "", false); err != nil {
		t.Fatal(err)
	}
	// Far more events than the trace and failure buffers hold, still being
	// emitted when Close runs. A hang here fails the test by timeout.
	for i := 0; i < 300; i++ {
		if err := w.RegisterShard(ctx, pieceCID(t, bytes.Repeat([]byte{byte(i), byte(i >> 8)}, 64)), "", true, nil); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 20; i++ {
		go func() {
			if bs, err := w.LoadShard(ctx, pc); err == nil {
				_ = bs.Close()
			}
		}()
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestPieceShrunkAfterRegistrationIsAnError(t *testing.T) {
	for _, random := range []bool{true, false} {
		api := newFakeAPI(random)
		w := openWrapper(t, t.TempDir(), api)
		pc := api.addPiece(t, "testdata/padded.car")
		if err := w.RegisterShardSync(context.Background(), pc, "", false); err != nil {
			t.Fatal(err)
		}
		p, _ := api.path(pc)
		if err := os.Truncate(p, 30000); err != nil {
			t.Fatal(err)
		}
		_, err := w.LoadShard(context.Background(), pc)
		if err == nil || !strings.Contains(err.Error(), "truncated") || !strings.Contains(err.Error(), pc.String()) {
			t.Fatalf("random=%v: load of a shrunk piece: %v", random, err)
		}
	}
}

func TestTruncatedLastBlockFailsOnlyThatBlock(t *testing.T) {
	api := newFakeAPI(true)
	w := openWrapper(t, t.TempDir(), api)
	sample, _ := os.ReadFile("testdata/sample.car")
	car := filepath.Join(t.TempDir(), "cut.car")
	if err := os.WriteFile(car, sample[:len(sample)-10], 0o644); err != nil {
		t.Fatal(err)
	}
	pc := api.addPiece(t, car)
	bs, err := w.LoadShard(context.Background(), pc)
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	blks := carBlocks(t, "testdata/sample.car")
	for _, b := range blks[:len(blks)-1] {
		if got, err := bs.Get(context.Background(), b.Cid()); err != nil || !bytes.Equal(got.RawData(), b.RawData()) {
			t.Fatalf("intact block %s: %v", b.Cid(), err)
		}
	}
	last := blks[len(blks)-1].Cid()
	if _, err := bs.Get(context.Background(), last); err == nil || !strings.Contains(err.Error(), pc.String()) {
		t.Fatalf("truncated block: %v, want an error naming the piece", err)
	}
}

func TestFailedShardIsRecoveredAutomatically(t *testing.T) {
	api := newFakeAPI(true)
	w := openWrapper(t, t.TempDir(), api)
	pc := api.addPiece(t, "testdata/sample.car")
	api.failNext.Store(1)
	err := w.RegisterShardSync(context.Background(), pc, "", true)
	if err == nil || !strings.Contains(err.Error(), "storage briefly unavailable") {
		t.Fatalf("register with a failing fetch: %v", err)
	}
	// The recovery goroutine retries once, and the retry succeeds.
	if info, err := w.AwaitRecovery(context.Background(), pc); err != nil || info.State != dagstore.ShardStateAvailable {
		t.Fatalf("after the automatic recovery: %+v %v, want available", info, err)
	}
	assertServes(t, w, pc, "testdata/sample.car")
}

func TestGCReclaimsTransientsOnSchedule(t *testing.T) {
	root := t.TempDir()
	api := newFakeAPI(false) // sequential: pieces are copied to transients/
	w := openWrapper(t, root, api, Config{GCInterval: 5 * time.Millisecond})
	pc := api.addPiece(t, "testdata/padded.car")
	if err := w.RegisterShardSync(context.Background(), pc, "", true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "GC to delete the idle transient", func() bool {
		ents, _ := os.ReadDir(filepath.Join(root, transientsDir))
		return len(ents) == 0
	})
	assertServes(t, w, pc, "testdata/padded.car")
	// One fetch to index, one to serve again once GC deleted the copy.
	if n := api.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
}

func TestTornJournalTailIsDropped(t *testing.T) {
	root := t.TempDir()
	api := newFakeAPI(true)
	w := openWrapper(t, root, api)
	pc := api.addPiece(t, "testdata/sample.car")
	if err := w.RegisterShardSync(context.Background(), pc, "", true); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// What a kill in the middle of a journal write leaves: a chunk header
	// whose length runs past the end of the file.
	logs, err := filepath.Glob(filepath.Join(root, datastoreDir, "*.log"))
	if err != nil || len(logs) == 0 {
		t.Fatalf("no LevelDB journal: %v", err)
	}
	f, err := os.OpenFile(logs[len(logs)-1], os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte{1, 2, 3, 4, 0xff, 0x7f, 1}); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()

	w2 := openWrapper(t, root, api)
	assertServes(t, w2, pc, "testdata/sample.car")
}
