package dagwrap

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/mount"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
	"github.com/spstack/dagwrap/internal/cargen"
)

// transients lists the files in root's transients folder.
func transientFiles(t *testing.T, root string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(root, transientsDir))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func assertNoTransients(t *testing.T, root, when string) {
	t.Helper()
	if got := transientFiles(t, root); len(got) != 0 {
		t.Fatalf("%s: transients/ holds %v, want nothing", when, got)
	}
}

// refsTo counts this process's open descriptors and memory maps of path:
// zero means no reader of the file is left open.
func refsTo(t *testing.T, path string) int {
	t.Helper()
	path, err := filepath.EvalSymlinks(path)
	if err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && target == path {
			n++
		}
	}
	maps, err := os.Open("/proc/self/maps")
	if err != nil {
		t.Skip("no /proc/self/maps:", err)
	}
	defer maps.Close()
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		if strings.HasSuffix(sc.Text(), " "+path) {
			n++
		}
	}
	return n
}

// waitReleased checks that the dagstore has processed the release of the
// piece's accessors: a blockstore's Close returns only then, and GC skips
// shards still being served.
func waitReleased(t *testing.T, w *Wrapper, pcs ...cid.Cid) {
	t.Helper()
	for _, pc := range pcs {
		if info, err := w.ShardInfo(pc); err != nil || info.State != dagstore.ShardStateAvailable {
			t.Fatalf("piece %s after Close: %v, %v; want available", pc, info.State, err)
		}
	}
}

