package dagwrap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"sync"

	"github.com/filecoin-project/dagstore/index"
	"github.com/filecoin-project/dagstore/mount"
	"github.com/filecoin-project/dagstore/throttle"
	"github.com/ipfs/go-cid"
)

// MountScheme is the URL scheme of piece mounts. It is the one Lotus's
// dagstore wrapper used, so shard records written by Lotus open unchanged.
const MountScheme = "lotus"

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
// reader, with no transient copy.
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

// pieceMount is the dagstore mount of one piece, read through the MinerAPI.
//
// The mount registry revives mounts after a restart by copying the exported
// fields of the registered template and calling Deserialize, so everything a
// revived mount needs travels in API and PieceCid.
type pieceMount struct {
	API      MinerAPI
	PieceCid cid.Cid
	// Indexes is the index repo: a piece with no index yet is presented
	// with one dagwrap builds (see indexedview.go).
	Indexes index.FullIndexRepo
	// IndexThrottle bounds the pieces indexed at once (MaxConcurrentIndex).
	IndexThrottle throttle.Throttler

	// localPath is a CAR on local disk given at registration; it is read
	// instead of the API while it exists. It is deliberately unexported: it
	// belongs to this process only, and a revived mount reads the API.
	localPath string
}

var _ mount.Mount = (*pieceMount)(nil)

func (m *pieceMount) Fetch(ctx context.Context) (mount.Reader, error) {
	r, err := m.fetch(ctx)
	if err != nil {
		return nil, err
	}
	return m.withIndex(ctx, r)
}

// fetch opens the piece: the local CAR while it exists, else the API's.
func (m *pieceMount) fetch(ctx context.Context) (mount.Reader, error) {
	if m.localPath != "" {
		if f, err := os.Open(m.localPath); err == nil {
			return m.mask(f)
		}
	}
	if m.API == nil {
		return nil, fmt.Errorf("piece %s: mount has no miner API", m.PieceCid)
	}
	r, err := m.API.FetchUnsealedPiece(ctx, m.PieceCid)
	if err != nil {
		return nil, fmt.Errorf("piece %s: fetch unsealed piece: %w", m.PieceCid, err)
	}
	if r == nil {
		return nil, fmt.Errorf("piece %s: miner API returned no reader", m.PieceCid)
	}
	// The dagstore drops a reader fetched under a cancelled context without
	// closing it; close it here instead of leaking the descriptor.
	if err := ctx.Err(); err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("piece %s: %w", m.PieceCid, err)
	}
	checked, err := m.checkSize(ctx, r)
	if err != nil {
		_ = r.Close()
		return nil, err
	}
	return m.mask(checked)
}

// mask hides a CARv2 piece's own index from the dagstore (see maskIndex).
func (m *pieceMount) mask(r mount.Reader) (mount.Reader, error) {
	_, isFile := r.(*os.File)
	masked, err := maskIndex(r, isFile || isRandomAccess(m.API))
	if err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("piece %s: %w", m.PieceCid, err)
	}
	return masked, nil
}

// checkSize makes a piece shorter than the API says it is an error, instead
// of an index that points past the end of the data: a file or a seekable
// reader is checked now, a stream when it ends. Files are returned as they
// are, so that the dagstore can memory-map them.
func (m *pieceMount) checkSize(ctx context.Context, r mount.Reader) (mount.Reader, error) {
	size, err := m.API.GetUnpaddedCARSize(ctx, m.PieceCid)
	if err != nil {
		return nil, fmt.Errorf("piece %s: get unpadded size: %w", m.PieceCid, err)
	}
	if size == 0 {
		return r, nil
	}
	if f, ok := r.(*os.File); ok {
		st, err := f.Stat()
		if err != nil {
			return nil, fmt.Errorf("piece %s: stat: %w", m.PieceCid, err)
		}
		if uint64(st.Size()) < size {
			return nil, fmt.Errorf("piece %s is truncated: %d of %d bytes", m.PieceCid, st.Size(), size)
		}
		return f, nil
	}
	if isRandomAccess(m.API) {
		// Indexing seeks over block data, so counting bytes read would
		// not measure the length: ask the reader for it instead.
		end, err := r.Seek(0, io.SeekEnd)
		if err == nil {
			_, err = r.Seek(0, io.SeekStart)
		}
		if err != nil {
			return nil, fmt.Errorf("piece %s: seek: %w", m.PieceCid, err)
		}
		if uint64(end) < size {
			return nil, fmt.Errorf("piece %s is truncated: %d of %d bytes", m.PieceCid, end, size)
		}
		return r, nil
	}
	return &sizedReader{Reader: r, piece: m.PieceCid, want: size}, nil
}

