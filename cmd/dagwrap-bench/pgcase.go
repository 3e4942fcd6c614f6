package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
	carindex "github.com/ipld/go-car/v2/index"
	"github.com/jackc/pgx/v5"
	"github.com/multiformats/go-multicodec"
	"github.com/multiformats/go-multihash"

	"github.com/spstack/dagwrap/internal/pgindex"
)

// boostYugabyteRate is the best insert rate Boost published for its piece
// directory on YugabyteDB (9k–63k records/s): the reference line.
const boostYugabyteRate = 63_000

// counterIndex is a piece index of the counters [from, from+n) at offsets
// (i-from)*100, iterated in multihash order as a piece's sorted index is.
type counterIndex struct{ from, n int }

func counterMH(i int) multihash.Multihash {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(i))
	d := sha256.Sum256(b[:])
	mh, _ := multihash.Encode(d[:], multihash.SHA2_256)
	return mh
}

func (c counterIndex) ForEach(f func(multihash.Multihash, uint64) error) error {
	type entry struct {
		mh  multihash.Multihash
		off uint64
	}
	es := make([]entry, c.n)
	for i := range es {
		es[i] = entry{counterMH(c.from + i), uint64(i) * 100}
	}
	slices.SortFunc(es, func(a, b entry) int { return bytes.Compare(a.mh, b.mh) })
	for _, e := range es {
		if err := f(e.mh, e.off); err != nil {
			return err
		}
	}
	return nil
}

var errCounterIndex = errors.New("counter index: iterate only")

func (c counterIndex) Codec() multicodec.Code                  { return multicodec.CarMultihashIndexSorted }
func (c counterIndex) Marshal(io.Writer) (uint64, error)       { return 0, errCounterIndex }
func (c counterIndex) Unmarshal(io.Reader) error               { return errCounterIndex }
func (c counterIndex) Load([]carindex.Record) error            { return errCounterIndex }
func (c counterIndex) GetAll(cid.Cid, func(uint64) bool) error { return errCounterIndex }

// case13 is case 9 on the PostgreSQL piece directory (-index-dsn): pieces
// of 100,000 entries written through AddFullIndex up to -tli-scale entries,
// the insert rate at each tenth, then lookup and offset latencies. It runs
// in a schema of its own, dropped at the end.
func (b *bench) case13() ([]row, error) {
	if b.cfg.indexDSN == "" {
		logf("case 13: skipped (no -index-dsn or $DAGWRAP_INDEX_DSN)")
		return nil, nil
	}
	const per = 100_000
	total := max(b.cfg.tliScale/per, 10) * per
	schema := fmt.Sprintf("bench_%d", time.Now().UnixNano())
	ctx := context.Background()
	r, err := pgindex.Open(b.cfg.indexDSN, pgindex.Options{NodeID: "bench", Schema: schema})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if err := r.Ensure(ctx); err != nil {
		return nil, err
	}
	defer func() {
		if conn, err := pgx.Connect(ctx, b.cfg.indexDSN); err == nil {
			_, _ = conn.Exec(ctx, `DROP SCHEMA `+pgx.Identifier{schema}.Sanitize()+` CASCADE`)
			_ = conn.Close(ctx)
		}
	}()
	logf("case 13: PostgreSQL piece directory at %s, %s entries", r.Name(), commas(total))
	key := func(p int) shard.Key { return shard.KeyFromString(fmt.Sprintf("piece-%06d", p)) }
	var rows []row
	step := max(total/per/10, 1)
	t0 := time.Now()
	for p := 0; p < total/per; p++ {
		if err := r.AddFullIndex(key(p), counterIndex{p * per, per}); err != nil {
			return nil, err
		}
		if (p+1)%step == 0 {
			n, span := (p+1)*per, step*per
			rate := float64(span) / time.Since(t0).Seconds()
			logf("case 13: %s entries, %.0f entries/s", commas(n), rate)
			rows = append(rows, row{Case: "13", What: fmt.Sprintf("PostgreSQL piece directory inserts, entries %s to %s: entries/s vs Boost's best published YugabyteDB rate",
				commas(n-span), commas(n)), Unit: perSec, Dagwrap: rate, Baseline: boostYugabyteRate, Target: "≥ 100,000/s", met: valueAtLeast(100_000)})
			t0 = time.Now()
		}
	}
	rng := rand.New(rand.NewPCG(10, 10))
	lookups := make([]time.Duration, 0, b.cfg.lookups)
	offsets := make([]time.Duration, 0, b.cfg.lookups)
	for range b.cfg.lookups {
		i := rng.IntN(total)
		mh := counterMH(i)
		t := time.Now()
		got, err := r.GetShardsForMultihash(ctx, mh)
		lookups = append(lookups, time.Since(t))
		if err != nil || len(got) != 1 || got[0] != key(i/per) {
			return nil, fmt.Errorf("case 13: lookup of entry %d: %v %v", i, got, err)
		}
		idx, err := r.GetFullIndex(got[0])
		if err != nil {
			return nil, err
		}
		t = time.Now()
		var off uint64
		err = idx.GetAll(cid.NewCidV1(cid.Raw, mh), func(o uint64) bool { off = o; return false })
		offsets = append(offsets, time.Since(t))
		if err != nil || off != uint64(i%per)*100 {
			return nil, fmt.Errorf("case 13: offset of entry %d: %d %v", i, off, err)
		}
	}
	at := commas(total)
	rows = append(rows,
		row{Case: "13", What: "PostgreSQL lookup (multihash -> pieces) at " + at + " entries: median", Unit: seconds, Dagwrap: median(lookups).Seconds(), Baseline: none},
		row{Case: "13", What: "PostgreSQL lookup (multihash -> pieces) at " + at + " entries: p99", Unit: seconds, Dagwrap: percentile(lookups, 99).Seconds(), Baseline: none,
			Target: "< 2 ms", met: valueAtMost(0.002)},
		row{Case: "13", What: "PostgreSQL offset of a block in its piece at " + at + " entries: p99", Unit: seconds, Dagwrap: percentile(offsets, 99).Seconds(), Baseline: none},
	)
	return rows, nil
}