// localCAR writes a small generated piece to a fresh file and returns its
// path and piece CID.
func localCAR(t *testing.T) (string, cid.Cid) {
	t.Helper()
	p, err := cargen.Write(filepath.Join(t.TempDir(), "local.car"), cargen.Spec{PieceSize: 32 << 10, BlockSize: 512, NodeEvery: 4, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	return p.Path, p.CID
}

// The mount always declares random access and seek, so the dagstore's
// upgrader never copies a piece itself (its copies outlive Close): a
// sequential API's pieces are copied by the mount (see transients).
func TestMountAlwaysDeclaresRandomAccess(t *testing.T) {
	type plain struct{ MinerAPI } // a MinerAPI without RandomAccess at all
	for _, api := range []MinerAPI{newFakeAPI(true), newFakeAPI(false), plain{newFakeAPI(true)}} {
		m := &pieceMount{API: newGatedAPI(context.Background(), api, 1, 1)}
		if info := m.Info(); !info.AccessRandom || !info.AccessSeek || !info.AccessSequential {
			t.Fatalf("API %T: mount info %+v", api, info)
		}
	}
}

// The random-access path: the dagstore indexes and serves straight from the
// API's reader (or the caller's CAR), so transients/ stays empty through
// register, load, GC, reload and restart.
func TestRandomAccessLeavesTransientsEmpty(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	api := newFakeAPI(true)
	w := openWrapper(t, root, api)
	eager := api.addPiece(t, "testdata/padded.car")
	lazy := api.addPiece(t, "testdata/sample.car")
	localPath, local := localCAR(t)
	cars := map[cid.Cid]string{eager: "testdata/padded.car", lazy: "testdata/sample.car", local: localPath}

	if err := w.RegisterShardSync(ctx, eager, "", true); err != nil {
		t.Fatal(err)
	}
	if err := w.RegisterShardSync(ctx, lazy, "", false); err != nil {
		t.Fatal(err)
	}
	if err := w.RegisterShardSync(ctx, local, localPath, true); err != nil {
		t.Fatal(err)
	}
	assertNoTransients(t, root, "after register")
	// Only the eager API piece was read: the lazy one waits for its first
	// load and the local one is indexed in place.
	if n := api.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches after register, want 1", n)
	}
	piecePath := func(pc cid.Cid) string {
		if pc == local {
			return localPath
		}
		p, err := api.path(pc)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for pc := range cars {
		if n := refsTo(t, piecePath(pc)); n != 0 {
			t.Fatalf("piece %s held open %d times by a shard nobody uses", pc, n)
		}
	}

	for pc, car := range cars {
		assertServes(t, w, pc, car)
	}
	assertNoTransients(t, root, "after load")

	waitReleased(t, w, eager, lazy, local)
	res, err := w.shards.dagst.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for k, err := range res.Shards {
		if err != nil {
			t.Fatalf("GC of %s: %v", k, err)
		}
	}
	assertNoTransients(t, root, "after GC")
	fetches := api.fetches.Load()
	for pc, car := range cars {
		assertServes(t, w, pc, car)
	}
	assertNoTransients(t, root, "after reload")
	// Each API load opened the piece again, straight from the API.
	if n := api.fetches.Load(); n != fetches+2 {
		t.Fatalf("%d fetches for two API reloads, want 2", n-fetches)
	}

	// After a restart the local CAR's mount no longer knows the file: the
	// node's API serves that piece, still without a transient.
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := api.addPiece(t, localPath); !got.Equals(local) {
		t.Fatalf("piece CID of the local CAR: %s, want %s", got, local)
	}
	w2 := openWrapper(t, root, api)
	for pc, car := range cars {
		assertServes(t, w2, pc, car)
	}
	assertNoTransients(t, root, "after restart and reload")
}

// The sequential path: the piece is copied into transients/ (by the mount,
// once), served from there, reclaimed by GC and fetched again. A local CAR
// is read in place, never copied or linked.
func TestSequentialPathCopiesThroughTransients(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	api := newFakeAPI(false)
	w := openWrapper(t, root, api)
	pc := api.addPiece(t, "testdata/padded.car")
	want, err := os.ReadFile("testdata/padded.car")
	if err != nil {
		t.Fatal(err)
	}
	transient := transientPath(root, shard.KeyFromCID(pc))
	assertCopy := func(when string) {
		t.Helper()
		got, err := os.ReadFile(transient)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: transient is not a copy of the piece (%d bytes, %v)", when, len(got), err)
		}
	}

	if err := w.RegisterShardSync(ctx, pc, "", true); err != nil {
		t.Fatal(err)
	}
	assertCopy("after register")
	assertServes(t, w, pc, "testdata/padded.car")
	if n := api.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1: the load must read the transient", n)
	}

	waitReleased(t, w, pc)
	res, err := w.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Reclaimed) != 1 || !res.Reclaimed[0].PieceCID.Equals(pc) || res.Bytes != int64(len(want)) {
		t.Fatalf("GC did not reclaim the transient: %+v", res)
	}
	assertNoTransients(t, root, "after GC")

	assertServes(t, w, pc, "testdata/padded.car")
	if n := api.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2: a load after GC fetches again", n)
	}
	assertCopy("after reload")

	// A local CAR is read in place: nothing appears in transients/ but
	// the other piece's copy, and GC never touches the caller's file.
	localPath, local := localCAR(t)
	if err := w.RegisterShardSync(ctx, local, localPath, true); err != nil {
		t.Fatal(err)
	}
	assertServes(t, w, local, localPath)
	if got := transientFiles(t, root); len(got) != 1 || !strings.Contains(got[0], pc.String()) {
		t.Fatalf("transients/ holds %v, want only %s's copy", got, pc)
	}
	if n := api.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2: the local CAR is not read through the API", n)
	}
	waitReleased(t, w, pc, local)
	if _, err := w.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(localPath); err != nil {
		t.Fatalf("GC deleted the caller's CAR: %v", err)
	}
	assertNoTransients(t, root, "after second GC")
}

// trackingAPI hands out random-access readers that are not *os.File (so
// the blockstore reads them through ReadAt) and counts opens and closes.
type trackingAPI struct {
	*fakeAPI
	opened, closed atomic.Int64
}

func (a *trackingAPI) FetchUnsealedPiece(ctx context.Context, pc cid.Cid) (mount.Reader, error) {
	r, err := a.fakeAPI.FetchUnsealedPiece(ctx, pc)
	if err != nil {
		return nil, err
	}
	a.opened.Add(1)
	return &trackedReader{Reader: r, closed: &a.closed}, nil
}

type trackedReader struct {
	mount.Reader
	closed *atomic.Int64
	once   sync.Once
}

func (r *trackedReader) Close() error {
	r.once.Do(func() { r.closed.Add(1) })
	return r.Reader.Close()
}

