package dagwrap

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/index"
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
	w.shards.forward(ctx, pieceCid, ch, resch, observe)
	return nil
}

// RegisterShardSync is RegisterShard that waits for the result; with
// eagerInit it also waits until the piece's top-level entries are written
// and durable, so lookups find its blocks after a crash too (lookups find
// them from the piece's index file before; RegisterShard's result says
// only that the shard is available). A piece that is already registered
// returns an error wrapping ErrShardExists; one destroyed while being registered (a destroy
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
	res, err := w.shards.wait(ctx, ch)
	if err == nil {
		err = res.Error
	}
	w.m.observe(opRegister, start, err)
	if err == nil && eagerInit {
		err = waitSearchable(ctx, w.ctx, w.st.top, shard.KeyFromCID(pieceCid))
	}
	if err != nil {
		// A destroy of the piece can run once it is submitted: then that
		// is what happened, whatever the indexing said.
		if _, ierr := w.shards.info(shard.KeyFromCID(pieceCid)); errors.Is(ierr, dagstore.ErrShardUnknown) {
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
// index that tells (or ErrClosed once closing ends); a piece removed meanwhile is not an error.
func waitSearchable(ctx, closing context.Context, top index.Inverted, k shard.Key) error {
	s, ok := top.(searchable)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(closing, cancel)()
	err := s.Wait(ctx, k)
	switch {
	case err == nil, errors.Is(err, ds.ErrNotFound):
		return nil
	case closing.Err() != nil:
		return ErrClosed
	}
	return err
}

// submitRegister queues the registration and returns the channel its result
// will arrive on.
func (w *Wrapper) submitRegister(pieceCid cid.Cid, carPath string, eagerInit bool) (<-chan dagstore.ShardResult, error) {
	mnt := w.mount.forPiece(pieceCid)
	if carPath != "" {
		abs, err := checkCARPath(carPath)
		if err != nil {
			return nil, fmt.Errorf("register piece %s: %w", pieceCid, err)
		}
		mnt.localPath = abs
	}
	ch := make(chan dagstore.ShardResult, 1)
	opts := dagstore.RegisterOpts{LazyInitialization: !eagerInit}
	if err := w.shards.submit(shard.KeyFromCID(pieceCid), mnt, opts, ch, false); err != nil {
		return nil, fmt.Errorf("register piece %s: %w", pieceCid, err)
	}
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
