package dagwrap

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
)

func state(t *testing.T, w *Wrapper, pc cid.Cid) dagstore.ShardState {
	t.Helper()
	info, err := w.ShardInfo(pc)
	if err != nil {
		t.Fatal(err)
	}
	return info.State
}

// Also pins InitShard returning only once lookups find the piece's blocks:
// the top-level entries are written after the shard is available, and the
// lookups below failed about 1 run in 5 under load until InitShard waited.
func TestInitShardIndexesLazyShard(t *testing.T) {
	skipOnPG(t, "checks the index file under the root")
	api := newFakeAPI(true)
	w := openWrapper(t, t.TempDir(), api)
	ctx := context.Background()
	pc := api.addPiece(t, "testdata/sample.car")
	if err := w.RegisterShardSync(ctx, pc, "", false); err != nil {
		t.Fatal(err)
	}
	if st, err := w.IndexStats(pc); err != nil || st.Indexed {
		t.Fatalf("stats of a lazy shard: %+v %v, want not indexed", st, err)
	}
	if err := w.InitShard(ctx, pc); err != nil {
		t.Fatal(err)
	}
	if s := state(t, w, pc); s != dagstore.ShardStateAvailable && s != dagstore.ShardStateServing {
		t.Fatalf("state after InitShard: %v", s)
	}
	want := carBlocks(t, "testdata/sample.car")
	for _, b := range want {
		if got, err := w.GetPiecesContainingBlock(b.Cid()); err != nil || !got[0].Equals(pc) {
			t.Fatalf("lookup of %s after init: %v %v", b.Cid(), got, err)
		}
	}
	st, err := w.IndexStats(pc)
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(w.cfg.RootDir, indexDir, pc.String()+"*"))
	if len(files) != 1 {
		t.Fatalf("index files for the piece: %v", files)
	}
	fi, err := os.Stat(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if !st.Indexed || st.Blocks != len(want) || st.IndexSize != fi.Size() {
		t.Fatalf("stats %+v, want %d blocks and %d bytes", st, len(want), fi.Size())
	}
	// Initialising an available shard is a no-op.
	fetches := api.fetches.Load()
	if err := w.InitShard(ctx, pc); err != nil {
		t.Fatal(err)
	}
	if api.fetches.Load() != fetches {
		t.Fatal("InitShard of an available shard fetched the piece")
	}
}

