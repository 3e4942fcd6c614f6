package dagwrap

import (
	"context"
	"testing"

	"github.com/filecoin-project/dagstore"
)

// Close returns once the dagstore has processed the release: the shard is
// available again at once, and a GC right after it reclaims its transient
// (pins issue 10: a completion, not a polling loop).
func TestCloseReturnsOnceReleased(t *testing.T) {
	api := newFakeAPI(false)
	w := openWrapper(t, t.TempDir(), api)
	ps := makePieces(t, api, t.TempDir(), 1)
	registerAll(t, w, ps...)
	ctx := context.Background()
	for range 20 {
		bs, err := w.LoadShard(ctx, ps[0].pc)
		if err != nil {
			t.Fatal(err)
		}
		if info, _ := w.ShardInfo(ps[0].pc); info.State != dagstore.ShardStateServing {
			t.Fatalf("while loaded: %v, want serving", info.State)
		}
		if err := bs.Close(); err != nil {
			t.Fatal(err)
		}
		if info, _ := w.ShardInfo(ps[0].pc); info.State != dagstore.ShardStateAvailable {
			t.Fatalf("right after Close: %v, want available", info.State)
		}
		res, err := w.GC(ctx)
		if err != nil || len(res.Reclaimed) != 1 {
			t.Fatalf("GC right after Close reclaimed %+v, %v; want the piece's transient", res.Reclaimed, err)
		}
	}
}
