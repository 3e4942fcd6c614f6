package dagwrap

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/index"
	"github.com/filecoin-project/dagstore/mount"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/filecoin-project/dagstore/throttle"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	levelds "github.com/ipfs/go-ds-leveldb"
	logging "github.com/ipfs/go-log/v2"
	carindex "github.com/ipld/go-car/v2/index"
	"github.com/multiformats/go-multihash"
	ldberrors "github.com/syndtr/goleveldb/leveldb/errors"
	ldbopts "github.com/syndtr/goleveldb/leveldb/opt"
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
	return c
}

// ShardInfo describes one piece's shard.
type ShardInfo struct {
	PieceCID cid.Cid
	State    dagstore.ShardState
	Error    error
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

	pieces pieceLocks

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
	w := &Wrapper{cfg: cfg, lock: lock, dagstClosed: make(chan struct{}), reconciled: make(chan struct{})}
	w.applyLogger(o)
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

// wait returns the first result on ch, unless ctx or the wrapper ends first.
func (w *Wrapper) wait(ctx context.Context, ch <-chan dagstore.ShardResult) (dagstore.ShardResult, error) {
	select {
	case res := <-ch:
		if res.Error != nil {
			w.sawFailure(res.Key)
		}
		return res, nil
	case <-ctx.Done():
		return dagstore.ShardResult{}, ctx.Err()
	case <-w.ctx.Done():
		return dagstore.ShardResult{}, ErrClosed
	}
}

// closeLate closes the accessor that will arrive on ch after its caller gave
// up waiting: results land in ch's buffer whether or not anyone listens.
// release ends the acquire's hold once the result is in.
func (w *Wrapper) closeLate(ch <-chan dagstore.ShardResult, release func()) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer release()
		select {
		case res := <-ch:
			w.closeAccessor(res)
		case <-w.dagstClosed:
			select {
			case res := <-ch:
				w.closeAccessor(res)
			default:
			}
		}
	}()
}

func (w *Wrapper) closeAccessor(res dagstore.ShardResult) {
	if res.Accessor != nil {
		if err := res.Accessor.Close(); err != nil {
			w.log.Warnw("closing an accessor nobody waited for", "piece", res.Key, "error", err)
		}
	}
}

// forward delivers the result arriving on ch to the caller's resch, giving up
// when ctx ends. The dagstore delivers into ch's buffer, so a slow or absent
// reader of resch never stalls the dagstore's dispatcher. observe, if not
// nil, sees the result's error first.
func (w *Wrapper) forward(ctx context.Context, pieceCid cid.Cid, ch <-chan dagstore.ShardResult, resch chan dagstore.ShardResult, observe func(error)) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		var res dagstore.ShardResult
		select {
		case res = <-ch:
		case <-w.dagstClosed:
			return
		}
		if observe != nil {
			observe(res.Error)
		}
		if res.Error != nil {
			res.Error = fmt.Errorf("piece %s: %w", pieceCid, res.Error)
		}
		if resch == nil {
			return
		}
		select {
		case resch <- res:
		case <-ctx.Done():
		case <-w.dagstClosed:
		}
	}()
}

// RegisterShard registers the piece as a shard. With a carPath, the CAR on
// local disk is read instead of the MinerAPI while it exists (it is never
// modified or deleted). With eagerInit the piece is fetched and indexed now,
// otherwise on first load. The result arrives on resch (which may be nil);
// ctx bounds only the delivery of that result, not the registration.
func (w *Wrapper) RegisterShard(ctx context.Context, pieceCid cid.Cid, carPath string, eagerInit bool, resch chan dagstore.ShardResult) error {
	pieceCid, err := pieceV1(pieceCid)
	if err != nil {
		return fmt.Errorf("register piece: %w", err)
	}
	done, err := w.beginCtx(ctx)
	if err != nil {
		return fmt.Errorf("register piece %s: %w", pieceCid, err)
	}
	defer done()
	start := w.m.now()
	ch, err := w.submitRegister(pieceCid, carPath, eagerInit)
	if err != nil {
		w.m.observe(opRegister, start, err)
		return err
	}
	var observe func(error)
	if w.m != nil {
		observe = func(err error) { w.m.observe(opRegister, start, err) }
	}
	w.forward(ctx, pieceCid, ch, resch, observe)
	return nil
}

