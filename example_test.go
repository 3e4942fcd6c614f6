package dagwrap_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spstack/dagwrap"
	"github.com/spstack/dagwrap/internal/testkit"
)

// newCarAPI stands for the node's MinerAPI in these examples: it serves the
// CAR files at paths as unsealed pieces (testkit.Files, shared with the fx
// tests and the benchmarks) and returns their piece CIDs in order.
func newCarAPI(paths ...string) (*testkit.Files, []cid.Cid) {
	api := &testkit.Files{}
	var pcs []cid.Cid
	for _, p := range paths {
		pc, err := api.Serve(p)
		if err != nil {
			panic(err)
		}
		pcs = append(pcs, pc)
	}
	return api, pcs
}

// startExample opens and starts a Wrapper on a temporary root, serving
// the given CARs; done closes it and removes the root.
func startExample(ctx context.Context, cars []string, opts ...dagwrap.Option) (*dagwrap.Wrapper, []cid.Cid, func()) {
	root, err := os.MkdirTemp("", "dagwrap-example-")
	if err != nil {
		panic(err)
	}
	api, pieces := newCarAPI(cars...)
	w, err := dagwrap.New(dagwrap.Config{RootDir: root}, api, opts...)
	if err != nil {
		panic(err)
	}
	if err := w.Start(ctx); err != nil {
		panic(err)
	}
	return w, pieces, func() { _ = w.Close(); _ = os.RemoveAll(root) }
}

// carRoot returns the first root of a CAR file.
func carRoot(path string) cid.Cid {
	f, err := os.Open(path)
	if err != nil {
		panic(err)
	}
	defer f.Close()
	br, err := carv2.NewBlockReader(f, carv2.ZeroLengthSectionAsEOF(true))
	if err != nil {
		panic(err)
	}
	return br.Roots[0]
}

