package dagwrap

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/filecoin-project/dagstore/throttle"
	"github.com/ipfs/go-cid"
	logging "github.com/ipfs/go-log/v2"
)

var (
	log      = logging.Logger("dagwrap")
	traceLog = logging.Logger("dagstore")
)

// Defaults applied to zero (or negative) Config fields.
const (
	DefaultMaxConcurrentIndex         = 5
	DefaultMaxConcurrencyStorageCalls = 100
	DefaultMaxConcurrentUnseals       = 5
	DefaultGCInterval                 = time.Minute
)

// Folder and file names under Config.RootDir.
const (
	datastoreDir  = "datastore"
	indexDir      = "index"
	transientsDir = "transients"
	lockName      = ".lock"
)

// Config configures a Wrapper. Only RootDir is required; zero values of the
// other fields mean their defaults.
type Config struct {
	RootDir                    string        // required: holds datastore/, index/, transients/ and the migration marker
	MaxConcurrentIndex         int           // indexing jobs at once; 0 means the default, 5
	MaxConcurrentReadyFetches  int           // fetches at once of pieces that are ready (unsealed); 0 = unlimited
	MaxConcurrencyStorageCalls int           // MinerAPI calls at once; 0 means the default, 100
	MaxConcurrentUnseals       int           // fetches at once of pieces that must be unsealed first; 0 means the default, 5
	GCInterval                 time.Duration // 0 means the default, 1 minute
	OpenPieces                 int           // pieces Blockstore keeps open when idle; 0 means the default, 256
	OpenPieceIdle              time.Duration // how long Blockstore keeps an unused piece open; 0 means the default, 2 minutes
	IndexDSN                   string        // postgres:// URL of a shared piece directory; "" keeps the indexes under RootDir
}

func (c Config) withDefaults() Config {
	if c.MaxConcurrentIndex <= 0 {
		c.MaxConcurrentIndex = DefaultMaxConcurrentIndex
	}
	if c.MaxConcurrentReadyFetches < 0 {
		c.MaxConcurrentReadyFetches = 0
	}
	if c.MaxConcurrencyStorageCalls <= 0 {
		c.MaxConcurrencyStorageCalls = DefaultMaxConcurrencyStorageCalls
	}
	if c.MaxConcurrentUnseals <= 0 {
		c.MaxConcurrentUnseals = DefaultMaxConcurrentUnseals
	}
	if c.GCInterval <= 0 {
		c.GCInterval = DefaultGCInterval
	}
	if c.OpenPieces <= 0 {
		c.OpenPieces = DefaultOpenPieces
	}
	if c.OpenPieceIdle <= 0 {
		c.OpenPieceIdle = DefaultOpenPieceIdle
	}
	return c
}

type lifecycle int

const (
	created  lifecycle = iota // also after a failed Start
	starting                  // Start is running
	started
	closed
)

// Wrapper owns one dagstore instance and everything it keeps under RootDir.
// Its methods are safe for concurrent use. It is the facade: it checks
// arguments, admits calls through the lifecycle gate and delegates; the
// shards it holds own every call into the dagstore and all per-shard state.
type Wrapper struct {
	cfg    Config
	api    *gatedAPI
	lock   *rootLock
	st     stores
	shards *shards
	mount  *pieceMount // the mount template: forPiece gives each piece its own
	cache  *pieceCache // the pieces Blockstore keeps open

	m        *metrics // nil without WithMetrics: every hook is then a no-op
	log      *logging.ZapEventLogger
	traceLog *logging.ZapEventLogger

	// ctx bounds every operation the wrapper starts; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc

	mu    sync.Mutex
	state lifecycle
	// startDone is closed when the Start running (state starting) ends.
	startDone chan struct{}
	// ops is held shared by every call in flight and exclusively by Close,
	// so nothing touches the dagstore or the datastore after they close.
	ops sync.RWMutex

	// reconciled is closed when the start-up reconciliation has finished.
	reconciled chan struct{}

	// gate admits the writes under the root that dagstore goroutines make
	// through dagwrap; Close closes it (see writeGate).
	gate       *writeGate
	transients *transients // copies of a sequential API's pieces
	segs       *segmentStore
}