func TestAdminCallsRejectBadInput(t *testing.T) {
	api := newFakeAPI(true)
	root := t.TempDir()
	w := openWrapper(t, root, api)
	ctx := context.Background()
	unknown := pieceCID(t, make([]byte, 300))
	if err := w.InitShard(ctx, unknown); !errors.Is(err, ErrShardUnknown) || !strings.Contains(err.Error(), unknown.String()) {
		t.Fatalf("InitShard of an unknown piece: %v", err)
	}
	if err := w.RecoverShard(ctx, unknown); !errors.Is(err, ErrShardUnknown) || !strings.Contains(err.Error(), unknown.String()) {
		t.Fatalf("RecoverShard of an unknown piece: %v", err)
	}
	if _, err := w.IndexStats(unknown); !errors.Is(err, ErrShardUnknown) {
		t.Fatalf("IndexStats of an unknown piece: %v", err)
	}
	if err := w.InitShard(ctx, cid.Undef); !errors.Is(err, ErrUndefinedCID) {
		t.Fatalf("InitShard(Undef): %v", err)
	}
	if err := w.RecoverShard(ctx, cid.Undef); !errors.Is(err, ErrUndefinedCID) {
		t.Fatalf("RecoverShard(Undef): %v", err)
	}
	if _, err := w.IndexStats(cid.Undef); !errors.Is(err, ErrUndefinedCID) {
		t.Fatalf("IndexStats(Undef): %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	pc := pieceCID(t, make([]byte, 100))
	if err := w.InitShard(ctx, pc); !errors.Is(err, ErrClosed) {
		t.Fatalf("InitShard after Close: %v", err)
	}
	if _, err := w.InitAllShards(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("InitAllShards after Close: %v", err)
	}
	if err := w.RecoverShard(ctx, pc); !errors.Is(err, ErrClosed) {
		t.Fatalf("RecoverShard after Close: %v", err)
	}
	if _, err := w.RecoverAllShards(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("RecoverAllShards after Close: %v", err)
	}
	if _, err := w.GC(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("GC after Close: %v", err)
	}
	if _, err := w.IndexStats(pc); !errors.Is(err, ErrClosed) {
		t.Fatalf("IndexStats after Close: %v", err)
	}
}

// initAllFixture registers n distinct good pieces lazily, plus a sealed one
// and a corrupt one.
func initAllFixture(t *testing.T, api *fakeAPI, w *Wrapper, n int) (good []cid.Cid, sealed, corrupt cid.Cid) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < n; i++ {
		pc := api.addPiece(t, makeCAR(t, int64(100+i), 10))
		good = append(good, pc)
		if err := w.RegisterShardSync(ctx, pc, "", false); err != nil {
			t.Fatal(err)
		}
	}
	sealed = api.addPiece(t, "testdata/padded.car")
	api.setSealed(sealed, true)
	corrupt = api.addPiece(t, "testdata/corrupt.car")
	for _, pc := range []cid.Cid{sealed, corrupt} {
		if err := w.RegisterShardSync(ctx, pc, "", false); err != nil {
			t.Fatal(err)
		}
	}
	return good, sealed, corrupt
}

func TestInitAllShardsBoundsConcurrencyAndSkipsSealed(t *testing.T) {
	api := newFakeAPI(true)
	w := openWrapper(t, t.TempDir(), api)
	ctx := context.Background()
	good, sealed, corrupt := initAllFixture(t, api, w, 6)

	const concurrency = 2
	api.gate = make(chan struct{})
	var mu sync.Mutex
	var seen []InitProgress
	type outcome struct {
		res InitAllResult
		err error
	}
	out := make(chan outcome, 1)
	go func() {
		res, err := w.InitAllShards(ctx, InitConcurrency(concurrency), OnInitProgress(func(p InitProgress) {
			mu.Lock()
			seen = append(seen, p)
			mu.Unlock()
		}))
		out <- outcome{res, err}
	}()
	// Both workers are parked in a fetch: the overlap is real.
	await(t, "two fetches in flight", api.fetched.reached(concurrency))
	close(api.gate)
	o := <-out

	if peak := api.calls.peak(); peak > concurrency {
		t.Fatalf("%d MinerAPI calls at once, want at most %d", peak, concurrency)
	}
	if len(o.res.Initialized) != len(good) {
		t.Fatalf("initialized %v, want %d pieces", o.res.Initialized, len(good))
	}
	if len(o.res.Skipped) != 1 || !o.res.Skipped[0].Equals(sealed) {
		t.Fatalf("skipped %v, want the sealed piece %s", o.res.Skipped, sealed)
	}
	if _, ok := o.res.Failed[corrupt]; !ok || len(o.res.Failed) != 1 {
		t.Fatalf("failed %v, want only the corrupt piece", o.res.Failed)
	}
	if o.err == nil || !strings.Contains(o.err.Error(), corrupt.String()) {
		t.Fatalf("error %v does not name the corrupt piece", o.err)
	}
	if api.unseals.peak() != 0 {
		t.Fatal("a sealed piece was unsealed without IncludeSealed")
	}
	for _, pc := range good {
		if s := state(t, w, pc); s != dagstore.ShardStateAvailable && s != dagstore.ShardStateServing {
			t.Fatalf("piece %s is %v after InitAllShards", pc, s)
		}
	}
	if s := state(t, w, sealed); s != dagstore.ShardStateNew {
		t.Fatalf("sealed piece is %v, want untouched", s)
	}

	mu.Lock()
	total := len(good) + 2
	if len(seen) != total+1 || seen[0] != (InitProgress{Total: total}) {
		t.Fatalf("progress calls %v, want a first zero call and one per piece", seen)
	}
	for i := 1; i < len(seen); i++ {
		p := seen[i]
		if p.Done+p.Failed+p.Skipped != i || p.Total != total {
			t.Fatalf("progress %d = %+v", i, p)
		}
	}
	if last := seen[len(seen)-1]; last != (InitProgress{Done: len(good), Failed: 1, Skipped: 1, Total: total}) {
		t.Fatalf("last progress %+v", last)
	}
	mu.Unlock()

	// With IncludeSealed the sealed piece is unsealed and indexed; the
	// corrupt one is errored now, so it is no longer a candidate.
	res, err := w.InitAllShards(ctx, IncludeSealed(true))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Initialized) != 1 || !res.Initialized[0].Equals(sealed) {
		t.Fatalf("second run initialized %v, want %s", res.Initialized, sealed)
	}
	if api.unseals.peak() != 1 {
		t.Fatalf("unseals %d, want 1", api.unseals.peak())
	}
	if err := w.InitShard(ctx, corrupt); !errors.Is(err, ErrShardErrored) {
		t.Fatalf("InitShard of an errored shard: %v, want ErrShardErrored", err)
	}
}

