package dagwrap

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/mount"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	levelds "github.com/ipfs/go-ds-leveldb"
	carv2 "github.com/ipld/go-car/v2"
)

// hostileCase is one bad piece or call. setup prepares the API (before the
// Wrapper starts) and returns the piece to use; run makes the call and
// returns its error, which must match want (errors.Is) or contain each of
// the substrings, and name the piece.
type hostileCase struct {
	name   string
	random bool
	setup  func(t *testing.T, api *fakeAPI) cid.Cid
	run    func(t *testing.T, w *Wrapper, pc cid.Cid) error
	want   error
	substr []string
}

// writeBytes writes b to a new file and serves it.
func writeBytes(t *testing.T, api *fakeAPI, b []byte) cid.Cid {
	t.Helper()
	p := filepath.Join(t.TempDir(), "piece")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return api.servePath(t, p)
}

func sampleBytes(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/sample.car")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func registerEager(t *testing.T, w *Wrapper, pc cid.Cid) error {
	return w.RegisterShardSync(context.Background(), pc, "", true)
}

func load(t *testing.T, w *Wrapper, pc cid.Cid) error {
	bs, err := w.LoadShard(context.Background(), pc)
	if err == nil {
		_ = bs.Close()
	}
	return err
}

// getBlock loads the piece and gets one block of sample.car from it.
func getBlock(i int, hashOnRead bool) func(t *testing.T, w *Wrapper, pc cid.Cid) error {
	return func(t *testing.T, w *Wrapper, pc cid.Cid) error {
		ctx := context.Background()
		bs, err := w.LoadShard(ctx, pc)
		if err != nil {
			t.Fatalf("load: %v", err)
		}
		defer bs.Close()
		bs.HashOnRead(hashOnRead)
		blks := carBlocks(t, "testdata/sample.car")
		for j, b := range blks {
			if j == i {
				continue
			}
			if got, err := bs.Get(ctx, b.Cid()); err != nil || !bytes.Equal(got.RawData(), b.RawData()) {
				t.Fatalf("intact block %d: %v", j, err)
			}
		}
		_, err = bs.Get(ctx, blks[i].Cid())
		return err
	}
}

// corruptBlockData flips a byte in the data (not the CID) of block i.
func corruptBlockData(t *testing.T, i int) []byte {
	t.Helper()
	b := sampleBytes(t)
	blk := carBlocks(t, "testdata/sample.car")[i]
	at := bytes.Index(b, blk.RawData())
	if at < 0 {
		t.Fatal("block not found in the CAR")
	}
	b[at+len(blk.RawData())/2] ^= 0xff
	return b
}