// New opens (creating if needed) the dagstore root in cfg.RootDir. It takes
// the root's lock: a root held by another process or Wrapper is an error
// wrapping ErrRootLocked. Nothing runs until Start. Options replace the parts
// a node provides itself (see Option).
func New(cfg Config, api MinerAPI, opts ...Option) (*Wrapper, error) {
	if cfg.RootDir == "" {
		return nil, errors.New("dagwrap: Config.RootDir is required")
	}
	if api == nil {
		return nil, errors.New("dagwrap: a MinerAPI is required")
	}
	cfg = cfg.withDefaults()
	root, err := filepath.Abs(cfg.RootDir)
	if err != nil {
		return nil, fmt.Errorf("dagwrap: root %s: %w", cfg.RootDir, err)
	}
	cfg.RootDir = root
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("dagwrap: create root %s: %w", root, err)
	}
	lock, err := lockRoot(filepath.Join(root, lockName))
	if err != nil {
		return nil, fmt.Errorf("dagwrap: %w", err)
	}
	var o options
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if testBackend != nil {
		testBackend(&cfg, &o)
	}
	w := &Wrapper{cfg: cfg, lock: lock, reconciled: make(chan struct{})}
	if err := w.open(api, o); err != nil {
		_ = w.st.close()
		w.m.unregister()
		_ = lock.Close()
		return nil, fmt.Errorf("dagwrap: open root %s: %w", root, err)
	}
	return w, nil
}

// open builds the Wrapper's parts; on error, New closes the stores.
func (w *Wrapper) open(api MinerAPI, o options) (err error) {
	root := w.cfg.RootDir
	w.log, w.traceLog = o.loggers()
	w.ctx, w.cancel = context.WithCancel(context.Background())
	w.gate = newWriteGate(w.ctx)
	w.shards = &shards{ctx: w.ctx, log: w.log, traceLog: w.traceLog, gate: w.gate}
	w.cache = newPieceCache(w, w.cfg.OpenPieces, w.cfg.OpenPieceIdle)
	w.shards.evict = w.cache.evict
	if w.m, err = newMetrics(w, o.registerer); err != nil {
		return err
	}
	w.shards.m = w.m
	w.st.log = w.log
	if err := w.st.open(w.ctx, w.cfg, o, w.m); err != nil {
		return err
	}
	w.transients = newTransients(resolveLink(filepath.Join(root, transientsDir)), w.gate, w.cfg.MaxConcurrentReadyFetches)
	w.segs = &segmentStore{store: w.st.store, gate: w.gate}
	w.shards.files = &pieceFiles{irepo: w.st.irepo, top: w.st.top, oversized: filepath.Join(root, oversizedDir),
		segs: w.segs, transients: w.transients, log: w.log}
	w.api = newGatedAPI(w.ctx, api, w.cfg.MaxConcurrencyStorageCalls, w.cfg.MaxConcurrentUnseals)
	w.m.meterThrottles(w.api)
	w.mount = &pieceMount{API: w.api, Transients: w.transients, Indexes: w.st.irepo,
		IndexThrottle: throttle.Fixed(w.cfg.MaxConcurrentIndex), Oversized: w.shards.files.oversized, Segments: w.segs}
	return openShards(w.shards, w.cfg, &w.st, w.mount)
}

// Close stops the background goroutines and the dagstore, then closes the
// datastore (a node's datastore is synced instead), unregisters the metrics
// and releases the root. It returns once every goroutine the
// Wrapper started has exited. Close is safe before Start and more than once.
func (w *Wrapper) Close() error {
	w.mu.Lock()
	if w.state == closed {
		w.mu.Unlock()
		return nil
	}
	w.state = closed
	w.mu.Unlock()

	w.m.unregister() // no scrape starts reading a closing Wrapper
	w.cancel()       // wakes callers waiting on results, stops GC and recovery
	w.ops.Lock()     // waits for calls in flight to return
	defer w.ops.Unlock()
	w.cache.close() // no call in flight: no cached piece is in use
	errs := []error{w.shards.close()}
	errs = append(errs, w.st.close(), w.lock.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dagwrap: close: %w", err)
	}
	return nil
}

// begin marks a call in flight; the returned func ends it. A call without a
// context has nothing to wait under: while Start runs it gets ErrNotStarted
// (calls with one use beginCtx).
func (w *Wrapper) begin() (func(), error) {
	w.ops.RLock()
	w.mu.Lock()
	st := w.state
	w.mu.Unlock()
	switch st {
	case created, starting:
		w.ops.RUnlock()
		return nil, ErrNotStarted
	case closed:
		w.ops.RUnlock()
		return nil, ErrClosed
	}
	return w.ops.RUnlock, nil
}

func checkCID(what string, c cid.Cid) error {
	if !c.Defined() {
		return fmt.Errorf("%s CID: %w", what, ErrUndefinedCID)
	}
	return nil
}