// RegisterShardSync is RegisterShard that waits for the result. A piece
// that is already registered returns an error wrapping ErrShardExists.
func (w *Wrapper) RegisterShardSync(ctx context.Context, pieceCid cid.Cid, carPath string, eagerInit bool) error {
	pieceCid, err := pieceV1(pieceCid)
	if err != nil {
		return fmt.Errorf("register piece: %w", err)
	}
	done, err := w.beginCtx(ctx)
	if err != nil {
		return fmt.Errorf("register piece %s: %w", pieceCid, err)
	}
	defer done()
	return w.registerSync(ctx, pieceCid, carPath, eagerInit)
}

func (w *Wrapper) registerSync(ctx context.Context, pieceCid cid.Cid, carPath string, eagerInit bool) error {
	start := w.m.now()
	ch, err := w.submitRegister(pieceCid, carPath, eagerInit)
	if err != nil {
		w.m.observe(opRegister, start, err)
		return err
	}
	res, err := w.wait(ctx, ch)
	if err == nil {
		err = res.Error
	}
	w.m.observe(opRegister, start, err)
	if err != nil {
		return fmt.Errorf("register piece %s: %w", pieceCid, err)
	}
	return nil
}

// submitRegister queues the registration and returns the channel its result
// will arrive on.
func (w *Wrapper) submitRegister(pieceCid cid.Cid, carPath string, eagerInit bool) (<-chan dagstore.ShardResult, error) {
	key := shard.KeyFromCID(pieceCid)
	unlock := w.pieces.lock(key)
	defer unlock()
	if _, err := w.shardInfo(key); err == nil {
		return nil, fmt.Errorf("register piece %s: %w", pieceCid, ErrShardExists)
	}
	mnt := w.newMount(pieceCid)
	opts := dagstore.RegisterOpts{LazyInitialization: !eagerInit}
	if carPath != "" {
		abs, err := checkCARPath(carPath)
		if err != nil {
			return nil, fmt.Errorf("register piece %s: %w", pieceCid, err)
		}
		mnt.localPath = abs
	}
	ch := make(chan dagstore.ShardResult, 1)
	if err := w.registerDurably(key, mnt, opts, ch); err != nil {
		return nil, fmt.Errorf("register piece %s: %w", pieceCid, err)
	}
	w.bad.remove(key) // its new record replaces the one that could not be restored
	return ch, nil
}

