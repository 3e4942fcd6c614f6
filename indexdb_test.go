package dagwrap

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/filecoin-project/dagstore"
	"github.com/ipfs/go-cid"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Pins issue 12: an index database excludes the node's own index repo or
// top-level index, at New.
func TestIndexDSNWithNodeIndexIsAnError(t *testing.T) {
	api := newFakeAPI(true)
	repo, err := newIndexRepo(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for name, opt := range map[string]Option{
		"WithIndexRepo":     WithIndexRepo(repo),
		"WithTopLevelIndex": WithTopLevelIndex(NewTopLevelIndex(nil)),
	} {
		w, err := New(Config{RootDir: t.TempDir(), IndexDSN: "postgres://u@127.0.0.1:1/db"}, api, opt)
		if err == nil {
			_ = w.Close()
			t.Fatalf("IndexDSN with %s: New succeeded", name)
		}
		if !strings.Contains(err.Error(), name) {
			t.Fatalf("IndexDSN with %s: %v; want it named", name, err)
		}
	}
}

// Pins issue 12: an unreachable index database fails Start with an error
// naming host and database (never the password); Start can be retried.
func TestIndexDBUnreachableAtStart(t *testing.T) {
	api := newFakeAPI(true)
	w, err := New(Config{RootDir: t.TempDir(), IndexDSN: "postgres://u:hunter2@127.0.0.1:1/piecedir?connect_timeout=2"}, api)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	err = w.Start(context.Background())
	if err == nil {
		t.Fatal("Start with an unreachable database succeeded")
	}
	if msg := err.Error(); !strings.Contains(msg, "127.0.0.1:1/piecedir") || strings.Contains(msg, "hunter2") {
		t.Fatalf("Start: %q; want host and database, no password", msg)
	}
	if _, err := w.ListShards(); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("after a failed Start: %v; want ErrNotStarted", err)
	}
}

// pgWrapper opens and starts a Wrapper on root over the piece directory in
// schema, at dsn.
func pgWrapper(t testing.TB, root, dsn, schema string, api MinerAPI, opts ...Option) *Wrapper {
	t.Helper()
	return openWith(t, root, api, Config{IndexDSN: dsn}, append(opts, WithIndexSchema(schema))...)
}

func lookupPieces(t testing.TB, w *Wrapper, c cid.Cid) []cid.Cid {
	t.Helper()
	ps, err := w.GetPiecesContainingBlock(c)
	if err != nil && !errors.Is(err, ErrBlockNotFound) {
		t.Fatal(err)
	}
	slices.SortFunc(ps, func(a, b cid.Cid) int { return strings.Compare(a.String(), b.String()) })
	return ps
}

// Pins issue 12: two Wrappers on different roots share one directory.
// Each reports every piece in it; a piece both hold serves from either and
// keeps its entries until both destroy it; no index is kept on local disk.
func TestTwoWrappersOneDirectory(t *testing.T) {
	dsn := testPG(t)
	schema := testSchemaName(t)
	api := newFakeAPI(true)
	shared := api.addPiece(t, makeCAR(t, 71, 40))
	onlyB := api.addPiece(t, makeCAR(t, 72, 30))
	rootA, rootB := t.TempDir(), t.TempDir()
	a := pgWrapper(t, rootA, dsn, schema, api)
	b := pgWrapper(t, rootB, dsn, schema, api)
	ctx := context.Background()
	for _, step := range []struct {
		w *Wrapper
		p cid.Cid
	}{{a, shared}, {b, shared}, {b, onlyB}} {
		if err := step.w.RegisterShardSync(ctx, step.p, "", true); err != nil {
			t.Fatal(err)
		}
	}
	blkShared := carBlocks(t, api.piecePath(t, shared))[5].Cid()
	blkB := carBlocks(t, api.piecePath(t, onlyB))[3].Cid()
	if got := lookupPieces(t, a, blkB); !slices.Equal(got, []cid.Cid{onlyB}) {
		t.Fatalf("a's lookup of b's block = %v; want %v", got, onlyB)
	}
	if got := lookupPieces(t, b, blkShared); !slices.Equal(got, []cid.Cid{shared}) {
		t.Fatalf("b's lookup = %v; want %v", got, shared)
	}
	for _, root := range []string{rootA, rootB} {
		if ents, _ := os.ReadDir(filepath.Join(root, indexDir)); len(ents) != 0 {
			t.Fatalf("index files under %s: %v", root, ents)
		}
	}
	if err := readAll(t, a, testPiece{pc: shared, path: api.piecePath(t, shared)}); err != nil {
		t.Fatal(err)
	}
	if err := a.DestroyShardSync(ctx, shared); err != nil {
		t.Fatal(err)
	}
	if got := lookupPieces(t, a, blkShared); !slices.Equal(got, []cid.Cid{shared}) {
		t.Fatalf("after a's destroy: lookup = %v; want b's %v", got, shared)
	}
	if err := readAll(t, b, testPiece{pc: shared, path: api.piecePath(t, shared)}); err != nil {
		t.Fatalf("b's piece after a's destroy: %v", err)
	}
	if err := b.DestroyShardSync(ctx, shared); err != nil {
		t.Fatal(err)
	}
	if got := lookupPieces(t, a, blkShared); len(got) != 0 {
		t.Fatalf("after both destroyed it: lookup = %v", got)
	}
	// A restart of a reconciles only its own holdings: b's piece stays.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a = pgWrapper(t, rootA, dsn, schema, api)
	<-a.reconciled
	if got := lookupPieces(t, a, blkB); !slices.Equal(got, []cid.Cid{onlyB}) {
		t.Fatalf("after a's restart: lookup = %v; want %v", got, onlyB)
	}
}

