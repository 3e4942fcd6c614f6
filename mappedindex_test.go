package dagwrap

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	carindex "github.com/ipld/go-car/v2/index"
	"github.com/multiformats/go-multicodec"
	"github.com/multiformats/go-multihash"
)

// writeIndexFile writes idx as the dagstore does and returns its path.
func writeIndexFile(t *testing.T, idx carindex.Index) string {
	t.Helper()
	var buf bytes.Buffer
	if _, err := carindex.WriteTo(idx, &buf); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "x.full.idx")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// mixedRecords has several multihash codes and digest widths (identity
// CIDs of several lengths among them) and multihashes recorded twice.
func mixedRecords(t *testing.T) []carindex.Record {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	var recs []carindex.Record
	off := uint64(100)
	add := func(code uint64, data []byte) {
		mh, err := multihash.Sum(data, code, -1)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, carindex.Record{Cid: cid.NewCidV1(cid.Raw, mh), Offset: off})
		off += uint64(len(data)) + 40
	}
	for i := 0; i < 3000; i++ {
		data := make([]byte, 1+rng.IntN(60))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		switch i % 5 {
		case 0:
			add(multihash.IDENTITY, data)
		case 1:
			add(multihash.SHA2_512, data)
		default:
			add(multihash.SHA2_256, data)
		}
		if i%97 == 0 { // the same block again, later in the piece
			add(multihash.SHA2_256, data)
		}
	}
	return recs
}

func TestMappedIndexMatchesGoCar(t *testing.T) {
	sample, err := carv2.GenerateIndexFromFile("testdata/sample.car", carv2.ZeroLengthSectionAsEOF(true), carv2.StoreIdentityCIDs(true))
	if err != nil {
		t.Fatal(err)
	}
	mixed := carindex.NewMultihashSorted()
	recs := mixedRecords(t)
	if err := mixed.Load(recs); err != nil {
		t.Fatal(err)
	}
	for name, idx := range map[string]carindex.Index{"sample.car": sample, "mixed": mixed} {
		t.Run(name, func(t *testing.T) {
			path := writeIndexFile(t, idx)
			m, err := openMappedIndex(path)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			want, got := forEachAll(t, idx.(carindex.IterableIndex)), forEachAll(t, m)
			if len(want) == 0 || fmt.Sprint(want) != fmt.Sprint(got) {
				t.Fatalf("ForEach differs: %d entries from go-car, %d mapped", len(want), len(got))
			}
			if m.Entries() != int64(len(want)) {
				t.Fatalf("Entries() = %d, want %d", m.Entries(), len(want))
			}
			for _, e := range want {
				c := cid.NewCidV1(cid.Raw, e.mh)
				if a, b := getAllOffsets(t, idx, c), getAllOffsets(t, m, c); fmt.Sprint(a) != fmt.Sprint(b) {
					t.Fatalf("GetAll(%s) = %v, go-car %v", c, b, a)
				}
			}
			absent, _ := multihash.Sum([]byte("not in the index"), multihash.SHA2_256, -1)
			if err := m.GetAll(cid.NewCidV1(cid.Raw, absent), func(uint64) bool { return true }); !errors.Is(err, carindex.ErrNotFound) {
				t.Fatalf("GetAll of an absent block: %v, want ErrNotFound", err)
			}
			var buf bytes.Buffer
			if _, err := carindex.WriteTo(m, &buf); err != nil {
				t.Fatal(err)
			}
			if file, _ := os.ReadFile(path); !bytes.Equal(buf.Bytes(), file) {
				t.Fatal("a mapped index marshals to other bytes than its file")
			}
			if back, err := carindex.ReadFrom(&buf); err != nil || fmt.Sprint(forEachAll(t, back.(carindex.IterableIndex))) != fmt.Sprint(want) {
				t.Fatalf("go-car cannot read the mapped index back: %v", err)
			}
		})
	}
	if n := len(recs); n < 3000 {
		t.Fatalf("only %d records", n)
	}
}

func TestMappedIndexRejectsDamagedFiles(t *testing.T) {
	idx := carindex.NewMultihashSorted()
	if err := idx.Load(mixedRecords(t)); err != nil {
		t.Fatal(err)
	}
	path := writeIndexFile(t, idx)
	full, _ := os.ReadFile(path)
	for _, size := range []int{0, 1, 3, 50, 100, len(full) / 2, len(full) - 1} {
		if err := os.WriteFile(path, full[:size], 0o644); err != nil {
			t.Fatal(err)
		}
		if m, err := openMappedIndex(path); err == nil {
			_ = m.Close()
			t.Errorf("an index truncated to %d of %d bytes opened", size, len(full))
		} else if size > 0 && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("truncated to %d bytes: %v, want unexpected EOF", size, err)
		}
	}
	if err := os.WriteFile(path, append(full, 0), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := openMappedIndex(path); err == nil {
		t.Error("an index with trailing bytes opened")
	}
	sorted, _ := carindex.New(multicodec.CarIndexSorted)
	if err := sorted.Load(mixedRecords(t)[:10]); err != nil {
		t.Fatal(err)
	}
	if _, err := openMappedIndex(writeIndexFile(t, sorted)); !errors.Is(err, errNotMapped) {
		t.Errorf("an IndexSorted file: %v, want errNotMapped", err)
	}
}

type indexEntry struct {
	mh  multihash.Multihash
	off uint64
}

func forEachAll(t *testing.T, idx carindex.IterableIndex) []indexEntry {
	t.Helper()
	var out []indexEntry
	if err := idx.ForEach(func(mh multihash.Multihash, off uint64) error {
		out = append(out, indexEntry{mh, off})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func getAllOffsets(t *testing.T, idx carindex.Index, c cid.Cid) []uint64 {
	t.Helper()
	var offs []uint64
	if err := idx.GetAll(c, func(o uint64) bool { offs = append(offs, o); return true }); err != nil {
		t.Fatal(err)
	}
	return offs
}

// An index file truncated in place while mapped (an operator's truncate,
// or a stock repo rewriting it) makes reads fail, not the process crash.
func TestMappedIndexTruncatedWhileMapped(t *testing.T) {
	idx := carindex.NewMultihashSorted()
	recs := mixedRecords(t)
	if err := idx.Load(recs); err != nil {
		t.Fatal(err)
	}
	path := writeIndexFile(t, idx)
	m, err := openMappedIndex(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := os.Truncate(path, 100); err != nil {
		t.Fatal(err)
	}
	if err := m.ForEach(func(multihash.Multihash, uint64) error { return nil }); err == nil || !bytes.Contains([]byte(err.Error()), []byte("changed while in use")) {
		t.Fatalf("ForEach over a truncated mapped index: %v", err)
	}
	last := recs[len(recs)-1].Cid
	if err := m.GetAll(last, func(uint64) bool { return true }); err == nil {
		t.Fatal("GetAll over a truncated mapped index succeeded")
	}
}
