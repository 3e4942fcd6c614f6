package piecedir

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/spstack/dagwrap/internal/cargen"
)

// Pins issue 14 (import of an aggregate): an aggregated piece built by
// go-data-segment (its first segment not a CAR, so the file does not even
// start with one) is imported as it is, under the piece CID go-data-segment
// computes for it; an ordinary CAR followed by non-zero data is still refused.
func TestImportsAnAggregate(t *testing.T) {
	d := startDir(t, t.TempDir())
	ctx := context.Background()
	car, err := os.ReadFile(sampleCAR)
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "aggregate.bin")
	agg, err := cargen.WriteAggregate(src, 0, bytes.Repeat([]byte("not a CAR "), 300), car)
	if err != nil {
		t.Fatal(err)
	}
	p, status, err := d.Import(ctx, src)
	if err != nil || status != Imported {
		t.Fatalf("import of an aggregate: %v, %v", err, status)
	}
	if p.PieceCID != agg.PieceCID || p.PaddedSize != agg.PaddedSize || p.Size != agg.Size {
		t.Fatalf("aggregate imported as %+v, want piece %s, padded %d, size %d", p, agg.PieceCID, agg.PaddedSize, agg.Size)
	}
	path, err := d.FilePath(p.PieceCID)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(src)
	if !bytes.Equal(got, want) {
		t.Fatal("the imported aggregate's file differs from the source")
	}
	// Not an aggregate: a CAR followed by garbage is refused as before.
	bad := append(append([]byte{}, car...), bytes.Repeat([]byte{7}, 100)...)
	badPath := filepath.Join(t.TempDir(), "bad.car")
	if err := os.WriteFile(badPath, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Import(ctx, badPath); err == nil {
		t.Fatal("a CAR followed by non-zero data was imported")
	}
}
