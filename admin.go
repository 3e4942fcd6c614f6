package dagwrap

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"sync"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// DefaultInitConcurrency is how many shards InitAllShards initialises at
// once unless told otherwise.
const DefaultInitConcurrency = 4

// InitShard fetches and indexes the piece's shard now, if that has not
// happened yet, and returns once the shard is available. An available shard
// is left as it is. An errored shard is not touched: it needs RecoverShard.
// If ctx ends first the initialisation goes on in the background.
func (w *Wrapper) InitShard(ctx context.Context, pieceCid cid.Cid) error {
	if err := checkCID("piece", pieceCid); err != nil {
		return err
	}
	done, err := w.beginCtx(ctx)
	if err != nil {
		return fmt.Errorf("init piece %s: %w", pieceCid, err)
	}
	defer done()
	if err := w.initShard(ctx, pieceCid); err != nil {
		return fmt.Errorf("init piece %s: %w", pieceCid, err)
	}
	return nil
}

// initShard initialises one shard by acquiring it once: the dagstore fetches
// and indexes a shard in state New on its first acquire.
func (w *Wrapper) initShard(ctx context.Context, pieceCid cid.Cid) error {
	key := shard.KeyFromCID(pieceCid)
	info, err := w.shardState(key)
	if err != nil {
		return err
	}
	switch info.ShardState {
	case dagstore.ShardStateAvailable, dagstore.ShardStateServing:
		return nil
	case dagstore.ShardStateErrored:
		return fmt.Errorf("%w: recover it instead: %v", ErrShardErrored, info.Error)
	}
	ch := make(chan dagstore.ShardResult, 1)
	release, err := w.acquire(key, ch)
	if err != nil {
		return fmt.Errorf("acquire shard: %w", err)
	}
	res, err := w.wait(ctx, ch)
	if err != nil {
		w.closeLate(ch, release)
		return err
	}
	w.closeAccessor(res) // before the hold ends: see loadShard
	release()
	return res.Error
}

// shardState returns the dagstore's view of the shard, or the reason its
// record could not be restored, or ErrShardUnknown.
func (w *Wrapper) shardState(key shard.Key) (dagstore.ShardInfo, error) {
	info, err := w.shardInfo(key)
	if err == nil {
		return info, nil
	}
	if bad, ok := w.bad.get(key); ok {
		return dagstore.ShardInfo{}, bad
	}
	return dagstore.ShardInfo{}, err
}

// InitProgress is a snapshot of InitAllShards' progress. Done, Failed and
// Skipped add up to the pieces finished so far, out of Total.
type InitProgress struct {
	Done    int // initialised
	Failed  int // failed to initialise
	Skipped int // sealed pieces left alone
	Total   int // uninitialised shards found at the start
}

// InitAllResult says what InitAllShards did with each piece.
type InitAllResult struct {
	Initialized []cid.Cid
	Skipped     []cid.Cid         // sealed pieces, without IncludeSealed
	Failed      map[cid.Cid]error // each error names its piece
}

// InitAllOption configures InitAllShards.
type InitAllOption func(*initAllOptions)

type initAllOptions struct {
	concurrency   int
	includeSealed bool
	progress      func(InitProgress)
}

// InitConcurrency sets how many shards are initialised at once; values
// below 1 mean DefaultInitConcurrency. The dagstore's own limits
// (Config.MaxConcurrentIndex, the unseal throttle) still apply.
func InitConcurrency(n int) InitAllOption {
	return func(o *initAllOptions) { o.concurrency = n }
}

// IncludeSealed makes InitAllShards also initialise pieces that are sealed
// only. By default they are skipped: unsealing one takes minutes of CPU.
func IncludeSealed(include bool) InitAllOption {
	return func(o *initAllOptions) { o.includeSealed = include }
}

// OnInitProgress has fn called with the counts at the start and after each
// piece finishes, in order and one call at a time, with counts that only
// grow. The calls run in a goroutine of their own: InitAllShards returns
// after the last one, unless its context ends first; then no further call is
// made, and one that blocks holds neither InitAllShards nor Close.
func OnInitProgress(fn func(InitProgress)) InitAllOption {
	return func(o *initAllOptions) { o.progress = fn }
}

