package dagwrap

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
	logging "github.com/ipfs/go-log/v2"
)

// Deal is what the migration needs to know of a storage deal.
type Deal struct {
	DealID    uint64
	PieceCID  cid.Cid
	HandedOff bool // true once the deal has been handed to the sealing subsystem
}

// MigrateDeals registers every handed-off deal's piece as a lazily
// initialised shard, once per root. It returns (false, nil) if the migration
// marker exists, and (true, nil) once every registration succeeded (a piece
// already registered counts as done) and the marker is durably written. If
// any registration failed, the failures are logged with deal and piece, the
// error names them, and no marker is written: the next call migrates again.
func (w *Wrapper) MigrateDeals(ctx context.Context, deals []Deal) (bool, error) {
	done, err := w.beginCtx(ctx)
	if err != nil {
		return false, fmt.Errorf("migrate deals: %w", err)
	}
	defer done()
	if ok, err := markerExists(w.cfg.RootDir); err != nil || ok {
		return false, err
	}

	// One registration per piece; several deals may share one.
	plan := planMigration(deals)
	order, handedOff := plan.order, plan.handedOff
	w.log.Infow("migrating deals to the dagstore", "deals", len(deals), "handed_off", handedOff, "pieces", len(order))
	start := time.Now()

	// Registrations are queued by one goroutine while this one collects
	// their results from a buffered channel.
	mig := migration{s: w.shards, mount: w.mount, log: w.log}
	results := make(chan dagstore.ShardResult, 1024)
	queued := make(chan queueOutcome, 1)
	// Registrations in flight are bounded: each has a goroutine waiting
	// for its record's group commit.
	slots := make(chan struct{}, migrationsInFlight)
	w.shards.spawn(func() {
		queued <- mig.queue(ctx, order, results, slots)
	})

	expected, received := -1, 0
	var cut error
	for expected != received {
		select {
		case q := <-queued:
			expected = q.queued
			cut = q.cut
			for _, e := range q.failed {
				w.m.count(opRegister, e.err)
				plan.fail(e.key, e.err)
			}
		case r := <-results:
			received++
			<-slots
			w.m.count(opRegister, r.Error)
			if r.Error != nil {
				plan.fail(r.Key, r.Error)
			}
		case <-ctx.Done():
			mig.drain(results, queued, expected, received)
			return false, fmt.Errorf("migrate deals: %w", ctx.Err())
		case <-w.ctx.Done():
			mig.drain(results, queued, expected, received)
			return false, fmt.Errorf("migrate deals: %w", ErrClosed)
		}
	}
	failed := plan.failures(w.log)
	if cut != nil {
		return false, fmt.Errorf("migrate deals: %w", cut)
	}
	if len(failed) > 0 {
		return false, fmt.Errorf("migrate deals: %d of %d handed-off deals failed: %w", len(failed), handedOff, errors.Join(failed...))
	}
	content := fmt.Sprintf("migrated %d pieces at %s\n", len(order), time.Now().UTC().Format(time.RFC3339))
	if err := writeMarker(w.cfg.RootDir, []byte(content)); err != nil {
		return false, fmt.Errorf("migrate deals: %w", err)
	}
	w.log.Infow("deal migration complete", "pieces", len(order), "took", time.Since(start))
	return true, nil
}

type queueOutcome struct {
	queued int // registrations the dagstore accepted: one result each
	failed []keyErr
	cut    error // why queueing stopped before the last piece, if it did
}

type keyErr struct {
	key shard.Key
	err error
}

// migrationsInFlight bounds the migration's registrations awaiting their
// result; it is also about the largest group one commit writes.
const migrationsInFlight = 2048

// migration queues one MigrateDeals call's registrations and collects
// their outcomes.
type migration struct {
	s     *shards
	mount *pieceMount
	log   *logging.ZapEventLogger
}

// queue queues a lazy registration per piece, until ctx ends,
// each holding one of slots until its result is taken.
func (m migration) queue(ctx context.Context, pieces []cid.Cid, results chan dagstore.ShardResult, slots chan struct{}) queueOutcome {
	var out queueOutcome
	for _, pc := range pieces {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			out.cut = ctx.Err()
			return out
		case <-m.s.ctx.Done():
			out.cut = ErrClosed
			return out
		}
		switch err := m.queueOne(pc, results); {
		case err == nil:
			out.queued++
			continue
		case errors.Is(err, ErrShardExists):
			// registered before: done
		default:
			out.failed = append(out.failed, keyErr{shard.KeyFromCID(pc), err})
		}
		<-slots
	}
	return out
}

// queueOne queues the lazy registration of a piece, its record
// written in a group commit.
func (m migration) queueOne(pieceCid cid.Cid, results chan dagstore.ShardResult) error {
	opts := dagstore.RegisterOpts{LazyInitialization: true}
	if err := m.s.submit(shard.KeyFromCID(pieceCid), m.mount.forPiece(pieceCid), opts, results, true); err != nil {
		if errors.Is(err, ErrShardExists) {
			return err
		}
		return fmt.Errorf("register piece %s: %w", pieceCid, err)
	}
	return nil
}

// drain keeps consuming registration results after MigrateDeals
// gave up: the dagstore's dispatcher would block on a full results buffer.
func (m migration) drain(results <-chan dagstore.ShardResult, queued <-chan queueOutcome, expected, received int) {
	m.s.spawn(func() {
		for expected != received {
			select {
			case q := <-queued:
				expected = q.queued
			case <-results:
				received++
			case <-m.s.dagstClosed:
				return
			}
		}
	})
}