func TestInitAllShardsStopsWithContext(t *testing.T) {
	api := newFakeAPI(true)
	w := openWrapper(t, t.TempDir(), api)
	var pieces []cid.Cid
	for i := 0; i < 4; i++ {
		pc := api.addPiece(t, makeCAR(t, int64(200+i), 5))
		if err := w.RegisterShardSync(context.Background(), pc, "", false); err != nil {
			t.Fatal(err)
		}
		pieces = append(pieces, pc)
	}
	api.gate = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan error, 1)
	var res InitAllResult
	go func() {
		var err error
		res, err = w.InitAllShards(ctx, InitConcurrency(1))
		out <- err
	}()
	await(t, "a fetch in flight", api.fetched.reached(1))
	cancel()
	err := <-out
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("InitAllShards after cancel: %v, want context.Canceled", err)
	}
	if len(res.Initialized)+len(res.Failed) != 0 {
		t.Fatalf("result after cancel: %+v", res)
	}
	// The shard being initialised finishes in the background; nothing else
	// was started.
	close(api.gate)
	countAvailable := func() (n int) {
		for _, pc := range pieces {
			if state(t, w, pc) == dagstore.ShardStateAvailable {
				n++
			}
		}
		return n
	}
	waitFor(t, "the started shard to become available", func() bool { return countAvailable() == 1 })
	for _, pc := range pieces {
		if s := state(t, w, pc); s != dagstore.ShardStateNew && s != dagstore.ShardStateAvailable {
			t.Fatalf("piece %s is %v, want new or available", pc, s)
		}
	}
	if n := countAvailable(); n != 1 {
		t.Fatalf("%d pieces initialised after cancel, want the 1 started", n)
	}
}

