// The shard-state owner: the only code in dagwrap that calls the dagstore,
// and the only owner of dagwrap's own per-shard state (per-piece locks,
// pending eager registrations, acquires and recoveries, open blockstores,
// releases in flight, failures not yet recorded, records that cannot be
// restored). Everything else asks it.
//
// Lock order (take left before right, never the reverse):
//
//	Wrapper.ops (shared by calls, exclusive by Close)
//	  -> a piece lock (pieces.lock: register, acquire queueing, destroy,
//	     reconciliation, recovery queueing, the GC of a transient)
//	    -> infoMu (shared: shard info; exclusive: a destroy in flight)
//	      -> leaf mutexes, never held across a dagstore call or a wait:
//	         pieces.mu, pieceCache.mu, releases, shardRecords, badRecords,
//	         failures, recoveries, transients
//
// The cross-piece blockstore's cache (piececache.go) loads and closes
// pieces with no lock held; a destroy evicts the piece under its piece lock
// and waits for the requests reading it, which take no piece lock.
//
// dagstore v0.7.0 defects worked around here, each with the test that pins
// it:
//   - Destroy and shard info take the dagstore's two locks in opposite
//     orders: while it processes a destroy, its event loop holds the shard's
//     lock and takes the store's; GetShardInfo and AllShardsInfo hold the
//     store's and take a shard's. So lookups hold infoMu shared, and a
//     destroy holds it exclusively until its result arrives (info, all,
//     dagstoreDestroy): TestConcurrentOperations.
//   - A destroy racing an initialisation writes the record back; destroy
//     waits for pending acquires and recoveries (pieces.hold) and the
//     records drop late writes (records.forget): TestDestroyRemovesEverything,
//     TestCancelledLoadLeaksNothing.
//   - A destroy queued right after an eager registration finds the shard
//     still new (its initialisation is queued, not begun) and removes it
//     under the initialisation: destroy refuses while one is pending
//     (pieces.registers): TestDestroyRefusedWhileEagerRegistrationPending.
//   - "Active references" is only an error string: the owner counts the
//     blockstores it hands out (pieces.opened) and the acquires it queued
//     (pieces.hold): TestDestroyRemovesEverything, TestCancelledLoadLeaksNothing.
//   - A failure reaches its caller before it is recorded (failures.go):
//     TestFailureSeenIsPersistedByClose.
//   - A lazy registration is reported before its record is written
//     (register, records.go): TestCrashConsistency.
//   - Records stay "recovering" after an interrupted recovery
//     (shardRecords.prepare): TestInterruptedRecoveryIsNotStuck.
//   - One unrestorable record aborts start-up (shardRecords.prepare,
//     badRecords): badrecords_test.go.
//   - A lookup right after Start misses a Lotus root's index (reconcile.go):
//     TestLotusLookupsRightAfterStart.
//   - Closing an accessor only queues its release, so a GC right after it
//     sees the shard in use: a blockstore's Close waits for it (releases.go,
//     fed by the trace loop): TestGCClosesIdleCachedPieces,
//     TestCloseReturnsOnceReleased.
//   - A failed shard is never retried: the recovery loop gives each failure
//     one automatic recovery (background.go): TestFailedShardIsRecoveredAutomatically,
//     TestManualRecoveryRearmsAutomaticRecovery.
//   - A dagstore whose Start failed cannot be started again (start):
//     TestFailedDagstoreStartCanBeRetried.
//   - An acquire cancelled after its fetch drops the reader without closing
//     it: acquires run under the Wrapper's context, and an accessor nobody
//     waits for any more is closed (open, closeLate):
//     TestCancelledLoadLeaksNothing.
//   - The mount upgrader copies a sequential mount into transients it
//     writes after Close: the mount declares random access and copies under
//     the write gate itself (mount.go): TestMountAlwaysDeclaresRandomAccess.
//   - A waiter's result and the failure notice leave through two
//     dispatchers, in no order: AwaitRecovery fences the trace loop and
//     counts failures traced and taken (background.go): TestAwaitRecovery.

package dagwrap

import (
	"context"
	"fmt"
	"sync"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/mount"
	"github.com/filecoin-project/dagstore/shard"
	logging "github.com/ipfs/go-log/v2"
	carindex "github.com/ipld/go-car/v2/index"
)

