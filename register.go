package dagwrap

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
)

// RegisterShard registers the piece as a shard. With a carPath, the CAR on
// local disk is read instead of the MinerAPI while it exists (it is never
// modified or deleted). With eagerInit the piece is fetched and indexed now,
// otherwise on first load. The result arrives on resch (which may be nil);
// ctx bounds only the delivery of that result, not the registration.
func (w *Wrapper) RegisterShard(ctx context.Context, pieceCid cid.Cid, carPath string, eagerInit bool, resch chan dagstore.ShardResult) error {
	pieceCid, err := pieceV1(pieceCid)
	if err != nil {
		return fmt.Errorf("register piece: %w", err)
	}
	done, err := w.beginCtx(ctx)
	if err != nil {
		return fmt.Errorf("register piece %s: %w", pieceCid, err)
	}
	defer done()
	start := w.m.now()
	ch, err := w.submitRegister(pieceCid, carPath, eagerInit)
	if err != nil {
		w.m.observe(opRegister, start, err)
		return err
	}
	var observe func(error)
	if w.m != nil {
		observe = func(err error) { w.m.observe(opRegister, start, err) }
	}
	w.forward(ctx, pieceCid, ch, resch, observe)
	return nil
}

// RegisterShardSync is RegisterShard that waits for the result; with
// eagerInit it also waits until lookups find the piece's blocks (the
// dagstore makes the shard available first, and RegisterShard's result
// says only that). A piece that is already registered returns an error
// wrapping ErrShardExists; one destroyed while being registered (a destroy
// may run once the registration is queued), an error wrapping
// ErrShardUnknown.
func (w *Wrapper) RegisterShardSync(ctx context.Context, pieceCid cid.Cid, carPath string, eagerInit bool) error {
	pieceCid, err := pieceV1(pieceCid)
	if err != nil {
		return fmt.Errorf("register piece: %w", err)
	}
	done, err := w.beginCtx(ctx)
	if err != nil {
		return fmt.Errorf("register piece %s: %w", pieceCid, err)
	}
	defer done()
	return w.registerSync(ctx, pieceCid, carPath, eagerInit)
}

func (w *Wrapper) registerSync(ctx context.Context, pieceCid cid.Cid, carPath string, eagerInit bool) error {
	start := w.m.now()
	ch, err := w.submitRegister(pieceCid, carPath, eagerInit)
	if err != nil {
		w.m.observe(opRegister, start, err)
		return err
	}
	res, err := w.wait(ctx, ch)
	if err == nil {
		err = res.Error
	}
	w.m.observe(opRegister, start, err)
	if err == nil && eagerInit {
		err = w.waitSearchable(ctx, shard.KeyFromCID(pieceCid))
	}
	if err != nil {
		// A destroy of the piece can run once it is submitted: then that
		// is what happened, whatever the indexing said.
		if _, ierr := w.shardInfo(shard.KeyFromCID(pieceCid)); errors.Is(ierr, dagstore.ErrShardUnknown) {
			return fmt.Errorf("register piece %s: destroyed while being registered: %w (the registration said: %v)", pieceCid, ErrShardUnknown, err)
		}
		return fmt.Errorf("register piece %s: %w", pieceCid, err)
	}
	return nil
}

// searchable is a top-level index that tells when a piece's entries are
// complete; dagwrap's own is one.
type searchable interface {
	Wait(ctx context.Context, k shard.Key) error
}

// waitSearchable returns once lookups find k's blocks, with a top-level
// index that tells; a piece removed meanwhile is not an error.
func (w *Wrapper) waitSearchable(ctx context.Context, k shard.Key) error {
	s, ok := w.top.(searchable)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(w.ctx, cancel)()
	err := s.Wait(ctx, k)
	switch {
	case err == nil, errors.Is(err, ds.ErrNotFound):
		return nil
	case w.ctx.Err() != nil:
		return ErrClosed
	}
	return err
}

// submitRegister queues the registration and returns the channel its result
// will arrive on.
func (w *Wrapper) submitRegister(pieceCid cid.Cid, carPath string, eagerInit bool) (<-chan dagstore.ShardResult, error) {
	key := shard.KeyFromCID(pieceCid)
	unlock := w.pieces.lock(key)
	defer unlock()
	if _, err := w.shardInfo(key); err == nil {
		return nil, fmt.Errorf("register piece %s: %w", pieceCid, ErrShardExists)
	}
	mnt := w.newMount(pieceCid)
	opts := dagstore.RegisterOpts{LazyInitialization: !eagerInit}
	if carPath != "" {
		abs, err := checkCARPath(carPath)
		if err != nil {
			return nil, fmt.Errorf("register piece %s: %w", pieceCid, err)
		}
		mnt.localPath = abs
	}
	ch := make(chan dagstore.ShardResult, 1)
	if err := w.registerDurably(key, mnt, opts, ch); err != nil {
		return nil, fmt.Errorf("register piece %s: %w", pieceCid, err)
	}
	w.bad.remove(key) // its new record replaces the one that could not be restored
	return ch, nil
}

// checkCARPath returns the absolute path of a CAR given at registration,
// which must be a regular file: it is read in place, and a device such as
// /dev/zero would read without end.
func checkCARPath(carPath string) (string, error) {
	abs, err := filepath.Abs(carPath)
	if err != nil {
		return "", fmt.Errorf("CAR file %s: %w", carPath, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("CAR file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("CAR file %s is not a regular file (%s)", abs, st.Mode().Type())
	}
	return abs, nil
}

// newMount returns the mount of a piece, read through the MinerAPI.
func (w *Wrapper) newMount(pieceCid cid.Cid) *pieceMount {
	return &pieceMount{API: w.api, Transients: w.transients, PieceCid: pieceCid, Indexes: w.irepo, IndexThrottle: w.indexThrottle, Oversized: oversizedFolder(w.cfg.RootDir), Segments: w.segmentStore()}
}
