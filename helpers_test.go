package dagwrap

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spstack/dagwrap/internal/cargen"
	"github.com/spstack/dagwrap/internal/testkit"

	"github.com/filecoin-project/dagstore/mount"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
)

// fakeAPI is a MinerAPI serving real CAR files from disk. It counts
// concurrent calls so tests can check the throttles.
type fakeAPI struct {
	random bool // readers support ReadAt and Seek

	// files are the pieces served, with their sizes as the deal says,
	// whatever the files hold now (the test kit's table of pieces).
	files  testkit.Files
	mu     sync.Mutex
	sealed map[cid.Cid]bool

	startCalls atomic.Int32
	startErr   error
	onStart    func(ctx context.Context) error // when set, Start returns its result

	calls    gauge // every call in flight
	unseals  gauge // fetches of sealed pieces in flight
	fetches  atomic.Int32
	fetched  events        // the same count, to wait on
	gate     chan struct{} // when set, fetches wait for it to close (or ctx)
	fetchErr error
	failNext atomic.Int32 // this many fetches fail before fetches work again

	// Hooks for the reliability tests (reliability_helpers_test.go); set
	// them before the API is used. onCall runs first in every call and its
	// error fails the call; wrapReader wraps every reader Fetch returns.
	onCall     func(ctx context.Context, method string, pc cid.Cid) error
	wrapReader func(pc cid.Cid, r mount.Reader) mount.Reader
}

func (a *fakeAPI) hook(ctx context.Context, method string, pc cid.Cid) error {
	if a.onCall == nil {
		return nil
	}
	return a.onCall(ctx, method, pc)
}

// gauge counts calls in flight; a test waits for a level with reached
// instead of polling it.
type gauge struct {
	mu       sync.Mutex
	cur, max int
	waits    levelWaits
}

func (g *gauge) enter() func() {
	g.mu.Lock()
	g.cur++
	if g.cur > g.max {
		g.max = g.cur
	}
	g.waits.at(g.cur)
	g.mu.Unlock()
	return func() { g.mu.Lock(); g.cur--; g.mu.Unlock() }
}

// reached returns a channel closed once n calls are in flight at once.
func (g *gauge) reached(n int) <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waits.add(n, g.cur)
}

// events counts things that happened (fetches); a test waits for a count
// with reached instead of polling it.
type events struct {
	mu    sync.Mutex
	n     int
	waits levelWaits
}

func (e *events) add() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n++
	e.waits.at(e.n)
}

// reached returns a channel closed once n events have happened.
func (e *events) reached(n int) <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.waits.add(n, e.n)
}

// levelWaits are channels to close when a level is reached; its owner's
// mutex guards it.
type levelWaits []struct {
	level int
	ch    chan struct{}
}

func (w *levelWaits) add(level, now int) <-chan struct{} {
	ch := make(chan struct{})
	if now >= level {
		close(ch)
		return ch
	}
	*w = append(*w, struct {
		level int
		ch    chan struct{}
	}{level, ch})
	return ch
}

func (w *levelWaits) at(now int) {
	kept := (*w)[:0]
	for _, x := range *w {
		if now >= x.level {
			close(x.ch)
		} else {
			kept = append(kept, x)
		}
	}
	*w = kept
}