// checkCARPath returns the absolute path of a CAR given at registration,
// which must be a regular file: it is read in place, and a device such as
// /dev/zero would read without end.
func checkCARPath(carPath string) (string, error) {
	abs, err := filepath.Abs(carPath)
	if err != nil {
		return "", fmt.Errorf("CAR file %s: %w", carPath, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("CAR file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("CAR file %s is not a regular file (%s)", abs, st.Mode().Type())
	}
	return abs, nil
}

// newMount returns the mount of a piece, read through the MinerAPI.
func (w *Wrapper) newMount(pieceCid cid.Cid) *pieceMount {
	return &pieceMount{API: w.api, Transients: w.transients, PieceCid: pieceCid, Indexes: w.irepo, IndexThrottle: w.indexThrottle, Oversized: filepath.Join(w.cfg.RootDir, oversizedDir)}
}

// LoadShard returns a read-only blockstore over the piece. A piece the
// dagstore does not know is registered (lazily) and then loaded. Close the
// blockstore to release the shard. If ctx ends first, LoadShard returns its
// error and the accessor that arrives later is closed.
func (w *Wrapper) LoadShard(ctx context.Context, pieceCid cid.Cid) (ClosableBlockstore, error) {
	start := w.m.now()
	bs, err := w.loadShard(ctx, pieceCid)
	w.m.observe(opAcquire, start, err)
	return bs, err
}

func (w *Wrapper) loadShard(ctx context.Context, pieceCid cid.Cid) (ClosableBlockstore, error) {
	pieceCid, err := pieceV1(pieceCid)
	if err != nil {
		return nil, fmt.Errorf("load piece: %w", err)
	}
	done, err := w.beginCtx(ctx)
	if err != nil {
		return nil, fmt.Errorf("load piece %s: %w", pieceCid, err)
	}
	defer done()

	key := shard.KeyFromCID(pieceCid)
	ch := make(chan dagstore.ShardResult, 1)
	// Acquire under the wrapper's context, not the caller's: the dagstore
	// drops (without closing) a reader fetched under a cancelled context.
	release, err := w.acquire(key, ch)
	if errors.Is(err, dagstore.ErrShardUnknown) {
		// Only a piece the node has is registered: a load of anything else
		// would leave an errored shard behind for good.
		if _, err := w.api.GetUnpaddedCARSize(ctx, pieceCid); err != nil {
			return nil, fmt.Errorf("load piece %s: not registered, and the miner API does not have it: %w", pieceCid, err)
		}
		w.log.Infow("piece not registered; registering it lazily", "piece", pieceCid)
		if err := w.registerSync(ctx, pieceCid, "", false); err != nil && !errors.Is(err, ErrShardExists) {
			return nil, fmt.Errorf("load piece %s: %w", pieceCid, err)
		}
		release, err = w.acquire(key, ch)
	}
	if err != nil {
		return nil, fmt.Errorf("load piece %s: acquire shard: %w", pieceCid, err)
	}
	res, err := w.wait(ctx, ch)
	if err != nil {
		w.closeLate(ch, release)
		return nil, fmt.Errorf("load piece %s: %w", pieceCid, err)
	}
	// The hold ends only once the accessor is closed or counted as open, so
	// a destroy never finds the piece free while the dagstore still serves it.
	defer release()
	if res.Error != nil {
		w.closeAccessor(res)
		return nil, fmt.Errorf("load piece %s: %w", pieceCid, res.Error)
	}
	bs, err := res.Accessor.Blockstore()
	if err != nil {
		w.closeAccessor(res)
		return nil, fmt.Errorf("load piece %s: open blockstore: %w", pieceCid, err)
	}
	closed := w.pieces.opened(key)
	return &shardBlockstore{ReadBlockstore: bs, piece: pieceCid, acc: res.Accessor, closed: closed}, nil
}

// acquire queues an acquisition of the shard, held (see pieceLocks.hold)
// until the returned func is called. The piece lock orders it with
// destroys: the dagstore looks the shard up before queueing, and an acquire
// queued after the shard's destroy would run on the destroyed shard.
func (w *Wrapper) acquire(key shard.Key, ch chan dagstore.ShardResult) (func(), error) {
	unlock := w.pieces.lock(key)
	defer unlock()
	if bad, ok := w.bad.get(key); ok {
		return nil, bad // never registered anew over it, as LoadShard would
	}
	if err := w.dagst.AcquireShard(w.ctx, key, ch, dagstore.AcquireOpts{}); err != nil {
		return nil, err
	}
	return w.pieces.hold(key), nil
}

// DestroyShard removes the shard, its index, any transient copy and its
// top-level index entries, then sends the result on resch (which may be
// nil). An unknown piece is an error wrapping ErrShardUnknown, returned at
// once; a shard with open accessors fails with ErrShardInUse.
func (w *Wrapper) DestroyShard(ctx context.Context, pieceCid cid.Cid, resch chan dagstore.ShardResult) error {
	if err := checkCID("piece", pieceCid); err != nil {
		return err
	}
	done, err := w.beginCtx(ctx)
	if err != nil {
		return fmt.Errorf("destroy piece %s: %w", pieceCid, err)
	}
	defer done()
	key := shard.KeyFromCID(pieceCid)
	if !w.known(key) {
		return fmt.Errorf("destroy piece %s: %w", pieceCid, ErrShardUnknown)
	}
	ch := make(chan dagstore.ShardResult, 1)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		ch <- dagstore.ShardResult{Key: key, Error: w.destroy(ctx, pieceCid)}
	}()
	w.forward(ctx, pieceCid, ch, resch, nil)
	return nil
}

// DestroyShardSync is DestroyShard that waits for the result.
func (w *Wrapper) DestroyShardSync(ctx context.Context, pieceCid cid.Cid) error {
	if err := checkCID("piece", pieceCid); err != nil {
		return err
	}
	done, err := w.beginCtx(ctx)
	if err != nil {
		return fmt.Errorf("destroy piece %s: %w", pieceCid, err)
	}
	defer done()
	if err := w.destroy(ctx, pieceCid); err != nil {
		return fmt.Errorf("destroy piece %s: %w", pieceCid, err)
	}
	return nil
}

func (w *Wrapper) destroy(ctx context.Context, pieceCid cid.Cid) error {
	key := shard.KeyFromCID(pieceCid)
	unlock := w.pieces.lock(key)
	defer unlock()
	// A caller's open blockstore keeps the shard: refuse at once.
	if n := w.pieces.openCount(key); n > 0 {
		return fmt.Errorf("%w: %d blockstores open", ErrShardInUse, n)
	}
	// A queued acquire or recovery may start an initialisation before the
	// dagstore gets to the destroy, and a late accessor nobody waited for
	// is still being closed: both end on their own, so wait for them. New
	// ones queue under the piece lock, which is held here.
	select {
	case <-w.pieces.whenIdle(key):
	case <-ctx.Done():
		return fmt.Errorf("%w: an acquire or recovery is pending: %w", ErrShardInUse, ctx.Err())
	case <-w.ctx.Done():
		return ErrClosed
	}
	if n := w.pieces.openCount(key); n > 0 { // an acquire that ended in a caller's hands
		return fmt.Errorf("%w: %d blockstores open", ErrShardInUse, n)
	}
	info, err := w.shardInfo(key)
	if err != nil {
		if _, bad := w.bad.get(key); bad && errors.Is(err, dagstore.ErrShardUnknown) {
			return w.destroyRecord(key)
		}
		return err
	}
	// The dagstore would destroy a shard mid-initialisation and then write
	// its record back when the initialisation completes.
	if info.ShardState == dagstore.ShardStateInitializing || info.ShardState == dagstore.ShardStateRecovering {
		return fmt.Errorf("%w: shard is %s", ErrShardInUse, info.ShardState)
	}
	// Every release of an accessor was queued before this destroy (the
	// counts above), and the dagstore handles both in order.
	res, err := w.destroyShard(key)
	if err != nil {
		return err
	}
	if res.Error != nil {
		return res.Error
	}
	// An initialisation the destroy raced with writes the record back when
	// it completes; from now on such writes are dropped.
	if err := w.records.forget(w.ctx, key); err != nil {
		return err
	}
	// The dagstore deleted only the shard's record; remove the rest.
	return w.purge(w.ctx, key)
}

// destroyRecord removes a shard record the dagstore could not restore, and
// what its shard left on disk. Callers hold the piece lock.
func (w *Wrapper) destroyRecord(key shard.Key) error {
	if err := w.records.forget(w.ctx, key); err != nil {
		return err
	}
	if err := w.purge(w.ctx, key); err != nil {
		return err
	}
	w.bad.remove(key)
	return nil
}

// purge removes what a destroyed shard leaves on disk: its top-level index
// entries (listed by its index, so they go first), its index and its
// transient. Callers hold the piece lock.
func (w *Wrapper) purge(ctx context.Context, key shard.Key) error {
	var mhs index.MultihashIterator
	if idx, err := w.irepo.GetFullIndex(key); err == nil {
		if it, ok := idx.(carindex.IterableIndex); ok {
			mhs = indexMultihashes{it}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		// The entries are found by a scan instead: a destroy must never be
		// stopped by the index it is removing.
		w.log.Warnw("destroy: the piece's index cannot be read; its lookups are reclaimed by a scan", "piece", key, "error", err)
	}
	if r, ok := w.top.(shardRemover); ok {
		if err := r.RemoveShard(ctx, mhs, key); err != nil {
			return err
		}
	}
	if _, err := w.irepo.DropFullIndex(key); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("drop index: %w", err)
	}
	if err := removeOversized(filepath.Join(w.cfg.RootDir, oversizedDir), key); err != nil {
		return err
	}
	return w.transients.remove(key)
}

// indexMultihashes adapts a CAR index to the dagstore's multihash iterator.
type indexMultihashes struct{ idx carindex.IterableIndex }

func (m indexMultihashes) ForEach(fn func(multihash.Multihash) error) error {
	return m.idx.ForEach(func(mh multihash.Multihash, _ uint64) error { return fn(mh) })
}

// GetPiecesContainingBlock returns the registered pieces that hold the
// block, or an error wrapping ErrBlockNotFound.
func (w *Wrapper) GetPiecesContainingBlock(blockCID cid.Cid) ([]cid.Cid, error) {
	if err := checkCID("block", blockCID); err != nil {
		return nil, err
	}
	done, err := w.begin()
	if err != nil {
		return nil, fmt.Errorf("look up block %s: %w", blockCID, err)
	}
	defer done()
	keys, err := w.top.GetShardsForMultihash(w.ctx, blockCID.Hash())
	if err != nil && !errors.Is(err, ds.ErrNotFound) {
		return nil, fmt.Errorf("look up block %s: %w", blockCID, err)
	}
	pieces := make([]cid.Cid, 0, len(keys))
	for _, k := range keys {
		// Entries of a shard whose destroy was interrupted may linger
		// until the next start; never report a piece that is gone.
		if _, err := w.shardInfo(k); err != nil {
			continue
		}
		c, err := cid.Decode(k.String())
		if err != nil {
			continue
		}
		pieces = append(pieces, c)
	}
	if len(pieces) == 0 {
		return nil, fmt.Errorf("look up block %s: %w", blockCID, ErrBlockNotFound)
	}
	return pieces, nil
}

// GetIterableIndexForPiece returns the piece's CAR index (multihash ->
// offset). The shard must have been initialised.
func (w *Wrapper) GetIterableIndexForPiece(pieceCid cid.Cid) (carindex.IterableIndex, error) {
	if err := checkCID("piece", pieceCid); err != nil {
		return nil, err
	}
	done, err := w.begin()
	if err != nil {
		return nil, fmt.Errorf("index of piece %s: %w", pieceCid, err)
	}
	defer done()
	key := shard.KeyFromCID(pieceCid)
	if _, err := w.shardInfo(key); err != nil {
		return nil, fmt.Errorf("index of piece %s: %w", pieceCid, err)
	}
	idx, err := w.dagst.GetIterableIndex(key)
	if err != nil {
		return nil, fmt.Errorf("index of piece %s: %w", pieceCid, err)
	}
	return idx, nil
}

// ShardInfo returns the state of the piece's shard, or an error wrapping
// ErrShardUnknown.
func (w *Wrapper) ShardInfo(pieceCid cid.Cid) (ShardInfo, error) {
	if err := checkCID("piece", pieceCid); err != nil {
		return ShardInfo{}, err
	}
	done, err := w.begin()
	if err != nil {
		return ShardInfo{}, fmt.Errorf("shard info of piece %s: %w", pieceCid, err)
	}
	defer done()
	key := shard.KeyFromCID(pieceCid)
	info, err := w.shardInfo(key)
	if err != nil {
		if bad, ok := w.bad.get(key); ok {
			return ShardInfo{PieceCID: pieceCid, State: dagstore.ShardStateErrored, Error: bad}, nil
		}
		return ShardInfo{}, fmt.Errorf("shard info of piece %s: %w", pieceCid, err)
	}
	return toShardInfo(pieceCid, info), nil
}

func toShardInfo(pieceCid cid.Cid, info dagstore.ShardInfo) ShardInfo {
	si := ShardInfo{PieceCID: pieceCid, State: info.ShardState}
	if info.Error != nil {
		si.Error = fmt.Errorf("piece %s: %w", pieceCid, info.Error)
	}
	return si
}

// ListShards returns every shard, sorted by piece CID, including records
// that could not be restored (as errored shards).
func (w *Wrapper) ListShards() ([]ShardInfo, error) {
	done, err := w.begin()
	if err != nil {
		return nil, fmt.Errorf("list shards: %w", err)
	}
	defer done()
	all := w.allShardsInfo()
	bad := w.bad.all()
	out := make([]ShardInfo, 0, len(all)+len(bad))
	for k, info := range all {
		c, err := cid.Decode(k.String())
		if err != nil {
			w.log.Warnw("shard key is not a piece CID; not listed", "key", k)
			continue
		}
		out = append(out, toShardInfo(c, info))
	}
	for k, err := range bad {
		if _, known := all[k]; known {
			continue
		}
		if c, derr := cid.Decode(k.String()); derr == nil {
			out = append(out, ShardInfo{PieceCID: c, State: dagstore.ShardStateErrored, Error: err})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PieceCID.String() < out[j].PieceCID.String() })
	return out, nil
}
