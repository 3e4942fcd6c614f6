package dagwrap

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/filecoin-project/dagstore"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	levelds "github.com/ipfs/go-ds-leveldb"
)

// within returns what arrives on ch. A call that must return promptly but
// hangs fails the test after a generous deadline instead of hanging it.
func within[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not return", what)
		panic("unreachable")
	}
}

// async runs fn in a goroutine and returns the channel its result arrives on.
func async(fn func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- fn() }()
	return ch
}

// releaser is a channel a test closes once, at the latest at cleanup, so
// that calls it parks never outlive the test. Cleanups run last-in first-out:
// call it after registering the Close of a Wrapper whose calls it parks.
func releaser(t *testing.T) (ch chan struct{}, release func()) {
	ch = make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(ch) }) }
	t.Cleanup(release)
	return ch, release
}

// TestFailedMinerAPIStartCanBeRetried pins issue 9 item 12: after Start
// failed because the MinerAPI's Start did, calls fail at once with
// ErrNotStarted and Start can be retried: the MinerAPI gate does not keep
// the first failure forever.
func TestFailedMinerAPIStartCanBeRetried(t *testing.T) {
	api := newFakeAPI(true)
	pc := api.addPiece(t, "testdata/sample.car")
	var down atomic.Bool
	down.Store(true)
	api.onStart = func(context.Context) error {
		if down.Load() {
			return errors.New("sealing subsystem down")
		}
		return nil
	}
	w, err := New(Config{RootDir: t.TempDir()}, api)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	ctx := context.Background()
	if err := w.Start(ctx); err == nil || !strings.Contains(err.Error(), "sealing subsystem down") {
		t.Fatalf("Start with a failing MinerAPI: %v", err)
	}
	if err := w.RegisterShardSync(ctx, pc, "", true); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("register after a failed Start: %v, want ErrNotStarted", err)
	}
	if _, err := w.ListShards(); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("ListShards after a failed Start: %v, want ErrNotStarted", err)
	}
	down.Store(false)
	if err := w.Start(ctx); err != nil {
		t.Fatalf("second Start: %v", err)
	}
	if n := api.startCalls.Load(); n != 2 {
		t.Fatalf("MinerAPI Start called %d times, want 2", n)
	}
	if err := w.RegisterShardSync(ctx, pc, "", true); err != nil {
		t.Fatal(err)
	}
	assertServes(t, w, pc, "testdata/sample.car")
	if err := w.Start(ctx); err == nil || !strings.Contains(err.Error(), "already started") {
		t.Fatalf("third Start: %v, want already started", err)
	}
}

// startCtxKey marks the context a test passes to Start.
type startCtxKey struct{}

// failingDagstoreQueries is a node's datastore (real LevelDB) whose queries
// fail while fail is set, unless they run under the context a test passed
// to Start. The dagstore reads its records under a context of its own, so
// its Start fails while dagwrap's own reading of the records works.
type failingDagstoreQueries struct {
	ds.Batching
	fail atomic.Bool
}

func (s *failingDagstoreQueries) Query(ctx context.Context, q query.Query) (query.Results, error) {
	if s.fail.Load() && ctx.Value(startCtxKey{}) == nil {
		return nil, errors.New("injected query failure")
	}
	return s.Batching.Query(ctx, q)
}

// TestFailedDagstoreStartCanBeRetried pins issue 9 item 12: a Start that
// fails in the dagstore's own Start (after the trace and failure drains
// began) leaves the Wrapper not started: calls fail at once with
// ErrNotStarted (a load blocked until its deadline), and a second Start
// (refused as "already started") works, with nothing leaked.
func TestFailedDagstoreStartCanBeRetried(t *testing.T) {
	goroutines, fds := baseline(t)
	api := newFakeAPI(true)
	pc := api.addPiece(t, "testdata/sample.car")
	ldb, err := levelds.NewDatastore(filepath.Join(t.TempDir(), "node-ds"), nil)
	if err != nil {
		t.Fatal(err)
	}
	store := &failingDagstoreQueries{Batching: ldb}
	root := t.TempDir()
	ctx := context.WithValue(context.Background(), startCtxKey{}, true)

	w, err := New(Config{RootDir: root}, api, WithDatastore(store))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.RegisterShardSync(ctx, pc, "", true); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	store.fail.Store(true)
	w, err = New(Config{RootDir: root}, api, WithDatastore(store))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(ctx); err == nil || !strings.Contains(err.Error(), "start dagstore") ||
		!strings.Contains(err.Error(), "injected query failure") {
		t.Fatalf("Start with failing dagstore queries: %v", err)
	}
	if _, err := w.ListShards(); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("ListShards after a failed Start: %v, want ErrNotStarted", err)
	}
	// A generous deadline only so that a regression fails instead of hanging.
	lctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := w.LoadShard(lctx, pc); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("LoadShard after a failed Start: %v, want ErrNotStarted", err)
	}
	store.fail.Store(false)
	if err := w.Start(ctx); err != nil {
		t.Fatalf("second Start: %v", err)
	}
	assertServes(t, w, pc, "testdata/sample.car")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ldb.Close(); err != nil {
		t.Fatal(err)
	}
	settled(t, goroutines, fds)
}

