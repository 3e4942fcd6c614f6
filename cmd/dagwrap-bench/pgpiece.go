package main

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spstack/dagwrap"
	"github.com/spstack/dagwrap/internal/cargen"
)

// case14 runs the piece cases on the PostgreSQL piece directory against
// the embedded one, on the same piece (the piece of small blocks): eager
// registration, the first block after GC and the heap one loaded shard
// holds. The database's schema is its own, dropped at the end.
func (b *bench) case14(p cargen.Piece, label string) ([]row, error) {
	if b.cfg.indexDSN == "" {
		logf("case 14: skipped (no -index-dsn or $DAGWRAP_INDEX_DSN)")
		return nil, nil
	}
	schema := fmt.Sprintf("bench_piece_%d", time.Now().UnixNano())
	ctx := context.Background()
	defer func() {
		if conn, err := pgx.Connect(ctx, b.cfg.indexDSN); err == nil {
			_, _ = conn.Exec(ctx, `DROP SCHEMA `+pgx.Identifier{schema}.Sanitize()+` CASCADE`)
			_ = conn.Close(ctx)
		}
	}()
	type figures struct {
		register, firstBlock time.Duration
		heap                 int64
	}
	measure := func(pg bool) (f figures, err error) {
		b.pg, b.pgSchema = pg, schema
		defer func() { b.pg = false }()
		w, root, err := b.openWrapper(b.store, time.Hour)
		if err != nil {
			return f, err
		}
		start := time.Now()
		err = w.RegisterShardSync(ctx, p.CID, "", true)
		f.register = time.Since(start)
		if err == nil {
			runtime.GC()
			h0 := heapAlloc()
			var bs dagwrap.ClosableBlockstore
			if bs, err = w.LoadShard(ctx, p.CID); err == nil {
				_, err = bs.Get(ctx, p.CIDs[len(p.CIDs)/2])
				runtime.GC()
				f.heap = int64(heapAlloc()) - int64(h0)
				runtime.KeepAlive(bs)
				_ = bs.Close()
			}
		}
		closeWrapper(w, root)
		if err != nil {
			return f, err
		}
		f.firstBlock, _, err = b.firstBlockAfterGC(p, b.store, p.CIDs[len(p.CIDs)/2], b.cfg.fbReps)
		return f, err
	}
	logf("case 14: %s, embedded piece directory", label)
	emb, err := measure(false)
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	logf("case 14: %s, PostgreSQL piece directory", label)
	pg, err := measure(true)
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL: %w", err)
	}
	return []row{
		{Case: "14", What: "eager register until searchable, " + label + ": PostgreSQL vs embedded piece directory",
			Unit: seconds, Dagwrap: pg.register.Seconds(), Baseline: emb.register.Seconds()},
		{Case: "14", What: "first block after GC, " + label + ": PostgreSQL vs embedded piece directory",
			Unit: seconds, Dagwrap: pg.firstBlock.Seconds(), Baseline: emb.firstBlock.Seconds()},
		{Case: "14", What: "Go heap held by one loaded shard, " + label + ": PostgreSQL vs embedded piece directory",
			Unit: bytesU, Dagwrap: float64(max(pg.heap, 0)), Baseline: float64(max(emb.heap, 0)), Target: "≤ 2 MiB", met: valueAtMost(2 << 20)},
	}, nil
}