// Wire a Wrapper into a node: open the root, start, close on shutdown.
func Example() {
	ctx := context.Background()
	root, err := os.MkdirTemp("", "dagwrap-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(root)
	api, _ := newCarAPI("testdata/sample.car") // the node's MinerAPI

	w, err := dagwrap.New(dagwrap.Config{RootDir: root}, api)
	if err != nil {
		fmt.Println("open:", err)
		return
	}
	defer w.Close() // stops every goroutine, closes LevelDB, unlocks the root
	if err := w.Start(ctx); err != nil {
		fmt.Println("start:", err)
		return
	}

	// The root is this Wrapper's until Close.
	_, err = dagwrap.New(dagwrap.Config{RootDir: root}, api)
	fmt.Println("second Wrapper on the root:", errors.Is(err, dagwrap.ErrRootLocked))
	shards, err := w.ListShards()
	fmt.Println("shards:", len(shards), err)
	// Output:
	// second Wrapper on the root: true
	// shards: 0 <nil>
}

// Register a piece when its deal is handed off, then serve blocks from it.
func ExampleWrapper_LoadShard() {
	ctx := context.Background()
	w, pieces, done := startExample(ctx, []string{"testdata/sample.car"})
	defer done()

	// Eager: fetch and index now, so that the first retrieval is fast.
	if err := w.RegisterShardSync(ctx, pieces[0], "", true); err != nil {
		fmt.Println(err)
		return
	}
	info, _ := w.ShardInfo(pieces[0])
	fmt.Println("piece:", pieces[0])
	fmt.Println("state:", info.State)

	bs, err := w.LoadShard(ctx, pieces[0])
	if err != nil {
		fmt.Println(err)
		return
	}
	defer bs.Close() // releases the shard
	blk, err := bs.Get(ctx, carRoot("testdata/sample.car"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("root block:", blk.Cid(), len(blk.RawData()), "bytes")
	// Output:
	// piece: baga6ea4seaqd7exthe4fo7ek3bp62grmw5eu555vgzm42plhbuycczq3pjptwcq
	// state: ShardStateAvailable
	// root block: bafyreib7rldqdzvxxwi4b76n3wfqphle43aoqluxfa45ywnokz3twcc22y 23 bytes
}

// Migrate the deals made before dagwrap: one lazy registration per
// handed-off piece, once per root.
func ExampleWrapper_MigrateDeals() {
	ctx := context.Background()
	w, pieces, done := startExample(ctx, []string{"testdata/sample.car", "testdata/padded.car"})
	defer done()

	deals := []dagwrap.Deal{
		{DealID: 1, PieceCID: pieces[0], HandedOff: true},
		{DealID: 2, PieceCID: pieces[0], HandedOff: true}, // same piece: one shard
		{DealID: 3, PieceCID: pieces[1], HandedOff: false},
	}
	migrated, err := w.MigrateDeals(ctx, deals)
	fmt.Println("first run migrated:", migrated, err)
	migrated, err = w.MigrateDeals(ctx, deals)
	fmt.Println("second run migrated:", migrated, err)

	shards, _ := w.ListShards()
	for _, s := range shards {
		fmt.Println(s.PieceCID == pieces[0], s.State) // indexed on first load
	}
	// Output:
	// first run migrated: true <nil>
	// second run migrated: false <nil>
	// true ShardStateNew
}

// Find which pieces hold a block, then load one of them to serve it.
func ExampleWrapper_GetPiecesContainingBlock() {
	ctx := context.Background()
	w, pieces, done := startExample(ctx, []string{"testdata/sample.car", "testdata/padded.car"})
	defer done()
	for _, pc := range pieces {
		if err := w.RegisterShardSync(ctx, pc, "", true); err != nil {
			panic(err)
		}
	}

	block := carRoot("testdata/padded.car")
	holders, err := w.GetPiecesContainingBlock(block)
	fmt.Println(len(holders), holders[0] == pieces[1], err)

	bs, err := w.LoadShard(ctx, holders[0])
	if err != nil {
		panic(err)
	}
	defer bs.Close()
	has, err := bs.Has(ctx, block)
	fmt.Println("has:", has, err)

	absent, _ := block.Prefix().Sum([]byte("in no piece"))
	_, err = w.GetPiecesContainingBlock(absent)
	fmt.Println(errors.Is(err, dagwrap.ErrBlockNotFound))
	// Output:
	// 1 true <nil>
	// has: true <nil>
	// true
}

// Operator calls: list the shards with their state, inspect one, and remove
// one whose deal has expired.
func ExampleWrapper_ListShards() {
	ctx := context.Background()
	w, pieces, done := startExample(ctx, []string{"testdata/sample.car", "testdata/padded.car"})
	defer done()
	expired, kept := pieces[0], pieces[1]
	_ = w.RegisterShardSync(ctx, expired, "", true) // indexed now
	_ = w.RegisterShardSync(ctx, kept, "", false)   // indexed on first load

	list := func() {
		shards, err := w.ListShards() // sorted by piece CID
		if err != nil {
			fmt.Println(err)
		}
		for _, s := range shards {
			fmt.Printf("expired=%v state=%v error=%v\n", s.PieceCID == expired, s.State, s.Error)
		}
	}
	list()

	if err := w.DestroyShardSync(ctx, expired); err != nil {
		fmt.Println(err)
	}
	_, err := w.ShardInfo(expired)
	fmt.Println("destroyed:", errors.Is(err, dagwrap.ErrShardUnknown))
	list()
	// Output:
	// expired=true state=ShardStateAvailable error=<nil>
	// expired=false state=ShardStateNew error=<nil>
	// destroyed: true
	// expired=false state=ShardStateNew error=<nil>
}

// Export metrics on the node's registry; a scrape reads them.
func ExampleWithMetrics() {
	ctx := context.Background()
	root, err := os.MkdirTemp("", "dagwrap-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(root)
	api, pieces := newCarAPI("testdata/sample.car")
	reg := prometheus.NewRegistry() // the node's
	w, err := dagwrap.New(dagwrap.Config{RootDir: root}, api, dagwrap.WithMetrics(reg))
	if err != nil {
		panic(err)
	}
	defer w.Close() // unregisters them
	if err := w.Start(ctx); err != nil {
		panic(err)
	}
	if err := w.RegisterShardSync(ctx, pieces[0], "", true); err != nil {
		panic(err)
	}

	families, err := reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range families {
		if mf.GetName() != "dagwrap_shards" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if v := m.GetGauge().GetValue(); v > 0 {
				fmt.Println(mf.GetName(), m.GetLabel()[0].GetValue(), v)
			}
		}
	}
	// Output:
	// dagwrap_shards available 1
}
