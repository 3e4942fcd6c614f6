package main

import (
	"context"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/filecoin-project/dagstore"
	carv2 "github.com/ipld/go-car/v2"

	"github.com/spstack/dagwrap/internal/cargen"
	"github.com/spstack/dagwrap/internal/testkit"
)

// recordsPieceSize is the smallest padded piece size whose unpadded bytes
// hold n blocks of blockSize with a node after every nodeEvery: a section
// costs about 38 bytes of length and CID, a node about 30 per link.
func recordsPieceSize(n, blockSize, nodeEvery int) uint64 {
	per := float64(blockSize + 38)
	if nodeEvery > 0 {
		per += 30 + 40/float64(nodeEvery)
	}
	need := uint64(float64(n)*per*1.03) * 128 / 127
	return max(uint64(1)<<bits.Len64(need-1), 1<<20)
}

// case15 registers one piece of very many small blocks eagerly (issue 11:
// a deal of 55M records took hours to index in Boost's tracker): the time
// until available and until its last block is found, records/s, peak RSS,
// and go-car's GenerateIndexFromFile on the same file (-records-floor).
// One round each: at this size a round takes minutes.
func (b *bench) case15() ([]row, error) {
	n, bs := b.cfg.records, int(b.cfg.recordsBlock)
	size := recordsPieceSize(n, bs, b.cfg.nodeEvery)
	logf("case 15: generating a %s piece of %s blocks of %s", humanize.IBytes(size), commas(n), humanize.IBytes(uint64(bs)))
	gen := time.Now()
	p, err := cargen.Write(filepath.Join(b.work, "records.car"), cargen.Spec{
		PieceSize: size, BlockSize: bs, NodeEvery: b.cfg.nodeEvery, MaxBlocks: n, Seed: 15,
	})
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	defer os.Remove(p.Path)
	b.store.Add(p.CID, p.Path, uint64(p.Size))
	logf("  %s blocks, CAR %s, generated in %s", commas(p.Blocks), humanize.IBytes(uint64(p.CARSize)), time.Since(gen).Round(time.Second))
	label := fmt.Sprintf("piece of %s blocks (%s raw blocks and nodes, CAR %s)", commas(p.Blocks), humanize.IBytes(uint64(bs)), humanize.IBytes(uint64(p.CARSize)))

	w, root, err := b.openWrapper(b.store, time.Hour)
	if err != nil {
		return nil, err
	}
	if err := resetPeakRSS(); err != nil {
		logf("cannot reset VmHWM (%v): peak RSS covers the whole run", err)
	}
	res := make(chan dagstore.ShardResult, 1)
	start := time.Now()
	if err = w.RegisterShard(context.Background(), p.CID, "", true, res); err == nil {
		err = (<-res).Error
	}
	avail := time.Since(start)
	logf("  available after %s (%s records/s)", avail.Round(time.Millisecond), humanize.Comma(int64(float64(p.Blocks)/avail.Seconds())))
	for err == nil { // minutes: a 10 ms poll costs nothing
		if _, lerr := w.GetPiecesContainingBlock(p.Last); lerr == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	found := time.Since(start)
	if err == nil {
		err = w.InitShard(context.Background(), p.CID) // waits for the entries
	}
	written := time.Since(start)
	peak, _ := procStatusBytes("VmHWM")
	closeWrapper(w, root)
	if err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	logf("  last block found after %s, top-level entries durable after %s; peak RSS %s",
		found.Round(time.Millisecond), written.Round(time.Millisecond), humanize.IBytes(peak))

	floor, floorPeak := none, none
	if b.cfg.recordsFloor {
		_ = resetPeakRSS()
		logf("  go-car GenerateIndexFromFile (floor)")
		t, err := timeOnce(func() error {
			_, err := carv2.GenerateIndexFromFile(p.Path, testkit.IndexOptions...)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("go-car index: %w", err)
		}
		floor = t.Seconds()
		if v, err := procStatusBytes("VmHWM"); err == nil {
			floorPeak = float64(v)
		}
		logf("  floor: %s, peak RSS %s", t.Round(time.Millisecond), humanize.IBytes(uint64(floorPeak)))
	}
	return []row{
		{Case: "15", What: "eager register, " + label + ": until available vs go-car GenerateIndexFromFile (floor)",
			Unit: seconds, Dagwrap: avail.Seconds(), Baseline: floor,
			Target: "minutes, not hours (< 1 h)", met: func(v, _ float64) bool { return v < 3600 }},
		{Case: "15", What: "eager register, " + label + ": records indexed per second (until available) vs the floor's",
			Unit: perSec, Dagwrap: float64(p.Blocks) / avail.Seconds(), Baseline: float64(p.Blocks) / floor},
		{Case: "15", What: "eager register, " + label + ": until lookups find its last block vs until available",
			Unit: seconds, Dagwrap: found.Seconds(), Baseline: avail.Seconds(), Target: "ratio ≤ 2", met: ratioAtMost(2)},
		{Case: "15", What: "eager register, " + label + ": until its top-level entries are durable (RegisterShardSync returns) vs until available",
			Unit: seconds, Dagwrap: written.Seconds(), Baseline: avail.Seconds()},
		{Case: "15", What: "eager register, " + label + ": process peak RSS (VmHWM) until searchable vs the floor's",
			Unit: bytesU, Dagwrap: float64(peak), Baseline: floorPeak},
	}, nil
}