// InitAllShards initialises every shard still in state New (registered
// lazily, never acquired), a bounded number at a time. Sealed pieces are
// skipped unless IncludeSealed(true). It returns once every piece is done;
// the error, if any, joins the failures, each naming its piece. If ctx ends
// first, the pieces not started yet are left as they are.
func (w *Wrapper) InitAllShards(ctx context.Context, opts ...InitAllOption) (InitAllResult, error) {
	o := initAllOptions{concurrency: DefaultInitConcurrency}
	for _, opt := range opts {
		opt(&o)
	}
	if o.concurrency < 1 {
		o.concurrency = DefaultInitConcurrency
	}
	res := InitAllResult{Failed: map[cid.Cid]error{}}
	done, err := w.beginCtx(ctx)
	if err != nil {
		return res, fmt.Errorf("init all shards: %w", err)
	}
	defer done()

	var pieces []cid.Cid
	for k, info := range w.allShardsInfo() {
		if info.ShardState != dagstore.ShardStateNew {
			continue
		}
		if c, err := cid.Decode(k.String()); err == nil {
			pieces = append(pieces, c)
		}
	}
	sort.Slice(pieces, func(i, j int) bool { return pieces[i].String() < pieces[j].String() })

	// Calls into the MinerAPI end with the caller or with Close.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(w.ctx, cancel)()

	// The callback runs in a goroutine of its own (see progressFeed).
	progress := newProgressFeed(ctx, o.progress)
	var mu sync.Mutex
	prog := InitProgress{Total: len(pieces)}
	report := func(pc cid.Cid, skipped bool, err error) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil:
			prog.Failed++
			res.Failed[pc] = err
		case skipped:
			prog.Skipped++
			res.Skipped = append(res.Skipped, pc)
		default:
			prog.Done++
			res.Initialized = append(res.Initialized, pc)
		}
		progress.send(prog)
	}
	progress.send(prog)

	next := make(chan cid.Cid)
	var workers sync.WaitGroup
	for i := 0; i < min(o.concurrency, len(pieces)); i++ {
		workers.Add(1)
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			defer workers.Done()
			for pc := range next {
				skipped, err := w.initOne(ctx, pc, o.includeSealed)
				if err != nil && ctx.Err() != nil {
					continue // stopped, not failed
				}
				report(pc, skipped, err)
			}
		}()
	}