// tcpProxy forwards a port to the database; down cuts every connection
// and refuses new ones, up serves again on the same port.
type tcpProxy struct {
	target string
	addr   string
	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func newTCPProxy(t testing.TB, target string) *tcpProxy {
	p := &tcpProxy{target: target, conns: map[net.Conn]struct{}{}}
	p.up(t)
	t.Cleanup(func() { p.down(); p.wg.Wait() })
	return p
}

func (p *tcpProxy) up(t testing.TB) {
	addr := p.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", p.target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[s] = struct{}{}, struct{}{}
			p.mu.Unlock()
			p.wg.Add(2)
			go func() { defer p.wg.Done(); _, _ = io.Copy(s, c); _ = s.Close() }()
			go func() { defer p.wg.Done(); _, _ = io.Copy(c, s); _ = c.Close() }()
		}
	}()
}

func (p *tcpProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close()
		delete(p.conns, c)
	}
}

// Pins issue 12: with the database down mid-run, a registration fails its
// shard with an error naming the database, lookups and loads fail naming
// it, nothing is reported partially; when it returns, recovery and lookups
// work again without restarting the node. The node owns its pool.
func TestIndexDBDownMidRun(t *testing.T) {
	dsn := testPG(t)
	schema := testSchemaName(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newTCPProxy(t, u.Host)
	u.Host = proxy.addr
	q := u.Query()
	q.Set("connect_timeout", "5")
	u.RawQuery = q.Encode()
	pool, err := pgxpool.New(context.Background(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	api := newFakeAPI(true)
	before := api.addPiece(t, makeCAR(t, 81, 20))
	during := api.addPiece(t, makeCAR(t, 82, 20))
	w, err := New(Config{RootDir: t.TempDir()}, api, WithIndexPool(pool), WithIndexSchema(schema))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := w.RegisterShardSync(ctx, before, "", true); err != nil {
		t.Fatal(err)
	}
	blkBefore := carBlocks(t, api.piecePath(t, before))[2].Cid()
	blkDuring := carBlocks(t, api.piecePath(t, during))[2].Cid()

	proxy.down()
	err = w.RegisterShardSync(ctx, during, "", true)
	if err == nil || !strings.Contains(err.Error(), proxy.addr) {
		t.Fatalf("registration with the database down: %v; want an error naming %s", err, proxy.addr)
	}
	// Its automatic recovery fails too, the database being still down.
	if info, err := w.AwaitRecovery(ctx, during); err != nil || info.State != dagstore.ShardStateErrored {
		t.Fatalf("after the automatic recovery with the database down: %+v %v, want errored", info, err)
	}
	if _, err := w.GetPiecesContainingBlock(blkBefore); err == nil || !strings.Contains(err.Error(), proxy.addr) {
		t.Fatalf("lookup with the database down: %v; want an error naming it", err)
	}

	proxy.up(t)
	if got := lookupPieces(t, w, blkDuring); len(got) != 0 {
		t.Fatalf("a piece whose entries failed is reported: %v", got)
	}
	if got := lookupPieces(t, w, blkBefore); !slices.Equal(got, []cid.Cid{before}) {
		t.Fatalf("lookup after the database returned = %v", got)
	}
	if err := w.RecoverShard(ctx, during); err != nil {
		t.Fatalf("recovery after the database returned: %v", err)
	}
	if err := readAll(t, w, testPiece{pc: during, path: api.piecePath(t, during)}); err != nil {
		t.Fatal(err)
	}
	if got := lookupPieces(t, w, blkDuring); !slices.Equal(got, []cid.Cid{during}) {
		t.Fatalf("lookup after recovery = %v", got)
	}
}
