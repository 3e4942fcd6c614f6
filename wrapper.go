package dagwrap

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/index"
	"github.com/filecoin-project/dagstore/mount"
	"github.com/filecoin-project/dagstore/throttle"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	levelds "github.com/ipfs/go-ds-leveldb"
	logging "github.com/ipfs/go-log/v2"
	"github.com/multiformats/go-multihash"
	ldberrors "github.com/syndtr/goleveldb/leveldb/errors"
	ldbopts "github.com/syndtr/goleveldb/leveldb/opt"

	"github.com/spstack/dagwrap/internal/pgindex"
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
// Its methods are safe for concurrent use.
type Wrapper struct {
	cfg   Config
	api   *gatedAPI
	lock  *rootLock
	store ds.Batching
	irepo index.FullIndexRepo
	tli   *topLevel      // dagwrap's own top-level index; nil when the node injected one
	top   index.Inverted // the top-level index in use: tli, or the node's
	dagst *dagstore.DAGStore
	// dagstCfg builds dagst, and a fresh one after a failed Start.
	dagstCfg dagstore.Config

	// indexDB is the piece directory in a database, if configured: then
	// irepo and top.
	indexDB *pgindex.Repo

	nodeStore bool     // store is the node's (WithDatastore): synced, not closed
	m         *metrics // nil without WithMetrics: every hook is then a no-op
	log       *logging.ZapEventLogger
	traceLog  *logging.ZapEventLogger

	traceCh   chan dagstore.Trace
	failureCh chan dagstore.ShardResult

	// ctx bounds every dagstore operation the wrapper starts; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc
	// dagstClosed is closed once the dagstore's event loop has exited, which
	// is when the trace and failure channels may stop being drained.
	dagstClosed chan struct{}
	wg          sync.WaitGroup

	mu    sync.Mutex
	state lifecycle
	// startDone is closed when the Start running (state starting) ends.
	startDone chan struct{}
	// drains says the trace and failure drains run (see startDrains);
	// dagstSpent that dagst.Start was called. Only Start uses them.
	drains, dagstSpent bool
	// ops is held shared by every call in flight and exclusively by Close,
	// so nothing touches the dagstore or the datastore after they close.
	ops sync.RWMutex

	pieces   pieceLocks
	cache    *pieceCache // the pieces Blockstore keeps open
	releases releases    // accessor releases the dagstore has yet to process

	// records is the view of store the dagstore keeps shard records in.
	records *shardRecords
	// infoMu keeps shard-info lookups and destroys apart (see shardInfo).
	infoMu sync.RWMutex

	// reconciled is closed when the start-up reconciliation has finished.
	reconciled chan struct{}

	// gate admits the writes under the root that dagstore goroutines make
	// through dagwrap; Close closes it (see writeGate).
	gate       *writeGate
	transients *transients // copies of a sequential API's pieces

	// badRecords holds shard records that could not be restored, so that
	// operators see them instead of a silent skip.
	bad badRecords

	// indexThrottle bounds dagwrap's own indexing (see pieceMount.withIndex).
	indexThrottle throttle.Throttler

	// fails holds the shard failures callers saw that may not be on disk yet.
	fails failures
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
	w := &Wrapper{cfg: cfg, lock: lock, dagstClosed: make(chan struct{}), reconciled: make(chan struct{})}
	w.applyLogger(o)
	w.cache = newPieceCache(w, cfg.OpenPieces, cfg.OpenPieceIdle)
	if err := w.open(api, o); err != nil {
		_ = w.closeStore()
		w.m.unregister()
		_ = lock.Close()
		return nil, fmt.Errorf("dagwrap: open root %s: %w", root, err)
	}
	return w, nil
}

