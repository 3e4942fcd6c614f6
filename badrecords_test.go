package dagwrap

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/filecoin-project/dagstore"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	levelds "github.com/ipfs/go-ds-leveldb"
)

// readRecord returns the raw shard record stored under pc's datastore key
// in a closed root, or nil if there is none.
func readRecord(t *testing.T, root string, pc cid.Cid) []byte {
	t.Helper()
	store, err := levelds.NewDatastore(filepath.Join(root, datastoreDir), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	b, err := store.Get(context.Background(), dagstore.StoreNamespace.Child(ds.NewKey(pc.String())))
	if errors.Is(err, ds.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// assertUnrestorable checks that the piece is reported, by ShardInfo and
// ListShards, as an errored shard whose record cannot be restored, with
// every substring in its error.
func assertUnrestorable(t *testing.T, w *Wrapper, pc cid.Cid, substrings ...string) {
	t.Helper()
	info, err := w.ShardInfo(pc)
	if err != nil {
		t.Fatalf("ShardInfo(%s): %v", pc, err)
	}
	if info.State != dagstore.ShardStateErrored || info.Error == nil {
		t.Fatalf("ShardInfo(%s) = %v, %v; want errored with the record's cause", pc, info.State, info.Error)
	}
	for _, s := range append([]string{pc.String(), "cannot be restored"}, substrings...) {
		if !strings.Contains(info.Error.Error(), s) {
			t.Fatalf("ShardInfo(%s) error %q does not say %q", pc, info.Error, s)
		}
	}
	all, err := w.ListShards()
	if err != nil {
		t.Fatal(err)
	}
	listed := false
	for _, si := range all {
		if si.PieceCID.Equals(pc) {
			listed = si.State == dagstore.ShardStateErrored && si.Error != nil
		}
	}
	if !listed {
		t.Fatalf("ListShards does not list %s as errored: %+v", pc, all)
	}
}

// TestRecordKeyDiffersFromItsField pins issue 9 item 5: a record stored
// under one piece's key whose "k" field names another piece is reported
// under its datastore key as one that cannot be restored; the dagstore does
// not revive it under "k" (which a destroy could never remove); destroying
// it by its datastore key removes it for good.
func TestRecordKeyDiffersFromItsField(t *testing.T) {
	root := t.TempDir()
	api := newFakeAPI(true)
	named := api.addPiece(t, "testdata/sample.car") // the piece its "k" names
	stored := pieceCID(t, bytes.Repeat([]byte{7}, 300))
	putRecord(t, root, stored, dagstore.PersistedShard{
		Key: named.String(), URL: "lotus://" + named.String(), State: dagstore.ShardStateAvailable,
	})

	w := openWrapper(t, root, api)
	assertUnrestorable(t, w, stored, named.String())
	if _, err := w.ShardInfo(named); !errors.Is(err, ErrShardUnknown) {
		t.Fatalf("ShardInfo of the piece named by k: %v, want ErrShardUnknown", err)
	}
	all, err := w.ListShards()
	if err != nil || len(all) != 1 {
		t.Fatalf("ListShards = %+v, %v; want only the record under its datastore key", all, err)
	}
	if err := w.DestroyShardSync(context.Background(), named); !errors.Is(err, ErrShardUnknown) {
		t.Fatalf("destroy by k: %v, want ErrShardUnknown", err)
	}
	if err := w.DestroyShardSync(context.Background(), stored); err != nil {
		t.Fatalf("destroy by datastore key: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if b := readRecord(t, root, stored); b != nil {
		t.Fatalf("record still on disk after destroy: %s", b)
	}
	w = openWrapper(t, root, api)
	if all, err := w.ListShards(); err != nil || len(all) != 0 {
		t.Fatalf("after restart: %+v, %v; want no shards", all, err)
	}
}

// TestRecordInUnknownState pins issue 9 item 9: a record in a state this
// version does not know (a newer or foreign layout) is reported as one that
// cannot be restored; loads, initialisations and recoveries fail at once
// with its error (they hung until the caller's deadline) and leave it as
// it is; it can be destroyed.
func TestRecordInUnknownState(t *testing.T) {
	root := t.TempDir()
	api := newFakeAPI(true)
	pc := api.addPiece(t, "testdata/sample.car")
	putRecord(t, root, pc, dagstore.PersistedShard{Key: pc.String(), URL: "lotus://" + pc.String(), State: 9})
	original := readRecord(t, root, pc)

	w := openWrapper(t, root, api)
	assertUnrestorable(t, w, pc, "state 9")
	// A generous deadline only so that a regression fails instead of hanging.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	calls := map[string]func() error{
		"LoadShard": func() error {
			bs, err := w.LoadShard(ctx, pc)
			if err == nil {
				_ = bs.Close()
			}
			return err
		},
		"InitShard":    func() error { return w.InitShard(ctx, pc) },
		"RecoverShard": func() error { return w.RecoverShard(ctx, pc) },
	}
	for name, call := range calls {
		err := call()
		if err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "cannot be restored") ||
			!strings.Contains(err.Error(), pc.String()) {
			t.Fatalf("%s: %v; want the record's error at once", name, err)
		}
	}
	if res, err := w.InitAllShards(ctx); err != nil || len(res.Initialized)+len(res.Failed)+len(res.Skipped) != 0 {
		t.Fatalf("InitAllShards: %+v, %v; want nothing to do", res, err)
	}
	assertUnrestorable(t, w, pc, "state 9")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readRecord(t, root, pc); !bytes.Equal(got, original) {
		t.Fatalf("record changed by the calls: %s, was %s", got, original)
	}

	w = openWrapper(t, root, api)
	assertUnrestorable(t, w, pc, "state 9")
	if err := w.DestroyShardSync(context.Background(), pc); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	if _, err := w.ShardInfo(pc); !errors.Is(err, ErrShardUnknown) {
		t.Fatalf("after destroy: %v, want ErrShardUnknown", err)
	}
}