// TestCallsDuringStartWaitUnderTheirContext pins issue 9 item 12: while
// Start runs, a call with a context waits for it under that context (it
// blocked on the Wrapper's mutex until Start ended), then works; a call
// without one answers ErrNotStarted at once.
func TestCallsDuringStartWaitUnderTheirContext(t *testing.T) {
	api := newFakeAPI(true)
	pc := api.addPiece(t, "testdata/sample.car")
	w, err := New(Config{RootDir: t.TempDir()}, api)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	entered := make(chan struct{})
	gate, release := releaser(t) // released before the Close above
	api.onStart = func(context.Context) error {
		close(entered)
		<-gate
		return nil
	}
	started := async(func() error { return w.Start(context.Background()) })
	<-entered

	ctx, cancel := context.WithCancel(context.Background())
	reg := async(func() error { return w.RegisterShardSync(ctx, pc, "", true) })
	cancel()
	if err := within(t, "a registration during Start", reg); !errors.Is(err, context.Canceled) {
		t.Fatalf("registration during Start, context cancelled: %v, want context.Canceled", err)
	}
	if _, err := w.ListShards(); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("ListShards during Start: %v, want ErrNotStarted", err)
	}
	reg = async(func() error { return w.RegisterShardSync(context.Background(), pc, "", true) })
	release()
	if err := within(t, "Start", started); err != nil {
		t.Fatal(err)
	}
	if err := within(t, "a registration waiting for Start", reg); err != nil {
		t.Fatalf("registration waiting for Start: %v", err)
	}
	assertServes(t, w, pc, "testdata/sample.car")
}

