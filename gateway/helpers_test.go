package gateway

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	format "github.com/ipfs/go-ipld-format"
	"github.com/ipld/go-car/v2/blockstore"
	dagpb "github.com/ipld/go-codec-dagpb"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/datamodel"
	"github.com/ipld/go-ipld-prime/fluent/qp"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	"github.com/ipld/go-ipld-prime/node/basicnode"
	"github.com/ipld/go-ipld-prime/storage/memstore"
	trustlessutils "github.com/ipld/go-trustless-utils"
	"github.com/ipld/go-trustless-utils/traversal"
	"github.com/multiformats/go-multihash"
	"github.com/spstack/dagwrap/internal/cargen"
)

// dag is a real DAG in a real CAR file: a dag-cbor root linking every
// dag-pb and dag-cbor node cargen wrote (each linking its raw blocks), the
// first node twice (so dups=y and dups=n differ).
type dag struct {
	path   string
	root   cid.Cid
	blocks []blocks.Block // every block in the CAR; the root first
	raw    []blocks.Block // the raw leaves
	nodes  []cid.Cid      // the root's children
	file   cid.Cid        // a UnixFS file (dag-pb, raw leaves): the first 4 raw blocks
}

// writeDAG writes the DAG of seed into dir; with omitLastLeaf the CAR lacks
// the last raw leaf, a block the walk needs well after its first byte.
func writeDAG(t testing.TB, dir string, seed uint64, omitLastLeaf bool) dag {
	t.Helper()
	src := filepath.Join(dir, fmt.Sprintf("src-%d.car", seed))
	if _, err := cargen.Write(src, cargen.Spec{PieceSize: 32 << 10, BlockSize: 300, NodeEvery: 4, MaxBlocks: 31, Seed: seed}); err != nil {
		t.Fatal(err)
	}
	_, blks, err := cargen.Read(src)
	if err != nil {
		t.Fatal(err)
	}
	var d dag
	var body []blocks.Block
	for _, b := range blks[1:] { // blks[0] is cargen's link-less root
		if b.Cid().Prefix().Codec == cid.Raw {
			d.raw = append(d.raw, b)
		} else {
			d.nodes = append(d.nodes, b.Cid())
		}
		body = append(body, b)
	}
	if len(d.nodes) < 3 {
		t.Fatalf("cargen wrote %d nodes, want at least 3", len(d.nodes))
	}
	n, err := qp.BuildMap(basicnode.Prototype.Map, 3, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "name", qp.String(fmt.Sprintf("gateway test DAG %d", seed)))
		qp.MapEntry(ma, "links", qp.List(int64(len(d.nodes)), func(la datamodel.ListAssembler) {
			for _, c := range d.nodes {
				qp.ListEntry(la, qp.Link(cidlink.Link{Cid: c}))
			}
		}))
		qp.MapEntry(ma, "again", qp.Link(cidlink.Link{Cid: d.nodes[0]}))
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := dagcbor.Encode(n, &buf); err != nil {
		t.Fatal(err)
	}
	mh, err := multihash.Sum(buf.Bytes(), multihash.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	rootBlk, err := blocks.NewBlockWithCid(buf.Bytes(), cid.NewCidV1(cid.DagCBOR, mh))
	if err != nil {
		t.Fatal(err)
	}
	d.root = rootBlk.Cid()
	file := unixfsFile(t, d.raw[:4])
	d.file = file.Cid()
	d.blocks = append(append([]blocks.Block{rootBlk}, body...), file)
	d.path = filepath.Join(dir, fmt.Sprintf("dag-%d.car", seed))
	bs, err := blockstore.OpenReadWrite(d.path, []cid.Cid{d.root}, blockstore.WriteAsCarV1(true))
	if err != nil {
		t.Fatal(err)
	}
	last := d.raw[len(d.raw)-1].Cid()
	for _, b := range d.blocks {
		if omitLastLeaf && b.Cid() == last {
			continue
		}
		if err := bs.Put(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	if err := bs.Finalize(); err != nil {
		t.Fatal(err)
	}
	return d
}

// unixfsFile is a UnixFS file node over leaves, encoded by hand (UnixFS's
// protobuf Data: Type=File, filesize, blocksizes) since the module graph has
// no UnixFS builder without boxo.
func unixfsFile(t testing.TB, leaves []blocks.Block) blocks.Block {
	t.Helper()
	var total uint64
	for _, l := range leaves {
		total += uint64(len(l.RawData()))
	}
	data := binary.AppendUvarint([]byte{0x08, 0x02, 0x18}, total) // Type=File, filesize
	for _, l := range leaves {
		data = binary.AppendUvarint(append(data, 0x20), uint64(len(l.RawData()))) // blocksizes
	}
	n, err := qp.BuildMap(dagpb.Type.PBNode, 2, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "Links", qp.List(int64(len(leaves)), func(la datamodel.ListAssembler) {
			for _, l := range leaves {
				qp.ListEntry(la, qp.Map(3, func(ma datamodel.MapAssembler) {
					qp.MapEntry(ma, "Hash", qp.Link(cidlink.Link{Cid: l.Cid()}))
					qp.MapEntry(ma, "Name", qp.String(""))
					qp.MapEntry(ma, "Tsize", qp.Int(int64(len(l.RawData()))))
				}))
			}
		}))
		qp.MapEntry(ma, "Data", qp.Bytes(data))
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := dagpb.Encode(n, &buf); err != nil {
		t.Fatal(err)
	}
	mh, err := multihash.Sum(buf.Bytes(), multihash.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := blocks.NewBlockWithCid(buf.Bytes(), cid.NewCidV1(cid.DagProtobuf, mh))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// openBlocks is go-car's read-only blockstore over the CAR at path.
func openBlocks(t testing.TB, path string) *blockstore.ReadOnly {
	t.Helper()
	bs, err := blockstore.OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bs.Close() })
	return bs
}

// filePieces serves pieces from files on disk, counting opens and closes;
// closed (unless nil) receives the piece of every Close.
type filePieces struct {
	paths  map[cid.Cid]string
	opens  atomic.Int64
	closes atomic.Int64
	closed chan cid.Cid
	// gate, if set, is called before every read after the first of a piece;
	// a non-nil error it returns fails that read.
	gate func() error
	ctxs chan context.Context // if set, receives the context of every OpenPiece
}

func newFilePieces() *filePieces {
	return &filePieces{paths: map[cid.Cid]string{}, closed: make(chan cid.Cid, 64)}
}

// addPiece writes a real piece (a cargen CAR padded to its unpadded size)
// and serves it.
func (fp *filePieces) addPiece(t testing.TB, dir string, seed uint64, size uint64) cargen.Piece {
	t.Helper()
	p, err := cargen.Write(filepath.Join(dir, fmt.Sprintf("piece-%d", seed)), cargen.Spec{PieceSize: size, BlockSize: 1000, NodeEvery: 8, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	fp.paths[p.CID] = p.Path
	return p
}

func (fp *filePieces) OpenPiece(ctx context.Context, pc cid.Cid) (Piece, error) {
	if fp.ctxs != nil {
		fp.ctxs <- ctx
	}
	path, ok := fp.paths[pc]
	if !ok {
		return nil, fmt.Errorf("piece %s: %w", pc, format.ErrNotFound{Cid: pc})
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	fp.opens.Add(1)
	return &filePiece{f: f, size: st.Size(), fp: fp, pc: pc}, nil
}

type filePiece struct {
	f     *os.File
	size  int64
	fp    *filePieces
	pc    cid.Cid
	reads atomic.Int64
	once  sync.Once
}

func (p *filePiece) ReadAt(b []byte, off int64) (int, error) {
	if p.reads.Add(1) > 1 && p.fp.gate != nil {
		if err := p.fp.gate(); err != nil {
			return 0, err
		}
	}
	return p.f.ReadAt(b, off)
}

func (p *filePiece) Size() int64 { return p.size }

func (p *filePiece) Close() error {
	err := errors.New("piece closed twice")
	p.once.Do(func() {
		err = p.f.Close()
		p.fp.closes.Add(1)
		if p.fp.closed != nil {
			p.fp.closed <- p.pc
		}
	})
	return err
}

// gatedBlocks holds every Get and GetSize until release is closed (or the
// request's context ends), telling entered first (until release).
type gatedBlocks struct {
	Blocks
	entered chan struct{}
	release chan struct{}
}

func (g *gatedBlocks) hold(ctx context.Context) error {
	select {
	case g.entered <- struct{}{}:
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gatedBlocks) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	if err := g.hold(ctx); err != nil {
		return nil, err
	}
	return g.Blocks.Get(ctx, c)
}

func (g *gatedBlocks) GetSize(ctx context.Context, c cid.Cid) (int, error) {
	if err := g.hold(ctx); err != nil {
		return 0, err
	}
	return g.Blocks.GetSize(ctx, c)
}

// serve starts h on loopback.
func serve(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// get fetches url with the given request headers (name, value pairs).
func get(t testing.TB, method, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	return resp, body
}

// curlPath is the curl binary the tests fetch with.
const curlPath = "/usr/bin/curl"

func needCurl(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(curlPath); err != nil {
		t.Skipf("curl not available at %s (%v): the curl half of this test cannot run", curlPath, err)
	}
}

// curl fetches url with curl, returning the body, the response headers
// (lower-cased names) and the status code; a non-zero exit is an error.
func curl(t testing.TB, url string, args ...string) (body []byte, hdr map[string]string, status int, err error) {
	t.Helper()
	needCurl(t)
	dir := t.TempDir()
	bodyPath, hdrPath := filepath.Join(dir, "body"), filepath.Join(dir, "headers")
	cmd := exec.Command(curlPath, append([]string{"-sS", "--max-time", "60", "-o", bodyPath, "-D", hdrPath, url}, args...)...)
	out, runErr := cmd.CombinedOutput()
	if runErr != nil {
		runErr = fmt.Errorf("curl %s: %w: %s", url, runErr, out)
	}
	body, _ = os.ReadFile(bodyPath)
	raw, _ := os.ReadFile(hdrPath)
	hdr = map[string]string{}
	for i, line := range strings.Split(strings.ReplaceAll(string(raw), "\r\n", "\n"), "\n") {
		if i == 0 {
			_, _ = fmt.Sscanf(line, "HTTP/%s %d", new(string), &status)
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			hdr[strings.ToLower(k)] = strings.TrimSpace(v)
		}
	}
	return body, hdr, status, runErr
}

// verifyCAR checks car is exactly what req selects from root, with
// go-trustless-utils' verifier (which shares no code with the handler), and
// returns the blocks it read.
func verifyCAR(car io.Reader, req trustlessutils.Request) (traversal.TraversalResult, error) {
	store := &memstore.Store{}
	lsys := cidlink.DefaultLinkSystem()
	lsys.SetReadStorage(store)
	lsys.SetWriteStorage(store)
	cfg := traversal.Config{
		Root:               req.Root,
		Selector:           req.Selector(),
		CheckRootsMismatch: true,
		ExpectDuplicatesIn: req.Duplicates,
	}
	return cfg.VerifyCar(context.Background(), car, lsys)
}

func lower(s string) string { return strings.ToLower(s) }
