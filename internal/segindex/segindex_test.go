package segindex

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/spstack/dagwrap/internal/cargen"
)

// Pins issue 14 (detection): only a whole piece with a valid entry in its
// index area is an aggregate; zero padding, arbitrary bytes reaching into
// the index area, and a file shorter than its piece size are not.
func TestReadDetectsOnlyAggregates(t *testing.T) {
	if got := PaddedSize(2032); got != 2048 {
		t.Fatalf("PaddedSize(2032) = %d", got)
	}
	if got := PaddedSize(2033); got != 4096 {
		t.Fatalf("PaddedSize(2033) = %d", got)
	}
	noise := make([]byte, 65024)
	rand.New(rand.NewSource(1)).Read(noise)
	for name, b := range map[string][]byte{
		"zeros": make([]byte, 65024),
		"noise": noise,
		"short": noise[:65000],
	} {
		if _, ok, err := Read(bytes.NewReader(b), int64(len(b))); ok || err != nil {
			t.Fatalf("%s: detected as an aggregate (%v)", name, err)
		}
	}
	path := filepath.Join(t.TempDir(), "agg")
	agg, err := cargen.WriteAggregate(path, 0, bytes.Repeat([]byte{1}, 300), bytes.Repeat([]byte{2}, 1000))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	entries, ok, err := Read(bytes.NewReader(b), int64(len(b)))
	if err != nil || !ok || len(entries) != 2 {
		t.Fatalf("aggregate read as %v, %v, %v", entries, ok, err)
	}
	for i, e := range entries {
		if e.Err != nil || e.Number != i || e.PieceCID() != agg.Segments[i] || e.Offset() != agg.Offsets[i] || e.Size() != agg.Lengths[i] {
			t.Fatalf("entry %d: %+v, want segment %s at %d", i, e, agg.Segments[i], agg.Offsets[i])
		}
	}
	// The same aggregate in a file cut short has no index area to read.
	if _, ok, _ := Read(bytes.NewReader(b[:len(b)-1]), int64(len(b)-1)); ok {
		t.Fatal("a cut-short aggregate was detected")
	}
}