// Readers are opened by a load, not by registration, and closed with their
// accessor: after many loads, sequential and concurrent, every piece file
// is closed and unmapped and descriptors return to their starting count.
func TestReadersCloseWithTheirAccessors(t *testing.T) {
	skipOnPG(t, "counts open files, and the index database's pool opens sockets as it grows")
	for _, tc := range []struct {
		name string
		api  MinerAPI
		fake *fakeAPI
	}{
		{"random-file", nil, newFakeAPI(true)},
		{"random-readerat", &trackingAPI{}, newFakeAPI(true)},
		{"sequential", nil, newFakeAPI(false)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			fds := openFDs(t)
			api := MinerAPI(tc.fake)
			tracking, _ := tc.api.(*trackingAPI)
			if tracking != nil {
				tracking.fakeAPI = tc.fake
				api = tracking
			}
			root := t.TempDir()
			w := openWrapper(t, root, api)
			pieces := []cid.Cid{tc.fake.addPiece(t, "testdata/sample.car"), tc.fake.addPiece(t, "testdata/padded.car")}
			for _, pc := range pieces {
				if err := w.RegisterShardSync(ctx, pc, "", false); err != nil {
					t.Fatal(err)
				}
			}
			files := func() []string {
				var out []string
				for _, pc := range pieces {
					p, _ := tc.fake.path(pc)
					out = append(out, p, transientPath(root, shard.KeyFromCID(pc)))
				}
				return out
			}
			assertClosed := func(when string) {
				t.Helper()
				for _, f := range files() {
					if _, err := os.Stat(f); err != nil {
						continue // no transient on this path
					}
					if n := refsTo(t, f); n != 0 {
						t.Fatalf("%s: %s still open or mapped %d times", when, f, n)
					}
				}
			}
			if n := tc.fake.fetches.Load(); n != 0 {
				t.Fatalf("lazy registration fetched %d times", n)
			}

			blk := carBlocks(t, "testdata/sample.car")[5]
			load := func() error {
				bs, err := w.LoadShard(ctx, pieces[0])
				if err != nil {
					return err
				}
				if _, err := bs.Get(ctx, blk.Cid()); err != nil {
					_ = bs.Close()
					return err
				}
				return bs.Close()
			}
			if err := load(); err != nil {
				t.Fatal(err)
			}
			settled := openFDs(t)
			for i := 0; i < 50; i++ {
				if err := load(); err != nil {
					t.Fatal(err)
				}
			}
			// While a blockstore is open its piece is open; then it is not.
			bs, err := w.LoadShard(ctx, pieces[1])
			if err != nil {
				t.Fatal(err)
			}
			open := 0
			for _, f := range files()[2:] {
				if _, err := os.Stat(f); err == nil {
					open += refsTo(t, f)
				}
			}
			if open == 0 {
				t.Fatal("a loaded piece has no open reader: the test cannot see readers")
			}
			if err := bs.Close(); err != nil {
				t.Fatal(err)
			}
			assertClosed("after sequential loads")

			var wg sync.WaitGroup
			errs := make(chan error, 100)
			for g := 0; g < 10; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 10; i++ {
						if err := load(); err != nil {
							errs <- err
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			assertClosed("after concurrent loads")
			if n := openFDs(t); n > settled {
				t.Fatalf("open files: %d after the first load, %d after 150 more", settled, n)
			}
			if tracking != nil {
				if o, c := tracking.opened.Load(), tracking.closed.Load(); o != c || o < 101 {
					t.Fatalf("readers: %d opened, %d closed", o, c)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if n := openFDs(t); n > fds {
				t.Fatalf("open files: %d before, %d after", fds, n)
			}
		})
	}
}

// A random-access reader that is not a file is size-checked by seeking: a
// piece shorter than the API says fails its load, naming the piece.
func TestShrunkPieceBehindAReaderAtIsAnError(t *testing.T) {
	fake := newFakeAPI(true)
	api := &trackingAPI{fakeAPI: fake}
	w := openWrapper(t, t.TempDir(), api)
	pc := fake.addPiece(t, "testdata/padded.car")
	assertServes(t, w, pc, "testdata/padded.car")
	p, _ := fake.path(pc)
	if err := os.Truncate(p, 30000); err != nil {
		t.Fatal(err)
	}
	_, err := w.LoadShard(context.Background(), pc)
	if err == nil || !strings.Contains(err.Error(), "truncated") || !strings.Contains(err.Error(), pc.String()) {
		t.Fatalf("load of a shrunk piece: %v", err)
	}
	// The automatic recovery may be fetching it again as we look.
	waitFor(t, "every reader closed", func() bool { return api.opened.Load() == api.closed.Load() })
}
