package dagwrap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	carindex "github.com/ipld/go-car/v2/index"
	"github.com/multiformats/go-multihash"
)

// truncateIndex cuts the piece's index file to 100 bytes, as an operator's
// `truncate -s 100` or a stock repo's interrupted in-place write would.
func truncateIndex(t *testing.T, root string, pc shard.Key) string {
	t.Helper()
	p := filepath.Join(root, indexDir, pc.String()+indexSuffix)
	if err := os.Truncate(p, 100); err != nil {
		t.Fatal(err)
	}
	return p
}

// Pins issue 9 item 3: a truncated index fails the shard with an error
// naming the index, and recovery rebuilds it from the piece.
func TestTruncatedIndexFailsNamingItAndRecovers(t *testing.T) {
	skipOnPG(t, "truncates the index file under the root")
	ctx := context.Background()
	root := t.TempDir()
	api := newFakeAPI(true)
	pc := api.addPiece(t, makeCAR(t, 31, 400))
	w := openWrapper(t, root, api)
	if err := w.RegisterShardSync(ctx, pc, "", true); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	path := truncateIndex(t, root, shard.KeyFromCID(pc))
	w = openWrapper(t, root, api)
	bs, err := w.LoadShard(ctx, pc)
	if err == nil {
		_ = bs.Close()
		t.Fatal("a shard with a truncated index loaded")
	}
	if !strings.Contains(err.Error(), path) {
		t.Fatalf("load with a truncated index: %v, want an error naming %s", err, path)
	}
	// The failure gets an automatic recovery; an operator's recovery waits
	// for it, or runs itself.
	if err := w.RecoverShard(ctx, pc); err != nil && !errors.Is(err, ErrShardNotErrored) {
		t.Fatal(err)
	}
	assertServes(t, w, pc, api.piecePath(t, pc))
}

// Pins issue 9 item 3: destroy removes the record and the index file even
// when the index is unreadable, lookups stop at once, nothing is left to
// fail at the next start, and a re-registration indexes afresh and serves.
func TestDestroyWithUnreadableIndex(t *testing.T) {
	skipOnPG(t, "truncates the index file under the root")
	ctx := context.Background()
	root := t.TempDir()
	api := newFakeAPI(true)
	car := makeCAR(t, 32, 300)
	pc := api.addPiece(t, car)
	w := openWrapper(t, root, api)
	if err := w.RegisterShardSync(ctx, pc, "", true); err != nil {
		t.Fatal(err)
	}
	blk := carBlocks(t, car)[7].Cid()
	if _, err := w.GetPiecesContainingBlock(blk); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	path := truncateIndex(t, root, shard.KeyFromCID(pc))
	w = openWrapper(t, root, api)
	if err := w.DestroyShardSync(ctx, pc); err != nil {
		t.Fatalf("destroy of a shard with an unreadable index: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("index file left after destroy: %v", err)
	}
	if _, err := w.GetPiecesContainingBlock(blk); !errors.Is(err, ErrBlockNotFound) {
		t.Fatalf("lookup right after destroy: %v, want ErrBlockNotFound", err)
	}
	if err := w.st.tli.compact.WaitReclaimed(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w = openWrapper(t, root, api)
	if _, err := w.ShardInfo(pc); !errors.Is(err, ErrShardUnknown) {
		t.Fatalf("destroyed shard after restart: %v", err)
	}
	if err := w.RegisterShardSync(ctx, pc, "", true); err != nil {
		t.Fatal(err)
	}
	assertServes(t, w, pc, car)
	if got, err := w.GetPiecesContainingBlock(blk); err != nil || len(got) != 1 || !got[0].Equals(pc) {
		t.Fatalf("lookup after re-registration: %v %v", got, err)
	}
	if info, _ := w.ShardInfo(pc); info.State != dagstore.ShardStateAvailable && info.State != dagstore.ShardStateServing {
		t.Fatalf("re-registered shard is %s", StateName(info.State))
	}
}

// The index repo lists its indexes while others are written and renamed
// into place (the stock repo's listing panicked on an entry that vanished
// mid-walk, in the start-up reconciliation's goroutine).
func TestIndexRepoListsWhileIndexesAreWritten(t *testing.T) {
	dir := t.TempDir()
	r, err := newIndexRepo(dir)
	if err != nil {
		t.Fatal(err)
	}
	idx := carindex.NewMultihashSorted()
	if err := idx.Load(mixedRecords(t)[:50]); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	wrote := make(chan error, 1)
	go func() {
		defer close(wrote)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := shard.KeyFromString(fmt.Sprint("piece-", i%20))
			if err := r.AddFullIndex(k, idx); err != nil {
				wrote <- err
				return
			}
		}
	}()
	for i := 0; i < 200; i++ {
		if err := r.ForEach(func(shard.Key) (bool, error) { return true, nil }); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Size(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if n, err := r.Len(); err != nil || n == 0 || n > 20 {
		t.Fatalf("Len = %d, %v", n, err)
	}
}

// Pins issue 9 item 7: a block over the blockstore's 8 MiB section limit
// is left out of the piece's index, so it is never announced (lookup, Has,
// GetSize) without Get serving it; the rest of the piece serves.
func TestOversizedBlockIsNotAnnounced(t *testing.T) {
	ctx := context.Background()
	big := block(t, bytes.Repeat([]byte{9}, 9<<20), cid.Raw, multihash.SHA2_256)
	small := []blocks.Block{block(t, []byte("before"), cid.Raw, multihash.SHA2_256), block(t, []byte("after"), cid.Raw, multihash.SHA2_256)}
	path := writeSections(t, []blocks.Block{small[0], big, small[1]}, 0)
	api := newFakeAPI(true)
	pc := api.servePath(t, path)
	w := openWrapper(t, t.TempDir(), api)
	if err := w.RegisterShardSync(ctx, pc, "", true); err != nil {
		t.Fatal(err)
	}
	if _, err := w.GetPiecesContainingBlock(big.Cid()); !errors.Is(err, ErrBlockNotFound) {
		t.Fatalf("lookup of the oversized block: %v, want ErrBlockNotFound", err)
	}
	bs, err := w.LoadShard(ctx, pc)
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	if has, err := bs.Has(ctx, big.Cid()); has || err != nil {
		t.Fatalf("Has(oversized) = %v, %v; want false", has, err)
	}
	if _, err := bs.GetSize(ctx, big.Cid()); err == nil {
		t.Fatal("GetSize of the oversized block succeeded")
	}
	st, err := w.IndexStats(pc)
	if err != nil || len(st.Oversized) != 1 || !st.Oversized[0].CID.Equals(big.Cid()) || st.Oversized[0].Size != uint64(len(big.RawData())) {
		t.Fatalf("IndexStats.Oversized = %+v, %v; want the big block", st.Oversized, err)
	}
	for _, b := range small {
		got, err := bs.Get(ctx, b.Cid())
		if err != nil || !bytes.Equal(got.RawData(), b.RawData()) {
			t.Fatalf("block %s next to the oversized one: %v", b.Cid(), err)
		}
		if pieces, err := w.GetPiecesContainingBlock(b.Cid()); err != nil || len(pieces) != 1 {
			t.Fatalf("lookup of %s: %v %v", b.Cid(), pieces, err)
		}
	}
}
