package dagwrap

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	format "github.com/ipfs/go-ipld-format"
	"github.com/multiformats/go-multihash"
)

// Blockstore returns a read-only blockstore over every piece the node has
// registered, for retrievals that name a block rather than a piece
// (Bitswap, trustless HTTP gateways).
//
// It finds a block's pieces through the top-level index, tries the pieces
// already open first, and falls through to the next piece when one fails
// (errored, unsealed copy missing). Identity CIDs are answered inline. A
// block no piece holds is an error that satisfies both
// errors.Is(err, ErrBlockNotFound) and go-ipld-format's IsNotFound. Has
// answers from the top-level index alone. It never registers a piece.
//
// Pieces stay open in a cache bounded by Config.OpenPieces and
// Config.OpenPieceIdle; concurrent requests for one piece share one
// acquire. Destroy and GC close a cached piece once no request uses it, and
// Close closes them all; calls after Close fail with ErrClosed.
func (w *Wrapper) Blockstore() dagstore.ReadBlockstore {
	return &allPieces{w: w}
}

// allPieces is the blockstore Blockstore returns.
type allPieces struct {
	w          *Wrapper
	hashOnRead atomic.Bool
}

// notFound is the error for a block no piece holds.
func notFound(c cid.Cid, why string) error {
	return fmt.Errorf("block %s: %w%s: %w", c, ErrBlockNotFound, why, format.ErrNotFound{Cid: c})
}

// identity returns the block an identity CID carries, if c is one.
func identity(c cid.Cid) (blocks.Block, bool, error) {
	if c.Prefix().MhType != multihash.IDENTITY {
		return nil, false, nil
	}
	dmh, err := multihash.Decode(c.Hash())
	if err != nil {
		return nil, true, fmt.Errorf("block %s: %w", c, err)
	}
	blk, err := blocks.NewBlockWithCid(dmh.Digest, c)
	return blk, true, err
}

// lookup returns the pieces the top-level index names for mh, those
// already open first; with onlyLocal, only the pieces this node has
// registered (a shared directory names other nodes' too).
func (b *allPieces) lookup(ctx context.Context, mh multihash.Multihash, onlyLocal bool) ([]cid.Cid, error) {
	w := b.w
	keys, err := w.st.top.GetShardsForMultihash(ctx, mh)
	if err != nil && !errors.Is(err, ds.ErrNotFound) {
		return nil, err
	}
	pieces := make([]cid.Cid, 0, len(keys))
	for _, k := range keys {
		// Entries of a shard whose destroy was interrupted may linger
		// until the next start; never report a piece that is gone.
		if _, err := w.shards.info(k); err != nil && onlyLocal {
			continue
		}
		if c, err := cid.Decode(k.String()); err == nil {
			pieces = append(pieces, c)
		}
	}
	sort.SliceStable(pieces, func(i, j int) bool {
		return w.cache.has(shard.KeyFromCID(pieces[i])) && !w.cache.has(shard.KeyFromCID(pieces[j]))
	})
	return pieces, nil
}

// each calls read on the blockstore of each piece holding c until one
// answers; failures and misses of the pieces tried are named in the error.
func (b *allPieces) each(ctx context.Context, c cid.Cid, read func(shard.Key, ClosableBlockstore) error) error {
	done, err := b.w.beginCtx(ctx)
	if err != nil {
		return fmt.Errorf("block %s: %w", c, err)
	}
	defer done()
	var failed []error
	misses := 0
	// The piece read last first: no lookup at all when it has the block.
	var hinted shard.Key
	var hintErr error
	if b.w.cache.withRecent(func(k shard.Key, bs ClosableBlockstore) { hinted, hintErr = k, read(k, bs) }) {
		if hintErr == nil {
			return nil
		}
		if !format.IsNotFound(hintErr) {
			failed = append(failed, hintErr)
		}
	}
	pieces, err := b.lookup(ctx, c.Hash(), true)
	if err != nil {
		return fmt.Errorf("block %s: look up pieces: %w", c, err)
	}
	if len(pieces) == 0 {
		return notFound(c, "")
	}
	for _, pc := range pieces {
		key := shard.KeyFromCID(pc)
		if key == hinted {
			continue
		}
		bs, release, err := b.w.cache.get(ctx, pc)
		if err == nil {
			err = read(key, bs)
			release()
		}
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return fmt.Errorf("block %s: %w", c, ctx.Err())
		case format.IsNotFound(err):
			misses++ // the index named a piece without it: try the next
		default:
			failed = append(failed, err)
		}
	}
	if len(failed) == 0 {
		return notFound(c, fmt.Sprintf(" (%d indexed pieces lack it)", misses))
	}
	msgs := make([]string, len(failed))
	for i, err := range failed {
		msgs[i] = err.Error()
	}
	return fmt.Errorf("block %s: every piece holding it failed (%d tried): %s: %w",
		c, len(pieces), strings.Join(msgs, "; "), errors.Join(failed...))
}

// Get returns the block from the first piece that serves it.
func (b *allPieces) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	if !c.Defined() {
		return nil, fmt.Errorf("block CID: %w", ErrUndefinedCID)
	}
	if blk, ok, err := identity(c); ok {
		return blk, err
	}
	var blk blocks.Block
	err := b.each(ctx, c, func(pc shard.Key, bs ClosableBlockstore) error {
		var err error
		if blk, err = bs.Get(ctx, c); err == nil && b.hashOnRead.Load() {
			// Checked here: the cached piece's blockstore is shared.
			if err = checkHash(c, blk.RawData()); err != nil {
				err = fmt.Errorf("piece %s: block %s: %w", pc, c, err)
			}
		}
		return err
	})
	return blk, err
}

// GetSize returns the block's size from the first piece that has it.
func (b *allPieces) GetSize(ctx context.Context, c cid.Cid) (int, error) {
	if !c.Defined() {
		return 0, fmt.Errorf("block CID: %w", ErrUndefinedCID)
	}
	if blk, ok, err := identity(c); ok {
		if err != nil {
			return 0, err
		}
		return len(blk.RawData()), nil
	}
	var n int
	err := b.each(ctx, c, func(pc shard.Key, bs ClosableBlockstore) error {
		var err error
		n, err = bs.GetSize(ctx, c)
		return err
	})
	return n, err
}

// Has reports whether a registered piece holds the block, from the
// top-level index alone.
func (b *allPieces) Has(ctx context.Context, c cid.Cid) (bool, error) {
	if !c.Defined() {
		return false, fmt.Errorf("block CID: %w", ErrUndefinedCID)
	}
	if _, ok, err := identity(c); ok {
		return err == nil, err
	}
	done, err := b.w.beginCtx(ctx)
	if err != nil {
		return false, fmt.Errorf("block %s: %w", c, err)
	}
	defer done()
	pieces, err := b.lookup(ctx, c.Hash(), true)
	if err != nil {
		return false, fmt.Errorf("block %s: look up pieces: %w", c, err)
	}
	return len(pieces) > 0, nil
}

// HashOnRead turns the checking of block bytes against their CID on or off.
func (b *allPieces) HashOnRead(enabled bool) { b.hashOnRead.Store(enabled) }

// errNoListing is AllKeysChan's answer: the pieces hold ~10^9 blocks.
var errNoListing = errors.New("dagwrap: listing the blocks of every piece is not supported; use GetIterableIndexForPiece")

// AllKeysChan is not supported: it returns an error.
func (b *allPieces) AllKeysChan(context.Context) (<-chan cid.Cid, error) {
	return nil, errNoListing
}
