package dagwrap

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/filecoin-project/dagstore/mount"
	"github.com/filecoin-project/dagstore/shard"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	format "github.com/ipfs/go-ipld-format"
	"github.com/multiformats/go-multihash"
)

// registerAll registers every piece eagerly, so the top-level index
// names their blocks.
func registerAll(t *testing.T, w *Wrapper, ps ...testPiece) {
	t.Helper()
	for _, p := range ps {
		if err := w.RegisterShardSync(context.Background(), p.pc, "", true); err != nil {
			t.Fatal(err)
		}
	}
}

// openPieces counts the blockstores dagwrap has open over ps.
func openPieces(w *Wrapper, ps []testPiece) int {
	n := 0
	for _, p := range ps {
		n += w.shards.pieces.openCount(shard.KeyFromCID(p.pc))
	}
	return n
}

// assertServesAll checks every block of every piece through bs.
func assertServesAll(t *testing.T, bs interface {
	Get(context.Context, cid.Cid) (blocks.Block, error)
	GetSize(context.Context, cid.Cid) (int, error)
	Has(context.Context, cid.Cid) (bool, error)
}, ps []testPiece) {
	t.Helper()
	ctx := context.Background()
	for _, p := range ps {
		for _, b := range carBlocks(t, p.path) {
			got, err := bs.Get(ctx, b.Cid())
			if err != nil {
				t.Fatalf("piece %s: get %s: %v", p.pc, b.Cid(), err)
			}
			if !bytes.Equal(got.RawData(), b.RawData()) {
				t.Fatalf("piece %s: block %s: bytes differ", p.pc, b.Cid())
			}
			if n, err := bs.GetSize(ctx, b.Cid()); err != nil || n != len(b.RawData()) {
				t.Fatalf("size of %s = %d, %v; want %d", b.Cid(), n, err, len(b.RawData()))
			}
			if ok, err := bs.Has(ctx, b.Cid()); err != nil || !ok {
				t.Fatalf("has %s = %v, %v", b.Cid(), ok, err)
			}
		}
	}
}