feed:
	for _, pc := range pieces {
		select {
		case next <- pc:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	workers.Wait()
	progress.finish(ctx)

	if len(res.Failed) > 0 {
		errs := make([]error, 0, len(res.Failed))
		for _, err := range res.Failed {
			errs = append(errs, err)
		}
		sortErrors(errs)
		err = fmt.Errorf("init all shards: %d of %d pieces failed: %w", len(res.Failed), len(pieces), errors.Join(errs...))
	}
	if ctx.Err() != nil {
		cause := ErrClosed
		if w.ctx.Err() == nil {
			cause = ctx.Err()
		}
		err = errors.Join(fmt.Errorf("init all shards: stopped after %d of %d pieces: %w",
			prog.Done+prog.Failed+prog.Skipped, len(pieces), cause), err)
	}
	return res, err
}

// initOne initialises one piece of InitAllShards, or reports it skipped.
func (w *Wrapper) initOne(ctx context.Context, pc cid.Cid, includeSealed bool) (skipped bool, err error) {
	if !includeSealed {
		// Through the gated API, so the storage-call throttle applies;
		// detached, so a node's call that ignores ctx does not hold us.
		unsealed, err := detached(ctx, func() (bool, error) { return w.api.IsUnsealed(ctx, pc) }, nil)
		if err != nil {
			return false, fmt.Errorf("piece %s: check whether it is unsealed: %w", pc, err)
		}
		if !unsealed {
			return true, nil
		}
	}
	if err := w.initShard(ctx, pc); err != nil {
		return false, fmt.Errorf("piece %s: %w", pc, err)
	}
	return false, nil
}

// RecoverShard re-fetches and re-indexes an errored shard and returns once
// it is available again, or the recovery's error. A shard that is not
// errored is an error wrapping ErrShardNotErrored. If ctx ends first the
// recovery goes on in the background.
func (w *Wrapper) RecoverShard(ctx context.Context, pieceCid cid.Cid) error {
	if err := checkCID("piece", pieceCid); err != nil {
		return err
	}
	done, err := w.beginCtx(ctx)
	if err != nil {
		return fmt.Errorf("recover piece %s: %w", pieceCid, err)
	}
	defer done()
	// An automatic recovery (or an acquire) may be running: wait for it
	// rather than be refused, and count it if it recovered the shard.
	key := shard.KeyFromCID(pieceCid)
	if err := w.fails.waitKey(ctx, key); err != nil {
		return fmt.Errorf("recover piece %s: %w", pieceCid, err)
	}
	before, _ := w.shardState(key)
	if busy := w.pieces.held(key); busy || before.ShardState == dagstore.ShardStateErrored {
		select {
		case <-w.pieces.whenIdle(key):
		case <-ctx.Done():
			return fmt.Errorf("recover piece %s: %w", pieceCid, ctx.Err())
		case <-w.ctx.Done():
			return fmt.Errorf("recover piece %s: %w", pieceCid, ErrClosed)
		}
		if now, err := w.shardState(key); err == nil && busy && now.ShardState == dagstore.ShardStateAvailable {
			return nil
		}
	}
	ch := make(chan dagstore.ShardResult, 1)
	if err := w.submitRecover(pieceCid, ch); err != nil {
		return fmt.Errorf("recover piece %s: %w", pieceCid, err)
	}
	res, err := w.wait(ctx, ch)
	if err != nil {
		w.unholdLate(ch, 1)
		return fmt.Errorf("recover piece %s: %w", pieceCid, err)
	}
	w.pieces.unhold(res.Key)
	if err := res.Error; err != nil {
		// Refused because an automatic recovery started meanwhile: its
		// outcome is this call's.
		if now, serr := w.shardState(key); serr == nil && now.ShardState != dagstore.ShardStateErrored {
			select {
			case <-w.pieces.whenIdle(key):
			case <-ctx.Done():
				return fmt.Errorf("recover piece %s: %w", pieceCid, ctx.Err())
			}
			if now, serr = w.shardState(key); serr == nil && (now.ShardState == dagstore.ShardStateAvailable || now.ShardState == dagstore.ShardStateServing) {
				return nil
			}
		}
		return fmt.Errorf("recover piece %s: %w", pieceCid, err)
	}
	return nil
}

// submitRecover queues the recovery of an errored shard (see
// recoverShard); its result will arrive on ch, which must have room for it.
func (w *Wrapper) submitRecover(pieceCid cid.Cid, ch chan dagstore.ShardResult) error {
	key := shard.KeyFromCID(pieceCid)
	info, err := w.shardState(key)
	if err != nil {
		return err
	}
	if info.ShardState != dagstore.ShardStateErrored {
		return fmt.Errorf("%w: shard is %s", ErrShardNotErrored, StateName(info.ShardState))
	}
	return w.recoverShard(key, ch)
}

// RecoverAllResult says what RecoverAllShards did with each errored piece.
type RecoverAllResult struct {
	Recovered []cid.Cid
	Failed    map[cid.Cid]error // each error names its piece
}

// RecoverAllShards recovers every errored shard, including records that
// could not be restored at start (which fail with their cause, as no
// recovery can revive them). The dagstore's limits bound how many run at
// once. The error, if any, joins the failures.
func (w *Wrapper) RecoverAllShards(ctx context.Context) (RecoverAllResult, error) {
	res := RecoverAllResult{Failed: map[cid.Cid]error{}}
	done, err := w.beginCtx(ctx)
	if err != nil {
		return res, fmt.Errorf("recover all shards: %w", err)
	}
	defer done()

	var errored []cid.Cid
	for k, info := range w.allShardsInfo() {
		if info.ShardState != dagstore.ShardStateErrored {
			continue
		}
		if c, err := cid.Decode(k.String()); err == nil {
			errored = append(errored, c)
		}
	}
	for k, bad := range w.bad.all() {
		if c, err := cid.Decode(k.String()); err == nil {
			res.Failed[c] = bad
		}
	}
	sort.Slice(errored, func(i, j int) bool { return errored[i].String() < errored[j].String() })

	// One buffered channel for every result: the dagstore never waits on
	// it, even after this call has given up.
	ch := make(chan dagstore.ShardResult, len(errored))
	pending := 0
	for _, pc := range errored {
		if err := w.submitRecover(pc, ch); err != nil {
			res.Failed[pc] = fmt.Errorf("piece %s: %w", pc, err)
			continue
		}
		pending++
	}
	for ; pending > 0; pending-- {
		r, err := w.wait(ctx, ch)
		if err != nil {
			w.unholdLate(ch, pending)
			return res, fmt.Errorf("recover all shards: %d recoveries still running: %w", pending, err)
		}
		w.pieces.unhold(r.Key)
		pc, err := cid.Decode(r.Key.String())
		if err != nil {
			continue
		}
		if r.Error != nil {
			res.Failed[pc] = fmt.Errorf("piece %s: %w", pc, r.Error)
		} else {
			res.Recovered = append(res.Recovered, pc)
		}
	}
	sort.Slice(res.Recovered, func(i, j int) bool { return res.Recovered[i].String() < res.Recovered[j].String() })
	if len(res.Failed) > 0 {
		errs := make([]error, 0, len(res.Failed))
		for _, err := range res.Failed {
			errs = append(errs, err)
		}
		sortErrors(errs)
		return res, fmt.Errorf("recover all shards: %d of %d failed: %w", len(res.Failed), len(res.Failed)+len(res.Recovered), errors.Join(errs...))
	}
	return res, nil
}

// GCResult says what a GC reclaimed.
type GCResult struct {
	Reclaimed []ReclaimedTransient // sorted by piece CID
	Bytes     int64                // total size of the reclaimed transients
	Failed    map[cid.Cid]error    // transients that could not be removed
}

// ReclaimedTransient is one piece's transient copy removed by GC.
type ReclaimedTransient struct {
	PieceCID cid.Cid
	Bytes    int64
}

// GC removes now the transient copies of shards that are available but not
// being read, or errored, and what dead shards and interrupted copies left
// in transients/, and reports what it removed. Pieces read through a
// random-access MinerAPI have no transients, so there is nothing to reclaim.
func (w *Wrapper) GC(ctx context.Context) (GCResult, error) {
	done, err := w.beginCtx(ctx)
	if err != nil {
		return GCResult{Failed: map[cid.Cid]error{}}, fmt.Errorf("gc: %w", err)
	}
	defer done()
	// Bounded by Close too, though Close waits for it.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(w.ctx, cancel)()
	res, err := w.gc(ctx)
	if err != nil {
		if w.ctx.Err() != nil {
			err = errors.Join(ErrClosed, err)
		}
		return res, fmt.Errorf("gc: %w", err)
	}
	return res, nil
}

// IndexStats describes a shard's index.
type IndexStats struct {
	Indexed   bool  // false until the shard has been initialised
	Blocks    int   // entries in the index: one per indexed section (a block stored twice counts twice)
	IndexSize int64 // bytes of the index file
	// Oversized lists the blocks left out of the index because they are
	// larger than the blockstore serves (8 MiB): never announced.
	Oversized []OversizedBlock
}

// IndexStats returns the statistics of the piece's index. A shard not
// initialised yet has Indexed false; an unknown piece is an error wrapping
// ErrShardUnknown.
func (w *Wrapper) IndexStats(pieceCid cid.Cid) (IndexStats, error) {
	if err := checkCID("piece", pieceCid); err != nil {
		return IndexStats{}, err
	}
	done, err := w.begin()
	if err != nil {
		return IndexStats{}, fmt.Errorf("index stats of piece %s: %w", pieceCid, err)
	}
	defer done()
	key := shard.KeyFromCID(pieceCid)
	if _, err := w.shardState(key); err != nil {
		return IndexStats{}, fmt.Errorf("index stats of piece %s: %w", pieceCid, err)
	}
	st, err := w.irepo.StatFullIndex(key)
	if err != nil {
		return IndexStats{}, fmt.Errorf("index stats of piece %s: %w", pieceCid, err)
	}
	if !st.Exists {
		return IndexStats{}, nil
	}
	idx, err := w.dagst.GetIterableIndex(key)
	if err != nil {
		return IndexStats{}, fmt.Errorf("index stats of piece %s: %w", pieceCid, err)
	}
	n := 0
	if m, ok := idx.(*mappedIndex); ok {
		n = int(m.Entries()) // counted from its headers, without reading it
	} else if err := idx.ForEach(func(multihash.Multihash, uint64) error { n++; return nil }); err != nil {
		return IndexStats{}, fmt.Errorf("index stats of piece %s: read index: %w", pieceCid, err)
	}
	over, err := readOversized(filepath.Join(w.cfg.RootDir, oversizedDir), key)
	if err != nil {
		return IndexStats{}, fmt.Errorf("index stats of piece %s: %w", pieceCid, err)
	}
	return IndexStats{Indexed: true, Blocks: n, IndexSize: int64(st.Size), Oversized: over}, nil
}

// StateName is the short lower-case name of a shard state, as operators
// type it: new, initializing, available, serving, recovering, errored.
func StateName(s dagstore.ShardState) string {
	switch s {
	case dagstore.ShardStateNew:
		return "new"
	case dagstore.ShardStateInitializing:
		return "initializing"
	case dagstore.ShardStateAvailable:
		return "available"
	case dagstore.ShardStateServing:
		return "serving"
	case dagstore.ShardStateRecovering:
		return "recovering"
	case dagstore.ShardStateErrored:
		return "errored"
	default:
		return "unknown"
	}
}

// ParseState is the inverse of StateName.
func ParseState(name string) (dagstore.ShardState, error) {
	for _, s := range []dagstore.ShardState{
		dagstore.ShardStateNew, dagstore.ShardStateInitializing, dagstore.ShardStateAvailable,
		dagstore.ShardStateServing, dagstore.ShardStateRecovering, dagstore.ShardStateErrored,
	} {
		if StateName(s) == name {
			return s, nil
		}
	}
	return dagstore.ShardStateUnknown, fmt.Errorf("unknown shard state %q (want new, initializing, available, serving, recovering or errored)", name)
}

// sortErrors orders errors by message, so joined errors read the same on
// every run.
func sortErrors(errs []error) {
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
}