func TestHostileInput(t *testing.T) {
	fetchFailed := errors.New("sector storage unreachable")
	cases := []hostileCase{
		{name: "not a CAR", setup: func(t *testing.T, api *fakeAPI) cid.Cid {
			return writeBytes(t, api, bytes.Repeat([]byte("not a car file "), 300))
		}, run: registerEager, substr: []string{"index", "CAR header"}},
		{name: "wrong CAR version", setup: func(t *testing.T, api *fakeAPI) cid.Cid {
			b := sampleBytes(t)
			at := bytes.Index(b, []byte("version\x01"))
			if at < 0 {
				t.Fatal("no version in the header")
			}
			b[at+len("version")] = 0x03
			return writeBytes(t, api, b)
		}, run: registerEager, substr: []string{"version", "3"}},
		{name: "truncated header", setup: func(t *testing.T, api *fakeAPI) cid.Cid {
			return writeBytes(t, api, append(sampleBytes(t)[:30], make([]byte, 100)...))
		}, run: registerEager, substr: []string{"index", "CAR header"}},
		{name: "empty piece", setup: func(t *testing.T, api *fakeAPI) cid.Cid {
			pc := writeBytes(t, api, make([]byte, 128))
			p, _ := api.path(pc)
			if err := os.Truncate(p, 0); err != nil {
				t.Fatal(err)
			}
			return pc
		}, run: registerEager, substr: []string{"truncated"}},
		{name: "truncated block", setup: func(t *testing.T, api *fakeAPI) cid.Cid {
			b := sampleBytes(t)
			return writeBytes(t, api, b[:len(b)-10])
		}, run: getBlock(39, false), substr: []string{"block"}},
		{name: "block bytes not matching the CID, HashOnRead", setup: func(t *testing.T, api *fakeAPI) cid.Cid {
			return writeBytes(t, api, corruptBlockData(t, 7))
		}, run: getBlock(7, true), want: ErrHashMismatch},
		{name: "piece vanished after registration", setup: func(t *testing.T, api *fakeAPI) cid.Cid {
			return writeBytes(t, api, sampleBytes(t))
		}, run: func(t *testing.T, w *Wrapper, pc cid.Cid) error {
			if err := w.RegisterShardSync(context.Background(), pc, "", false); err != nil {
				t.Fatal(err)
			}
			p, _ := w.api.inner.(*fakeAPI).path(pc)
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			return load(t, w, pc)
		}, want: os.ErrNotExist},
		{name: "piece shrunk after registration, random-access stream", random: true, setup: func(t *testing.T, api *fakeAPI) cid.Cid {
			api.wrapReader = func(_ cid.Cid, r mount.Reader) mount.Reader { return &shortReader{Reader: r, max: 1 << 20} }
			return writeBytes(t, api, sampleBytes(t))
		}, run: func(t *testing.T, w *Wrapper, pc cid.Cid) error {
			if err := w.RegisterShardSync(context.Background(), pc, "", false); err != nil {
				t.Fatal(err)
			}
			p, _ := w.api.inner.(*fakeAPI).path(pc)
			if err := os.Truncate(p, 5000); err != nil {
				t.Fatal(err)
			}
			return load(t, w, pc)
		}, substr: []string{"truncated"}},
		{name: "MinerAPI fetch errors", setup: func(t *testing.T, api *fakeAPI) cid.Cid {
			return failingPiece(t, api, "FetchUnsealedPiece", fetchFailed)
		}, run: load, want: fetchFailed},
		{name: "MinerAPI size call errors", random: true, setup: func(t *testing.T, api *fakeAPI) cid.Cid {
			return failingPiece(t, api, "GetUnpaddedCARSize", fetchFailed)
		}, run: load, want: fetchFailed},
		{name: "MinerAPI fetch hangs until the context ends", setup: hangingPiece("FetchUnsealedPiece"),
			run: loadWithDeadline, want: context.DeadlineExceeded},
		{name: "MinerAPI unsealed check hangs until the context ends", random: true, setup: hangingPiece("IsUnsealed"),
			run: loadWithDeadline, want: context.DeadlineExceeded},
		{name: "undefined piece CID, load", setup: noPiece, run: load, want: ErrUndefinedCID},
		{name: "undefined piece CID, destroy", setup: noPiece, run: func(t *testing.T, w *Wrapper, pc cid.Cid) error {
			return w.DestroyShardSync(context.Background(), pc)
		}, want: ErrUndefinedCID},
		{name: "unknown piece, destroy", setup: func(t *testing.T, api *fakeAPI) cid.Cid {
			return pieceCID(t, bytes.Repeat([]byte{7}, 200))
		}, run: func(t *testing.T, w *Wrapper, pc cid.Cid) error {
			return w.DestroyShardSync(context.Background(), pc)
		}, want: ErrShardUnknown},
		{name: "unknown piece, async destroy", setup: func(t *testing.T, api *fakeAPI) cid.Cid {
			return pieceCID(t, bytes.Repeat([]byte{8}, 200))
		}, run: func(t *testing.T, w *Wrapper, pc cid.Cid) error {
			return w.DestroyShard(context.Background(), pc, nil)
		}, want: ErrShardUnknown},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			api := newFakeAPI(c.random)
			good := api.addPiece(t, "testdata/padded.car")
			pc := c.setup(t, api)
			w := openWrapper(t, t.TempDir(), api)
			if err := w.RegisterShardSync(context.Background(), good, "", true); err != nil {
				t.Fatal(err)
			}
			err := c.run(t, w, pc)
			checkHostileError(t, err, pc, c.want, c.substr)
			// No effect on other shards.
			assertServes(t, w, good, "testdata/padded.car")
			if info, err := w.ShardInfo(good); err != nil || info.Error != nil {
				t.Fatalf("good shard after the bad one: %+v %v", info, err)
			}
		})
	}
}

func checkHostileError(t *testing.T, err error, pc cid.Cid, want error, substr []string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	t.Logf("error: %v", err)
	if want != nil && !errors.Is(err, want) {
		t.Fatalf("error %v is not %v", err, want)
	}
	for _, s := range substr {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("error %q does not say %q", err, s)
		}
	}
	if pc.Defined() && !strings.Contains(err.Error(), pc.String()) {
		t.Fatalf("error %q does not name the piece", err)
	}
}

