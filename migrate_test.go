package dagwrap

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/filecoin-project/dagstore"
	"github.com/ipfs/go-cid"
)

func TestMigrateDeals(t *testing.T) {
	root := t.TempDir()
	api := newFakeAPI(true)
	w := openWrapper(t, root, api)
	var handed []cid.Cid
	for i := 0; i < 4; i++ {
		handed = append(handed, api.addPiece(t, makeCAR(t, int64(i), 5)))
	}
	notYet := api.addPiece(t, makeCAR(t, 99, 5))
	// Registered before the migration: counts as done.
	if err := w.RegisterShardSync(context.Background(), handed[0], "", true); err != nil {
		t.Fatal(err)
	}
	deals := []Deal{{DealID: 100, PieceCID: notYet}}
	for i, pc := range handed {
		deals = append(deals, Deal{DealID: uint64(i + 1), PieceCID: pc, HandedOff: true})
	}
	deals = append(deals, Deal{DealID: 7, PieceCID: handed[1], HandedOff: true}) // two deals, one piece

	migrated, err := w.MigrateDeals(context.Background(), deals)
	if err != nil || !migrated {
		t.Fatalf("first migration: %v, %v", migrated, err)
	}
	if _, err := os.Stat(filepath.Join(root, markerName)); err != nil {
		t.Fatalf("no marker after migration: %v", err)
	}
	for i, pc := range handed {
		info, err := w.ShardInfo(pc)
		if err != nil {
			t.Fatalf("handed-off piece %d not registered: %v", i, err)
		}
		if i > 0 && info.State != dagstore.ShardStateNew {
			t.Fatalf("migrated piece %d is %v, want lazily registered (new)", i, info.State)
		}
	}
	if _, err := w.ShardInfo(notYet); !errors.Is(err, ErrShardUnknown) {
		t.Fatalf("deal not handed off was registered: %v", err)
	}
	if bs, err := w.LoadShard(context.Background(), handed[2]); err != nil { // lazily initialised on first load
		t.Fatal(err)
	} else {
		_ = bs.Close()
	}

	migrated, err = w.MigrateDeals(context.Background(), deals)
	if err != nil || migrated {
		t.Fatalf("second migration: %v, %v; want false, nil", migrated, err)
	}
}

func TestMigrationFailureWritesNoMarker(t *testing.T) {
	root := t.TempDir()
	api := newFakeAPI(true)
	w := openWrapper(t, root, api)
	good := api.addPiece(t, makeCAR(t, 1, 5))
	deals := []Deal{{DealID: 1, PieceCID: good, HandedOff: true}, {DealID: 42, HandedOff: true}}
	migrated, err := w.MigrateDeals(context.Background(), deals)
	if err == nil || migrated || !strings.Contains(err.Error(), "deal 42") {
		t.Fatalf("migration with a bad deal: %v, %v; want an error naming deal 42", migrated, err)
	}
	if _, err := os.Stat(filepath.Join(root, markerName)); !os.IsNotExist(err) {
		t.Fatalf("marker written despite a failed registration: %v", err)
	}
	if _, err := w.ShardInfo(good); err != nil {
		t.Fatalf("the good deal was not registered: %v", err)
	}
	// Once the bad deal is gone, the next run finishes the job.
	if migrated, err := w.MigrateDeals(context.Background(), deals[:1]); err != nil || !migrated {
		t.Fatalf("retry: %v, %v", migrated, err)
	}
}

func TestMigrationAfterCrashBeforeMarker(t *testing.T) {
	root := t.TempDir()
	api := newFakeAPI(true)
	w := openWrapper(t, root, api)
	var deals []Deal
	for i := 0; i < 20; i++ {
		deals = append(deals, Deal{DealID: uint64(i), PieceCID: api.addPiece(t, makeCAR(t, int64(i), 3)), HandedOff: true})
	}
	if migrated, err := w.MigrateDeals(context.Background(), deals); err != nil || !migrated {
		t.Fatal(migrated, err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// A crash between the last registration and the marker.
	if err := os.Remove(filepath.Join(root, markerName)); err != nil {
		t.Fatal(err)
	}
	w2 := openWrapper(t, root, api)
	if migrated, err := w2.MigrateDeals(context.Background(), deals); err != nil || !migrated {
		t.Fatalf("migration after a crash: %v, %v", migrated, err)
	}
	shards, err := w2.ListShards()
	if err != nil || len(shards) != len(deals) {
		t.Fatalf("%d shards after re-migration, want %d (%v)", len(shards), len(deals), err)
	}
}

func TestMigrationHonoursCancelledContext(t *testing.T) {
	api := newFakeAPI(true)
	w := openWrapper(t, t.TempDir(), api)
	var deals []Deal
	for i := 0; i < 50; i++ {
		deals = append(deals, Deal{DealID: uint64(i), PieceCID: pieceCID(t, []byte(strings.Repeat(string(rune('a'+i%26)), 70+i))), HandedOff: true})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if migrated, err := w.MigrateDeals(ctx, deals); !errors.Is(err, context.Canceled) || migrated {
		t.Fatalf("cancelled migration: %v, %v", migrated, err)
	}
	if _, err := os.Stat(filepath.Join(w.cfg.RootDir, markerName)); !os.IsNotExist(err) {
		t.Fatal("marker written by a cancelled migration")
	}
	// Close must not wait forever on results nobody collects.
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestMigrationFailureCountsHandedOffDealsOnly pins issue 9 item 3: the
// error's "N of M handed-off deals" counts only deals that were handed off.
func TestMigrationFailureCountsHandedOffDealsOnly(t *testing.T) {
	api := newFakeAPI(true)
	w := openWrapper(t, t.TempDir(), api)
	good := api.addPiece(t, makeCAR(t, 1, 5))
	deals := []Deal{
		{DealID: 1, PieceCID: good, HandedOff: true},
		{DealID: 42, HandedOff: true}, // fails: no piece CID
		{DealID: 2, PieceCID: good},   // not handed off: skipped
		{DealID: 3, PieceCID: good},   // not handed off: skipped
	}
	_, err := w.MigrateDeals(context.Background(), deals)
	if err == nil || !strings.Contains(err.Error(), "1 of 2 handed-off deals failed") {
		t.Fatalf("migration with a bad deal: %v; want \"1 of 2 handed-off deals failed\"", err)
	}
}
