package dagwrap

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"sort"
	"testing"
)

// Pins the order of the index file's entries (go-car binary-searches
// them): the distributing sort gives exactly the comparison sort's order,
// by digest then offset, for hashed digests, for digests sharing their
// first bytes, for repeated digests at several offsets, and for digests too
// short to distribute.
func TestSortEntriesMatchesComparisonSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 11))
	random := func(d []byte) {
		for i := range d {
			d[i] = byte(rng.UintN(256))
		}
	}
	var last []byte
	repeats := func(d []byte) { // digests repeated, at other offsets
		if last == nil || rng.UintN(3) == 0 {
			random(d)
			last = append(last[:0], d...)
		}
		copy(d, last)
	}
	skewed := func(d []byte) { random(d); d[0], d[1] = 0x12, 0x20 }
	for _, c := range []struct {
		name    string
		n, dlen int
		fill    func([]byte)
	}{
		{"hashes", 3 * radixMin, 32, random},
		{"repeats", 3 * radixMin, 32, repeats},
		{"skewed", 2 * radixMin, 32, skewed},
		{"short", 2 * radixMin, 1, random},
		{"two-byte", 2 * radixMin, 2, random},
		{"few", 100, 32, random},
	} {
		var b []byte
		d := make([]byte, c.dlen)
		for i := 0; i < c.n; i++ {
			c.fill(d)
			b = append(b, d...)
			b = binary.LittleEndian.AppendUint64(b, rng.Uint64N(1<<40))
		}
		w := c.dlen + 8
		want := append([]byte(nil), b...)
		sort.Sort(fixedEntries{b: want, w: w, tmp: make([]byte, w)})
		sortEntries(fixedEntries{b: b, w: w, tmp: make([]byte, w)})
		if !bytes.Equal(b, want) {
			t.Errorf("%s: the entries' order differs from the comparison sort's", c.name)
		}
	}
}