// TestStartAndCloseReturnWhileMinerAPIStartHangs pins issue 9 items 10 and
// 12: a MinerAPI whose Start ignores its context holds neither Start (it
// returns when its context ends, and the Wrapper stays not started) nor
// Close; a retry waits for the same MinerAPI Start instead of calling it
// twice.
func TestStartAndCloseReturnWhileMinerAPIStartHangs(t *testing.T) {
	goroutines, fds := baseline(t)
	for _, closeFirst := range []bool{false, true} {
		api := newFakeAPI(true)
		pc := api.addPiece(t, "testdata/sample.car")
		w, err := New(Config{RootDir: t.TempDir()}, api)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = w.Close() })
		entered := make(chan struct{}, 2)
		gate, release := releaser(t) // released before the Close above
		api.onStart = func(context.Context) error {
			entered <- struct{}{}
			<-gate
			return nil
		}
		ctx, cancel := context.WithCancel(context.Background())
		started := async(func() error { return w.Start(ctx) })
		<-entered
		if closeFirst {
			closed := async(w.Close)
			if err := within(t, "Close during Start", closed); err != nil {
				t.Fatal(err)
			}
			if err := within(t, "Start during Close", started); !errors.Is(err, ErrClosed) {
				t.Fatalf("Start ended by Close: %v, want ErrClosed", err)
			}
			cancel()
			release()
			settled(t, goroutines, fds)
			continue
		}
		cancel()
		if err := within(t, "Start with its context cancelled", started); !errors.Is(err, context.Canceled) {
			t.Fatalf("Start with its context cancelled: %v, want context.Canceled", err)
		}
		if _, err := w.ListShards(); !errors.Is(err, ErrNotStarted) {
			t.Fatalf("ListShards after Start gave up: %v, want ErrNotStarted", err)
		}
		started = async(func() error { return w.Start(context.Background()) })
		release()
		if err := within(t, "second Start", started); err != nil {
			t.Fatal(err)
		}
		if n := api.startCalls.Load(); n != 1 {
			t.Fatalf("MinerAPI Start called %d times, want 1", n)
		}
		if err := w.RegisterShardSync(context.Background(), pc, "", true); err != nil {
			t.Fatal(err)
		}
		assertServes(t, w, pc, "testdata/sample.car")
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestInitAllShardsReturnsWhenMinerAPIIgnoresContext pins issue 9 item 10:
// an IsUnsealed that ignores its context holds neither InitAllShards (it
// returns when its context ends) nor Close, and when it finally returns it
// no longer touches the root.
func TestInitAllShardsReturnsWhenMinerAPIIgnoresContext(t *testing.T) {
	goroutines, fds := baseline(t)
	api := newFakeAPI(true)
	pc := api.addPiece(t, "testdata/sample.car")
	root := t.TempDir()
	w := openWrapper(t, root, api)
	if err := w.RegisterShardSync(context.Background(), pc, "", false); err != nil {
		t.Fatal(err)
	}
	<-w.reconciled
	hung := make(chan struct{}, 1)
	gate, release := releaser(t)
	api.onCall = func(_ context.Context, m string, _ cid.Cid) error {
		if m == "IsUnsealed" {
			hung <- struct{}{}
			<-gate
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := async(func() error { _, err := w.InitAllShards(ctx); return err })
	<-hung
	cancel()
	if err := within(t, "InitAllShards", out); !errors.Is(err, context.Canceled) {
		t.Fatalf("InitAllShards with IsUnsealed stuck: %v, want context.Canceled", err)
	}
	if err := within(t, "Close", async(w.Close)); err != nil {
		t.Fatal(err)
	}
	release() // the stuck call returns "unsealed" after Close
	settled(t, goroutines, fds)
	for _, n := range listDir(t, filepath.Join(root, indexDir)) {
		if strings.HasPrefix(n, pc.String()) {
			t.Fatalf("index %s written after Close", n)
		}
	}
	api.onCall = nil
	w = openWrapper(t, root, api)
	if s := state(t, w, pc); s != dagstore.ShardStateNew {
		t.Fatalf("after restart the shard is %v, want new", s)
	}
}

// TestInitAllShardsReturnsWhenProgressCallbackBlocks pins issue 9 item 10:
// an OnInitProgress callback that blocks holds neither InitAllShards (it
// returns when its context ends) nor Close.
func TestInitAllShardsReturnsWhenProgressCallbackBlocks(t *testing.T) {
	goroutines, fds := baseline(t)
	api := newFakeAPI(true)
	pc := api.addPiece(t, "testdata/sample.car")
	w := openWrapper(t, t.TempDir(), api)
	if err := w.RegisterShardSync(context.Background(), pc, "", false); err != nil {
		t.Fatal(err)
	}
	<-w.reconciled
	entered := make(chan struct{}, 1)
	gate, release := releaser(t)
	blocking := OnInitProgress(func(InitProgress) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-gate
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := async(func() error { _, err := w.InitAllShards(ctx, blocking); return err })
	<-entered
	cancel()
	if err := within(t, "InitAllShards", out); !errors.Is(err, context.Canceled) {
		t.Fatalf("InitAllShards with a blocked callback: %v, want context.Canceled", err)
	}
	// Close, with the callback of a second call still blocked.
	out = async(func() error { _, err := w.InitAllShards(context.Background(), blocking); return err })
	<-entered
	if err := within(t, "Close", async(w.Close)); err != nil {
		t.Fatal(err)
	}
	if err := within(t, "InitAllShards ended by Close", out); !errors.Is(err, ErrClosed) {
		t.Fatalf("InitAllShards ended by Close: %v, want ErrClosed", err)
	}
	release()
	settled(t, goroutines, fds)
}

// TestMinerAPICallReturningAfterCloseDoesNotTouchRoot pins issue 9 item 10:
// a MinerAPI call of the dagstore's that ignores its context (here the size
// check of a shard the dagstore re-initialises at Start, under Start's
// context) ends with Close, so that when it finally returns, nothing is
// indexed into the root the Wrapper has released.
func TestMinerAPICallReturningAfterCloseDoesNotTouchRoot(t *testing.T) {
	goroutines, fds := baseline(t)
	api := newFakeAPI(true)
	pc := api.addPiece(t, "testdata/sample.car")
	root := t.TempDir()
	putRecord(t, root, pc, dagstore.PersistedShard{Key: pc.String(), URL: "lotus://" + pc.String(), State: dagstore.ShardStateInitializing})
	hung := make(chan struct{}, 1)
	w, err := New(Config{RootDir: root}, api)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	gate, release := releaser(t)
	api.onCall = func(_ context.Context, m string, _ cid.Cid) error {
		if m == "GetUnpaddedCARSize" {
			hung <- struct{}{}
			<-gate
		}
		return nil
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-hung
	if err := within(t, "Close", async(w.Close)); err != nil {
		t.Fatal(err)
	}
	release()
	settled(t, goroutines, fds)
	for _, n := range listDir(t, filepath.Join(root, indexDir)) {
		if strings.HasPrefix(n, pc.String()) {
			t.Fatalf("index %s written after Close", n)
		}
	}
}
