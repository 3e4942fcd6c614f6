package dagwrap

import (
	"context"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/ (testdata/fuzz/gen.go
// writes them); `go test` runs them as ordinary tests, and CI fuzzes each
// target briefly with -fuzz.

// FuzzMountURL feeds arbitrary persisted mount URLs to the checks and the
// decoding a restart runs: they must never panic, and a URL that decodes
// must name a piece that encodes back to the same URL host.
func FuzzMountURL(f *testing.F) {
	f.Add("lotus://baga6ea4seaqd7exthe4fo7ek3bp62grmw5eu555vgzm42plhbuycczq3pjptwcq")
	f.Add("lotus://")
	f.Add("lotus://not-a-cid")
	f.Fuzz(func(t *testing.T, s string) {
		checked := checkMountURL(s)
		u, err := url.Parse(s)
		if err != nil {
			if checked == nil {
				t.Fatalf("checkMountURL accepted %q, which does not parse", s)
			}
			return
		}
		var m pieceMount
		if err := m.Deserialize(u); err != nil {
			if checked == nil {
				t.Fatalf("checkMountURL accepted %q, which does not decode: %v", s, err)
			}
			return
		}
		if checked == nil && u.Scheme != MountScheme {
			t.Fatalf("checkMountURL accepted scheme %q", u.Scheme)
		}
		back, err := cid.Decode(m.Serialize().Host)
		if err != nil || !back.Equals(m.PieceCid) {
			t.Fatalf("%q decodes to %s, which encodes to %q", s, m.PieceCid, m.Serialize().Host)
		}
	})
}

// FuzzIndexPiece registers arbitrary bytes as a piece through the wrapper
// (eagerly, so it is fetched and indexed), then loads and reads every
// block it indexed. Nothing may panic or hang; the shard is destroyed
// afterwards so that one Wrapper serves the whole run.
func FuzzIndexPiece(f *testing.F) {
	for _, p := range []string{"testdata/sample.car", "testdata/corrupt.car"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	api := newFakeAPI(true)
	w := openWrapper(f, f.TempDir(), api)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 127 { // the smallest piece CommP is defined for
			data = append(data, make([]byte, 127-len(data))...)
		}
		path := filepath.Join(t.TempDir(), "piece")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		pc := api.servePath(t, path)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		err := w.RegisterShardSync(ctx, pc, "", true)
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("indexing hung")
		}
		if errors.Is(err, ErrShardExists) {
			return
		}
		defer func() {
			// A failed shard's automatic recovery may be queued: destroy
			// waits for it, with no retry loop.
			if err := w.DestroyShardSync(context.Background(), pc); err != nil {
				t.Fatalf("destroy: %v", err)
			}
		}()
		if err != nil {
			return
		}
		bs, err := w.LoadShard(ctx, pc)
		if err != nil {
			t.Fatalf("registered, but load failed: %v", err)
		}
		defer bs.Close()
		keys, err := bs.AllKeysChan(ctx)
		if err != nil {
			return
		}
		for k := range keys {
			_, _ = bs.Get(ctx, k)
		}
		if ctx.Err() != nil {
			t.Fatalf("reading hung")
		}
	})
}
