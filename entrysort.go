package dagwrap

import "sort"

// Sorting a piece's index entries.
//
// A comparison sort of a whole bucket was most of the indexing of a piece
// of small blocks (3.8 s of 6 s for 5M blocks), and grows as n log n over
// entries that no longer fit in a cache. The entries are first distributed
// in place by their digest's first two bytes (an American flag sort: each
// entry moves once), then each of the 65,536 runs, small and cache-sized
// for hashes, is sorted by digest and offset. Any digests sort correctly;
// skewed ones (identity CIDs, say) only sort slower.

// radixMin is the fewest entries worth distributing first.
const radixMin = 1 << 12

// sortEntries orders f by digest, then offset.
func sortEntries(f fixedEntries) {
	n := f.Len()
	if n < radixMin || f.w-8 < 2 {
		sort.Sort(f)
		return
	}
	key := func(i int) int { e := f.b[i*f.w:]; return int(e[0])<<8 | int(e[1]) }
	const runs = 1 << 16
	start := make([]int, runs+1) // run k is [start[k], start[k+1])
	for i := 0; i < n; i++ {
		start[key(i)+1]++
	}
	for k := 0; k < runs; k++ {
		start[k+1] += start[k]
	}
	next := make([]int, runs) // next[k]: the first slot of run k not yet settled
	copy(next, start[:runs])
	for k := 0; k < runs; k++ {
		for next[k] < start[k+1] {
			i := next[k]
			if kk := key(i); kk != k {
				f.Swap(i, next[kk]) // entry i goes to its run; look at slot i again
				next[kk]++
				continue
			}
			next[k]++
		}
	}
	for k := 0; k < runs; k++ {
		if start[k+1]-start[k] > 1 {
			sort.Sort(fixedEntries{b: f.b[start[k]*f.w : start[k+1]*f.w], w: f.w, tmp: f.tmp})
		}
	}
}
