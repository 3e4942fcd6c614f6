package dagwrap

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/mount"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
)

// rootFiles maps every file under root to its size.
func rootFiles(t *testing.T, root string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // renamed or removed as we walked
		}
		if err != nil {
			return err
		}
		out[strings.TrimPrefix(p, root)] = fi.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// closeNotifier closes done once the reader is closed.
type closeNotifier struct {
	mount.Reader
	once sync.Once
	done chan struct{}
}

func (c *closeNotifier) Close() error {
	err := c.Reader.Close()
	c.once.Do(func() { close(c.done) })
	return err
}

// TestNothingWritesUnderTheRootAfterClose pins issue 9 item 11: when Close
// returns, no goroutine started by dagwrap or the dagstore writes under the
// root. The piece's stream stalls (its third Read blocks) while it is
// being copied (sequential API) or indexed (random-access API); the eager
// registration's context ends, Close returns, then the stream goes on. Once
// the reader is closed (whoever read it is done with it), the root must be
// exactly as Close left it: no transient grown or renamed, no index file.
func TestNothingWritesUnderTheRootAfterClose(t *testing.T) {
	for _, random := range []bool{false, true} {
		name := map[bool]string{false: "sequential", true: "random-access"}[random]
		t.Run(name, func(t *testing.T) {
			api := newFakeAPI(random)
			pc := api.servePath(t, writeCAR(t, t.TempDir(), 11, 400, 0))
			stalled, release, closed := make(chan struct{}), make(chan struct{}), make(chan struct{})
			var reads atomic.Int32
			api.wrapReader = func(_ cid.Cid, r mount.Reader) mount.Reader {
				hooked := &hookReader{Reader: &shortReader{Reader: r, max: 4096}, before: func() {
					if reads.Add(1) == 3 {
						close(stalled)
						<-release
					}
				}}
				return &closeNotifier{Reader: hooked, done: closed}
			}
			root := t.TempDir()
			w := openWrapper(t, root, api)
			ctx, cancel := context.WithCancel(context.Background())
			registered := make(chan error, 1)
			go func() { registered <- w.RegisterShardSync(ctx, pc, "", true) }()
			<-stalled
			cancel()
			if err := <-registered; !errors.Is(err, context.Canceled) {
				t.Fatalf("registration whose context ended: %v", err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			before := rootFiles(t, root)
			close(release)
			<-closed
			after := rootFiles(t, root)
			for name, size := range after {
				if was, ok := before[name]; !ok || was != size {
					t.Errorf("%s written after Close: %d bytes (was %d, present %v)", name, size, was, ok)
				}
			}
			for name := range before {
				if _, ok := after[name]; !ok {
					t.Errorf("%s removed after Close", name)
				}
			}
		})
	}
}

// TestRegisterRefusesACARThatIsNotARegularFile pins issue 9 item 11: a
// carPath that is not a regular file (a device such as /dev/zero, which
// reads without end, or a folder) is refused at registration, naming the
// path, whatever the API.
func TestRegisterRefusesACARThatIsNotARegularFile(t *testing.T) {
	for _, random := range []bool{true, false} {
		api := newFakeAPI(random)
		w := openWrapper(t, t.TempDir(), api)
		for i, p := range []string{"/dev/zero", t.TempDir()} {
			pc := pieceCID(t, bytes.Repeat([]byte{byte(i + 1)}, 128))
			err := w.RegisterShard(context.Background(), pc, p, true, nil)
			if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "not a regular file") {
				t.Fatalf("random=%v: register with carPath %s: %v, want an error naming it", random, p, err)
			}
			if _, err := w.ShardInfo(pc); !errors.Is(err, ErrShardUnknown) {
				t.Fatalf("random=%v: a refused registration left a shard: %v", random, err)
			}
		}
	}
}

// endlessAfter serves the piece's bytes, then zeros for extra more bytes:
// a stream longer than the size the API reports.
type endlessAfter struct {
	mount.Reader
	extra int64
	eof   bool
}

func (e *endlessAfter) Read(p []byte) (int, error) {
	if !e.eof {
		n, err := e.Reader.Read(p)
		if !errors.Is(err, io.EOF) {
			return n, err
		}
		e.eof = true
		if n > 0 {
			return n, nil
		}
	}
	if e.extra <= 0 {
		return 0, io.EOF
	}
	n := int64(len(p))
	if n > e.extra {
		n = e.extra
	}
	clear(p[:n])
	e.extra -= n
	return int(n), nil
}

// TestSequentialCopyIsBoundedByThePieceSize pins issue 9 item 11: a copy
// of a fetched piece never holds more than the piece's unpadded size. A
// stream longer than that size is an error naming the piece (cutting it
// could silently drop blocks if the size is the wrong one), and nothing is
// left in transients/.
func TestSequentialCopyIsBoundedByThePieceSize(t *testing.T) {
	api := newFakeAPI(false)
	pc := api.addPiece(t, "testdata/padded.car")
	api.wrapReader = func(_ cid.Cid, r mount.Reader) mount.Reader {
		return &endlessAfter{Reader: r, extra: 4 << 20}
	}
	root := t.TempDir()
	w := openWrapper(t, root, api)
	err := w.RegisterShardSync(context.Background(), pc, "", true)
	if err == nil || !strings.Contains(err.Error(), "longer than") || !strings.Contains(err.Error(), pc.String()) {
		t.Fatalf("register of a piece whose stream is longer than its size: %v", err)
	}
	// Its automatic recovery copies it again, and fails the same way; its
	// copy in flight is not a leftover.
	info, err := w.AwaitRecovery(context.Background(), pc)
	if err != nil || info.State != dagstore.ShardStateErrored || api.fetches.Load() < 2 || w.shards.pieces.held(shard.KeyFromCID(pc)) {
		t.Fatalf("after the automatic recovery: %+v %v, %d fetches, want errored after 2", info, err, api.fetches.Load())
	}
	for name, size := range rootFiles(t, filepath.Join(root, transientsDir)) {
		t.Errorf("transient %s (%d bytes) left behind", name, size)
	}
}

// TestRecoveryKeepsTheLocalCAR pins issue 9's "after a recovery, a piece
// registered with a local carPath silently reads from the MinerAPI": the
// recovered shard keeps reading the CAR it was registered with. The API
// here does not know the piece at all.
func TestRecoveryKeepsTheLocalCAR(t *testing.T) {
	for _, random := range []bool{false, true} {
		api := newFakeAPI(random)
		w := openWrapper(t, t.TempDir(), api)
		want, err := os.ReadFile("testdata/sample.car")
		if err != nil {
			t.Fatal(err)
		}
		pc := pieceCID(t, want)
		car := filepath.Join(t.TempDir(), "deal.car")
		if err := os.WriteFile(car, []byte("not a CAR at all"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := w.RegisterShardSync(context.Background(), pc, car, true); err == nil {
			t.Fatalf("random=%v: registering a broken CAR succeeded", random)
		}
		// Replaced in one rename: a recovery running now reads either CAR
		// whole, never a half-written one.
		if err := os.WriteFile(car+".new", want, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(car+".new", car); err != nil {
			t.Fatal(err)
		}
		// The automatic recovery may have run before the CAR was fixed:
		// then an operator's recovery reads the fixed CAR.
		info, err := w.AwaitRecovery(context.Background(), pc)
		if err != nil {
			t.Fatal(err)
		}
		if info.State == dagstore.ShardStateErrored {
			if err := w.RecoverShard(context.Background(), pc); err != nil {
				t.Fatalf("random=%v: recover after the CAR was fixed: %v", random, err)
			}
		}
		assertServes(t, w, pc, car)
		if n := api.fetches.Load(); n != 0 {
			t.Fatalf("random=%v: the API was fetched %d times for a piece registered with a CAR", random, n)
		}
	}
}

// TestConcurrentLoadsShareOneCopy: loads of a sequential piece whose copy
// GC removed make one copy between them, not one each.
func TestConcurrentLoadsShareOneCopy(t *testing.T) {
	api := newFakeAPI(false)
	pc := api.addPiece(t, "testdata/padded.car")
	root := t.TempDir()
	w := openWrapper(t, root, api, Config{GCInterval: 1 << 40})
	ctx := context.Background()
	if err := w.RegisterShardSync(ctx, pc, "", true); err != nil {
		t.Fatal(err)
	}
	if res, err := w.GC(ctx); err != nil || len(res.Reclaimed) != 1 {
		t.Fatalf("GC: %+v %v, want the copy reclaimed", res, err)
	}
	api.gate = make(chan struct{}) // hold the fetch until every load is waiting
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bs, err := w.LoadShard(ctx, pc)
			if err == nil {
				err = bs.Close()
			}
			errs <- err
		}()
	}
	await(t, "the copy's fetch", api.fetched.reached(2))
	close(api.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := api.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2: one to index, one copy shared by 8 loads", n)
	}
	got, err := os.ReadFile(transientPath(root, shard.KeyFromCID(pc)))
	want, _ := os.ReadFile("testdata/padded.car")
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the shared copy is not the piece (%d bytes, %v)", len(got), err)
	}
}

// TestTransientPathsInRecordsAreIgnored: records written by Lotus or older
// versions name a transient (the "t" field), Lotus's sometimes the deal's
// own CAR. It is never read nor deleted: pieces are fetched through the
// mount, and a stale copy in transients/ goes away.
func TestTransientPathsInRecordsAreIgnored(t *testing.T) {
	root := t.TempDir()
	api := newFakeAPI(false)
	pc := api.addPiece(t, "testdata/sample.car")
	pc2 := api.addPiece(t, "testdata/padded.car")
	dealCAR := filepath.Join(t.TempDir(), "deal.car")
	b, _ := os.ReadFile("testdata/sample.car")
	if err := os.WriteFile(dealCAR, b, 0o644); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(root, transientsDir, transientPrefix+pc2.String()+transientComplete)
	if err := os.MkdirAll(filepath.Dir(stale), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}
	lotusRoot(t, root, nil, map[string]dagstore.PersistedShard{
		pc.String():  {Key: pc.String(), URL: "lotus://" + pc.String(), TransientPath: dealCAR, State: dagstore.ShardStateNew, Lazy: true},
		pc2.String(): {Key: pc2.String(), URL: "lotus://" + pc2.String(), TransientPath: stale, State: dagstore.ShardStateNew, Lazy: true},
	})
	w := openWrapper(t, root, api)
	assertServes(t, w, pc, "testdata/sample.car")
	assertServes(t, w, pc2, "testdata/padded.car")
	if n := api.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2: a record's transient path must not be read", n)
	}
	waitReleased(t, w, pc, pc2)
	if _, err := w.GC(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(dealCAR); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("the deal's CAR named by a record was touched: %v", err)
	}
	if got := transientFiles(t, root); len(got) != 0 {
		t.Fatalf("transients/ holds %v after GC, want nothing", got)
	}
}

