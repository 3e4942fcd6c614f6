package dagwrap

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/index"
	"github.com/filecoin-project/dagstore/shard"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	logging "github.com/ipfs/go-log/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// nodeDatastore is a node's datastore: it records whether dagwrap closed
// or synced it.
type nodeDatastore struct {
	ds.Batching
	closed, synced atomic.Int32
}

func (d *nodeDatastore) Close() error { d.closed.Add(1); return d.Batching.Close() }
func (d *nodeDatastore) Sync(ctx context.Context, k ds.Key) error {
	d.synced.Add(1)
	return d.Batching.Sync(ctx, k)
}

// TestInjectedDatastoreAndIndexRepo runs a Wrapper on a node's datastore
// and index repo: shard state and indexes land there, nothing is created
// for them under RootDir, the datastore is synced but not closed, and the
// shards are back after a restart.
func TestInjectedDatastoreAndIndexRepo(t *testing.T) {
	ctx := context.Background()
	api := newFakeAPI(true)
	pc := api.addPiece(t, "testdata/sample.car")
	store := &nodeDatastore{Batching: dssync.MutexWrap(ds.NewMapDatastore())}
	repo := index.NewMemoryRepo()
	root := t.TempDir()

	w := openWith(t, root, api, Config{}, WithDatastore(store), WithIndexRepo(repo))
	if err := w.RegisterShardSync(ctx, pc, "", true); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Get(ctx, dagstore.StoreNamespace.ChildString(pc.String())); err != nil {
		t.Fatalf("the shard record is not in the node's datastore: %v", err)
	}
	if n, err := repo.Len(); err != nil || n != 1 {
		t.Fatalf("node's index repo holds %d indexes (%v), want 1", n, err)
	}
	blk := carBlocks(t, "testdata/sample.car")[3]
	if got, err := w.GetPiecesContainingBlock(blk.Cid()); err != nil || len(got) != 1 || got[0] != pc {
		t.Fatalf("lookup: %v, %v", got, err)
	}
	for _, dir := range []string{datastoreDir, indexDir} {
		if _, err := os.Stat(filepath.Join(root, dir)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s created under the root though the node provides it: %v", dir, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if store.closed.Load() != 0 || store.synced.Load() == 0 {
		t.Fatalf("node's datastore closed %d times, synced %d times; want 0 and at least 1", store.closed.Load(), store.synced.Load())
	}

	w = openWith(t, root, api, Config{}, WithDatastore(store), WithIndexRepo(repo))
	info, err := w.ShardInfo(pc)
	if err != nil || info.State != dagstore.ShardStateAvailable {
		t.Fatalf("after restart: %+v, %v", info, err)
	}
	bs, err := w.LoadShard(ctx, pc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bs.Get(ctx, blk.Cid()); err != nil {
		t.Fatal(err)
	}
	if err := bs.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.DestroyShardSync(ctx, pc); err != nil {
		t.Fatal(err)
	}
	if n, _ := repo.Len(); n != 0 {
		t.Fatalf("destroy left %d indexes in the node's repo", n)
	}
}

// TestInjectedTopLevelIndex uses the dagstore's stock index, which cannot
// remove a piece: lookups go through it, and after a destroy the piece's
// entries stay there but are never reported.
func TestInjectedTopLevelIndex(t *testing.T) {
	ctx := context.Background()
	api := newFakeAPI(true)
	pc := api.addPiece(t, "testdata/sample.car")
	top := index.NewInverted(dssync.MutexWrap(ds.NewMapDatastore()))
	w := openWith(t, t.TempDir(), api, Config{}, WithTopLevelIndex(top))
	if w.st.tli != nil {
		t.Fatal("dagwrap's own top-level index was built though the node provided one")
	}
	if err := w.RegisterShardSync(ctx, pc, "", true); err != nil {
		t.Fatal(err)
	}
	blk := carBlocks(t, "testdata/sample.car")[5]
	keys, err := top.GetShardsForMultihash(ctx, blk.Cid().Hash())
	if err != nil || len(keys) != 1 || keys[0] != shard.KeyFromCID(pc) {
		t.Fatalf("node's index: %v, %v", keys, err)
	}
	if got, err := w.GetPiecesContainingBlock(blk.Cid()); err != nil || len(got) != 1 || got[0] != pc {
		t.Fatalf("lookup: %v, %v", got, err)
	}
	if err := w.DestroyShardSync(ctx, pc); err != nil {
		t.Fatal(err)
	}
	if _, err := w.GetPiecesContainingBlock(blk.Cid()); !errors.Is(err, ErrBlockNotFound) {
		t.Fatalf("lookup after destroy: %v, want ErrBlockNotFound", err)
	}
	if keys, _ := top.GetShardsForMultihash(ctx, blk.Cid().Hash()); len(keys) != 1 {
		t.Fatalf("the stock index cannot remove entries, yet holds %v", keys)
	}
}

func TestWithLoggerName(t *testing.T) {
	w, err := New(Config{RootDir: t.TempDir()}, newFakeAPI(true), WithLoggerName("mynode/dagwrap"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	subs := logging.GetSubsystems()
	for _, name := range []string{"mynode/dagwrap", "mynode/dagwrap.dagstore"} {
		if !slices.Contains(subs, name) {
			t.Errorf("no logger %q among %v", name, subs)
		}
	}
	if w.log == log {
		t.Error("the Wrapper logs to the package logger")
	}
}

// TestFailedNewReleasesEverything checks that a New that fails after
// registering metrics leaves neither metrics nor the root lock behind.
func TestFailedNewReleasesEverything(t *testing.T) {
	reg := prometheus.NewRegistry()
	root := t.TempDir()
	// A file where the datastore folder should be makes LevelDB fail.
	if err := os.WriteFile(filepath.Join(root, datastoreDir), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{RootDir: root}, newFakeAPI(true), WithMetrics(reg)); err == nil {
		t.Fatal("New succeeded with a file as its datastore folder")
	}
	if mfs, _ := reg.Gather(); len(mfs) != 0 {
		t.Fatalf("a failed New left %d metric families registered", len(mfs))
	}
	if err := os.Remove(filepath.Join(root, datastoreDir)); err != nil {
		t.Fatal(err)
	}
	w, err := New(Config{RootDir: root}, newFakeAPI(true), WithMetrics(reg))
	if err != nil {
		t.Fatalf("New after a failed New on the same root and registry: %v", err)
	}
	_ = w.Close()
}
