package dagwrap

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
)

// findsOnly checks that every block of blks is found in exactly piece pc.
func findsOnly(t *testing.T, w *Wrapper, pc cid.Cid, blks []cid.Cid) {
	t.Helper()
	for _, c := range blks {
		got, err := w.GetPiecesContainingBlock(c)
		if err != nil || len(got) != 1 || !got[0].Equals(pc) {
			t.Fatalf("block %s: lookup gave %v, %v; want [%s]", c, got, err, pc)
		}
	}
}

func cidsOf(t *testing.T, path string) []cid.Cid {
	t.Helper()
	var out []cid.Cid
	for _, b := range carBlocks(t, path) {
		out = append(out, b.Cid())
	}
	return out
}

// A piece is found by lookups as soon as it is indexed, while its entries
// are still being written to the top-level index (here held back): from
// its own index file. A destroy stops that at once, and once the entries
// are written lookups find it through them.
func TestLookupsFindAPieceWhoseEntriesAreBeingWritten(t *testing.T) {
	skipOnPG(t, "the compact top-level index's fresh pieces")
	ctx := context.Background()
	api := newFakeAPI(true)
	path := makeCAR(t, 1, 50)
	pc := api.addPiece(t, path)
	other := makeCAR(t, 2, 30)
	pc2 := api.addPiece(t, other)
	w := openWrapper(t, t.TempDir(), api)
	tli := w.st.tli
	release := tli.compact.HoldInserts()
	defer release()

	for _, p := range []cid.Cid{pc, pc2} {
		res := make(chan dagstore.ShardResult, 1)
		if err := w.RegisterShard(ctx, p, "", true, res); err != nil {
			t.Fatal(err)
		}
		if r := <-res; r.Error != nil {
			t.Fatal(r.Error)
		}
	}
	if tli.compact.Complete(shard.KeyFromCID(pc)) {
		t.Fatal("the held insert completed")
	}
	findsOnly(t, w, pc, cidsOf(t, path))
	findsOnly(t, w, pc2, cidsOf(t, other))

	if err := w.DestroyShardSync(ctx, pc2); err != nil {
		t.Fatal(err)
	}
	for _, c := range cidsOf(t, other) {
		if got, err := w.GetPiecesContainingBlock(c); !errors.Is(err, ErrBlockNotFound) {
			t.Fatalf("block %s of a destroyed piece: lookup gave %v, %v; want ErrBlockNotFound", c, got, err)
		}
	}

	release()
	if err := tli.Wait(ctx, shard.KeyFromCID(pc)); err != nil {
		t.Fatal(err)
	}
	findsOnly(t, w, pc, cidsOf(t, path))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := tli.fresh.n.Load(); n != 0 {
		t.Fatalf("%d index files still mapped after Close", n)
	}
}

// A crash (here a Close) before a piece's entries were written leaves it
// unfinished; after the next Start lookups find it at once, from its index
// file, while the reconciliation writes its entries again (held back here).
func TestLookupsFindAnUnfinishedPieceRightAfterStart(t *testing.T) {
	skipOnPG(t, "the compact top-level index's fresh pieces")
	ctx := context.Background()
	root := t.TempDir()
	api := newFakeAPI(true)
	path := makeCAR(t, 3, 40)
	pc := api.addPiece(t, path)
	w := openWrapper(t, root, api)
	release := w.st.tli.compact.HoldInserts()
	res := make(chan dagstore.ShardResult, 1)
	if err := w.RegisterShard(ctx, pc, "", true, res); err != nil {
		t.Fatal(err)
	}
	if r := <-res; r.Error != nil {
		t.Fatal(r.Error)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	release()

	w2, err := New(Config{RootDir: root}, api)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w2.Close() })
	release2 := w2.st.tli.compact.HoldInserts()
	defer release2()
	if err := w2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	findsOnly(t, w2, pc, cidsOf(t, path))
	if w2.st.tli.compact.Complete(shard.KeyFromCID(pc)) {
		t.Fatal("the held insert completed")
	}
	release2()
	<-w2.reconciled
	if !w2.st.tli.compact.Complete(shard.KeyFromCID(pc)) {
		t.Fatal("the reconciliation did not write the piece's entries")
	}
	findsOnly(t, w2, pc, cidsOf(t, path))
}

// A fresh piece whose index file is cut short in place (the mapped pages
// fault) is passed over by lookups, which go on answering for the others;
// once its entries are written it is found through them.
func TestLookupsPassOverAFreshPieceWhoseIndexFileIsCutShort(t *testing.T) {
	skipOnPG(t, "cuts the index file under the root")
	ctx := context.Background()
	root := t.TempDir()
	api := newFakeAPI(true)
	path := makeCAR(t, 4, 300) // an index of several pages
	pc := api.addPiece(t, path)
	other := makeCAR(t, 5, 20)
	pc2 := api.addPiece(t, other)
	w := openWrapper(t, root, api)
	if err := w.RegisterShardSync(ctx, pc2, "", true); err != nil {
		t.Fatal(err)
	}
	release := w.st.tli.compact.HoldInserts()
	defer release()
	res := make(chan dagstore.ShardResult, 1)
	if err := w.RegisterShard(ctx, pc, "", true, res); err != nil {
		t.Fatal(err)
	}
	if r := <-res; r.Error != nil {
		t.Fatal(r.Error)
	}
	if !w.st.tli.fresh.has(shard.KeyFromCID(pc)) {
		t.Fatal("the piece is not read from its index file")
	}
	if err := os.Truncate(w.st.tli.indexes.path(shard.KeyFromCID(pc)), 100); err != nil {
		t.Fatal(err)
	}
	for _, c := range cidsOf(t, path) {
		if got, err := w.GetPiecesContainingBlock(c); !errors.Is(err, ErrBlockNotFound) {
			t.Fatalf("block %s of a piece whose index file is cut short: lookup gave %v, %v; want ErrBlockNotFound", c, got, err)
		}
	}
	findsOnly(t, w, pc2, cidsOf(t, other))

	release()
	if err := w.st.tli.Wait(ctx, shard.KeyFromCID(pc)); err != nil {
		t.Fatal(err)
	}
	findsOnly(t, w, pc, cidsOf(t, path))
}
