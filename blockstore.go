package dagwrap

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/filecoin-project/dagstore"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	format "github.com/ipfs/go-ipld-format"
)

// ClosableBlockstore is a read-only blockstore over one piece. Close releases
// the shard and returns once the dagstore has processed the release (so a
// GC or destroy right after it finds the shard free); it must be called
// once the caller is done, and further calls are no-ops.
type ClosableBlockstore interface {
	dagstore.ReadBlockstore
	io.Closer
}

// shardBlockstore ties a blockstore to the accessor it reads from, and
// names the piece in read errors other than "not found".
type shardBlockstore struct {
	dagstore.ReadBlockstore
	piece cid.Cid
	acc   *dagstore.ShardAccessor
	// closed ends the piece's open count (pieceLocks.opened) once the
	// accessor's release is queued.
	closed func()
	// released is called just before the release is queued; the channel
	// it returns closes once the dagstore has processed it (see releases).
	released func() <-chan struct{}
	serving  func() bool     // whether the shard is being served
	stopped  <-chan struct{} // the dagstore's event loop has exited
	once     sync.Once
	err      error
	// hashOnRead is kept here: go-car's read-only blockstore (v2.14.2 too)
	// ignores the flag.
	hashOnRead atomic.Bool
}

func (b *shardBlockstore) wrap(c cid.Cid, err error) error {
	if err == nil || format.IsNotFound(err) {
		return err
	}
	return fmt.Errorf("piece %s: block %s: %w", b.piece, c, err)
}

// Get returns the block; with HashOnRead enabled, bytes that do not hash
// to the CID are an error wrapping ErrHashMismatch.
func (b *shardBlockstore) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	if !c.Defined() {
		return nil, fmt.Errorf("piece %s: block CID: %w", b.piece, ErrUndefinedCID)
	}
	blk, err := b.ReadBlockstore.Get(ctx, c)
	if err == nil && b.hashOnRead.Load() {
		err = checkHash(c, blk.RawData())
	}
	if err != nil {
		return nil, b.wrap(c, err)
	}
	return blk, nil
}

// HashOnRead turns the checking of block bytes against their CID on or off.
func (b *shardBlockstore) HashOnRead(enabled bool) {
	b.hashOnRead.Store(enabled)
	b.ReadBlockstore.HashOnRead(enabled)
}

func checkHash(c cid.Cid, data []byte) error {
	sum, err := c.Prefix().Sum(data)
	if err != nil {
		return fmt.Errorf("hash block: %w", err)
	}
	if !bytes.Equal(sum.Hash(), c.Hash()) {
		return ErrHashMismatch
	}
	return nil
}

func (b *shardBlockstore) GetSize(ctx context.Context, c cid.Cid) (int, error) {
	if !c.Defined() {
		return 0, fmt.Errorf("piece %s: block CID: %w", b.piece, ErrUndefinedCID)
	}
	n, err := b.ReadBlockstore.GetSize(ctx, c)
	return n, b.wrap(c, err)
}

func (b *shardBlockstore) Has(ctx context.Context, c cid.Cid) (bool, error) {
	if !c.Defined() {
		return false, fmt.Errorf("piece %s: block CID: %w", b.piece, ErrUndefinedCID)
	}
	ok, err := b.ReadBlockstore.Has(ctx, c)
	return ok, b.wrap(c, err)
}

func (b *shardBlockstore) Close() error {
	b.once.Do(func() {
		done := b.released()
		b.err = b.acc.Close()
		b.closed()
		// Not serving: the release is processed already, or will be
		// dropped (see releases).
		if b.err == nil && b.serving() {
			select {
			case <-done:
			case <-b.stopped:
			}
		}
	})
	return b.err
}