// shards owns the dagstore and dagwrap's per-shard state (see above). Its
// goroutines, and those the Wrapper starts through spawn, end before close
// returns.
type shards struct {
	ctx      context.Context // the Wrapper's: Close cancels it
	log      *logging.ZapEventLogger
	traceLog *logging.ZapEventLogger
	m        *metrics
	gate     *writeGate
	records  *shardRecords
	files    *pieceFiles
	// evict takes a piece out of the cross-piece blockstore's cache; the
	// channels close once the requests reading it have ended.
	evict func(shard.Key) []<-chan struct{}

	dagst    *dagstore.DAGStore
	dagstCfg dagstore.Config // builds dagst, and a fresh one after a failed Start
	// traceCh and failureCh are the dagstore's event channels, drained by
	// the trace and recovery loops until dagstClosed.
	traceCh   chan dagstore.Trace
	failureCh chan dagstore.ShardResult
	// fence asks the trace loop to handle every event already sent, then
	// close the channel it was given (see awaitRecovery).
	fence chan chan struct{}
	// dagstClosed is closed once the dagstore's event loop has exited, which
	// is when the trace and failure channels may stop being drained.
	dagstClosed chan struct{}
	wg          sync.WaitGroup
	// drains says the loops run (see start); dagstSpent that
	// dagst.Start was called. Only start uses them.
	drains, dagstSpent bool

	pieces     pieceLocks
	releases   releases   // accessor releases the dagstore has yet to process
	fails      failures   // failures callers saw that may not be on disk yet
	bad        badRecords // records that could not be restored
	recoveries recoveries // automatic recoveries, for those who wait on them
	infoMu     sync.RWMutex
}

// openShards makes the owner of a dagstore reading pieces through mnt (the
// lotus mount's template) and keeping its records in st's datastore.
func openShards(s *shards, cfg Config, st *stores, mnt *pieceMount) error {
	s.dagstClosed = make(chan struct{})
	s.records = newShardRecords(st.store, s.gate)
	s.records.bad = &s.bad
	registry := mount.NewRegistry()
	if err := registry.Register(MountScheme, mnt); err != nil {
		return fmt.Errorf("register mount: %w", err)
	}
	// Buffered so a burst of events does not stall the event loop while the
	// drains log them; the drains keep running until the dagstore has closed.
	s.traceCh = make(chan dagstore.Trace, 128)
	s.failureCh = make(chan dagstore.ShardResult, 128)
	s.fence = make(chan chan struct{})
	s.dagstCfg = dagstore.Config{
		TransientsDir:             s.files.transients.dir,
		IndexRepo:                 gatedIndexRepo{st.irepo, s.gate},
		TopLevelIndex:             gatedInverted{st.top, s.gate},
		Datastore:                 s.records,
		MountRegistry:             registry,
		TraceCh:                   s.traceCh,
		FailureCh:                 s.failureCh,
		MaxConcurrentIndex:        cfg.MaxConcurrentIndex,
		MaxConcurrentReadyFetches: cfg.MaxConcurrentReadyFetches,
		RecoverOnStart:            dagstore.RecoverOnAcquire,
	}
	var err error
	if s.dagst, err = dagstore.NewDAGStore(s.dagstCfg); err != nil {
		return fmt.Errorf("create dagstore: %w", err)
	}
	return nil
}

