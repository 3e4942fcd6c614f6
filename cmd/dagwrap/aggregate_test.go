package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spstack/dagwrap/internal/cargen"
)

// Pins issue 14 (CLI): an aggregate file built by go-data-segment imports
// under its piece CID, info lists its segments (the non-CAR one with its
// reason), get reads a block of a later segment, export --segment N writes
// segment N's CAR byte for byte, and a plain export says to pick a segment.
func TestImportInfoExportAggregate(t *testing.T) {
	root := t.TempDir()
	dir := t.TempDir()
	gen := makeCAR(t, dir, 61, 80)
	var parts [][]byte
	for _, p := range []string{sampleCAR, gen} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, b)
	}
	parts = append(parts[:1], append([][]byte{bytes.Repeat([]byte("plain text "), 200)}, parts[1:]...)...)
	src := filepath.Join(dir, "aggregate.bin")
	agg, err := cargen.WriteAggregate(src, 0, parts...)
	if err != nil {
		t.Fatal(err)
	}
	var rows []importRow
	decode(t, ok(t, root, "import", "--json", src), &rows)
	if len(rows) != 1 || rows[0].PieceCID != agg.PieceCID.String() {
		t.Fatalf("imported as %+v, want piece %s", rows, agg.PieceCID)
	}
	pc := rows[0].PieceCID

	var info struct {
		Segments []segmentJSON `json:"segments"`
	}
	decode(t, ok(t, root, "info", "--json", pc), &info)
	if len(info.Segments) != 3 {
		t.Fatalf("info lists %d segments, want 3: %+v", len(info.Segments), info.Segments)
	}
	for i, s := range info.Segments {
		if s.Number != i || s.PieceCID != agg.Segments[i].String() || s.Offset != agg.Offsets[i] || s.Indexed != (i != 1) {
			t.Fatalf("segment %d listed as %+v", i, s)
		}
	}
	if !strings.Contains(info.Segments[1].Reason, "not a CAR") {
		t.Fatalf("the text segment is listed as %+v", info.Segments[1])
	}
	text := ok(t, root, "info", pc).stdout
	for _, want := range []string{"3 segments", "segment 1:", "not indexed: not a CAR", "--segment N"} {
		if !strings.Contains(text, want) {
			t.Fatalf("info does not say %q:\n%s", want, text)
		}
	}

	_, blks := readCAR(t, gen)
	last := blks[len(blks)-1]
	got := ok(t, root, "get", pc, last.Cid().String()).stdout
	if got != string(last.RawData()) {
		t.Fatalf("get of segment 2's block %s returned other bytes", last.Cid())
	}

	for seg, car := range map[int]string{0: sampleCAR, 2: gen} {
		out := filepath.Join(t.TempDir(), fmt.Sprintf("segment-%d.car", seg))
		ok(t, root, "export", pc, "--segment", fmt.Sprint(seg), "-o", out)
		want, _ := os.ReadFile(car)
		got, err := os.ReadFile(out)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("export --segment %d: %d bytes (%v), want %s's %d bytes", seg, len(got), err, car, len(want))
		}
	}
	out := filepath.Join(t.TempDir(), "whole.car")
	fails(t, root, 1, []string{pc, "aggregate of 3 segments", "--segment"}, "export", pc, "-o", out)
	fails(t, root, 1, []string{pc, "segment 1", "not a CAR"}, "export", pc, "--segment", "1", "-o", out)
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("a failed export left %s: %v", out, err)
	}
}
