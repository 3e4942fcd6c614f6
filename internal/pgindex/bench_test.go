package pgindex

import (
	"testing"
	"time"

	"github.com/filecoin-project/dagstore/shard"
)

// BenchmarkInsert reports entries/s of AddFullIndex for 1M-entry pieces.
func BenchmarkInsert(b *testing.B) {
	dsn, schema := testDSN(b), testSchema(b)
	r := openNode(b, dsn, schema, "bench")
	const n = 1 << 20
	idx := counterIndex(b, 0, n)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if err := r.AddFullIndex(shard.KeyFromCID(pieceKey(b, int64(i))), idx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/time.Since(start).Seconds(), "entries/s")
}