// start checks the shard records (see prepare), then starts the dagstore,
// and before it (once per Wrapper) the goroutines
// that drain its trace and failure channels and queue recoveries. They must
// run before the dagstore starts (restoring queues work whose events would
// otherwise block its event loop, and Start with it). They idle until a
// dagstore runs, so after a failed Start they serve the next attempt's
// dagstore (it is given the same channels); close stops them.
//
// The dagstore (v0.7.0) fails its Start only when reading the records
// fails, before it restores or runs anything, but its Start is not meant to
// be called twice: a retry gets a fresh instance from the same
// configuration, independent of what the failed one left.
func (s *shards) start(ctx context.Context) error {
	if err := s.records.prepare(ctx, &s.bad, s.log); err != nil {
		return fmt.Errorf("dagwrap: %w", err)
	}
	if !s.drains {
		s.drains = true
		s.spawn(func() { s.records.commitGroups(s.dagstClosed) }) // commits what is queued, then ends
		recoverCh, recovered := make(chan shard.Key), make(chan dagstore.ShardResult, 128)
		available := make(chan shard.Key, 128)
		b := background{s}
		s.spawn(func() { b.trace(available) })
		s.spawn(func() { b.recoverFailures(recoverCh, recovered, available) })
		s.spawn(func() { b.recoverWorker(recoverCh, recovered) })
	}
	if s.dagstSpent {
		_ = s.dagst.Close() // cancels its context; none of its goroutines run
		d, err := dagstore.NewDAGStore(s.dagstCfg)
		if err != nil {
			return fmt.Errorf("dagwrap: create dagstore: %w", err)
		}
		s.dagst = d
	}
	s.dagstSpent = true
	if err := s.dagst.Start(ctx); err != nil {
		return fmt.Errorf("dagwrap: start dagstore: %w", err)
	}
	return nil
}

// close waits (briefly) for the failures callers saw to be recorded, stops
// the dagstore, closes the write gate and waits for every goroutine the
// owner ran. No call may be in flight.
func (s *shards) close() error {
	// Failures callers saw are on disk before the event loop stops.
	if !s.fails.wait(failureSettleLimit) {
		s.log.Warnw("closing before the dagstore recorded every shard failure it reported")
	}
	err := s.dagst.Close()
	// The dagstore's initialisations and acquires outlive its Close: from
	// here their writes under the root fail, and those in flight end now.
	s.gate.close()
	close(s.dagstClosed)
	s.wg.Wait()
	return err
}

// spawn runs fn in a goroutine the owner waits for in close.
func (s *shards) spawn(fn func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn()
	}()
}

// info is dagstore.GetShardInfo, safe against concurrent destroys.

func (s *shards) info(k shard.Key) (dagstore.ShardInfo, error) {
	s.infoMu.RLock()
	defer s.infoMu.RUnlock()
	return s.dagst.GetShardInfo(k)
}

// all is dagstore.AllShardsInfo, safe against concurrent destroys, and the
// records that could not be restored, with why.
func (s *shards) all() (dagstore.AllShardsInfo, map[shard.Key]error) {
	s.infoMu.RLock()
	infos := s.dagst.AllShardsInfo()
	s.infoMu.RUnlock()
	return infos, s.bad.all()
}

// unrestorable returns why the shard's record could not be restored, if it
// could not.
func (s *shards) unrestorable(key shard.Key) (error, bool) { return s.bad.get(key) }

// index returns the shard's index, read from the index repo. The shard must
// have been initialised.
func (s *shards) index(key shard.Key) (carindex.IterableIndex, error) {
	return s.dagst.GetIterableIndex(key)
}

// dagstoreDestroy asks the dagstore to destroy the shard and waits for the
// answer. The dagstore answers every destroy it queued while it runs, so the
// wait ends; the request is not bound to s.ctx, or Close could leave the
// dagstore mid-destroy while lookups proceed.
func (s *shards) dagstoreDestroy(key shard.Key) (dagstore.ShardResult, error) {
	s.infoMu.Lock()
	defer s.infoMu.Unlock()
	ch := make(chan dagstore.ShardResult, 1)
	if err := s.dagst.DestroyShard(context.Background(), key, ch, dagstore.DestroyOpts{}); err != nil {
		return dagstore.ShardResult{}, err
	}
	select {
	case res := <-ch:
		return res, nil
	case <-s.dagstClosed:
		return dagstore.ShardResult{}, ErrClosed
	}
}

// state returns the dagstore's view of the shard, or the reason its
// record could not be restored, or ErrShardUnknown.
func (s *shards) state(key shard.Key) (dagstore.ShardInfo, error) {
	info, err := s.info(key)
	if err == nil {
		return info, nil
	}
	if bad, ok := s.bad.get(key); ok {
		return dagstore.ShardInfo{}, bad
	}
	return dagstore.ShardInfo{}, err
}

// known reports whether the dagstore has the shard, in memory or on disk (a
// record it could not revive still belongs to a shard).
func (s *shards) known(k shard.Key) bool {
	if _, err := s.info(k); err == nil {
		return true
	}
	_, bad := s.bad.get(k)
	return bad
}