// TestReadyFetchesBoundCopies: Config.MaxConcurrentReadyFetches bounds the
// copies of unsealed pieces made at once, as the dagstore's own copier did.
// Each copy's first read waits until every piece's copy has asked whether
// its piece is unsealed (the bound is taken after that) and either a second
// stream was opened (the bound failed) or seven have asked (six copies and the
// first one's fetch: the others are waiting for the slot).
func TestReadyFetchesBoundCopies(t *testing.T) {
	api := newFakeAPI(false)
	const n = 6
	var mu sync.Mutex
	cond := sync.NewCond(&mu)
	asked, open, peak := 0, 0, 0
	api.onCall = func(_ context.Context, method string, _ cid.Cid) error {
		if method == "IsUnsealed" {
			mu.Lock()
			asked++
			cond.Broadcast()
			mu.Unlock()
		}
		return nil
	}
	api.wrapReader = func(_ cid.Cid, r mount.Reader) mount.Reader {
		mu.Lock()
		open++
		peak = max(peak, open)
		cond.Broadcast()
		mu.Unlock()
		var first, closed sync.Once
		hooked := &hookReader{Reader: r, before: func() {
			first.Do(func() {
				mu.Lock()
				for asked < n || (peak < 2 && asked < n+1) {
					cond.Wait()
				}
				mu.Unlock()
			})
		}}
		return &closeHook{Reader: hooked, onClose: func() {
			closed.Do(func() { mu.Lock(); open--; mu.Unlock() })
		}}
	}
	w := openWrapper(t, t.TempDir(), api, Config{MaxConcurrentReadyFetches: 1})
	pieces := makePieces(t, api, t.TempDir(), n)
	for _, p := range pieces {
		if err := w.RegisterShardSync(context.Background(), p.pc, "", false); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(pieces))
	for _, p := range pieces {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- readAll(t, w, p)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if peak != 1 {
		t.Fatalf("%d pieces copied at once, want at most 1", peak)
	}
}

// closeHook calls onClose when the reader is closed.
type closeHook struct {
	mount.Reader
	onClose func()
}

func (c *closeHook) Close() error {
	defer c.onClose()
	return c.Reader.Close()
}
