package dagwrap

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/filecoin-project/dagstore/shard"
	ds "github.com/ipfs/go-datastore"
	levelds "github.com/ipfs/go-ds-leveldb"
)

// Pins the group commit of registration records (issue 11 item 5): a
// grouped write is acknowledged only once its batch is on disk, a later
// write of the same key wins over a queued grouped one, and a destroy drops
// a queued grouped write and fails its registration.
func TestGroupCommitKeepsOrderAndDurability(t *testing.T) {
	ctx := context.Background()
	ldb, err := levelds.NewDatastore(filepath.Join(t.TempDir(), "ds"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ldb.Close()
	r := newShardRecords(ldb, newWriteGate(context.Background()))
	get := func(k shard.Key) string {
		t.Helper()
		v, err := ldb.Get(ctx, recordKey(k))
		if errors.Is(err, ds.ErrNotFound) {
			return ""
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(v)
	}
	a, b, c := shard.KeyFromString("a"), shard.KeyFromString("b"), shard.KeyFromString("c")

	pa := r.expect(a, true)
	if err := r.Put(ctx, recordKey(a), []byte("a1")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-pa.written:
		t.Fatalf("grouped write acknowledged before its commit: %v", err)
	default:
	}
	if got := get(a); got != "" {
		t.Fatalf("grouped write on disk before its commit: %q", got)
	}

	pb := r.expect(b, true)
	if err := r.Put(ctx, recordKey(b), []byte("b-old")); err != nil {
		t.Fatal(err)
	}
	if err := r.Put(ctx, recordKey(b), []byte("b-new")); err != nil { // a state change, written at once
		t.Fatal(err)
	}
	if err := <-pb.written; err != nil {
		t.Fatal(err)
	}

	pc := r.expect(c, true)
	if err := r.Put(ctx, recordKey(c), []byte("c1")); err != nil {
		t.Fatal(err)
	}
	if err := r.forget(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := <-pc.written; !errors.Is(err, errDestroyedBeforeWritten) {
		t.Fatalf("registration of a shard destroyed before its grouped write: %v", err)
	}

	r.commitGroup()
	if err := <-pa.written; err != nil {
		t.Fatal(err)
	}
	for k, want := range map[shard.Key]string{a: "a1", b: "b-new", c: ""} {
		if got := get(k); got != want {
			t.Errorf("record %s after the commit = %q, want %q", k, got, want)
		}
	}
}
