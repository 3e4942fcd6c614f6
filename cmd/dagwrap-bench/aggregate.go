package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/ipfs/go-cid"

	"github.com/spstack/dagwrap/internal/cargen"
)

// aggregateSegments is how many segments case 10's aggregate holds.
const aggregateSegments = 16

// case11 is eager registration of an aggregated piece (FRC-0058) of 16
// CAR segments against eager registration of the same 16 CARs as separate
// pieces, in one root each time. The segments are small-block pieces of a
// 32nd of -small-piece each, so that the aggregate (index included) fits a
// deal of -small-piece.
func (b *bench) case11() ([]row, error) {
	segSize := b.cfg.smallPiece / (2 * aggregateSegments)
	label := fmt.Sprintf("%d segments of %s (%s blocks)", aggregateSegments, humanize.IBytes(segSize), humanize.IBytes(b.cfg.smallBlock))
	logf("case 11: eager registration of an aggregate of %s", label)
	var parts []cargen.Piece
	var files []string
	for i := 0; i < aggregateSegments; i++ {
		p, err := b.generate(fmt.Sprintf("segment-%d", i), segSize, b.cfg.smallBlock, uint64(100+i))
		if err != nil {
			return nil, err
		}
		parts = append(parts, p)
		files = append(files, p.Path)
	}
	defer func() {
		for _, f := range files {
			_ = os.Remove(f)
		}
	}()
	path := filepath.Join(b.work, "aggregate.car")
	agg, err := cargen.WriteAggregateFiles(path, 0, files...)
	if err != nil {
		return nil, err
	}
	defer os.Remove(path)
	b.store.Add(agg.PieceCID, path, uint64(agg.Size))

	register := func(pieces []cid.Cid) (time.Duration, error) {
		var times []time.Duration
		for i := 0; i <= b.cfg.reps; i++ { // the first round warms caches up
			w, root, err := b.openWrapper(b.store, time.Hour)
			if err != nil {
				return 0, err
			}
			start := time.Now()
			for _, pc := range pieces {
				if err = w.RegisterShardSync(context.Background(), pc, "", true); err != nil {
					break
				}
			}
			if i > 0 {
				times = append(times, time.Since(start))
			}
			if err == nil && len(pieces) == 1 {
				segs, serr := w.Segments(context.Background(), pieces[0])
				if serr != nil || len(segs) != aggregateSegments {
					err = fmt.Errorf("the aggregate has %d segments listed (%v), want %d", len(segs), serr, aggregateSegments)
				}
			}
			closeWrapper(w, root)
			if err != nil {
				return 0, err
			}
		}
		return median(times), nil
	}
	one, err := register([]cid.Cid{agg.PieceCID})
	if err != nil {
		return nil, fmt.Errorf("aggregate: %w", err)
	}
	var separate []cid.Cid
	for _, p := range parts {
		separate = append(separate, p.CID)
	}
	many, err := register(separate)
	if err != nil {
		return nil, fmt.Errorf("separate pieces: %w", err)
	}
	return []row{{Case: "11", What: "eager register, aggregate of " + label + " vs the same CARs as separate pieces",
		Unit: seconds, Dagwrap: one.Seconds(), Baseline: many.Seconds(), Target: "ratio ≤ 1.2", met: ratioAtMost(1.2)}}, nil
}