// await waits for ch, failing the test after a generous deadline (a safety
// net: ch is the event itself).
func await(t testing.TB, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func (g *gauge) peak() int { g.mu.Lock(); defer g.mu.Unlock(); return g.max }

func newFakeAPI(random bool) *fakeAPI {
	return &fakeAPI{random: random, sealed: map[cid.Cid]bool{}}
}

func (a *fakeAPI) RandomAccess() bool { return a.random }

func (a *fakeAPI) Start(ctx context.Context) error {
	a.startCalls.Add(1)
	if a.onStart != nil {
		return a.onStart(ctx)
	}
	return a.startErr
}

func (a *fakeAPI) path(pc cid.Cid) (string, error) {
	p, _, err := a.files.Path(pc)
	if err != nil {
		return "", errors.New("no such piece")
	}
	return p, nil
}

// piecePath is the file the API serves as pc.
func (a *fakeAPI) piecePath(t testing.TB, pc cid.Cid) string {
	t.Helper()
	p, err := a.path(pc)
	if err != nil {
		t.Fatalf("piece %s: %v", pc, err)
	}
	return p
}

func (a *fakeAPI) IsUnsealed(ctx context.Context, pc cid.Cid) (bool, error) {
	defer a.calls.enter()()
	if err := a.hook(ctx, "IsUnsealed", pc); err != nil {
		return false, err
	}
	if _, err := a.path(pc); err != nil {
		return false, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return !a.sealed[pc], nil
}

func (a *fakeAPI) GetUnpaddedCARSize(ctx context.Context, pc cid.Cid) (uint64, error) {
	defer a.calls.enter()()
	if err := a.hook(ctx, "GetUnpaddedCARSize", pc); err != nil {
		return 0, err
	}
	_, size, err := a.files.Path(pc)
	if err != nil {
		return 0, errors.New("no such piece")
	}
	return size, nil
}

func (a *fakeAPI) FetchUnsealedPiece(ctx context.Context, pc cid.Cid) (mount.Reader, error) {
	defer a.calls.enter()()
	a.mu.Lock()
	sealed := a.sealed[pc]
	a.mu.Unlock()
	if sealed {
		defer a.unseals.enter()()
	}
	a.fetches.Add(1)
	a.fetched.add()
	if err := a.hook(ctx, "FetchUnsealedPiece", pc); err != nil {
		return nil, err
	}
	if a.gate != nil {
		select {
		case <-a.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if a.fetchErr != nil {
		return nil, a.fetchErr
	}
	if a.failNext.Add(-1) >= 0 {
		return nil, errors.New("storage briefly unavailable")
	}
	p, err := a.path(pc)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	var r mount.Reader = f
	if !a.random {
		r = &seqReader{f}
	}
	if a.wrapReader != nil {
		r = a.wrapReader(pc, r)
	}
	return r, nil
}

// seqReader is a sequential-only reader, as a remote API would give.
type seqReader struct{ f *os.File }

func (r *seqReader) Read(p []byte) (int, error)        { return r.f.Read(p) }
func (r *seqReader) Close() error                      { return r.f.Close() }
func (r *seqReader) ReadAt([]byte, int64) (int, error) { return 0, mount.ErrRandomAccessUnsupported }
func (r *seqReader) Seek(int64, int) (int64, error)    { return 0, mount.ErrSeekUnsupported }

// addPiece copies a CAR into dir, serves it, and returns its piece CID
// (the CommP of its bytes).
func (a *fakeAPI) addPiece(t testing.TB, src string) cid.Cid {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	pc := pieceCID(t, b)
	p := filepath.Join(t.TempDir(), filepath.Base(src))
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	a.files.Add(pc, p, uint64(len(b)))
	return pc
}

func (a *fakeAPI) setSealed(pc cid.Cid, sealed bool) {
	a.mu.Lock()
	a.sealed[pc] = sealed
	a.mu.Unlock()
}

func pieceCID(t testing.TB, data []byte) cid.Cid {
	t.Helper()
	pc, _, err := cargen.CommP(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return pc
}

// carBlocks reads every block of a CAR (zero padding ends it).
func carBlocks(t testing.TB, path string) []blocks.Block {
	t.Helper()
	_, blks, err := cargen.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	return blks
}

// openWith opens and starts a Wrapper with options; Close runs at cleanup.
func openWith(t testing.TB, root string, api MinerAPI, cfg Config, opts ...Option) *Wrapper {
	t.Helper()
	cfg.RootDir = root
	w, err := New(cfg, api, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return w
}

// openWrapper opens and starts a Wrapper on root; Close runs at cleanup.
func openWrapper(t testing.TB, root string, api MinerAPI, cfg ...Config) *Wrapper {
	t.Helper()
	c := Config{}
	if len(cfg) > 0 {
		c = cfg[0]
	}
	return openWith(t, root, api, c)
}

// openFDs counts this process's open file descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	return len(ents)
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline. Only for conditions with no event to wait on.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

func mustCid(t testing.TB, s string) cid.Cid {
	t.Helper()
	c, err := cid.Decode(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// makeCAR writes a CARv1 of n random raw blocks, distinct per seed.
func makeCAR(t testing.TB, seed int64, n int) string {
	t.Helper()
	return writeCAR(t, t.TempDir(), seed, n, 0)
}
