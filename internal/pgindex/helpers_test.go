package pgindex

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	carv2 "github.com/ipld/go-car/v2"
	carindex "github.com/ipld/go-car/v2/index"
	"github.com/jackc/pgx/v5"
	"github.com/multiformats/go-multihash"

	"github.com/spstack/dagwrap/internal/cargen"
)

// testDSN is the server test.sh starts; tests skip without it.
func testDSN(t testing.TB) string {
	dsn := os.Getenv("DAGWRAP_TEST_PG")
	if dsn == "" {
		t.Skip("DAGWRAP_TEST_PG is not set: run ./test.sh, which starts a PostgreSQL server")
	}
	return dsn
}

func randomName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// testSchema returns a fresh schema name, dropped at the end of the test.
func testSchema(t testing.TB) string {
	dsn := testDSN(t)
	s := randomName("t_")
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			t.Logf("drop schema %s: %v", s, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(), `DROP SCHEMA IF EXISTS `+pgx.Identifier{s}.Sanitize()+` CASCADE`); err != nil {
			t.Logf("drop schema %s: %v", s, err)
		}
	})
	return s
}

// dsnWithApp tags the connections with an application name, so a test can
// terminate exactly them.
func dsnWithApp(t testing.TB, app string) string {
	u, err := url.Parse(testDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("application_name", app)
	u.RawQuery = q.Encode()
	return u.String()
}

// openNode opens a Repo as node on schema, closed at the end of the test.
func openNode(t testing.TB, dsn, schema, node string, o ...Options) *Repo {
	var opts Options
	if len(o) > 0 {
		opts = o[0]
	}
	opts.NodeID, opts.Schema = node, schema
	r, err := Open(dsn, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	if err := r.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r
}

// testPiece is a real CAR and the index go-car makes of it.
type testPiece struct {
	key    shard.Key
	idx    carindex.IterableIndex
	blocks []cid.Cid
	offs   map[string]uint64 // by multihash
}

func makePiece(t testing.TB, seed int64, n int) testPiece {
	path := filepath.Join(t.TempDir(), "p.car")
	if err := cargen.WriteSmall(path, seed, n); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	idx, err := carv2.GenerateIndex(f, carv2.ZeroLengthSectionAsEOF(true), carv2.StoreIdentityCIDs(true))
	if err != nil {
		t.Fatal(err)
	}
	it := idx.(carindex.IterableIndex)
	p := testPiece{idx: it, offs: map[string]uint64{}}
	if err := it.ForEach(func(mh multihash.Multihash, off uint64) error {
		p.blocks = append(p.blocks, cid.NewCidV1(cid.Raw, mh))
		p.offs[string(mh)] = off
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	p.key = shard.KeyFromCID(pieceKey(t, seed))
	return p
}

// pieceKey is a piece CID per seed (the repo only uses it as a key).
func pieceKey(t testing.TB, seed int64) cid.Cid {
	d := sha256.Sum256([]byte{byte(seed), byte(seed >> 8)})
	d[31] &= 0x3f
	c, err := cargen.PieceCID(d[:])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// counterIndex is a go-car index of n synthetic entries, for volume.
func counterIndex(t testing.TB, base uint64, n int) carindex.IterableIndex {
	recs := make([]carindex.Record, n)
	for i := range recs {
		recs[i] = carindex.Record{Cid: cid.NewCidV1(cid.Raw, cargen.CounterMultihash(base+uint64(i))), Offset: uint64(i) * 100}
	}
	idx := carindex.NewMultihashSorted()
	if err := idx.Load(recs); err != nil {
		t.Fatal(err)
	}
	return idx
}

func lookup(t testing.TB, r *Repo, c cid.Cid) []shard.Key {
	t.Helper()
	keys, err := r.GetShardsForMultihash(context.Background(), c.Hash())
	if err != nil && !errors.Is(err, ds.ErrNotFound) {
		t.Fatalf("lookup %s: %v", c, err)
	}
	return keys
}

func countEntries(t testing.TB, dsn, schema string) int64 {
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int64
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM `+pgx.Identifier{schema}.Sanitize()+`.entries`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func sqlExec(t testing.TB, dsn, stmt string, args ...any) {
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), stmt, args...); err != nil {
		t.Fatal(err)
	}
}
