package dagwrap

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/filecoin-project/dagstore"
	"github.com/ipfs/go-cid"
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
	if err := w.shards.initialize(ctx, pieceCid); err != nil {
		return fmt.Errorf("init piece %s: %w", pieceCid, err)
	}
	return nil
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
	infos, _ := w.shards.all()
	for k, info := range infos {
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
		w.shards.spawn(func() {
			defer workers.Done()
			for pc := range next {
				skipped, err := initOne(ctx, w.api, w.shards, pc, o.includeSealed)
				if err != nil && ctx.Err() != nil {
					continue // stopped, not failed
				}
				report(pc, skipped, err)
			}
		})
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
func initOne(ctx context.Context, api MinerAPI, s *shards, pc cid.Cid, includeSealed bool) (skipped bool, err error) {
	if !includeSealed {
		// Through the gated API, so the storage-call throttle applies;
		// detached, so a node's call that ignores ctx does not hold us.
		unsealed, err := detached(ctx, func() (bool, error) { return api.IsUnsealed(ctx, pc) }, nil)
		if err != nil {
			return false, fmt.Errorf("piece %s: check whether it is unsealed: %w", pc, err)
		}
		if !unsealed {
			return true, nil
		}
	}
	if err := s.initialize(ctx, pc); err != nil {
		return false, fmt.Errorf("piece %s: %w", pc, err)
	}
	return false, nil
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
// It first closes the pieces Blockstore keeps open that no request is
// reading, so their shards count as not being read.
func (w *Wrapper) GC(ctx context.Context) (GCResult, error) {
	done, err := w.beginCtx(ctx)
	if err != nil {
		return GCResult{Failed: map[cid.Cid]error{}}, fmt.Errorf("gc: %w", err)
	}
	defer done()
	w.cache.sweep(time.Time{}, true)
	// Bounded by Close too, though Close waits for it.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(w.ctx, cancel)()
	res, err := w.shards.gc(ctx)
	if err != nil {
		if w.ctx.Err() != nil {
			err = errors.Join(ErrClosed, err)
		}
		return res, fmt.Errorf("gc: %w", err)
	}
	return res, nil
}

// sortErrors orders errors by message, so joined errors read the same on
// every run.
func sortErrors(errs []error) {
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
}
