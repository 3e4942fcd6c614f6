package dagwrap

import (
	"context"
	"fmt"
	"sort"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
)

// queueRecover queues the recovery of an errored shard (see
// recoverHeld); its result will arrive on ch, which must have room for it.
func (s *shards) queueRecover(key shard.Key, ch chan dagstore.ShardResult) error {
	info, err := s.state(key)
	if err != nil {
		return err
	}
	if info.ShardState != dagstore.ShardStateErrored {
		return fmt.Errorf("%w: shard is %s", ErrShardNotErrored, StateName(info.ShardState))
	}
	return s.recoverHeld(key, ch)
}

// recoverHeld queues the dagstore's recovery of k, held like an acquire
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
	s.spawn(func() {
		for ; n > 0; n-- {
			select {
			case r := <-ch:
				s.pieces.unhold(r.Key)
			case <-s.dagstClosed:
				return
			}
		}
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

// recover recovers an errored shard and returns once it is available, or
// the recovery's error. An automatic recovery (or an acquire) may be
// running: it is waited for rather than refused, and counts if it recovered
// the shard.
func (s *shards) recover(ctx context.Context, key shard.Key) error {
	if err := s.fails.waitKey(ctx, key); err != nil {
		return err
	}
	before, _ := s.state(key)
	if busy := s.pieces.held(key); busy || before.ShardState == dagstore.ShardStateErrored {
		select {
		case <-s.pieces.whenIdle(key):
		case <-ctx.Done():
			return ctx.Err()
		case <-s.ctx.Done():
			return ErrClosed
		}
		if now, err := s.state(key); err == nil && busy && now.ShardState == dagstore.ShardStateAvailable {
			return nil
		}
	}
	ch := make(chan dagstore.ShardResult, 1)
	if err := s.queueRecover(key, ch); err != nil {
		return err
	}
	res, err := s.wait(ctx, ch)
	if err != nil {
		s.unholdLate(ch, 1)
		return err
	}
	s.pieces.unhold(res.Key)
	if err := res.Error; err != nil {
		// Refused because an automatic recovery started meanwhile: its
		// outcome is this call's.
		if now, serr := s.state(key); serr == nil && now.ShardState != dagstore.ShardStateErrored {
			select {
			case <-s.pieces.whenIdle(key):
			case <-ctx.Done():
				return ctx.Err()
			}
			if now, serr = s.state(key); serr == nil && (now.ShardState == dagstore.ShardStateAvailable || now.ShardState == dagstore.ShardStateServing) {
				return nil
			}
		}
		return err
	}
	return nil
}

// recoverAll recovers every errored shard (the unrestorable records fail)
// and waits for the outcomes; if ctx ends first, it returns its error and
// how many recoveries are still running.
func (s *shards) recoverAll(ctx context.Context) (res RecoverAllResult, running int, err error) {
	res.Failed = map[cid.Cid]error{}
	var errored []cid.Cid
	infos, bad := s.all()
	for k, info := range infos {
		if info.ShardState != dagstore.ShardStateErrored {
			continue
		}
		if c, err := cid.Decode(k.String()); err == nil {
			errored = append(errored, c)
		}
	}
	for k, why := range bad {
		if c, err := cid.Decode(k.String()); err == nil {
			res.Failed[c] = why
		}
	}
	sort.Slice(errored, func(i, j int) bool { return errored[i].String() < errored[j].String() })

	// One buffered channel for every result: the dagstore never waits on
	// it, even after this call has given up.
	ch := make(chan dagstore.ShardResult, len(errored))
	pending := 0
	for _, pc := range errored {
		if err := s.queueRecover(shard.KeyFromCID(pc), ch); err != nil {
			res.Failed[pc] = fmt.Errorf("piece %s: %w", pc, err)
			continue
		}
		pending++
	}
	for ; pending > 0; pending-- {
		r, err := s.wait(ctx, ch)
		if err != nil {
			s.unholdLate(ch, pending)
			return res, pending, err
		}
		s.pieces.unhold(r.Key)
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
	return res, 0, nil
}