func TestBlockstoreServesEveryPiece(t *testing.T) {
	for _, random := range []bool{true, false} {
		t.Run(map[bool]string{true: "random", false: "sequential"}[random], func(t *testing.T) {
			api := newFakeAPI(random)
			w := openWrapper(t, t.TempDir(), api)
			ps := makePieces(t, api, t.TempDir(), 5)
			registerAll(t, w, ps...)
			bs := w.Blockstore()
			assertServesAll(t, bs, ps)
			if n := openPieces(w, ps); n != len(ps) {
				t.Fatalf("%d pieces open in the cache, want %d", n, len(ps))
			}

			// Unknown, identity and undefined CIDs.
			ctx := context.Background()
			unknown := carBlocks(t, makeCAR(t, 99, 1))[0].Cid()
			_, err := bs.Get(ctx, unknown)
			if !errors.Is(err, ErrBlockNotFound) || !format.IsNotFound(err) {
				t.Fatalf("get of an unknown block: %v, want ErrBlockNotFound and format.IsNotFound", err)
			}
			if _, err := bs.GetSize(ctx, unknown); !format.IsNotFound(err) {
				t.Fatalf("size of an unknown block: %v", err)
			}
			if ok, err := bs.Has(ctx, unknown); ok || err != nil {
				t.Fatalf("has of an unknown block: %v, %v", ok, err)
			}
			id, err := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: multihash.IDENTITY, MhLength: -1}.Sum([]byte("inline"))
			if err != nil {
				t.Fatal(err)
			}
			if blk, err := bs.Get(ctx, id); err != nil || string(blk.RawData()) != "inline" {
				t.Fatalf("identity block: %v, %v", blk, err)
			}
			if n, err := bs.GetSize(ctx, id); err != nil || n != len("inline") {
				t.Fatalf("identity size: %d, %v", n, err)
			}
			if _, err := bs.Get(ctx, cid.Undef); !errors.Is(err, ErrUndefinedCID) {
				t.Fatalf("undefined CID: %v", err)
			}
			if _, err := bs.AllKeysChan(ctx); err == nil {
				t.Fatal("AllKeysChan over every piece should be refused")
			}

			// A destroy closes the cached piece and succeeds.
			if err := w.DestroyShardSync(ctx, ps[0].pc); err != nil {
				t.Fatalf("destroy of a cached piece: %v", err)
			}
			if _, err := bs.Get(ctx, carBlocks(t, ps[0].path)[0].Cid()); !format.IsNotFound(err) {
				t.Fatalf("block of a destroyed piece: %v", err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if n := openPieces(w, ps); n != 0 {
				t.Fatalf("%d pieces still open after Close", n)
			}
			if _, err := bs.Get(ctx, carBlocks(t, ps[1].path)[0].Cid()); !errors.Is(err, ErrClosed) {
				t.Fatalf("get after Close: %v", err)
			}
		})
	}
}

// twins serves one CAR as two pieces (one zero-padded): every block is in
// both.
func twins(t *testing.T, api *fakeAPI) []testPiece {
	a := writeCAR(t, t.TempDir(), 7, 8, 0)
	b := writeCAR(t, t.TempDir(), 7, 8, 16256)
	return []testPiece{{pc: api.servePath(t, a), path: a}, {pc: api.servePath(t, b), path: b}}
}

func TestBlockstoreFallsThroughFailedPieces(t *testing.T) {
	api := newFakeAPI(true)
	w := openWrapper(t, t.TempDir(), api)
	ps := twins(t, api)
	registerAll(t, w, ps...)
	blks := carBlocks(t, ps[0].path)
	ctx := context.Background()

	// Either piece missing its unsealed copy: the other serves every block.
	for _, gone := range ps {
		data, err := os.ReadFile(gone.path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(gone.path); err != nil {
			t.Fatal(err)
		}
		bs := w.Blockstore()
		for _, b := range blks {
			got, err := bs.Get(ctx, b.Cid())
			if err != nil || !bytes.Equal(got.RawData(), b.RawData()) {
				t.Fatalf("with %s gone: get %s: %v", gone.pc, b.Cid(), err)
			}
		}
		w.cache.sweep(time.Time{}, true)
		if err := os.WriteFile(gone.path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := w.RecoverShard(ctx, gone.pc); err != nil && !errors.Is(err, ErrShardNotErrored) {
			t.Fatalf("recover %s: %v", gone.pc, err)
		}
	}

	// Both gone: the error names both pieces and is not "not found".
	for _, p := range ps {
		if err := os.Remove(p.path); err != nil {
			t.Fatal(err)
		}
	}
	_, err := w.Blockstore().Get(ctx, blks[0].Cid())
	if err == nil || format.IsNotFound(err) {
		t.Fatalf("get with every piece failing: %v, want a failure that is not 'not found'", err)
	}
	for _, p := range ps {
		if !strings.Contains(err.Error(), p.pc.String()) {
			t.Fatalf("error does not name piece %s: %v", p.pc, err)
		}
	}
}

func TestBlockstoreSharesOneAcquire(t *testing.T) {
	api := newFakeAPI(true)
	w := openWrapper(t, t.TempDir(), api)
	ps := makePieces(t, api, t.TempDir(), 1)
	registerAll(t, w, ps...)
	key := shard.KeyFromCID(ps[0].pc)
	before := api.fetches.Load()

	gate := make(chan struct{})
	api.mu.Lock()
	api.gate = gate
	api.mu.Unlock()
	const callers = 16
	blk := carBlocks(t, ps[0].path)[0]
	bs := w.Blockstore()
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := bs.Get(context.Background(), blk.Cid())
			if err == nil && !bytes.Equal(got.RawData(), blk.RawData()) {
				err = errors.New("bytes differ")
			}
			errs <- err
		}()
	}
	waitFor(t, "every caller waiting on the one load", func() bool {
		w.cache.mu.Lock()
		defer w.cache.mu.Unlock()
		e := w.cache.entries[key]
		return e != nil && e.refs == callers
	})
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := api.fetches.Load() - before; n != 1 {
		t.Fatalf("%d fetches for %d concurrent gets of one piece, want 1", n, callers)
	}
}

func TestBlockstoreCacheBounds(t *testing.T) {
	api := newFakeAPI(true)
	w := openWrapper(t, t.TempDir(), api, Config{OpenPieces: 2, OpenPieceIdle: time.Hour})
	ps := makePieces(t, api, t.TempDir(), 6)
	registerAll(t, w, ps...)
	bs := w.Blockstore()
	for i, p := range ps {
		if _, err := bs.Get(context.Background(), carBlocks(t, p.path)[0].Cid()); err != nil {
			t.Fatal(err)
		}
		if n := openPieces(w, ps); n > 2 || n != min(i+1, 2) {
			t.Fatalf("after %d pieces read: %d open, want %d", i+1, n, min(i+1, 2))
		}
	}
	// The two most recently used stay open.
	for _, p := range ps[len(ps)-2:] {
		if !w.cache.has(shard.KeyFromCID(p.pc)) {
			t.Fatalf("recently used piece %s was evicted", p.pc)
		}
	}
	// Not idle long enough: kept; idle past the bound: closed.
	if n := w.cache.sweep(time.Now(), false); n != 0 {
		t.Fatalf("sweep closed %d pieces used just now", n)
	}
	if n := w.cache.sweep(time.Now().Add(2*time.Hour), false); n != 2 || openPieces(w, ps) != 0 {
		t.Fatalf("sweep past the idle bound closed %d, %d still open", n, openPieces(w, ps))
	}
}

func TestGCClosesIdleCachedPieces(t *testing.T) {
	api := newFakeAPI(false) // sequential: pieces are copied to transients
	root := t.TempDir()
	w := openWrapper(t, root, api, Config{GCInterval: time.Hour})
	ps := makePieces(t, api, t.TempDir(), 2)
	registerAll(t, w, ps...)
	assertServesAll(t, w.Blockstore(), ps)
	for _, p := range ps {
		if _, err := os.Stat(transientPath(root, shard.KeyFromCID(p.pc))); err != nil {
			t.Fatalf("no transient for %s before GC: %v", p.pc, err)
		}
	}
	res, err := w.GC(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Reclaimed) != len(ps) {
		t.Fatalf("GC reclaimed %+v, want the transients of %d cached pieces", res.Reclaimed, len(ps))
	}
	if n := openPieces(w, ps); n != 0 {
		t.Fatalf("%d pieces still open after GC", n)
	}
	assertServesAll(t, w.Blockstore(), ps) // and they open again
}

func TestBlockstoreCallerContext(t *testing.T) {
	api := newFakeAPI(true)
	w := openWrapper(t, t.TempDir(), api)
	ps := makePieces(t, api, t.TempDir(), 1)
	registerAll(t, w, ps...)
	api.mu.Lock()
	api.gate = make(chan struct{}) // never opens: the load parks
	api.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := w.Blockstore().Get(ctx, carBlocks(t, ps[0].path)[0].Cid())
		errc <- err
	}()
	waitFor(t, "the load to park in the fetch", func() bool { return w.cache.has(shard.KeyFromCID(ps[0].pc)) })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("get under a cancelled context: %v", err)
	}
	if n := openPieces(w, ps); n != 0 {
		t.Fatalf("%d pieces open after a cancelled get", n)
	}
}

