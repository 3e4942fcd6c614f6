package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/filecoin-project/dagstore/index"
	"github.com/filecoin-project/dagstore/shard"
	levelds "github.com/ipfs/go-ds-leveldb"
	"github.com/multiformats/go-multihash"

	"github.com/spstack/dagwrap"
)

// counterHashes yields the sha2-256 multihashes of the counters [from, from+n).
type counterHashes struct{ from, n int }

func (c counterHashes) ForEach(f func(multihash.Multihash) error) error {
	var b [8]byte
	for i := c.from; i < c.from+c.n; i++ {
		binary.LittleEndian.PutUint64(b[:], uint64(i))
		d := sha256.Sum256(b[:])
		mh, err := multihash.Encode(d[:], multihash.SHA2_256)
		if err != nil {
			return err
		}
		if err := f(mh); err != nil {
			return err
		}
	}
	return nil
}

// case9 fills the top-level index to cfg.tliScale entries (pieces of
// 100,000 multihashes each): insert rate at each tenth, bytes on disk per
// entry, lookup latency at the end. The baseline is the previous layout (one
// go-datastore key per pair) over the first tenth.
func (b *bench) case9() ([]row, error) {
	const per = 100_000
	total := max(b.cfg.tliScale/per, 10) * per
	logf("case 9: top-level index at scale, %s entries", commas(total))
	ctx := context.Background()
	fill := func(name string, mk func(*levelds.Datastore) index.Inverted, entries int, tick func(done, span int, d time.Duration)) (string, func(), index.Inverted, error) {
		dir, err := os.MkdirTemp(b.work, name+"-")
		if err != nil {
			return "", nil, nil, err
		}
		opts := ldbOptions
		ldb, err := levelds.NewDatastore(dir, &opts)
		if err != nil {
			return "", nil, nil, err
		}
		idx := mk(ldb)
		done := func() {
			if c, ok := idx.(io.Closer); ok {
				_ = c.Close()
			}
			_ = ldb.Close()
			_ = os.RemoveAll(dir)
		}
		t0 := time.Now()
		for p := 0; p < entries/per; p++ {
			k := shard.KeyFromString(fmt.Sprintf("piece-%06d", p))
			if err := idx.AddMultihashesForShard(ctx, counterHashes{p * per, per}, k); err != nil {
				done()
				return "", nil, nil, err
			}
			if step := max(entries/per/10, 1); tick != nil && (p+1)%step == 0 {
				tick((p+1)*per, step*per, time.Since(t0))
				t0 = time.Now()
			}
		}
		return dir, done, idx, nil
	}
	var oldRate float64
	_, oldDone, _, err := fill("tli-old", func(d *levelds.Datastore) index.Inverted {
		return dagwrap.NewTopLevelIndex(datastoreOnly{d})
	}, total/10, func(_, span int, d time.Duration) {
		oldRate = float64(span) / d.Seconds()
	})
	if err != nil {
		return nil, err
	}
	oldDone()
	var rows []row
	dir, done, idx, err := fill("tli", func(d *levelds.Datastore) index.Inverted { return dagwrap.NewTopLevelIndex(d) }, total,
		func(n, span int, d time.Duration) {
			rate := float64(span) / d.Seconds()
			logf("case 9: %s entries, %.0f entries/s", commas(n), rate)
			rows = append(rows, row{Case: "9", What: fmt.Sprintf("top-level index inserts, entries %s to %s: entries/s vs the previous layout's rate over its first tenth",
				commas(n-span), commas(n)), Unit: perSec, Dagwrap: rate, Baseline: oldRate, Target: "≥ 100,000/s", met: valueAtLeast(100_000)})
		})
	if err != nil {
		return nil, err
	}
	defer done()
	rng := rand.New(rand.NewPCG(9, 9))
	lat := make([]time.Duration, 0, b.cfg.lookups)
	for range b.cfg.lookups {
		i := rng.IntN(total)
		var c [8]byte
		binary.LittleEndian.PutUint64(c[:], uint64(i))
		d := sha256.Sum256(c[:])
		mh, _ := multihash.Encode(d[:], multihash.SHA2_256)
		t := time.Now()
		got, err := idx.GetShardsForMultihash(ctx, mh)
		lat = append(lat, time.Since(t))
		if err != nil || len(got) != 1 || got[0].String() != fmt.Sprintf("piece-%06d", i/per) {
			return nil, fmt.Errorf("case 9: lookup of entry %d: %v %v", i, got, err)
		}
	}
	var size int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			size += fi.Size()
		}
		return nil
	})
	at := commas(total)
	rows = append(rows,
		row{Case: "9", What: "top-level index on disk at " + at + " entries: bytes per (multihash, piece) entry (LevelDB files as they are, no forced compaction)",
			Unit: plain, Dagwrap: float64(size) / float64(total), Baseline: math.NaN(), Target: "≤ 48", met: valueAtMost(48)},
		row{Case: "9", What: "top-level lookup at " + at + " entries: median", Unit: seconds, Dagwrap: median(lat).Seconds(), Baseline: math.NaN()},
		row{Case: "9", What: "top-level lookup at " + at + " entries: p99", Unit: seconds, Dagwrap: percentile(lat, 99).Seconds(), Baseline: math.NaN(),
			Target: "< 1 ms", met: valueAtMost(0.001)},
	)
	return rows, nil
}

// datastoreOnly hides that a datastore is a LevelDB, to get the
// go-datastore-key layout from NewTopLevelIndex.
type datastoreOnly struct{ *levelds.Datastore }
