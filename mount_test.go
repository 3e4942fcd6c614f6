package dagwrap

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/index"
	"github.com/filecoin-project/dagstore/mount"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-datastore/query"
	levelds "github.com/ipfs/go-ds-leveldb"
	carv2 "github.com/ipld/go-car/v2"
	carindex "github.com/ipld/go-car/v2/index"
	ldbopts "github.com/syndtr/goleveldb/leveldb/opt"
)

func TestMountURLRoundTrip(t *testing.T) {
	api := newFakeAPI(true)
	pc := api.addPiece(t, "testdata/sample.car")
	reg := mount.NewRegistry()
	gated := newGatedAPI(context.Background(), api, 1, 1)
	if err := reg.Register(MountScheme, &pieceMount{API: gated}); err != nil {
		t.Fatal(err)
	}
	u, err := reg.Represent(&pieceMount{API: gated, PieceCid: pc})
	if err != nil {
		t.Fatal(err)
	}
	if want := "lotus://" + pc.String(); u.String() != want {
		t.Fatalf("URL %s, want %s", u, want)
	}
	m, err := reg.Instantiate(u)
	if err != nil {
		t.Fatal(err)
	}
	pm := m.(*pieceMount)
	if !pm.PieceCid.Equals(pc) || pm.API != gated {
		t.Fatalf("revived mount lost its piece or API: %+v", pm)
	}
	if info := pm.Info(); !info.AccessRandom || !info.AccessSeek || !info.AccessSequential {
		t.Fatalf("random-access API, mount info %+v", info)
	}
	// A sequential API's pieces are read from their copies in transients/.
	seq := &pieceMount{API: newGatedAPI(context.Background(), newFakeAPI(false), 1, 1), PieceCid: pc}
	if info := seq.Info(); !info.AccessRandom || !info.AccessSeek || !info.AccessSequential {
		t.Fatalf("sequential API, mount info %+v", info)
	}
}

func TestMountRejectsMalformedURLs(t *testing.T) {
	for _, raw := range []string{"lotus://", "lotus://not-a-cid", "lotus://bafy%zz", "lotus:///path-only"} {
		u, err := url.Parse(raw)
		if err != nil {
			// url.Parse itself refusing is the error path of checkMountURL
			if err := checkMountURL(raw); err == nil || !strings.Contains(err.Error(), "malformed mount URL") {
				t.Errorf("%q: %v", raw, err)
			}
			continue
		}
		err = (&pieceMount{}).Deserialize(u)
		if err == nil || !strings.Contains(err.Error(), "malformed mount URL") || !strings.Contains(err.Error(), raw[len("lotus://"):]) {
			t.Errorf("Deserialize(%q) = %v, want an error naming the URL", raw, err)
		}
	}
	if err := checkMountURL("file:///x.car"); err == nil {
		t.Error("a non-lotus scheme passed the check")
	}
}

