package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"time"

	"github.com/spstack/dagwrap"
	"github.com/spstack/dagwrap/internal/testkit"
)

// case12 restarts a root holding b.cfg.restartShards lazily registered
// shards: start-up time and memory, then ListShards and ShardInfo at that
// size. The baseline is the same root at a tenth of the shards, so a
// start-up that grows faster than the shard count shows in the ratio
// (linear growth is a ratio of 10).
func (b *bench) case12() ([]row, error) {
	n := b.cfg.restartShards
	small := max(n/10, 1)
	logf("case 12: restart of a root with %s lazily registered shards (and %s)", commas(n), commas(small))
	measure := func(n int) (took time.Duration, heap uint64, rss uint64, w *dagwrap.Wrapper, root string, deals []dagwrap.Deal, err error) {
		rng := rand.New(rand.NewPCG(12, uint64(n)))
		deals = make([]dagwrap.Deal, n)
		for i := range deals {
			deals[i] = dagwrap.Deal{DealID: uint64(i + 1), PieceCID: testkit.RandomPieceCID(rng), HandedOff: true}
		}
		w, root, err = b.openWrapper(&testkit.Files{}, 0)
		if err != nil {
			return
		}
		if _, err = w.MigrateDeals(context.Background(), deals); err != nil {
			closeWrapper(w, root)
			return
		}
		if err = w.Close(); err != nil {
			return
		}
		runtime.GC()
		h0 := heapAlloc()
		start := time.Now()
		if w, err = dagwrap.New(dagwrap.Config{RootDir: root}, &testkit.Files{}); err != nil {
			return
		}
		if err = w.Start(context.Background()); err != nil {
			closeWrapper(w, root)
			return
		}
		took = time.Since(start)
		runtime.GC()
		heap = heapAlloc() - min(h0, heapAlloc())
		rss, _ = procStatusBytes("VmRSS")
		return
	}
	smallTook, smallHeap, _, ws, rootS, _, err := measure(small)
	if err != nil {
		return nil, err
	}
	closeWrapper(ws, rootS)
	took, heap, rss, w, root, deals, err := measure(n)
	if err != nil {
		return nil, err
	}
	defer closeWrapper(w, root)

	start := time.Now()
	list, err := w.ListShards()
	if err != nil {
		return nil, err
	}
	listTook := time.Since(start)
	if len(list) != n {
		return nil, fmt.Errorf("ListShards after restart: %d shards, want %d", len(list), n)
	}
	rng := rand.New(rand.NewPCG(12, 12))
	lat := make([]time.Duration, 10_000)
	for i := range lat {
		d := deals[rng.IntN(len(deals))]
		t := time.Now()
		if _, err := w.ShardInfo(d.PieceCID); err != nil {
			return nil, err
		}
		lat[i] = time.Since(t)
	}
	slices.Sort(lat)
	what := fmt.Sprintf("restart with %s lazy shards", commas(n))
	// 10x the shards: linear is 10 (a little more as the heap grows, and
	// the GC with it); quadratic would be 100.
	ratioLimit := 30.0
	return []row{
		{Case: "12", What: fmt.Sprintf("%s: New+Start vs the same with %s", what, commas(small)), Unit: seconds,
			Dagwrap: took.Seconds(), Baseline: smallTook.Seconds(), Target: fmt.Sprintf("ratio ≤ %.0f (quadratic: 100)", ratioLimit), met: ratioAtMost(ratioLimit)},
		{Case: "12", What: fmt.Sprintf("%s: Go heap after start vs the same with %s", what, commas(small)), Unit: bytesU,
			Dagwrap: float64(heap), Baseline: float64(smallHeap)},
		{Case: "12", What: what + ": process RSS after start", Unit: bytesU, Dagwrap: float64(rss), Baseline: none},
		{Case: "12", What: what + ": ListShards", Unit: seconds, Dagwrap: listTook.Seconds(), Baseline: none},
		{Case: "12", What: what + ": ShardInfo p99 (10,000 random pieces)", Unit: seconds, Dagwrap: percentile(lat, 99).Seconds(), Baseline: none},
	}, nil
}
