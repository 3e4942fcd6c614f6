package dagwrap

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"testing"

	format "github.com/ipfs/go-ipld-format"
)

func TestOpenPiece(t *testing.T) {
	ctx := context.Background()
	api := newFakeAPI(true)
	w := openWrapper(t, t.TempDir(), api)
	ps := makePieces(t, api, t.TempDir(), 2)
	for _, p := range ps {
		want, err := os.ReadFile(p.path)
		if err != nil {
			t.Fatal(err)
		}
		r, err := w.OpenPiece(ctx, p.pc)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
		if err != nil || !bytes.Equal(got, want) || r.Size() != int64(len(want)) {
			t.Fatalf("piece %s: read %d bytes (size %d), %v; want the file's %d", p.pc, len(got), r.Size(), err, len(want))
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
	unknown := pieceCID(t, bytes.Repeat([]byte("no such piece"), 10))
	if _, err := w.OpenPiece(ctx, unknown); !format.IsNotFound(err) {
		t.Fatalf("unknown piece: %v, want a not-found error", err)
	}
	api.setSealed(ps[0].pc, true)
	if _, err := w.OpenPiece(ctx, ps[0].pc); !errors.Is(err, ErrNotUnsealed) || !format.IsNotFound(err) {
		t.Fatalf("sealed piece: %v, want ErrNotUnsealed and not found", err)
	}

	seq := newFakeAPI(false)
	ws := openWrapper(t, t.TempDir(), seq)
	sp := makePieces(t, seq, t.TempDir(), 1)
	if _, err := ws.OpenPiece(ctx, sp[0].pc); err == nil || format.IsNotFound(err) {
		t.Fatalf("sequential API: %v, want an error saying it has no random access", err)
	}
}
