package dagwrap

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/filecoin-project/dagstore/index"
	"github.com/filecoin-project/dagstore/mount"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/filecoin-project/dagstore/throttle"
	"github.com/ipfs/go-cid"
)

// MountScheme is the URL scheme of piece mounts. It is the one Lotus's
// dagstore wrapper used, so shard records written by Lotus open unchanged.
const MountScheme = "lotus"

// pieceMount is the dagstore mount of one piece, read through the MinerAPI.
//
// It always declares random access and seek, so the dagstore's mount
// upgrader passes it through and never copies (nor writes) anything
// itself: a sequential-only API's stream is copied into transients/ here,
// inside Fetch, under the Wrapper's write gate.
//
// The mount registry revives mounts after a restart by copying the exported
// fields of the registered template and calling Deserialize, so everything a
// revived mount needs travels in API, Transients and PieceCid.
type pieceMount struct {
	API        MinerAPI
	Transients *transients // where a sequential API's pieces are copied
	PieceCid   cid.Cid
	// Indexes is the index repo: a piece with no index yet is presented
	// with one dagwrap builds (see indexedview.go).
	Indexes index.FullIndexRepo
	// IndexThrottle bounds the pieces indexed at once (MaxConcurrentIndex).
	IndexThrottle throttle.Throttler
	// Oversized is the folder where the blocks left out of a piece's index
	// are listed (see oversized.go).
	Oversized string
	// Segments records aggregated pieces' segments (see aggregate.go); nil:
	// every piece is indexed as one CAR.
	Segments *segmentStore

	// localPath is a CAR on local disk given at registration; it is read
	// in place instead of the API while it exists. It is deliberately
	// unexported: it belongs to this process only (a revived mount reads
	// the API), and recoveries keep the mount, and so the path.
	localPath string
}

var _ mount.Mount = (*pieceMount)(nil)

func (m *pieceMount) Fetch(ctx context.Context) (mount.Reader, error) {
	r, err := m.open(ctx)
	if err != nil {
		return nil, err
	}
	return m.withIndex(ctx, r)
}

// open opens the piece: the local CAR while it exists, else the API's.
func (m *pieceMount) open(ctx context.Context) (mount.Reader, error) {
	if m.localPath != "" {
		if f := openRegular(m.localPath); f != nil {
			return m.mask(f)
		}
	}
	if m.API == nil {
		return nil, fmt.Errorf("piece %s: mount has no miner API", m.PieceCid)
	}
	var r mount.Reader
	var err error
	if isRandomAccess(m.API) {
		r, err = m.fetchDirect(ctx)
	} else {
		r, err = m.fetchCopy(ctx)
	}
	if err != nil {
		return nil, err
	}
	// The dagstore drops a reader fetched under a cancelled context without
	// closing it; close it here instead of leaking the descriptor.
	if err := ctx.Err(); err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("piece %s: %w", m.PieceCid, err)
	}
	return m.mask(r)
}

// openRegular opens path if it is a regular file; a CAR given at
// registration that is gone (or no longer a file) is read from the API.
func openRegular(path string) *os.File {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		_ = f.Close()
		return nil
	}
	return f
}

// fetchDirect returns the random-access API's reader, size-checked.
func (m *pieceMount) fetchDirect(ctx context.Context) (mount.Reader, error) {
	r, err := m.fetch(ctx)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("piece %s: %w", m.PieceCid, err)
	}
	checked, err := m.checkSize(ctx, r)
	if err != nil {
		_ = r.Close()
		return nil, err
	}
	return checked, nil
}

// fetchCopy returns the copy of a sequential API's piece in transients/,
// making it first if needed (see transients).
func (m *pieceMount) fetchCopy(ctx context.Context) (mount.Reader, error) {
	if m.Transients == nil {
		return nil, fmt.Errorf("piece %s: mount has no transients folder", m.PieceCid)
	}
	size, err := m.API.GetUnpaddedCARSize(ctx, m.PieceCid)
	if err != nil {
		return nil, fmt.Errorf("piece %s: get unpadded size: %w", m.PieceCid, err)
	}
	if size == 0 {
		return nil, fmt.Errorf("piece %s: the miner API reports no size, so its stream cannot be copied safely", m.PieceCid)
	}
	return m.Transients.open(ctx, shard.KeyFromCID(m.PieceCid), source{
		size:     size,
		unsealed: func(ctx context.Context) (bool, error) { return m.API.IsUnsealed(ctx, m.PieceCid) },
		fetch:    m.fetch,
	})
}

func (m *pieceMount) fetch(ctx context.Context) (mount.Reader, error) {
	r, err := m.API.FetchUnsealedPiece(ctx, m.PieceCid)
	if err != nil {
		return nil, fmt.Errorf("piece %s: fetch unsealed piece: %w", m.PieceCid, err)
	}
	if r == nil {
		return nil, fmt.Errorf("piece %s: miner API returned no reader", m.PieceCid)
	}
	return r, nil
}

// mask hides a CARv2 piece's own index from the dagstore (see maskIndex).
// Every reader Fetch hands out has random access.
func (m *pieceMount) mask(r mount.Reader) (mount.Reader, error) {
	masked, err := maskIndex(r)
	if err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("piece %s: %w", m.PieceCid, err)
	}
	return masked, nil
}

// checkSize makes a piece shorter than the API says it is an error, instead
// of an index that points past the end of the data. Files are returned as
// they are, so that the dagstore can memory-map them.
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
	// Indexing seeks over block data, so counting bytes read would not
	// measure the length: ask the reader for it instead.
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

// Info declares random access and seek whatever the API: readers of a
// sequential API's pieces are their copies in transients/ (see Fetch).
func (m *pieceMount) Info() mount.Info {
	return mount.Info{
		Kind:             mount.KindRemote,
		AccessSequential: true,
		AccessSeek:       true,
		AccessRandom:     true,
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

// lastOversized caches oversizedFolder's last answer.
var lastOversized atomic.Pointer[[2]string]

// oversizedFolder is root's folder of oversized-block lists, as one string
// shared by the mounts of a root: each mount holds the path, and the 100k
// mounts of a migration held 100k copies of it (6 MB of live heap, twice
// that of peak).
func oversizedFolder(root string) string {
	if p := lastOversized.Load(); p != nil && p[0] == root {
		return p[1]
	}
	p := &[2]string{root, filepath.Join(root, oversizedDir)}
	lastOversized.Store(p)
	return p[1]
}
