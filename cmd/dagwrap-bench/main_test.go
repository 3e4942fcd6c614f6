package main

import (
	"strings"
	"testing"
)

// TestRunSmallPrintsEveryCase runs the whole suite on tiny sizes: the
// command works, every case yields its rows, and the random-access mount
// writes nothing to transients/ while the sequential one does. No timing
// is checked here.
func TestRunSmallPrintsEveryCase(t *testing.T) {
	cfg := config{
		dir: t.TempDir(), cases: "1,2,3,4,5,6,7,8,10,11,12,15",
		bigPiece: 1 << 20, bigBlock: 256 << 10, smallPiece: 256 << 10, smallBlock: 1 << 10, nodeEvery: 8,
		reps: 1, seqReps: 1, fbReps: 1,
		deals: 200, lookupPieces: 5, lookupBlocks: 100, lookups: 50,
		tliPieces: 5, tliMHs: 100, tliShared: 0.1,
		clients: 8, retrievalPieces: 5, retrievalRequests: 200, touchPieces: 70, restartShards: 200,
		records: 5000, recordsBlock: 64, recordsFloor: true,
	}
	var out strings.Builder
	if err := run(cfg, &out); err != nil {
		t.Fatal(err)
	}
	table := out.String()
	rows := map[string]int{}
	for _, l := range strings.Split(table, "\n") {
		f := strings.Split(l, "|")
		if len(f) < 8 || strings.TrimSpace(f[1]) == "#" || strings.HasPrefix(strings.TrimSpace(f[1]), "-") {
			continue
		}
		c := strings.TrimSpace(f[1])
		rows[c]++
		if c == "6" {
			dagwrap, baseline := strings.TrimSpace(f[3]), strings.TrimSpace(f[4])
			if dagwrap != "0 B" || baseline == "0 B" {
				t.Errorf("transient bytes: random-access %s, sequential %s\n%s", dagwrap, baseline, l)
			}
		}
	}
	want := map[string]int{"1": 10, "2": 5, "3": 2, "4": 3, "5": 2, "6": 4, "7": 3, "8": 2, "10": 9, "11": 1, "12": 5, "15": 5}
	for c, n := range want {
		if rows[c] != n {
			t.Errorf("case %s: %d rows, want %d\n%s", c, rows[c], n, table)
		}
	}
}
