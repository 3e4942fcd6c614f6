package dagwrap

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/filecoin-project/dagstore/mount"
	"github.com/ipfs/go-cid"
)

// The bounds tests hold the MinerAPI (or its readers) shut while 100 loads
// of 20 lazily registered pieces pile up, wait until the configured number
// of calls is inside, and check that no more ever got in; then they open
// the gate and every load must succeed.

const boundLoads = 100

// loadAll starts boundLoads loads spread over the pieces and returns a
// func that waits for them and fails the test on any error.
func loadAll(t *testing.T, w *Wrapper, pieces []testPiece) func() {
	t.Helper()
	errs := make(chan error, boundLoads)
	for i := 0; i < boundLoads; i++ {
		p := pieces[i%len(pieces)]
		go func() {
			bs, err := w.LoadShard(context.Background(), p.pc)
			if err == nil {
				err = bs.Close()
			}
			errs <- err
		}()
	}
	return func() {
		t.Helper()
		for i := 0; i < boundLoads; i++ {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
	}
}

func registerLazily(t *testing.T, w *Wrapper, pieces []testPiece) {
	t.Helper()
	for _, p := range pieces {
		if err := w.RegisterShardSync(context.Background(), p.pc, "", false); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStorageCallsBounded(t *testing.T) {
	const limit = 3
	api := newFakeAPI(true)
	pieces := makePieces(t, api, t.TempDir(), 20)
	api.gate = make(chan struct{})
	w := openWrapper(t, t.TempDir(), api, Config{MaxConcurrencyStorageCalls: limit, MaxConcurrentIndex: 2, MaxConcurrentUnseals: 2})
	registerLazily(t, w, pieces)
	wait := loadAll(t, w, pieces)
	await(t, fmt.Sprintf("%d calls inside the API", limit), api.calls.reached(limit))
	close(api.gate)
	wait()
	if peak := api.calls.peak(); peak != limit {
		t.Fatalf("the MinerAPI saw %d calls at once; the limit is %d", peak, limit)
	}
}

func TestUnsealsBounded(t *testing.T) {
	const limit = 2
	api := newFakeAPI(true)
	pieces := makePieces(t, api, t.TempDir(), 20)
	for _, p := range pieces {
		api.setSealed(p.pc, true)
	}
	api.gate = make(chan struct{})
	w := openWrapper(t, t.TempDir(), api, Config{MaxConcurrencyStorageCalls: 50, MaxConcurrentIndex: 2, MaxConcurrentUnseals: limit})
	registerLazily(t, w, pieces)
	wait := loadAll(t, w, pieces)
	await(t, fmt.Sprintf("%d unseals inside the API", limit), api.unseals.reached(limit))
	close(api.gate)
	wait()
	if peak := api.unseals.peak(); peak != limit {
		t.Fatalf("the MinerAPI saw %d unseals at once; the limit is %d", peak, limit)
	}
}

func TestIndexingBounded(t *testing.T) {
	const limit = 2
	api := newFakeAPI(true)
	pieces := makePieces(t, api, t.TempDir(), 20)
	// Indexing is what reads a piece's stream from the API: count the
	// readers being read, and hold their reads until the gate opens.
	var readers gauge
	var counting atomic.Bool
	counting.Store(true)
	gate := make(chan struct{})
	api.wrapReader = func(_ cid.Cid, r mount.Reader) mount.Reader {
		return &gatedReader{Reader: r, gate: gate, g: &readers, counting: &counting}
	}
	w := openWrapper(t, t.TempDir(), api, Config{MaxConcurrencyStorageCalls: 50, MaxConcurrentIndex: limit, MaxConcurrentUnseals: 2})
	registerLazily(t, w, pieces)
	wait := loadAll(t, w, pieces)
	await(t, fmt.Sprintf("%d pieces being indexed", limit), readers.reached(limit))
	peak := readers.peak()
	counting.Store(false) // from here loads read blocks too
	close(gate)
	wait()
	if peak != limit {
		t.Fatalf("%d pieces were indexed at once; the limit is %d", peak, limit)
	}
}

// gatedReader holds every sequential read (indexing reads the stream; a
// header peek or a block read uses ReadAt) until gate is closed, counting
// the readers that started reading meanwhile.
type gatedReader struct {
	mount.Reader
	gate     chan struct{}
	g        *gauge
	counting *atomic.Bool
	once     sync.Once
	leave    func()
}

func (r *gatedReader) hold() {
	if r.counting.Load() {
		r.once.Do(func() { r.leave = r.g.enter() })
	}
	<-r.gate
}

func (r *gatedReader) Read(p []byte) (int, error) {
	r.hold()
	return r.Reader.Read(p)
}

func (r *gatedReader) Close() error {
	r.once.Do(func() {}) // orders the read of leave after its write
	if r.leave != nil {
		r.leave()
	}
	return r.Reader.Close()
}
