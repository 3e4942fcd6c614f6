// Package testkit is what the examples, the fx tests, the benchmarks and
// dagwrap-bench share, so their setups cannot drift apart: a MinerAPI that
// serves files in place, and the go-car floor the benchmarks measure
// against. The root package's own tests wrap Files in a fault-injecting API
// (helpers_test.go).
package testkit

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/filecoin-project/dagstore/mount"
	"github.com/ipfs/go-cid"

	"github.com/spstack/dagwrap/internal/cargen"
)

// Files is a MinerAPI serving files in place as unsealed pieces, named by
// their piece CIDs, with random access (the files themselves). Its zero
// value serves nothing; it is safe for concurrent use.
type Files struct {
	mu    sync.RWMutex
	paths map[cid.Cid]string
	sizes map[cid.Cid]uint64
	// StartErr, when set before the Wrapper starts, is what Start returns.
	StartErr error
}

// Serve serves the file at path and returns its piece CID (its CommP).
func (f *Files) Serve(path string) (cid.Cid, error) {
	r, err := os.Open(path)
	if err != nil {
		return cid.Undef, err
	}
	defer r.Close()
	pc, _, err := cargen.CommP(r)
	if err != nil {
		return cid.Undef, fmt.Errorf("piece CID of %s: %w", path, err)
	}
	st, err := r.Stat()
	if err != nil {
		return cid.Undef, err
	}
	f.Add(pc, path, uint64(st.Size()))
	return pc, nil
}

// Add serves the file at path, of size bytes, as the piece pc.
func (f *Files) Add(pc cid.Cid, path string, size uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.paths == nil {
		f.paths, f.sizes = map[cid.Cid]string{}, map[cid.Cid]uint64{}
	}
	f.paths[pc], f.sizes[pc] = path, size
}

// Path returns the file served as pc and its size when it was served.
func (f *Files) Path(pc cid.Cid) (string, uint64, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	p, ok := f.paths[pc]
	if !ok {
		return "", 0, fmt.Errorf("piece %s: not served", pc)
	}
	return p, f.sizes[pc], nil
}

// FetchUnsealedPiece opens the piece's file.
func (f *Files) FetchUnsealedPiece(_ context.Context, pc cid.Cid) (mount.Reader, error) {
	p, _, err := f.Path(pc)
	if err != nil {
		return nil, err
	}
	return os.Open(p)
}

// GetUnpaddedCARSize is the file's size when it was served.
func (f *Files) GetUnpaddedCARSize(_ context.Context, pc cid.Cid) (uint64, error) {
	_, size, err := f.Path(pc)
	return size, err
}

// IsUnsealed is true for every piece served.
func (f *Files) IsUnsealed(_ context.Context, pc cid.Cid) (bool, error) {
	_, _, err := f.Path(pc)
	return err == nil, err
}

// Start returns StartErr.
func (f *Files) Start(context.Context) error { return f.StartErr }

// RandomAccess is true: the readers are the files.
func (f *Files) RandomAccess() bool { return true }

// Sequential is Files whose readers only stream, as a remote MinerAPI's
// would: the Wrapper copies each piece into transients/ first.
type Sequential struct{ *Files }

// FetchUnsealedPiece opens the piece's file behind a stream.
func (s Sequential) FetchUnsealedPiece(ctx context.Context, pc cid.Cid) (mount.Reader, error) {
	r, err := s.Files.FetchUnsealedPiece(ctx, pc)
	if err != nil {
		return nil, err
	}
	return stream{r.(*os.File)}, nil
}

// RandomAccess is false.
func (Sequential) RandomAccess() bool { return false }

type stream struct{ f *os.File }

func (r stream) Read(p []byte) (int, error)        { return r.f.Read(p) }
func (r stream) Close() error                      { return r.f.Close() }
func (r stream) ReadAt([]byte, int64) (int, error) { return 0, mount.ErrRandomAccessUnsupported }
func (r stream) Seek(int64, int) (int64, error)    { return 0, mount.ErrSeekUnsupported }

// Pieces returns the piece CIDs served, in no particular order.
func (f *Files) Pieces() []cid.Cid {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]cid.Cid, 0, len(f.paths))
	for pc := range f.paths {
		out = append(out, pc)
	}
	return out
}