// breakPiece overwrites the piece's file with corrupt.car (same length) and
// returns a func that restores it.
func breakPiece(t *testing.T, api *fakeAPI, pc cid.Cid) (repair func()) {
	t.Helper()
	p, err := api.path(pc)
	if err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(p)
	bad, _ := os.ReadFile("testdata/corrupt.car")
	if len(good) != len(bad) {
		t.Fatal("breakPiece needs a piece of corrupt.car's length")
	}
	if err := os.WriteFile(p, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := os.WriteFile(p, good, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// registerBroken registers pieces whose files are corrupt and waits until
// the automatic recovery has failed too (one fetch to register, one to
// recover), so that the shards stay errored.
func registerBroken(t *testing.T, api *fakeAPI, w *Wrapper, pieces ...cid.Cid) {
	t.Helper()
	start := api.fetches.Load()
	for _, pc := range pieces {
		if err := w.RegisterShardSync(context.Background(), pc, "", true); err == nil {
			t.Fatalf("registering corrupt piece %s succeeded", pc)
		}
	}
	for _, pc := range pieces {
		if info, err := w.AwaitRecovery(context.Background(), pc); err != nil || info.State != dagstore.ShardStateErrored {
			t.Fatalf("piece %s after its automatic recovery: %+v %v, want errored", pc, info, err)
		}
	}
	if n := api.fetches.Load() - start; n != int32(2*len(pieces)) {
		t.Fatalf("%d fetches, want %d (a registration and a recovery each)", n, 2*len(pieces))
	}
}

func TestRecoverShardReindexesRepairedPiece(t *testing.T) {
	api := newFakeAPI(true)
	w := openWrapper(t, t.TempDir(), api)
	ctx := context.Background()
	pc := api.addPiece(t, "testdata/sample.car")
	repair := breakPiece(t, api, pc)
	registerBroken(t, api, w, pc)

	if err := w.RecoverShard(ctx, pc); err == nil || !strings.Contains(err.Error(), pc.String()) {
		t.Fatalf("recovering a still-corrupt piece: %v, want an error naming it", err)
	}
	if s := state(t, w, pc); s != dagstore.ShardStateErrored {
		t.Fatalf("state after failed recovery: %v", s)
	}
	repair()
	if err := w.RecoverShard(ctx, pc); err != nil {
		t.Fatal(err)
	}
	assertServes(t, w, pc, "testdata/sample.car")
	b := carBlocks(t, "testdata/sample.car")[7]
	if got, err := w.GetPiecesContainingBlock(b.Cid()); err != nil || !got[0].Equals(pc) {
		t.Fatalf("lookup after recovery: %v %v", got, err)
	}
	if err := w.RecoverShard(ctx, pc); !errors.Is(err, ErrShardNotErrored) {
		t.Fatalf("recovering a healthy shard: %v, want ErrShardNotErrored", err)
	}
}

func TestRecoverAllShards(t *testing.T) {
	api := newFakeAPI(true)
	w := openWrapper(t, t.TempDir(), api)
	ctx := context.Background()
	healthy := api.addPiece(t, "testdata/padded.car")
	if err := w.RegisterShardSync(ctx, healthy, "", true); err != nil {
		t.Fatal(err)
	}
	// Two distinct pieces of corrupt.car's length: sample.car, and
	// sample.car with its last byte changed (a different piece CID).
	a := api.addPiece(t, "testdata/sample.car")
	b, _ := os.ReadFile("testdata/sample.car")
	b[len(b)-1] ^= 0xff
	other := filepath.Join(t.TempDir(), "other.car")
	if err := os.WriteFile(other, b, 0o644); err != nil {
		t.Fatal(err)
	}
	bPiece := api.addPiece(t, other)
	repairA := breakPiece(t, api, a)
	breakPiece(t, api, bPiece)
	registerBroken(t, api, w, a, bPiece)

	repairA()
	res, err := w.RecoverAllShards(ctx)
	if len(res.Recovered) != 1 || !res.Recovered[0].Equals(a) {
		t.Fatalf("recovered %v, want [%s]", res.Recovered, a)
	}
	if _, ok := res.Failed[bPiece]; !ok || len(res.Failed) != 1 {
		t.Fatalf("failed %v, want only %s", res.Failed, bPiece)
	}
	if err == nil || !strings.Contains(err.Error(), bPiece.String()) {
		t.Fatalf("error %v does not name the piece still broken", err)
	}
	assertServes(t, w, a, "testdata/sample.car")
	if s := state(t, w, healthy); s != dagstore.ShardStateAvailable {
		t.Fatalf("healthy piece is %v", s)
	}
}

func TestRecoverAllShardsWithNothingErrored(t *testing.T) {
	api := newFakeAPI(true)
	w := openWrapper(t, t.TempDir(), api)
	pc := api.addPiece(t, "testdata/sample.car")
	if err := w.RegisterShardSync(context.Background(), pc, "", true); err != nil {
		t.Fatal(err)
	}
	res, err := w.RecoverAllShards(context.Background())
	if err != nil || len(res.Recovered) != 0 || len(res.Failed) != 0 {
		t.Fatalf("RecoverAllShards with nothing errored: %+v %v", res, err)
	}
}

func TestGCReportsReclaimedTransients(t *testing.T) {
	api := newFakeAPI(false) // sequential: pieces are copied into transients
	root := t.TempDir()
	w := openWrapper(t, root, api, Config{GCInterval: time.Hour})
	ctx := context.Background()
	var pieces []cid.Cid
	var want int64
	for _, car := range fixtures {
		pc := api.addPiece(t, car)
		if err := w.RegisterShardSync(ctx, pc, "", true); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(car)
		if err != nil {
			t.Fatal(err)
		}
		want += fi.Size()
		pieces = append(pieces, pc)
	}
	for _, pc := range pieces {
		if _, err := os.Stat(transientPath(root, shard.KeyFromCID(pc))); err != nil {
			t.Fatalf("no transient for %s before GC: %v", pc, err)
		}
	}
	res, err := w.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Reclaimed) != len(pieces) || res.Bytes != want {
		t.Fatalf("GC reclaimed %+v (%d bytes), want %d pieces, %d bytes", res.Reclaimed, res.Bytes, len(pieces), want)
	}
	for _, pc := range pieces {
		if _, err := os.Stat(transientPath(root, shard.KeyFromCID(pc))); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("transient of %s still there: %v", pc, err)
		}
	}
	res, err = w.GC(ctx)
	if err != nil || len(res.Reclaimed) != 0 || res.Bytes != 0 {
		t.Fatalf("second GC: %+v %v, want nothing reclaimed", res, err)
	}
	// The pieces are still served: the transient is fetched again.
	assertServes(t, w, pieces[0], fixtures[0])
}

func TestStateNamesRoundTrip(t *testing.T) {
	for _, s := range []dagstore.ShardState{dagstore.ShardStateNew, dagstore.ShardStateInitializing,
		dagstore.ShardStateAvailable, dagstore.ShardStateServing, dagstore.ShardStateRecovering, dagstore.ShardStateErrored} {
		got, err := ParseState(StateName(s))
		if err != nil || got != s {
			t.Fatalf("ParseState(StateName(%v)) = %v, %v", s, got, err)
		}
	}
	if _, err := ParseState("broken"); err == nil || !strings.Contains(err.Error(), "broken") {
		t.Fatalf("ParseState of a bad name: %v", err)
	}
	if StateName(dagstore.ShardStateUnknown) != "unknown" {
		t.Fatal("unknown state name")
	}
}

func TestManualRecoveryRearmsAutomaticRecovery(t *testing.T) {
	api := newFakeAPI(true)
	w := openWrapper(t, t.TempDir(), api)
	pc := api.addPiece(t, "testdata/sample.car")
	api.failNext.Store(2) // the registration and its automatic recovery
	if err := w.RegisterShardSync(context.Background(), pc, "", true); err == nil {
		t.Fatal("registration with a failing fetch succeeded")
	}
	if info, err := w.AwaitRecovery(context.Background(), pc); err != nil || info.State != dagstore.ShardStateErrored || api.fetches.Load() != 2 {
		t.Fatalf("after the automatic recovery: %+v %v, %d fetches; want errored after 2", info, err, api.fetches.Load())
	}
	if err := w.RecoverShard(context.Background(), pc); err != nil {
		t.Fatal(err)
	}
	// It fails again later: it gets a new automatic recovery.
	api.failNext.Store(1)
	if _, err := w.LoadShard(context.Background(), pc); err == nil {
		t.Fatal("load with a failing fetch succeeded")
	}
	if info, err := w.AwaitRecovery(context.Background(), pc); err != nil || info.State != dagstore.ShardStateAvailable {
		t.Fatalf("after the re-armed automatic recovery: %+v %v, want available", info, err)
	}
}

// AwaitRecovery is the completion of an automatic recovery: it answers at
// once for a shard with none due, names an unknown piece, waits for the
// recovery a failure caller saw queues (here: it fetched again, and the
// shard is available), and fails with ErrClosed after Close.
func TestAwaitRecovery(t *testing.T) {
	ctx := context.Background()
	api := newFakeAPI(true)
	w := openWrapper(t, t.TempDir(), api)
	good := api.addPiece(t, "testdata/sample.car")
	if err := w.RegisterShardSync(ctx, good, "", true); err != nil {
		t.Fatal(err)
	}
	if info, err := w.AwaitRecovery(ctx, good); err != nil || info.State != dagstore.ShardStateAvailable {
		t.Fatalf("a shard that never failed: %+v %v", info, err)
	}
	unknown := pieceCID(t, bytes.Repeat([]byte("a piece nobody registered "), 8))
	if _, err := w.AwaitRecovery(ctx, unknown); !errors.Is(err, ErrShardUnknown) || !strings.Contains(err.Error(), unknown.String()) {
		t.Fatalf("unknown piece: %v, want ErrShardUnknown naming it", err)
	}
	flaky := api.addPiece(t, "testdata/padded.car")
	api.failNext.Store(1)
	if err := w.RegisterShardSync(ctx, flaky, "", true); err == nil {
		t.Fatal("registration with a failing fetch succeeded")
	}
	info, err := w.AwaitRecovery(ctx, flaky)
	if err != nil || info.State != dagstore.ShardStateAvailable || api.fetches.Load() != 3 {
		t.Fatalf("after the automatic recovery: %+v %v, %d fetches; want available after 3", info, err, api.fetches.Load())
	}
	assertServes(t, w, flaky, "testdata/padded.car")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.AwaitRecovery(ctx, flaky); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
}