// lotusRoot writes a root the way Lotus's dagstore wrapper left it: shard
// records under /dagstore, CARv2 indexes in index/, and the stock inverted
// index under /inverted/index, all in a LevelDB at datastore/.
func lotusRoot(t *testing.T, root string, pieces map[string]string, records map[string]dagstore.PersistedShard) {
	t.Helper()
	ldb, err := levelds.NewDatastore(filepath.Join(root, datastoreDir), &levelds.Options{
		Compression: ldbopts.NoCompression, Strict: ldbopts.StrictAll,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ldb.Close()
	repo, err := index.NewFSRepo(filepath.Join(root, indexDir))
	if err != nil {
		t.Fatal(err)
	}
	stock := index.NewInverted(ldb)
	ctx := context.Background()
	for key, car := range pieces {
		idx, err := carv2.GenerateIndexFromFile(car, carv2.ZeroLengthSectionAsEOF(true), carv2.StoreIdentityCIDs(true))
		if err != nil {
			t.Fatal(err)
		}
		k := shard.KeyFromString(key)
		if err := repo.AddFullIndex(k, idx); err != nil {
			t.Fatal(err)
		}
		if err := stock.AddMultihashesForShard(ctx, indexMultihashes{idx.(carindex.IterableIndex)}, k); err != nil {
			t.Fatal(err)
		}
	}
	for key, rec := range records {
		b, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		if err := ldb.Put(ctx, dagstore.StoreNamespace.ChildString(key), b); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLotusRootOpensUnchanged(t *testing.T) {
	skipOnPG(t, "converts the embedded top-level index of a Lotus or earlier root")
	root := t.TempDir()
	api := newFakeAPI(false)
	pc := api.addPiece(t, "testdata/sample.car")
	pc2 := api.addPiece(t, "testdata/padded.car")
	p, _ := api.path(pc)
	p2, _ := api.path(pc2)
	lotusRoot(t, root, map[string]string{pc.String(): p, pc2.String(): p2}, map[string]dagstore.PersistedShard{
		pc.String():  {Key: pc.String(), URL: "lotus://" + pc.String(), State: dagstore.ShardStateAvailable},
		pc2.String(): {Key: pc2.String(), URL: "lotus://" + pc2.String(), State: dagstore.ShardStateAvailable, Lazy: true},
	})

	w := openWrapper(t, root, api)
	shards, err := w.ListShards()
	if err != nil || len(shards) != 2 {
		t.Fatalf("shards of a Lotus root: %v %v", shards, err)
	}
	assertServes(t, w, pc, "testdata/sample.car")
	assertServes(t, w, pc2, "testdata/padded.car")
	blk := carBlocks(t, "testdata/sample.car")[5].Cid()
	// Served from the stock index while the rebuild runs, from ours after.
	if got, err := w.GetPiecesContainingBlock(blk); err != nil || !got[0].Equals(pc) {
		t.Fatalf("lookup on a Lotus root: %v %v", got, err)
	}
	<-w.reconciled
	res, err := w.st.store.Query(context.Background(), query.Query{Prefix: legacyPrefix, KeysOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if left, _ := res.Rest(); len(left) != 0 {
		t.Fatalf("%d stock index entries left after the rebuild", len(left))
	}
	if w.st.tli.converting.Load() {
		t.Fatal("still reading the stock index after the rebuild")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w2 := openWrapper(t, root, api)
	for i, car := range fixtures {
		want := []string{pc.String(), pc2.String()}[i]
		for _, b := range carBlocks(t, car) {
			got, err := w2.GetPiecesContainingBlock(b.Cid())
			if err != nil || len(got) != 1 || got[0].String() != want {
				t.Fatalf("lookup of %s after rebuild: %v %v", b.Cid(), got, err)
			}
		}
	}
}

func TestUnrestorableRecordIsReportedNotFatal(t *testing.T) {
	skipOnPG(t, "a Lotus root's indexes are files under the root")
	root := t.TempDir()
	api := newFakeAPI(true)
	good := api.addPiece(t, "testdata/sample.car")
	bad := api.addPiece(t, "testdata/padded.car")
	p, _ := api.path(good)
	lotusRoot(t, root, map[string]string{good.String(): p}, map[string]dagstore.PersistedShard{
		good.String(): {Key: good.String(), URL: "lotus://" + good.String(), State: dagstore.ShardStateAvailable},
		bad.String():  {Key: bad.String(), URL: "lotus://garbage", State: dagstore.ShardStateAvailable},
	})
	w := openWrapper(t, root, api)
	info, err := w.ShardInfo(bad)
	if err != nil {
		t.Fatal(err)
	}
	if info.State != dagstore.ShardStateErrored || info.Error == nil ||
		!strings.Contains(info.Error.Error(), "lotus://garbage") || !strings.Contains(info.Error.Error(), bad.String()) {
		t.Fatalf("unrestorable record: %+v", info)
	}
	if all, _ := w.ListShards(); len(all) != 2 {
		t.Fatalf("ListShards hides the unrestorable record: %v", all)
	}
	assertServes(t, w, good, "testdata/sample.car")
	<-w.reconciled

	// An operator removes it like any shard, and it stays gone.
	if err := w.DestroyShardSync(context.Background(), bad); err != nil {
		t.Fatalf("destroying an unrestorable record: %v", err)
	}
	if _, err := w.ShardInfo(bad); !errors.Is(err, ErrShardUnknown) {
		t.Fatalf("after destroy: %v, want ErrShardUnknown", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w2 := openWrapper(t, root, api)
	if all, _ := w2.ListShards(); len(all) != 1 || !all[0].PieceCID.Equals(good) {
		t.Fatalf("after restart: %v, want only the good shard", all)
	}
}

func TestRegisteringReplacesAnUnrestorableRecord(t *testing.T) {
	root := t.TempDir()
	api := newFakeAPI(true)
	pc := api.addPiece(t, "testdata/sample.car")
	lotusRoot(t, root, nil, map[string]dagstore.PersistedShard{
		pc.String(): {Key: pc.String(), URL: "lotus://garbage", State: dagstore.ShardStateAvailable},
	})
	w := openWrapper(t, root, api)
	if err := w.RegisterShardSync(context.Background(), pc, "", true); err != nil {
		t.Fatal(err)
	}
	all, err := w.ListShards()
	if err != nil || len(all) != 1 || all[0].State != dagstore.ShardStateAvailable {
		t.Fatalf("after re-registering: %+v, %v; want the piece once, available", all, err)
	}
	assertServes(t, w, pc, "testdata/sample.car")
}

func TestInterruptedRecoveryIsNotStuck(t *testing.T) {
	root := t.TempDir()
	api := newFakeAPI(true)
	pc := api.addPiece(t, "testdata/sample.car")
	lotusRoot(t, root, nil, map[string]dagstore.PersistedShard{
		pc.String(): {Key: pc.String(), URL: "lotus://" + pc.String(), State: dagstore.ShardStateRecovering, Error: "boom"},
	})
	w := openWrapper(t, root, api)
	if info, _ := w.ShardInfo(pc); info.State != dagstore.ShardStateErrored {
		t.Fatalf("shard persisted mid-recovery restored as %v, want errored", info.State)
	}
	// Errored shards recover on their next acquire.
	assertServes(t, w, pc, "testdata/sample.car")
}

func TestThrottlesBoundMinerAPICalls(t *testing.T) {
	api := newFakeAPI(true)
	api.gate = make(chan struct{})
	w := openWrapper(t, t.TempDir(), api, Config{MaxConcurrencyStorageCalls: 2, MaxConcurrentUnseals: 1})
	var pieces []string
	for i := 0; i < 8; i++ {
		pc := api.addPiece(t, makeCAR(t, int64(i), 10))
		if i%2 == 0 {
			api.setSealed(pc, true)
		}
		pieces = append(pieces, pc.String())
	}
	errs := make(chan error, len(pieces))
	for _, p := range pieces {
		go func(p string) {
			bs, err := w.LoadShard(context.Background(), mustCid(t, p))
			if err == nil {
				err = bs.Close()
			}
			errs <- err
		}(p)
	}
	// Fetches park on the gate: the storage throttle must hold them at 2.
	await(t, "two fetches in flight", api.calls.reached(2))
	close(api.gate)
	for range pieces {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if p := api.calls.peak(); p != 2 {
		t.Fatalf("peak concurrent MinerAPI calls %d, want 2", p)
	}
	if p := api.unseals.peak(); p != 1 {
		t.Fatalf("peak concurrent unseals %d, want 1", p)
	}
}

func TestAPICallsWaitForStart(t *testing.T) {
	inner := newFakeAPI(true)
	pc := inner.addPiece(t, "testdata/sample.car")
	api := newGatedAPI(context.Background(), inner, 1, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := api.IsUnsealed(ctx, pc); !errors.Is(err, context.Canceled) {
		t.Fatalf("call before Start with a cancelled context: %v", err)
	}
	if n := inner.calls.peak(); n != 0 {
		t.Fatalf("the node's API was called %d times before Start", n)
	}
	done := make(chan error, 1)
	go func() {
		_, err := api.IsUnsealed(context.Background(), pc)
		done <- err
	}()
	if err := api.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("call parked before Start: %v", err)
	}
	if inner.startCalls.Load() != 1 {
		t.Fatalf("inner Start called %d times", inner.startCalls.Load())
	}

	failing := newFakeAPI(true)
	failing.startErr = errors.New("sealing subsystem down")
	w, err := New(Config{RootDir: t.TempDir()}, failing)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "sealing subsystem down") {
		t.Fatalf("Start with a failing API: %v", err)
	}
}
