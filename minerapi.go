package dagwrap

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/filecoin-project/dagstore/mount"
	"github.com/filecoin-project/dagstore/throttle"
	"github.com/ipfs/go-cid"
)

// MinerAPI is what the node provides: access to unsealed pieces.
//
// FetchUnsealedPiece returns the unsealed piece: a CARv1 followed by zero
// padding. GetUnpaddedCARSize and IsUnsealed answer from storage metadata.
// Start is called by Wrapper.Start, and again only by a Wrapper.Start after
// one that failed; calls made before it succeeded wait for it.
type MinerAPI interface {
	FetchUnsealedPiece(ctx context.Context, pieceCid cid.Cid) (mount.Reader, error)
	GetUnpaddedCARSize(ctx context.Context, pieceCid cid.Cid) (uint64, error)
	IsUnsealed(ctx context.Context, pieceCid cid.Cid) (bool, error)
	Start(ctx context.Context) error
}

// RandomAccessMinerAPI is a MinerAPI whose readers support ReadAt and Seek.
// For such an API the dagstore indexes and serves pieces straight from the
// reader; any other API's pieces are copied into transients/ first.
type RandomAccessMinerAPI interface {
	MinerAPI
	// RandomAccess reports whether readers from FetchUnsealedPiece support ReadAt and Seek.
	RandomAccess() bool
}

// isRandomAccess reports whether api declares random-access readers.
func isRandomAccess(api MinerAPI) bool {
	ra, ok := api.(RandomAccessMinerAPI)
	return ok && ra.RandomAccess()
}

// gatedAPI decorates the node's MinerAPI: every call waits until Start has
// succeeded, storage calls are bounded, and fetches of pieces that must be
// unsealed first are bounded separately. Each call of the node's returns
// when its context ends or the Wrapper closes, even if the node's call goes
// on (see detached); it keeps its throttle slot until it really returns.
type gatedAPI struct {
	inner   MinerAPI
	storage throttle.Throttler
	unseal  throttle.Throttler
	// life ends when the Wrapper closes. The dagstore runs lazy
	// initialisations under context.Background, so without it a hung call
	// would outlive Close and keep its shard initialising forever.
	life context.Context

	startMu  sync.Mutex
	starting *startAttempt // the latest call of inner.Start
	ready    chan struct{} // closed once inner.Start has succeeded
}

// startAttempt is one call of the node's Start, which may outlive the
// Wrapper.Start that made it (a Start that ignores its context).
type startAttempt struct {
	done chan struct{} // closed when the call returned
	err  error         // set before done is closed
}

func newGatedAPI(life context.Context, inner MinerAPI, storageCalls, unseals int) *gatedAPI {
	return &gatedAPI{
		life:    life,
		inner:   inner,
		storage: throttle.Fixed(storageCalls),
		unseal:  throttle.Fixed(unseals),
		ready:   make(chan struct{}),
	}
}

// Start starts the node's API, and returns when that call does, or when ctx
// ends or the Wrapper closes. Once a call succeeded, Start returns nil at
// once; after a failed one it calls the node's Start again. A call still
// running is waited for instead of being made twice: its goroutine ends
// when it returns.
func (a *gatedAPI) Start(ctx context.Context) error {
	a.startMu.Lock()
	select {
	case <-a.ready:
		a.startMu.Unlock()
		return nil
	default:
	}
	att := a.starting
	if att == nil || att.finished() {
		att = &startAttempt{done: make(chan struct{})}
		a.starting = att
		go func() {
			err := a.inner.Start(ctx)
			a.startMu.Lock()
			defer a.startMu.Unlock()
			att.err = err
			if err == nil {
				close(a.ready)
			}
			close(att.done)
		}()
	}
	a.startMu.Unlock()
	select {
	case <-att.done:
		return att.err
	case <-ctx.Done():
		return ctx.Err()
	case <-a.life.Done():
		return ErrClosed
	}
}

func (s *startAttempt) finished() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// wait waits until the node's Start has succeeded; a failed Start is
// retried by the next Wrapper.Start, so calls keep waiting (under ctx).
func (a *gatedAPI) wait(ctx context.Context) error {
	select {
	case <-a.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for miner API to start: %w", ctx.Err())
	}
}

// bound returns ctx, also cancelled when the Wrapper closes.
func (a *gatedAPI) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(a.life, func() { cancel(ErrClosed) })
	return ctx, func() { stop(); cancel(nil) }
}

func (a *gatedAPI) IsUnsealed(ctx context.Context, pieceCid cid.Cid) (bool, error) {
	ctx, cancel := a.bound(ctx)
	defer cancel()
	if err := a.wait(ctx); err != nil {
		return false, err
	}
	return detached(ctx, func() (ok bool, err error) {
		err = a.storage.Do(ctx, func(ctx context.Context) (err error) {
			ok, err = a.inner.IsUnsealed(ctx, pieceCid)
			return err
		})
		return ok, err
	}, nil)
}

func (a *gatedAPI) GetUnpaddedCARSize(ctx context.Context, pieceCid cid.Cid) (uint64, error) {
	ctx, cancel := a.bound(ctx)
	defer cancel()
	if err := a.wait(ctx); err != nil {
		return 0, err
	}
	return detached(ctx, func() (size uint64, err error) {
		err = a.storage.Do(ctx, func(ctx context.Context) (err error) {
			size, err = a.inner.GetUnpaddedCARSize(ctx, pieceCid)
			return err
		})
		return size, err
	}, nil)
}

func (a *gatedAPI) FetchUnsealedPiece(ctx context.Context, pieceCid cid.Cid) (mount.Reader, error) {
	// A stream may read under the call's context: it lives until the reader
	// is closed (or the Wrapper closes).
	ctx, cancel := a.bound(ctx)
	unsealed, err := a.IsUnsealed(ctx, pieceCid)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("check whether piece is unsealed: %w", err)
	}
	r, err := detached(ctx, func() (r mount.Reader, err error) {
		fetch := func(ctx context.Context) error {
			return a.storage.Do(ctx, func(ctx context.Context) (err error) {
				r, err = a.inner.FetchUnsealedPiece(ctx, pieceCid)
				return err
			})
		}
		if unsealed {
			err = fetch(ctx)
		} else {
			// Unsealing takes minutes and a lot of CPU: bound it on its own.
			err = a.unseal.Do(ctx, fetch)
		}
		return r, err
	}, closeReader)
	if err != nil || r == nil {
		cancel()
		return r, err
	}
	if _, ok := r.(*os.File); ok {
		cancel() // a file does not read under a context; keep its type for mmap
		return r, nil
	}
	return &cancelOnClose{Reader: r, cancel: cancel}, nil
}

// closeReader closes a reader that arrived after its caller stopped waiting.
func closeReader(r mount.Reader) {
	if r != nil {
		_ = r.Close()
	}
}

// cancelOnClose ends a stream's call context when the stream is closed.
type cancelOnClose struct {
	mount.Reader
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	defer c.cancel()
	return c.Reader.Close()
}

// RandomAccess forwards the node API's declaration.
func (a *gatedAPI) RandomAccess() bool { return isRandomAccess(a.inner) }

var _ RandomAccessMinerAPI = (*gatedAPI)(nil)