func noPiece(*testing.T, *fakeAPI) cid.Cid { return cid.Undef }

func hangingPiece(method string) func(t *testing.T, api *fakeAPI) cid.Cid {
	return func(t *testing.T, api *fakeAPI) cid.Cid {
		pc := writeBytes(t, api, sampleBytes(t))
		api.onCall = hangUntilDone(method, pc)
		return pc
	}
}

// failingPiece serves sample.car as a piece whose method calls fail.
func failingPiece(t *testing.T, api *fakeAPI, method string, err error) cid.Cid {
	pc := writeBytes(t, api, sampleBytes(t))
	api.onCall = func(_ context.Context, m string, c cid.Cid) error {
		if m == method && c.Equals(pc) {
			return err
		}
		return nil
	}
	return pc
}

// loadWithDeadline loads with a caller deadline; the hung call must not
// outlive the Wrapper (checked by TestHungMinerAPIDoesNotOutliveClose).
func loadWithDeadline(t *testing.T, w *Wrapper, pc cid.Cid) error {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	bs, err := w.LoadShard(ctx, pc)
	if err == nil {
		_ = bs.Close()
	}
	return err
}

// TestHungMinerAPIDoesNotOutliveClose: the dagstore initialises lazily
// registered shards under context.Background, so a MinerAPI call that hangs
// until its context ends would hang forever; Close must end it, leaving no
// goroutine or file behind, and a restart with a working API serves the
// piece.
func TestHungMinerAPIDoesNotOutliveClose(t *testing.T) {
	goroutines, fds := baseline(t)
	for _, method := range []string{"FetchUnsealedPiece", "IsUnsealed", "GetUnpaddedCARSize"} {
		api := newFakeAPI(false)
		pc := api.addPiece(t, "testdata/sample.car")
		root := t.TempDir()
		hung := make(chan struct{}, 16)
		api.onCall = func(ctx context.Context, m string, _ cid.Cid) error {
			if m != method {
				return nil
			}
			hung <- struct{}{}
			<-ctx.Done()
			return ctx.Err()
		}
		w, err := New(Config{RootDir: root}, api)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := w.RegisterShardSync(context.Background(), pc, "", false); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		loaded := make(chan error, 1)
		go func() {
			_, err := w.LoadShard(ctx, pc)
			loaded <- err
		}()
		<-hung // the initialisation is stuck in the API
		cancel()
		if err := <-loaded; !errors.Is(err, context.Canceled) {
			t.Fatalf("%s: load = %v, want context.Canceled", method, err)
		}
		if info, _ := w.ShardInfo(pc); info.State != dagstore.ShardStateInitializing {
			t.Fatalf("%s: state %s, want initializing", method, info.State)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		settled(t, goroutines, fds)

		api.onCall = nil
		w = openWrapper(t, root, api)
		assertServes(t, w, pc, "testdata/sample.car")
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestShortReadsServeExactBytes: a MinerAPI whose readers return a few bytes
// per Read (random access or not) still serves every block exactly.
func TestShortReadsServeExactBytes(t *testing.T) {
	for _, random := range []bool{true, false} {
		api := newFakeAPI(random)
		api.wrapReader = func(_ cid.Cid, r mount.Reader) mount.Reader { return &shortReader{Reader: r, max: 7} }
		w := openWrapper(t, t.TempDir(), api)
		for _, car := range fixtures {
			pc := api.addPiece(t, car)
			if err := w.RegisterShardSync(context.Background(), pc, "", true); err != nil {
				t.Fatalf("random=%v %s: %v", random, car, err)
			}
			assertServes(t, w, pc, car)
		}
	}
}

// TestHashOnRead: without the flag a block whose bytes do not match its CID
// is returned as stored (go-car's blockstore ignores the flag); with it,
// Get fails with ErrHashMismatch and intact blocks still read.
func TestHashOnRead(t *testing.T) {
	api := newFakeAPI(true)
	w := openWrapper(t, t.TempDir(), api)
	pc := writeBytes(t, api, corruptBlockData(t, 7))
	ctx := context.Background()
	bs, err := w.LoadShard(ctx, pc)
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	bad := carBlocks(t, "testdata/sample.car")[7]
	got, err := bs.Get(ctx, bad.Cid())
	if err != nil || bytes.Equal(got.RawData(), bad.RawData()) {
		t.Fatalf("without HashOnRead: %v (bytes equal: %v)", err, err == nil && bytes.Equal(got.RawData(), bad.RawData()))
	}
	bs.HashOnRead(true)
	if _, err := bs.Get(ctx, bad.Cid()); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("with HashOnRead: %v", err)
	}
	good := carBlocks(t, "testdata/sample.car")[8]
	if got, err := bs.Get(ctx, good.Cid()); err != nil || !bytes.Equal(got.RawData(), good.RawData()) {
		t.Fatalf("intact block with HashOnRead: %v", err)
	}
}

// TestMalformedPersistedMountURL: a shard record whose mount URL cannot be
// revived is reported as an errored shard naming the cause; the others
// restore and serve.
func TestMalformedPersistedMountURL(t *testing.T) {
	root := t.TempDir()
	api := newFakeAPI(true)
	good := api.addPiece(t, "testdata/sample.car")
	w := openWrapper(t, root, api)
	if err := w.RegisterShardSync(context.Background(), good, "", true); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	bad := pieceCID(t, bytes.Repeat([]byte{9}, 200))
	for i, u := range []string{"lotus://not-a-cid", "lotus://", "ftp://" + bad.String(), "%zz"} {
		key := bad
		if i > 0 {
			key = pieceCID(t, bytes.Repeat([]byte{byte(10 + i)}, 200))
		}
		putRecord(t, root, key, dagstore.PersistedShard{Key: key.String(), URL: u, State: dagstore.ShardStateAvailable})
	}
	w = openWrapper(t, root, api)
	info, err := w.ShardInfo(bad)
	if err != nil || info.State != dagstore.ShardStateErrored {
		t.Fatalf("bad record: %+v %v", info, err)
	}
	checkHostileError(t, info.Error, bad, nil, []string{"malformed mount URL"})
	shards, err := w.ListShards()
	if err != nil || len(shards) != 5 {
		t.Fatalf("list: %d shards, %v", len(shards), err)
	}
	assertServes(t, w, good, "testdata/sample.car")
}

func putRecord(t *testing.T, root string, pc cid.Cid, ps dagstore.PersistedShard) {
	t.Helper()
	store, err := levelds.NewDatastore(filepath.Join(root, datastoreDir), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	b, err := json.Marshal(ps)
	if err != nil {
		t.Fatal(err)
	}
	key := dagstore.StoreNamespace.Child(ds.NewKey(pc.String()))
	if err := store.Put(context.Background(), key, b); err != nil {
		t.Fatal(err)
	}
}

// TestBadRootDir: a RootDir that is a file, or on a read-only filesystem,
// fails New with an error naming it.
func TestBadRootDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := New(Config{RootDir: file}, newFakeAPI(true))
	checkHostileError(t, err, cid.Undef, syscall.ENOTDIR, []string{file})

	ro := readOnlyDir(t)
	_, err = New(Config{RootDir: ro}, newFakeAPI(true))
	checkHostileError(t, err, cid.Undef, nil, []string{ro})
	if !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.EACCES) {
		t.Fatalf("error %v is neither EROFS nor EACCES", err)
	}
}

// TestCARv2PieceIndexIsNotTrusted: a CARv2 piece carries its own index,
// which go-car would trust (a corrupt one panics in a dagstore goroutine or
// allocates gigabytes). Its index is ignored: the data is indexed, and the
// piece serves exactly, whatever its index says.
func TestCARv2PieceIndexIsNotTrusted(t *testing.T) {
	v2 := filepath.Join(t.TempDir(), "v2.car")
	if err := carv2.WrapV1File("testdata/sample.car", v2); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(v2)
	if err != nil {
		t.Fatal(err)
	}
	idxAt := binary.LittleEndian.Uint64(b[indexOffsetAt:])
	if idxAt == 0 || idxAt+40 > uint64(len(b)) {
		t.Fatalf("no index in the CARv2 (offset %d)", idxAt)
	}
	corrupt := bytes.Clone(b)
	for i := idxAt + 2; i < idxAt+40; i++ {
		corrupt[i] = 0xff // widths and counts no real index has
	}
	for _, random := range []bool{true, false} {
		api := newFakeAPI(random)
		w := openWrapper(t, t.TempDir(), api)
		for name, piece := range map[string][]byte{"valid": b, "corrupt index": corrupt} {
			pc := writeBytes(t, api, piece)
			if err := w.RegisterShardSync(context.Background(), pc, "", true); err != nil {
				t.Fatalf("random=%v %s: %v", random, name, err)
			}
			assertServes(t, w, pc, "testdata/sample.car")
		}
	}
}
