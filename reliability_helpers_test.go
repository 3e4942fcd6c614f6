package dagwrap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/spstack/dagwrap/internal/cargen"

	"github.com/filecoin-project/dagstore/mount"
	"github.com/ipfs/go-cid"
)

// testPiece is a CAR file served as a piece.
type testPiece struct {
	pc   cid.Cid
	path string
}

// writeCAR writes a CARv1 of n raw blocks, derived from seed, to dir and
// zero-pads it to padTo bytes when that is larger. It returns the path.
func writeCAR(t testing.TB, dir string, seed int64, n int, padTo int64) string {
	t.Helper()
	path := filepath.Join(dir, fmt.Sprintf("piece-%d.car", seed))
	if err := cargen.WriteSmall(path, seed, n); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil {
		t.Fatal(err)
	} else if padTo > st.Size() {
		if err := os.Truncate(path, padTo); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// servePath serves the file at path as a piece, in place, and returns its
// piece CID.
func (a *fakeAPI) servePath(t testing.TB, path string) cid.Cid {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pc := pieceCID(t, b)
	a.files.Add(pc, path, uint64(len(b)))
	return pc
}

// makePieces writes n distinct small CARs (every other one zero-padded, as
// unsealed pieces are) into dir and serves them.
func makePieces(t testing.TB, api *fakeAPI, dir string, n int) []testPiece {
	t.Helper()
	out := make([]testPiece, n)
	for i := range out {
		var pad int64
		if i%2 == 1 {
			pad = 8128 // unpadded size of an 8 KiB piece
		}
		path := writeCAR(t, dir, int64(1000+i), 6+i%5, pad)
		out[i] = testPiece{pc: api.servePath(t, path), path: path}
	}
	return out
}

// readAll loads the piece and checks every block's bytes against the CAR.
func readAll(t testing.TB, w *Wrapper, p testPiece) error {
	t.Helper()
	ctx := context.Background()
	bs, err := w.LoadShard(ctx, p.pc)
	if err != nil {
		return err
	}
	defer bs.Close()
	for _, b := range carBlocks(t, p.path) {
		got, err := bs.Get(ctx, b.Cid())
		if err != nil {
			return err
		}
		if !bytes.Equal(got.RawData(), b.RawData()) {
			return fmt.Errorf("piece %s: block %s: bytes differ", p.pc, b.Cid())
		}
	}
	return nil
}

// shortReader returns at most max bytes per Read: legal, and what a
// network stream does.
type shortReader struct {
	mount.Reader
	max int
}

func (r *shortReader) Read(p []byte) (int, error) {
	if len(p) > r.max {
		p = p[:r.max]
	}
	return r.Reader.Read(p)
}

// hookReader calls before ahead of every Read.
type hookReader struct {
	mount.Reader
	before func()
}

func (r *hookReader) Read(p []byte) (int, error) {
	r.before()
	return r.Reader.Read(p)
}

// hangUntilDone is an onCall hook with which method, called for piece,
// blocks until the call's context ends.
func hangUntilDone(method string, piece cid.Cid) func(ctx context.Context, m string, pc cid.Cid) error {
	return func(ctx context.Context, m string, pc cid.Cid) error {
		if m != method || !pc.Equals(piece) {
			return nil
		}
		<-ctx.Done()
		return ctx.Err()
	}
}

// settled waits until the goroutines and open files of the process are
// back to (at most) the given counts. Goroutines the dagstore starts
// without tracking (acquire, initialise) end shortly after Close, and no
// event says when, hence the polling.
func settled(t testing.TB, goroutines, fds int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("goroutines back to %d and files back to %d", goroutines, fds), func() bool {
		return runtime.NumGoroutine() <= goroutines && openFDs(t) <= fds
	})
}

// baseline opens and closes a Wrapper once, so that process-wide lazily
// started goroutines (logging, leveldb's) exist before counting, then
// returns the goroutine and open-file counts.
func baseline(t testing.TB) (goroutines, fds int) {
	t.Helper()
	w, err := New(Config{RootDir: t.TempDir()}, newFakeAPI(true))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return runtime.NumGoroutine(), openFDs(t)
}

// listDir returns the names in dir; a missing dir is empty.
func listDir(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// partials returns the unfinished transient copies in root.
func partials(t testing.TB, root string) []string {
	t.Helper()
	var out []string
	for _, n := range listDir(t, filepath.Join(root, transientsDir)) {
		if strings.HasSuffix(n, transientTemp) || strings.HasSuffix(n, transientPartial) {
			out = append(out, n)
		}
	}
	return out
}

// mountTmpfs mounts a tmpfs of the given options on a new folder and
// unmounts it at cleanup. It skips the test where mounting is not allowed.
func mountTmpfs(t testing.TB, opts string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v)", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// readOnlyDir returns a folder this process cannot write to: a read-only
// tmpfs for root (who ignores permission bits), a 0555 folder otherwise.
func readOnlyDir(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o555); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Chmod(dir, 0o755) })
		return dir
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_RDONLY, "size=64k"); err != nil {
		t.Skipf("cannot mount a read-only tmpfs here (%v)", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}
