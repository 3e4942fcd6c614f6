package toplevel

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/filecoin-project/dagstore/shard"
	ds "github.com/ipfs/go-datastore"
	"github.com/multiformats/go-multihash"
	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/util"
)

type testLog struct{ t *testing.T }

func (l testLog) Errorw(msg string, kv ...any) { l.t.Logf("ERROR %s %v", msg, kv) }
func (l testLog) Infow(msg string, kv ...any)  {}

type mhs []multihash.Multihash

func (m mhs) ForEach(f func(multihash.Multihash) error) error {
	for _, h := range m {
		if err := f(h); err != nil {
			return err
		}
	}
	return nil
}

func hashes(t *testing.T, from, to int) mhs {
	t.Helper()
	var out mhs
	for i := from; i < to; i++ {
		h, err := multihash.Sum([]byte(fmt.Sprint("block ", i)), multihash.SHA2_256, -1)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h)
	}
	return out
}

func open(t *testing.T, dir string) (*Index, *leveldb.DB) {
	t.Helper()
	db, err := leveldb.OpenFile(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	x, err := Open(db, testLog{t})
	if err != nil {
		t.Fatal(err)
	}
	return x, db
}

func lookup(t *testing.T, x *Index, h multihash.Multihash) []string {
	t.Helper()
	keys, err := x.GetShardsForMultihash(context.Background(), h)
	if errors.Is(err, ds.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range keys {
		out = append(out, k.String())
	}
	sort.Strings(out)
	return out
}

func entries(t *testing.T, db *leveldb.DB) int {
	t.Helper()
	it := db.NewIterator(util.BytesPrefix([]byte{entryPrefix}), nil)
	defer it.Release()
	n := 0
	for it.Next() {
		n++
	}
	return n
}

func TestAddLookUpRestart(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "db")
	x, db := open(t, dir)
	a, b := shard.KeyFromString("piece-a"), shard.KeyFromString("piece-b")
	if err := x.AddMultihashesForShard(ctx, hashes(t, 0, 100), a); err != nil {
		t.Fatal(err)
	}
	if err := x.AddMultihashesForShard(ctx, hashes(t, 50, 150), b); err != nil {
		t.Fatal(err)
	}
	for _, k := range []shard.Key{a, b} {
		if err := x.Wait(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	h := hashes(t, 0, 150)
	if got := lookup(t, x, h[10]); fmt.Sprint(got) != "[piece-a]" {
		t.Fatalf("lookup = %v", got)
	}
	if got := lookup(t, x, h[60]); fmt.Sprint(got) != "[piece-a piece-b]" {
		t.Fatalf("lookup of a shared block = %v", got)
	}
	absent, _ := multihash.Sum([]byte("absent"), multihash.SHA2_256, -1)
	if got := lookup(t, x, absent); got != nil {
		t.Fatalf("lookup of an absent block = %v", got)
	}
	if n := entries(t, db); n != 200 {
		t.Fatalf("%d entries, want 200", n)
	}
	// Adding a complete piece again writes nothing new.
	if err := x.AddMultihashesForShard(ctx, hashes(t, 0, 100), a); err != nil || !x.Complete(a) {
		t.Fatal(err)
	}
	x.Close()
	db.Close()
	x, db = open(t, dir)
	defer db.Close()
	defer x.Close()
	if got := lookup(t, x, h[60]); fmt.Sprint(got) != "[piece-a piece-b]" {
		t.Fatalf("lookup after a restart = %v", got)
	}
	if len(x.CompleteShards()) != 2 {
		t.Fatalf("complete shards after a restart: %v", x.CompleteShards())
	}
}

// blockingIt yields its first n hashes, then waits for release (or stop).
type blockingIt struct {
	mhs
	n       int
	reached chan struct{}
	release chan struct{}
}

func (b blockingIt) ForEach(f func(multihash.Multihash) error) error {
	for i, h := range b.mhs {
		if i == b.n {
			close(b.reached)
			<-b.release
		}
		if err := f(h); err != nil {
			return err
		}
	}
	return nil
}

// A piece whose entries are partly written is never reported, neither
// while they are being written nor after a crash; added again, it is.
func TestPartialPieceIsNotReported(t *testing.T) {
	old := batchEntries
	batchEntries = 10
	defer func() { batchEntries = old }()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "db")
	x, db := open(t, dir)
	k := shard.KeyFromString("piece")
	h := hashes(t, 0, 100)
	it := blockingIt{mhs: h, n: 50, reached: make(chan struct{}), release: make(chan struct{})}
	if err := x.AddMultihashesForShard(ctx, it, k); err != nil {
		t.Fatal(err)
	}
	<-it.reached
	if n := entries(t, db); n < 40 {
		t.Fatalf("only %d entries written before the pause", n)
	}
	if got := lookup(t, x, h[0]); got != nil || x.Complete(k) {
		t.Fatalf("a piece with part of its entries is reported: %v", got)
	}
	// "Crash": the insert is stopped where it is (cancelled before it may
	// go on, so it can never complete).
	x.mu.Lock()
	x.cancel()
	x.mu.Unlock()
	close(it.release)
	x.Close()
	db.Close()
	x, db = open(t, dir)
	defer db.Close()
	defer x.Close()
	if got := lookup(t, x, h[0]); got != nil || x.Complete(k) {
		t.Fatalf("after a crash mid-insert the piece is reported: %v", got)
	}
	if err := x.AddMultihashesForShard(ctx, h, k); err != nil {
		t.Fatal(err)
	}
	if err := x.Wait(ctx, k); err != nil {
		t.Fatal(err)
	}
	if got := lookup(t, x, h[99]); fmt.Sprint(got) != "[piece]" {
		t.Fatalf("lookup after adding again = %v", got)
	}
}

// A removed piece stops being reported at once; its entries are reclaimed
// in the background, by its iterator or by a scan; a piece registered
// again keeps its new entries.
func TestRemoveReclaims(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "db")
	x, db := open(t, dir)
	defer db.Close()
	defer x.Close()
	a, b, c := shard.KeyFromString("a"), shard.KeyFromString("b"), shard.KeyFromString("c")
	for _, k := range []shard.Key{a, b, c} {
		if err := x.AddMultihashesForShard(ctx, hashes(t, 0, 100), k); err != nil {
			t.Fatal(err)
		}
		if err := x.Wait(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if err := x.RemoveShard(ctx, hashes(t, 0, 100), a); err != nil {
		t.Fatal(err)
	}
	if err := x.RemoveShard(ctx, nil, b); err != nil { // its index is unreadable
		t.Fatal(err)
	}
	h := hashes(t, 0, 100)
	if got := lookup(t, x, h[5]); fmt.Sprint(got) != "[c]" {
		t.Fatalf("lookup right after the removals = %v", got)
	}
	// b is registered again before its reclaim ran.
	if err := x.AddMultihashesForShard(ctx, h, b); err != nil {
		t.Fatal(err)
	}
	if err := x.Wait(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := x.WaitReclaimed(ctx); err != nil {
		t.Fatal(err)
	}
	if n := entries(t, db); n != 200 {
		t.Fatalf("%d entries after the reclaim, want 200 (b again and c)", n)
	}
	if got := lookup(t, x, h[5]); fmt.Sprint(got) != "[b c]" {
		t.Fatalf("lookup after the reclaim = %v", got)
	}
}

// A reclaim interrupted by a restart resumes at Open.
func TestReclaimResumesAtOpen(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "db")
	x, db := open(t, dir)
	k := shard.KeyFromString("gone")
	if err := x.AddMultihashesForShard(ctx, hashes(t, 0, 50), k); err != nil {
		t.Fatal(err)
	}
	if err := x.Wait(ctx, k); err != nil {
		t.Fatal(err)
	}
	x.cancel() // the reclaimer stops before it runs
	x.wg.Wait()
	x.ctx = context.Background()
	if err := x.RemoveShard(ctx, nil, k); err != nil {
		t.Fatal(err)
	}
	db.Close()
	x, db = open(t, dir)
	defer db.Close()
	defer x.Close()
	if err := x.WaitReclaimed(ctx); err != nil {
		t.Fatal(err)
	}
	if n := entries(t, db); n != 0 {
		t.Fatalf("%d entries of a removed piece left after a restart", n)
	}
}

// failingIt yields some multihashes, then fails, as an unreadable index
// would.
type failingIt struct{ mhs }

var errUnreadable = errors.New("index unreadable")

func (f failingIt) ForEach(fn func(multihash.Multihash) error) error {
	if err := f.mhs.ForEach(fn); err != nil {
		return err
	}
	return errUnreadable
}

// A failed insert ends Wait with its error (it used to leave waiters
// waiting for good), the piece is not reported, and a new add of the same
// piece starts afresh and completes.
func TestFailedInsertEndsWaits(t *testing.T) {
	x, _ := open(t, t.TempDir())
	defer x.Close()
	k := shard.KeyFromString("piece-a")
	hs := hashes(t, 0, 10)
	if err := x.AddMultihashesForShard(context.Background(), failingIt{hs}, k); err != nil {
		t.Fatal(err)
	}
	// The bound only keeps a regression from hanging the run.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := x.Wait(ctx, k); !errors.Is(err, errUnreadable) {
		t.Fatalf("Wait after a failed insert: %v, want the insert's error", err)
	}
	if got := lookup(t, x, hs[0]); got != nil {
		t.Fatalf("a piece whose insert failed is reported: %v", got)
	}
	if err := x.AddMultihashesForShard(context.Background(), hs, k); err != nil {
		t.Fatal(err)
	}
	if err := x.Wait(ctx, k); err != nil {
		t.Fatalf("Wait after adding the piece again: %v", err)
	}
	if got := lookup(t, x, hs[9]); len(got) != 1 || got[0] != k.String() {
		t.Fatalf("after the second add: %v", got)
	}
}

// Inserts started while held write nothing until released; the piece is
// unfinished, and unsearchable, until then. Close ends a held insert.
func TestHoldInserts(t *testing.T) {
	ctx := context.Background()
	x, db := open(t, t.TempDir())
	defer db.Close()
	release := x.HoldInserts()
	a, b := shard.KeyFromString("a"), shard.KeyFromString("b")
	for _, k := range []shard.Key{a, b} {
		if err := x.AddMultihashesForShard(ctx, hashes(t, 0, 100), k); err != nil {
			t.Fatal(err)
		}
	}
	got := x.Unfinished()
	sort.Slice(got, func(i, j int) bool { return got[i].String() < got[j].String() })
	if len(got) != 2 || got[0] != a || got[1] != b {
		t.Fatalf("unfinished while held: %v, want [a b]", got)
	}
	if keys := lookup(t, x, hashes(t, 0, 1)[0]); len(keys) != 0 {
		t.Fatalf("a held piece was found: %v", keys)
	}
	it := db.NewIterator(util.BytesPrefix([]byte{entryPrefix}), nil)
	if it.Next() {
		t.Fatal("a held insert wrote an entry")
	}
	it.Release()
	release()
	for _, k := range []shard.Key{a, b} {
		if err := x.Wait(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if got := x.Unfinished(); len(got) != 0 {
		t.Fatalf("unfinished after release: %v", got)
	}

	_ = x.HoldInserts() // never released: Close must still return
	if err := x.AddMultihashesForShard(ctx, hashes(t, 100, 200), shard.KeyFromString("c")); err != nil {
		t.Fatal(err)
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
}
