package dagwrap

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/index"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
	levelds "github.com/ipfs/go-ds-leveldb"
	carv2 "github.com/ipld/go-car/v2"
	carindex "github.com/ipld/go-car/v2/index"
	"github.com/multiformats/go-multihash"
	ldbopts "github.com/syndtr/goleveldb/leveldb/opt"
)

// Pins issue 9 item 4: a failure a caller saw is on disk when Close
// returns. A load that fails because the piece vanished used to leave the
// shard recorded as available: the dagstore had queued the failure, and
// Close stopped its event loop before it was processed. Each round races
// the failure against Close once; on the old code most rounds lost it.
func TestFailureSeenIsPersistedByClose(t *testing.T) {
	ctx := context.Background()
	for round := 0; round < 10; round++ {
		root := t.TempDir()
		api := newFakeAPI(true)
		pc := api.addPiece(t, makeCAR(t, int64(round), 20))
		w := openWrapper(t, root, api)
		if err := w.RegisterShardSync(ctx, pc, "", true); err != nil {
			t.Fatal(err)
		}
		p, _ := api.path(pc)
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		if bs, err := w.LoadShard(ctx, pc); err == nil {
			_ = bs.Close()
			t.Fatal("a piece whose file is gone loaded")
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		w2 := openWrapper(t, root, api)
		info, err := w2.ShardInfo(pc)
		if err != nil {
			t.Fatal(err)
		}
		if info.State != dagstore.ShardStateErrored || info.Error == nil {
			t.Fatalf("round %d: after a failed load and Close the shard is %s (error %v), want errored with the cause",
				round, StateName(info.State), info.Error)
		}
		_ = w2.Close()
	}
}

// v2PieceCID is the FRC-0069 form of a v1 piece CID (padding 0).
func v2PieceCID(t *testing.T, v1 cid.Cid) cid.Cid {
	t.Helper()
	dec, err := multihash.Decode(v1.Hash())
	if err != nil {
		t.Fatal(err)
	}
	digest := binary.AppendUvarint(nil, 0)
	digest = append(digest, 30) // tree height; not checked
	digest = append(digest, dec.Digest...)
	mh, err := multihash.Encode(digest, fr32PadBinTree)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(cid.Raw, mh)
}

// Pins issue 9 item 6: loads of pieces nobody has leave nothing behind. A
// CID that is not a piece CID is refused before anything is registered, a
// piece the MinerAPI does not have is not registered, and a v2 piece CID
// loads the shard of its v1 form.
func TestLoadOfUnknownPieceLeavesNoShard(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	api := newFakeAPI(true)
	served := api.addPiece(t, "testdata/sample.car")
	w := openWrapper(t, root, api)

	block := carBlocks(t, "testdata/sample.car")[0].Cid()
	if _, err := w.LoadShard(ctx, block); !errors.Is(err, ErrNotPieceCID) || !strings.Contains(err.Error(), block.String()) {
		t.Fatalf("load of a block CID as a piece: %v, want ErrNotPieceCID naming it", err)
	}
	if err := w.RegisterShardSync(ctx, block, "", false); !errors.Is(err, ErrNotPieceCID) {
		t.Fatalf("register of a block CID as a piece: %v, want ErrNotPieceCID", err)
	}
	unknown := pieceCID(t, []byte(strings.Repeat("a piece this node never had ", 4)))
	for i := 0; i < 3; i++ {
		_, err := w.LoadShard(ctx, unknown)
		if err == nil || !strings.Contains(err.Error(), "miner API does not have it") || !strings.Contains(err.Error(), unknown.String()) {
			t.Fatalf("load of an unknown piece: %v, want an error saying the miner API does not have it", err)
		}
	}
	shards, err := w.ListShards()
	if err != nil || len(shards) != 0 {
		t.Fatalf("loads of pieces nobody has left shards: %v %v", shards, err)
	}

	bs, err := w.LoadShard(ctx, v2PieceCID(t, served))
	if err != nil {
		t.Fatalf("load by v2 piece CID: %v", err)
	}
	_ = bs.Close()
	if _, err := w.ShardInfo(served); err != nil {
		t.Fatalf("a load by v2 piece CID did not register the v1 shard: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w2 := openWrapper(t, root, api)
	if shards, err := w2.ListShards(); err != nil || len(shards) != 1 || !shards[0].PieceCID.Equals(served) {
		t.Fatalf("shards after restart: %v %v, want only %s", shards, err, served)
	}
}

// reconcileBlocker is a node's datastore whose queries made by the start-up
// reconciliation wait until released: it holds the reconciliation at its
// very start, whatever its first query is.
type reconcileBlocker struct {
	ds.Batching
	release chan struct{}
	once    sync.Once
	held    chan struct{} // closed when a reconciliation query first waits
}

func (b *reconcileBlocker) Query(ctx context.Context, q query.Query) (query.Results, error) {
	if calledFrom("(*reconciler).run") {
		b.once.Do(func() { close(b.held) })
		select {
		case <-b.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return b.Batching.Query(ctx, q)
}

// Pins issue 9 item 8: from the moment Start returns, lookups on a Lotus
// root answer from the stock index, however far the background rebuild
// has got (here: not started at all). The flag that made lookups read the
// stock index used to be set by that rebuild.
func TestLotusLookupsRightAfterStart(t *testing.T) {
	skipOnPG(t, "converts the embedded top-level index of a Lotus or earlier root")
	root, api, pc, _, ldb := sampleLotusRoot(t)
	store := &reconcileBlocker{Batching: ldb, release: make(chan struct{}), held: make(chan struct{})}
	w, err := New(Config{RootDir: root}, api, WithDatastore(store))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	defer close(store.release)
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-store.held
	for _, b := range carBlocks(t, "testdata/sample.car") {
		got, err := w.GetPiecesContainingBlock(b.Cid())
		if err != nil || len(got) != 1 || !got[0].Equals(pc) {
			t.Fatalf("lookup of %s before the rebuild: %v %v, want %s", b.Cid(), got, err, pc)
		}
	}
}

// Pins issue 9 (smaller): the set of destroyed keys whose late writes are
// dropped is bounded; the most recent destroys stay in it.
func TestDestroyedKeysAreBounded(t *testing.T) {
	ctx := context.Background()
	r := newShardRecords(dssync.MutexWrap(ds.NewMapDatastore()), newWriteGate(context.Background()))
	r.goneMax = 4
	keys := make([]shard.Key, 10)
	for i := range keys {
		keys[i] = shard.KeyFromString(fmt.Sprintf("piece-%d", i))
		if err := r.forget(ctx, keys[i]); err != nil {
			t.Fatal(err)
		}
	}
	if len(r.gone) > 4 || len(r.goneSeq) > 4 {
		t.Fatalf("%d destroyed keys remembered (%d in order), want at most 4", len(r.gone), len(r.goneSeq))
	}
	for i, k := range keys {
		if err := r.Put(ctx, recordKey(k), []byte("{}")); err != nil {
			t.Fatal(err)
		}
		has, err := r.Batching.Has(ctx, recordKey(k))
		if err != nil {
			t.Fatal(err)
		}
		if want := i < 6; has != want {
			t.Fatalf("destroy %d of 10: late write kept = %v, want %v", i, has, want)
		}
	}
}

// Pins the conversion of a root written by the previous dagwrap layout
// (issue 11 item 4): lookups answer from the old entries until the
// reconciliation has put every piece into the compact index, then from it,
// and the old entries are deleted.
func TestPreviousLayoutIsConverted(t *testing.T) {
	skipOnPG(t, "converts the embedded top-level index of a Lotus or earlier root")
	ctx := context.Background()
	root, api, pc, p, ldb := sampleLotusRoot(t)
	old := newTopIndex(ldb)
	if err := old.dropLegacy(ctx); err != nil { // only the previous dagwrap layout
		t.Fatal(err)
	}
	idx, err := carv2.GenerateIndexFromFile(p, carv2.ZeroLengthSectionAsEOF(true), carv2.StoreIdentityCIDs(true))
	if err != nil {
		t.Fatal(err)
	}
	if err := old.AddMultihashesForShard(ctx, indexMultihashes{idx.(carindex.IterableIndex)}, shard.KeyFromCID(pc)); err != nil {
		t.Fatal(err)
	}
	repo, err := newIndexRepo(filepath.Join(root, indexDir))
	if err != nil {
		t.Fatal(err)
	}
	blocked := &reconcileRepoBlocker{FullIndexRepo: repo, release: make(chan struct{}), held: make(chan struct{})}
	w, err := New(Config{RootDir: root}, api, WithDatastore(ldb), WithIndexRepo(blocked))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	store := blocked
	check := func(when string) {
		t.Helper()
		for _, b := range carBlocks(t, "testdata/sample.car") {
			got, err := w.GetPiecesContainingBlock(b.Cid())
			if err != nil || len(got) != 1 || !got[0].Equals(pc) {
				t.Fatalf("lookup of %s %s: %v %v", b.Cid(), when, got, err)
			}
		}
	}
	<-store.held
	if w.st.tli.compact.Complete(shard.KeyFromCID(pc)) {
		t.Fatal("the piece is in the compact index before the conversion ran")
	}
	check("before the conversion")
	close(store.release)
	<-w.reconciled
	check("after the conversion")
	if left, err := hasPrefix(ctx, ldb, oldLayoutPrefix); err != nil || left {
		t.Fatalf("old entries left after the conversion: %v %v", left, err)
	}
	if w.st.tli.converting.Load() || !w.st.tli.compact.Complete(shard.KeyFromCID(pc)) {
		t.Fatal("the piece is not in the compact index after the conversion")
	}
}

// reconcileRepoBlocker is an index repo whose index reads made by the
// start-up reconciliation wait until released: it holds the conversion
// before any piece is in the compact index.
type reconcileRepoBlocker struct {
	index.FullIndexRepo
	release chan struct{}
	once    sync.Once
	held    chan struct{}
}

func (b *reconcileRepoBlocker) GetFullIndex(k shard.Key) (carindex.Index, error) {
	if calledFrom("(*reconciler).run") {
		b.once.Do(func() { close(b.held) })
		<-b.release
	}
	return b.FullIndexRepo.GetFullIndex(k)
}

// calledFrom reports whether a function whose name contains fn is on the
// caller's stack.
func calledFrom(fn string) bool {
	pcs := make([]uintptr, 64)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(2, pcs)])
	for f, more := frames.Next(); more; f, more = frames.Next() {
		if strings.Contains(f.Function, fn) {
			return true
		}
	}
	return false
}

// Pins issue 9 (smaller): a loaded blockstore's calls with cid.Undef fail
// with ErrUndefinedCID naming the piece, not "multihash too short".
func TestBlockstoreUndefinedCID(t *testing.T) {
	ctx := context.Background()
	api := newFakeAPI(true)
	pc := api.addPiece(t, "testdata/sample.car")
	w := openWrapper(t, t.TempDir(), api)
	bs, err := w.LoadShard(ctx, pc)
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	_, errHas := bs.Has(ctx, cid.Undef)
	_, errGet := bs.Get(ctx, cid.Undef)
	_, errSize := bs.GetSize(ctx, cid.Undef)
	for name, err := range map[string]error{"Has": errHas, "Get": errGet, "GetSize": errSize} {
		if !errors.Is(err, ErrUndefinedCID) || !strings.Contains(err.Error(), pc.String()) {
			t.Errorf("%s(cid.Undef) = %v, want ErrUndefinedCID naming the piece", name, err)
		}
	}
}

// sampleLotusRoot writes a Lotus root holding sample.car as an available
// shard, served by the returned API, and opens its LevelDB (closed at
// cleanup) for a test to hand to the Wrapper as the node's datastore.
func sampleLotusRoot(t *testing.T) (root string, api *fakeAPI, pc cid.Cid, path string, ldb *levelds.Datastore) {
	t.Helper()
	root = t.TempDir()
	api = newFakeAPI(true)
	pc = api.addPiece(t, "testdata/sample.car")
	path, _ = api.path(pc)
	lotusRoot(t, root, map[string]string{pc.String(): path}, map[string]dagstore.PersistedShard{
		pc.String(): {Key: pc.String(), URL: "lotus://" + pc.String(), State: dagstore.ShardStateAvailable},
	})
	ldb, err := levelds.NewDatastore(filepath.Join(root, datastoreDir), &levelds.Options{Compression: ldbopts.NoCompression})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ldb.Close() })
	return root, api, pc, path, ldb
}
