package dagwrap

import (
	"context"
	"errors"
	"fmt"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
	logging "github.com/ipfs/go-log/v2"
)

// acquire queues an acquisition of the shard, held (see pieceLocks.hold)
// until the returned func is called. The piece lock orders it with
// destroys: the dagstore looks the shard up before queueing, and an acquire
// queued after the shard's destroy would run on the destroyed shard.
func (s *shards) acquire(key shard.Key, ch chan dagstore.ShardResult) (func(), error) {
	unlock := s.pieces.lock(key)
	defer unlock()
	if bad, ok := s.bad.get(key); ok {
		return nil, bad // never registered anew over it, as LoadShard would
	}
	if err := s.dagst.AcquireShard(s.ctx, key, ch, dagstore.AcquireOpts{}); err != nil {
		return nil, err
	}
	return s.pieces.hold(key), nil
}

// wait returns the first result on ch, unless ctx or the wrapper ends first.
func (s *shards) wait(ctx context.Context, ch <-chan dagstore.ShardResult) (dagstore.ShardResult, error) {
	select {
	case res := <-ch:
		if res.Error != nil {
			// Close waits for the failure to be recorded (see failures).
			s.fails.saw(res.Key, func() bool {
				// GetShardInfo waits while the event loop works on the
				// shard, and the loop persists a failure before it lets
				// go of it. Only an acquire's failure can still be
				// queued, and its shard is serving or available until
				// the failure is processed; any other state says there
				// is nothing to wait for.
				info, err := s.info(res.Key)
				return err != nil || (info.ShardState != dagstore.ShardStateServing && info.ShardState != dagstore.ShardStateAvailable)
			})
		}
		return res, nil
	case <-ctx.Done():
		return dagstore.ShardResult{}, ctx.Err()
	case <-s.ctx.Done():
		return dagstore.ShardResult{}, ErrClosed
	}
}

// closeLate closes the accessor that will arrive on ch after its caller gave
// up waiting: results land in ch's buffer whether or not anyone listens.
// release ends the acquire's hold once the result is in.
func (s *shards) closeLate(ch <-chan dagstore.ShardResult, release func()) {
	s.spawn(func() {
		defer release()
		select {
		case res := <-ch:
			closeAccessor(s.log, res)
		case <-s.dagstClosed:
			select {
			case res := <-ch:
				closeAccessor(s.log, res)
			default:
			}
		}
	})
}

// closeAccessor closes the accessor a result carries, if any.
func closeAccessor(log *logging.ZapEventLogger, res dagstore.ShardResult) {
	if res.Accessor != nil {
		if err := res.Accessor.Close(); err != nil {
			log.Warnw("closing an accessor nobody waited for", "piece", res.Key, "error", err)
		}
	}
}

// forward delivers the result arriving on ch to the caller's resch, giving up
// when ctx ends. The dagstore delivers into ch's buffer, so a slow or absent
// reader of resch never stalls the dagstore's dispatcher. observe, if not
// nil, sees the result's error first.
func (s *shards) forward(ctx context.Context, pieceCid cid.Cid, ch <-chan dagstore.ShardResult, resch chan dagstore.ShardResult, observe func(error)) {
	s.spawn(func() {
		var res dagstore.ShardResult
		select {
		case res = <-ch:
		case <-s.dagstClosed:
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
		case <-s.dagstClosed:
		}
	})
}

// initialize initialises one shard by acquiring it once (the dagstore
// fetches and indexes a shard in state New on its first acquire), and
// returns once its top-level entries are durable: they are written after
// the shard is available (see RegisterShardSync).
func (s *shards) initialize(ctx context.Context, pieceCid cid.Cid) error {
	key := shard.KeyFromCID(pieceCid)
	info, err := s.state(key)
	if err != nil {
		return err
	}
	switch info.ShardState {
	case dagstore.ShardStateAvailable, dagstore.ShardStateServing:
		return waitSearchable(ctx, s.ctx, s.files.top, key)
	case dagstore.ShardStateErrored:
		return fmt.Errorf("%w: recover it instead: %v", ErrShardErrored, info.Error)
	}
	ch := make(chan dagstore.ShardResult, 1)
	release, err := s.acquire(key, ch)
	if err != nil {
		return fmt.Errorf("acquire shard: %w", err)
	}
	res, err := s.wait(ctx, ch)
	if err != nil {
		s.closeLate(ch, release)
		return err
	}
	closeAccessor(s.log, res) // before the hold ends: see open
	release()
	if res.Error != nil {
		return res.Error
	}
	return waitSearchable(ctx, s.ctx, s.files.top, key)
}

// open acquires the piece's shard and returns a blockstore over it, counted
// as open until it is closed. If the dagstore does not know the piece,
// unknown (if not nil) is called and the acquire tried once more; without
// it, the error wraps ErrShardUnknown. If ctx ends first, the accessor that
// arrives later is closed.
func (s *shards) open(ctx context.Context, pieceCid cid.Cid, unknown func() error) (*shardBlockstore, error) {
	key := shard.KeyFromCID(pieceCid)
	ch := make(chan dagstore.ShardResult, 1)
	// Acquire under the wrapper's context, not the caller's: the dagstore
	// drops (without closing) a reader fetched under a cancelled context.
	release, err := s.acquire(key, ch)
	if unknown != nil && errors.Is(err, dagstore.ErrShardUnknown) {
		if err := unknown(); err != nil {
			return nil, err
		}
		release, err = s.acquire(key, ch)
	}
	if err != nil {
		return nil, fmt.Errorf("acquire shard: %w", err)
	}
	res, err := s.wait(ctx, ch)
	if err != nil {
		s.closeLate(ch, release)
		return nil, err
	}
	// The hold ends only once the accessor is closed or counted as open, so
	// a destroy never finds the piece free while the dagstore still serves it.
	defer release()
	if res.Error != nil {
		closeAccessor(s.log, res)
		return nil, res.Error
	}
	bs, err := res.Accessor.Blockstore()
	if err != nil {
		closeAccessor(s.log, res)
		return nil, fmt.Errorf("open blockstore: %w", err)
	}
	closed := s.pieces.opened(key)
	released := func() <-chan struct{} { return s.releases.expect(key) }
	serving := func() bool {
		info, err := s.info(key)
		return err == nil && info.ShardState == dagstore.ShardStateServing
	}
	return &shardBlockstore{ReadBlockstore: bs, piece: pieceCid, acc: res.Accessor,
		closed: closed, released: released, serving: serving, stopped: s.dagstClosed}, nil
}