func (w *Wrapper) open(api MinerAPI, o options) (err error) {
	root := w.cfg.RootDir
	w.ctx, w.cancel = context.WithCancel(context.Background())
	if w.m, err = newMetrics(w, o.registerer); err != nil {
		return err
	}
	store := o.store
	w.nodeStore = store != nil
	if store == nil {
		if store, err = w.openLevelDB(filepath.Join(root, datastoreDir)); err != nil {
			return fmt.Errorf("open shard-state datastore: %w", err)
		}
	}
	w.store = w.m.measureDatastore(store)
	w.gate = newWriteGate(w.ctx)
	w.records = newShardRecords(w.store, w.gate)
	w.records.bad = &w.bad
	w.transients = newTransients(resolveLink(filepath.Join(root, transientsDir)), w.gate, w.cfg.MaxConcurrentReadyFetches)

	if err := w.openIndexDB(w.ctx, &o); err != nil {
		return fmt.Errorf("index database: %w", err)
	}
	if w.irepo = o.irepo; w.irepo == nil {
		if w.irepo, err = newIndexRepo(filepath.Join(root, indexDir)); err != nil {
			return fmt.Errorf("open index repo: %w", err)
		}
	}
	if w.top = o.top; w.top == nil {
		if w.tli, err = openTopLevel(topLevelPath(root), w.store, w.log); err != nil {
			return err
		}
		w.top = w.tli
	}
	w.indexThrottle = throttle.Fixed(w.cfg.MaxConcurrentIndex)
	w.api = newGatedAPI(w.ctx, api, w.cfg.MaxConcurrencyStorageCalls, w.cfg.MaxConcurrentUnseals)
	w.m.meterThrottles(w.api)

	registry := mount.NewRegistry()
	if err := registry.Register(MountScheme, w.newMount(cid.Undef)); err != nil {
		return fmt.Errorf("register mount: %w", err)
	}
	// Buffered so a burst of events does not stall the event loop while the
	// drains log them; the drains keep running until the dagstore has closed.
	w.traceCh = make(chan dagstore.Trace, 128)
	w.failureCh = make(chan dagstore.ShardResult, 128)
	w.dagstCfg = dagstore.Config{
		TransientsDir:             resolveLink(filepath.Join(root, transientsDir)),
		IndexRepo:                 gatedIndexRepo{w.irepo, w.gate},
		TopLevelIndex:             gatedInverted{w.top, w.gate},
		Datastore:                 w.records,
		MountRegistry:             registry,
		TraceCh:                   w.traceCh,
		FailureCh:                 w.failureCh,
		MaxConcurrentIndex:        w.cfg.MaxConcurrentIndex,
		MaxConcurrentReadyFetches: w.cfg.MaxConcurrentReadyFetches,
		RecoverOnStart:            dagstore.RecoverOnAcquire,
	}
	if w.dagst, err = dagstore.NewDAGStore(w.dagstCfg); err != nil {
		return fmt.Errorf("create dagstore: %w", err)
	}
	return nil
}

// openLevelDB opens the shard-state LevelDB: no compression, synced
// writes, strict checks. A process killed in the middle of a journal write
// leaves a torn record at the journal's tail, which strict journal checks
// refuse to replay; that record was never acknowledged (writes are synced
// before they return), so it is dropped rather than the root refused: the
// journal checks are relaxed for the replay of that one open.
func (w *Wrapper) openLevelDB(path string) (*levelds.Datastore, error) {
	opts := levelds.Options{Compression: ldbopts.NoCompression, NoSync: false, Strict: ldbopts.StrictAll}
	db, err := levelds.NewDatastore(path, &opts)
	if !ldberrors.IsCorrupted(err) {
		return db, err
	}
	w.log.Warnw("shard-state journal has a torn tail (the last run was killed mid-write); dropping it", "path", path, "error", err)
	opts.Strict = ldbopts.StrictAll &^ ldbopts.StrictJournal &^ ldbopts.StrictJournalChecksum
	return levelds.NewDatastore(path, &opts)
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
	// Failures callers saw are on disk before the event loop stops.
	if !w.fails.wait(failureSettleLimit) {
		w.log.Warnw("closing before the dagstore recorded every shard failure it reported")
	}
	errs := []error{w.dagst.Close()}
	// The dagstore's initialisations and acquires outlive its Close: from
	// here their writes under the root fail, and those in flight end now.
	w.gate.close()
	close(w.dagstClosed)
	w.wg.Wait()
	errs = append(errs, w.closeStore(), w.lock.Close())
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

func (m indexMultihashes) ForEach(fn func(multihash.Multihash) error) error {
	return m.idx.ForEach(func(mh multihash.Multihash, _ uint64) error { return fn(mh) })
}
