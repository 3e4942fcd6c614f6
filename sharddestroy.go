package dagwrap

import (
	"context"
	"errors"
	"fmt"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
)

// destroy removes the shard, its record and everything it left on disk,
// unless callers hold its blockstores, or an eager registration, acquire or
// recovery of it is pending (ErrShardInUse). The piece lock is held throughout.
func (s *shards) destroy(ctx context.Context, key shard.Key) error {
	unlock := s.pieces.lock(key)
	defer unlock()
	// The cross-piece blockstore's copy closes once its requests in flight
	// end; new ones wait for the piece lock and then find the piece gone.
	for _, gone := range s.evict(key) {
		select {
		case <-gone:
		case <-ctx.Done():
			return fmt.Errorf("%w: requests through Blockstore are reading it: %w", ErrShardInUse, ctx.Err())
		case <-s.ctx.Done():
			return ErrClosed
		}
	}
	// A caller's open blockstore keeps the shard: refuse at once.
	if n := s.pieces.openCount(key); n > 0 {
		return fmt.Errorf("%w: %d blockstores open", ErrShardInUse, n)
	}
	// A queued acquire or recovery may start an initialisation before the
	// dagstore gets to the destroy, and a late accessor nobody waited for
	// is still being closed: both end on their own, so wait for them. New
	// ones queue under the piece lock, which is held here.
	select {
	case <-s.pieces.whenIdle(key):
	case <-ctx.Done():
		return fmt.Errorf("%w: an acquire or recovery is pending: %w", ErrShardInUse, ctx.Err())
	case <-s.ctx.Done():
		return ErrClosed
	}
	if n := s.pieces.openCount(key); n > 0 { // an acquire that ended in a caller's hands
		return fmt.Errorf("%w: %d blockstores open", ErrShardInUse, n)
	}
	// Until the dagstore begins an eager registration's initialisation the
	// shard is still new; refuse as for an initialising one.
	if s.pieces.registeringCount(key) > 0 {
		return fmt.Errorf("%w: an eager registration is pending", ErrShardInUse)
	}
	info, err := s.info(key)
	if err != nil {
		if _, bad := s.bad.get(key); bad && errors.Is(err, dagstore.ErrShardUnknown) {
			// A record the dagstore could not restore: remove it, and
			// what its shard left on disk.
			if err := s.records.forget(s.ctx, key); err != nil {
				return err
			}
			if err := s.files.purge(s.ctx, key); err != nil {
				return err
			}
			s.bad.remove(key)
			return nil
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
	res, err := s.dagstoreDestroy(key)
	if err != nil {
		return err
	}
	if res.Error != nil {
		return res.Error
	}
	// An initialisation the destroy raced with writes the record back when
	// it completes; from now on such writes are dropped.
	if err := s.records.forget(s.ctx, key); err != nil {
		return err
	}
	// The dagstore deleted only the shard's record; remove the rest.
	return s.files.purge(s.ctx, key)
}
