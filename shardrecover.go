package dagwrap

import (
	"context"
	"fmt"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
)

// submitRecover queues the recovery of an errored shard (see
// recoverShard); its result will arrive on ch, which must have room for it.
func (s *shards) queueRecover(pieceCid cid.Cid, ch chan dagstore.ShardResult) error {
	key := shard.KeyFromCID(pieceCid)
	info, err := s.state(key)
	if err != nil {
		return err
	}
	if info.ShardState != dagstore.ShardStateErrored {
		return fmt.Errorf("%w: shard is %s", ErrShardNotErrored, StateName(info.ShardState))
	}
	return s.recoverHeld(key, ch)
}

// recoverShard queues the dagstore's recovery of k, held like an acquire
// until the receiver of results unholds it (the result may come before
// RecoverShard returns).
func (s *shards) recoverHeld(k shard.Key, results chan dagstore.ShardResult) error {
	unlock := s.pieces.lock(k)
	defer unlock()
	release := s.pieces.hold(k)
	if err := s.dagst.RecoverShard(s.ctx, k, results, dagstore.RecoverOpts{}); err != nil {
		release()
		return err
	}
	return nil
}

// unholdLate unholds the shards of the n results still to arrive on ch after
// their caller stopped waiting.
func (s *shards) unholdLate(ch <-chan dagstore.ShardResult, n int) {
	if n <= 0 {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for ; n > 0; n-- {
			select {
			case r := <-ch:
				s.pieces.unhold(r.Key)
			case <-s.dagstClosed:
				return
			}
		}
	}()
}

// sawFailure notes that a caller got k's failure (see failures).
func (s *shards) sawFailure(k shard.Key) {
	s.fails.saw(k, func() bool {
		// GetShardInfo waits while the event loop works on k, and the
		// loop persists a failure before it lets go of the shard. Only an
		// acquire's failure can still be queued, and its shard is serving
		// or available until the failure is processed; any other state
		// says there is nothing to wait for.
		info, err := s.info(k)
		return err != nil || (info.ShardState != dagstore.ShardStateServing && info.ShardState != dagstore.ShardStateAvailable)
	})
}

// awaitRecovery returns once no automatic recovery of k is due, queued or
// running, and returns the shard's state then. A failure a caller saw
// before the call is always waited for: the shard's info waits for the
// event loop to be done with k (its events are then sent), the fence for
// the trace loop to have counted them, and recoveries for the recovery loop
// to have taken each failure and finished the recovery it queued.
func (s *shards) awaitRecovery(ctx context.Context, k shard.Key) (dagstore.ShardInfo, error) {
	if err := s.fails.waitKey(ctx, k); err != nil {
		return dagstore.ShardInfo{}, err
	}
	if _, err := s.state(k); err != nil {
		return dagstore.ShardInfo{}, err
	}
	done := make(chan struct{})
	select {
	case s.fence <- done:
	case <-ctx.Done():
		return dagstore.ShardInfo{}, ctx.Err()
	case <-s.dagstClosed:
		return dagstore.ShardInfo{}, ErrClosed
	}
	select {
	case <-done:
	case <-ctx.Done():
		return dagstore.ShardInfo{}, ctx.Err()
	}
	if err := s.recoveries.await(ctx, k); err != nil {
		return dagstore.ShardInfo{}, err
	}
	return s.state(k)
}
