package dagwrap

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
)

// transientsOf returns the transient files of the piece in root.
func transientsOf(t *testing.T, root string, pc cid.Cid) []string {
	t.Helper()
	var out []string
	for _, n := range listDir(t, filepath.Join(root, transientsDir)) {
		if strings.Contains(n, pc.String()) {
			out = append(out, n)
		}
	}
	return out
}

// checkCleanFailure checks that a load failed for lack of space, naming
// the piece, and left no transient of it behind.
func checkCleanFailure(t *testing.T, root string, pc cid.Cid, err error) {
	t.Helper()
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), pc.String()) {
		t.Fatalf("load error %v: want ENOSPC naming the piece", err)
	}
	if left := transientsOf(t, root, pc); len(left) > 0 {
		t.Fatalf("transient left behind: %v", left)
	}
}

// TestTransientCopyOnFullDisk: the transient copy of a sequential-only
// piece fails with ENOSPC (its temporary file is /dev/full, whose writes
// always fail so). The load fails with that cause, other shards serve, and
// the automatic recovery copies it once the temporary file is gone.
func TestTransientCopyOnFullDisk(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full:", err)
	}
	root := t.TempDir()
	api := newFakeAPI(false)
	good := api.addPiece(t, "testdata/sample.car")
	pc := api.addPiece(t, "testdata/padded.car")
	w := openWrapper(t, root, api)
	ctx := context.Background()
	if err := w.RegisterShardSync(ctx, good, "", true); err != nil {
		t.Fatal(err)
	}
	if err := w.RegisterShardSync(ctx, pc, "", false); err != nil {
		t.Fatal(err)
	}
	temp := strings.TrimSuffix(transientPath(root, shard.KeyFromCID(pc)), transientComplete) + transientTemp
	if err := os.Symlink("/dev/full", temp); err != nil {
		t.Fatal(err)
	}

	_, err := w.LoadShard(ctx, pc)
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), pc.String()) {
		t.Fatalf("load error %v: want ENOSPC naming the piece", err)
	}
	assertServes(t, w, good, "testdata/sample.car")

	// Space again: the automatic recovery, which starts at once, copies it
	// anew. Had the failed copy left its temporary file (/dev/full) in
	// place, the recovery would fail the same way; and it leaves no
	// temporary file of its own.
	if info, err := w.AwaitRecovery(ctx, pc); err != nil || info.State != dagstore.ShardStateAvailable {
		t.Fatalf("after the automatic recovery: %+v %v, want available", info, err)
	}
	for _, n := range transientsOf(t, root, pc) {
		if !strings.HasSuffix(n, transientComplete) {
			t.Fatalf("transient left behind: %s", n)
		}
	}
	assertServes(t, w, pc, "testdata/padded.car")
}

// TestTransientCopyOnSmallFilesystem puts the transients folder on a tmpfs
// too small for one piece: its copy fails with ENOSPC and leaves nothing,
// and a piece that fits is copied and served.
func TestTransientCopyOnSmallFilesystem(t *testing.T) {
	tmpfs := mountTmpfs(t, "size=48k")
	root := t.TempDir()
	if err := os.Symlink(tmpfs, filepath.Join(root, transientsDir)); err != nil {
		t.Fatal(err)
	}
	api := newFakeAPI(false)
	big := api.servePath(t, writeCAR(t, t.TempDir(), 7, 200, 0)) // ~90 KiB
	small := api.addPiece(t, "testdata/sample.car")              // 22 KiB
	w := openWrapper(t, root, api)
	ctx := context.Background()
	for _, p := range []cid.Cid{big, small} {
		if err := w.RegisterShardSync(ctx, p, "", false); err != nil {
			t.Fatal(err)
		}
	}
	_, err := w.LoadShard(ctx, big)
	// Its automatic recovery copies it again and fails the same way; until
	// then the tmpfs may hold that copy, so what is left is checked after.
	if info, err := w.AwaitRecovery(ctx, big); err != nil || info.State != dagstore.ShardStateErrored || api.fetches.Load() < 2 {
		t.Fatalf("after the big piece's automatic recovery: %+v %v, %d fetches; want errored after 2", info, err, api.fetches.Load())
	}
	checkCleanFailure(t, root, big, err)
	assertServes(t, w, small, "testdata/sample.car")
	if n := len(listDir(t, tmpfs)); n != 1 {
		t.Fatalf("transients: %v, want only the small piece's", listDir(t, tmpfs))
	}
}

// fullStore fails every write of a shard record, as a full disk would.
type fullStore struct{ ds.Batching }

func (f fullStore) Put(ctx context.Context, k ds.Key, v []byte) error {
	if strings.HasPrefix(k.String(), dagstore.StoreNamespace.String()+"/") {
		return &os.PathError{Op: "write", Path: "datastore", Err: syscall.ENOSPC}
	}
	return f.Batching.Put(ctx, k, v)
}

// TestRegistrationFailsWhenItsRecordCannotBeWritten: the dagstore reports a
// lazy registration before writing the shard's record (and only logs a
// failed write). A registration must not return success for a shard a
// crash would lose: with the record unwritable it fails with the cause.
func TestRegistrationFailsWhenItsRecordCannotBeWritten(t *testing.T) {
	api := newFakeAPI(true)
	pc := api.addPiece(t, "testdata/sample.car")
	w, err := New(Config{RootDir: t.TempDir()}, api)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	w.shards.records.Batching = fullStore{w.shards.records.Batching}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, eager := range []bool{false, true} {
		err := w.RegisterShardSync(context.Background(), pc, "", eager)
		if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), pc.String()) {
			t.Fatalf("eager=%v: register with an unwritable record: %v, want ENOSPC naming the piece", eager, err)
		}
		pc = api.addPiece(t, "testdata/padded.car")
	}
}