// sizedReader fails a stream that ends before the piece's size. It tracks
// the read offset, not a byte count: indexing seeks past block data.
type sizedReader struct {
	mount.Reader
	piece cid.Cid
	want  uint64
	pos   uint64 // offset of the next Read
}

func (s *sizedReader) Read(p []byte) (int, error) {
	n, err := s.Reader.Read(p)
	s.pos += uint64(n)
	return n, s.check(s.pos, err)
}

func (s *sizedReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := s.Reader.ReadAt(p, off)
	return n, s.check(uint64(off)+uint64(n), err)
}

func (s *sizedReader) Seek(offset int64, whence int) (int64, error) {
	pos, err := s.Reader.Seek(offset, whence)
	if err == nil {
		s.pos = uint64(pos)
	}
	return pos, err
}

// check turns an EOF at end before the piece's size into a truncation error.
func (s *sizedReader) check(end uint64, err error) error {
	if errors.Is(err, io.EOF) && end < s.want {
		return fmt.Errorf("piece %s is truncated: %d of %d bytes: %w", s.piece, end, s.want, io.ErrUnexpectedEOF)
	}
	return err
}

// Info declares random access only when the API does. A local CAR alone is
// not enough: once the node deletes it, reads fall back to the API.
func (m *pieceMount) Info() mount.Info {
	ra := m.API != nil && isRandomAccess(m.API)
	return mount.Info{
		Kind:             mount.KindRemote,
		AccessSequential: true,
		AccessSeek:       ra,
		AccessRandom:     ra,
	}
}

func (m *pieceMount) Stat(ctx context.Context) (mount.Stat, error) {
	if m.API == nil {
		return mount.Stat{}, fmt.Errorf("piece %s: mount has no miner API", m.PieceCid)
	}
	size, err := m.API.GetUnpaddedCARSize(ctx, m.PieceCid)
	if err != nil {
		return mount.Stat{}, fmt.Errorf("piece %s: get unpadded CAR size: %w", m.PieceCid, err)
	}
	unsealed, err := m.API.IsUnsealed(ctx, m.PieceCid)
	if err != nil {
		return mount.Stat{}, fmt.Errorf("piece %s: check unsealed: %w", m.PieceCid, err)
	}
	return mount.Stat{Exists: true, Size: int64(size), Ready: unsealed}, nil
}

// Serialize returns lotus://<piece CID>; the registry sets the scheme.
func (m *pieceMount) Serialize() *url.URL {
	return &url.URL{Host: m.PieceCid.String()}
}

// Deserialize reads the piece CID from the URL host.
func (m *pieceMount) Deserialize(u *url.URL) error {
	if u == nil {
		return fmt.Errorf("malformed mount URL: nil")
	}
	if u.Host == "" {
		return fmt.Errorf("malformed mount URL %q: no piece CID in host", u.String())
	}
	c, err := cid.Decode(u.Host)
	if err != nil {
		return fmt.Errorf("malformed mount URL %q: piece CID: %w", u.String(), err)
	}
	m.PieceCid = c
	return nil
}

func (m *pieceMount) Close() error { return nil }