// gatedReads makes every ReadAt of the piece's readers wait for gate once
// armed is set, and tells started when the first such read begins.
type gatedReads struct {
	mount.Reader
	armed   *atomic.Bool
	gate    chan struct{}
	started chan struct{}
	once    *sync.Once
}

func (r gatedReads) ReadAt(p []byte, off int64) (int, error) {
	if r.armed.Load() {
		r.once.Do(func() { close(r.started) })
		<-r.gate
	}
	return r.Reader.ReadAt(p, off)
}

// A destroy waits for the Blockstore request reading the piece, within its
// context, and succeeds once the request is done.
func TestDestroyWaitsForBlockstoreReads(t *testing.T) {
	api := newFakeAPI(true)
	var armed atomic.Bool
	gate, started, once := make(chan struct{}), make(chan struct{}), &sync.Once{}
	api.wrapReader = func(_ cid.Cid, r mount.Reader) mount.Reader {
		return gatedReads{Reader: r, armed: &armed, gate: gate, started: started, once: once}
	}
	w := openWrapper(t, t.TempDir(), api)
	ps := makePieces(t, api, t.TempDir(), 1)
	registerAll(t, w, ps...)
	blks := carBlocks(t, ps[0].path)
	bs := w.Blockstore()
	ctx := context.Background()
	if _, err := bs.Get(ctx, blks[0].Cid()); err != nil { // the piece is now cached
		t.Fatal(err)
	}

	armed.Store(true)
	got := make(chan error, 1)
	go func() {
		blk, err := bs.Get(ctx, blks[1].Cid())
		if err == nil && !bytes.Equal(blk.RawData(), blks[1].RawData()) {
			err = errors.New("bytes differ")
		}
		got <- err
	}()
	<-started // the request is reading the piece

	short, cancel := context.WithCancel(ctx)
	cancel()
	if err := w.DestroyShardSync(short, ps[0].pc); !errors.Is(err, ErrShardInUse) || !errors.Is(err, context.Canceled) {
		t.Fatalf("destroy while a request reads, context ended: %v, want ErrShardInUse wrapping context.Canceled", err)
	}
	done := make(chan error, 1)
	go func() { done <- w.DestroyShardSync(ctx, ps[0].pc) }()
	close(gate)
	if err := <-got; err != nil {
		t.Fatalf("the request in flight: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("destroy once the request ended: %v", err)
	}
	if _, err := bs.Get(ctx, blks[1].Cid()); !format.IsNotFound(err) {
		t.Fatalf("block of the destroyed piece: %v", err)
	}
}

// A destroy whose context ends while an acquire it must wait for is
// queued returns ErrShardInUse wrapping the context's error, and leaves
// the piece intact.
func TestDestroyGivesUpOnAQueuedAcquire(t *testing.T) {
	api := newFakeAPI(true)
	w := openWrapper(t, t.TempDir(), api)
	ps := makePieces(t, api, t.TempDir(), 1)
	registerAll(t, w, ps...)
	gate := make(chan struct{})
	api.mu.Lock()
	api.gate = gate
	api.mu.Unlock()
	loaded := make(chan error, 1)
	go func() {
		bs, err := w.LoadShard(context.Background(), ps[0].pc)
		if err == nil {
			err = bs.Close()
		}
		loaded <- err
	}()
	waitFor(t, "the load to be queued", func() bool { return w.shards.pieces.held(shard.KeyFromCID(ps[0].pc)) })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.DestroyShardSync(ctx, ps[0].pc); !errors.Is(err, ErrShardInUse) || !errors.Is(err, context.Canceled) {
		t.Fatalf("destroy with a queued acquire, context ended: %v", err)
	}
	close(gate)
	if err := <-loaded; err != nil {
		t.Fatalf("the queued load after the refused destroy: %v", err)
	}
	if err := readAll(t, w, ps[0]); err != nil {
		t.Fatalf("piece after the refused destroy: %v", err)
	}
}
