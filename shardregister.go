package dagwrap

import (
	"fmt"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/mount"
	"github.com/filecoin-project/dagstore/shard"
)

// submit queues the registration of a piece the dagstore does not have (else
// ErrShardExists) and sends its result on out once the shard's record is on
// disk (see register). The new record replaces one that could not be
// restored.
func (s *shards) submit(key shard.Key, mnt mount.Mount, opts dagstore.RegisterOpts, out chan<- dagstore.ShardResult, grouped bool) error {
	unlock := s.pieces.lock(key)
	defer unlock()
	if _, err := s.info(key); err == nil {
		return ErrShardExists
	}
	if err := s.register(key, mnt, opts, out, grouped); err != nil {
		return err
	}
	s.bad.remove(key)
	return nil
}

// register queues the registration of key and sends its result on out once
// the shard's record is on disk: a registration reported successful
// survives a crash. Its record write may join a group commit. The caller
// holds the piece lock.
func (s *shards) register(key shard.Key, mnt mount.Mount, opts dagstore.RegisterOpts, out chan<- dagstore.ShardResult, grouped bool) error {
	pending := s.records.expect(key, grouped)
	in := make(chan dagstore.ShardResult, 1)
	if err := s.dagst.RegisterShard(s.ctx, key, mnt, in, opts); err != nil {
		s.records.abandon(pending)
		return err
	}
	done := func() {}
	if !opts.LazyInitialization {
		done = s.pieces.registers(key) // destroy refuses until the result
	}
	s.spawn(func() {
		var res dagstore.ShardResult
		select {
		case res = <-in:
			done()
		case <-s.dagstClosed:
			done()
			return
		}
		// A failed eager registration was written (as new) before it
		// failed; only a success needs to wait.
		if res.Error == nil {
			select {
			case err := <-pending.written:
				if err != nil {
					res.Error = fmt.Errorf("write shard record: %w", err)
				}
			case <-s.dagstClosed:
				return
			}
		}
		select {
		case out <- res:
		case <-s.dagstClosed:
		}
	})
	return nil
}
