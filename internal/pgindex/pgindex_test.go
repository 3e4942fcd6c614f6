package pgindex

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/filecoin-project/dagstore/shard"
	carindex "github.com/ipld/go-car/v2/index"
	"github.com/jackc/pgx/v5"
	"github.com/multiformats/go-multihash"
)

// Pins issue 12: the schema is created at open, versioned, idempotent, and
// safe when several nodes create it at once; a newer schema is refused.
func TestSchemaTwiceAndConcurrently(t *testing.T) {
	dsn, schema := testDSN(t), testSchema(t)
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := Open(dsn, Options{NodeID: "n", Schema: schema})
			if err != nil {
				errs[i] = err
				return
			}
			defer r.Close()
			errs[i] = r.Ensure(context.Background())
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Ensure: %v", err)
		}
	}
	r := openNode(t, dsn, schema, "n")
	if err := r.Ensure(context.Background()); err != nil {
		t.Fatalf("second Ensure: %v", err)
	}
	v, err := r.version(context.Background())
	if err != nil || v != SchemaVersion {
		t.Fatalf("version = %d, %v; want %d", v, err, SchemaVersion)
	}
	sqlExec(t, dsn, `INSERT INTO `+pgx.Identifier{schema}.Sanitize()+`.version VALUES (99)`)
	err = r.Ensure(context.Background())
	if err == nil || !strings.Contains(err.Error(), "version 99") {
		t.Fatalf("Ensure on a newer schema = %v; want a version error", err)
	}
}

// Pins issue 12: two nodes on one directory. Lookups report every piece,
// whichever node indexed it; offsets come from the database; a piece both
// hold keeps its entries until both drop it; a node sees only its own
// holdings as its indexes.
func TestTwoNodesOneDirectory(t *testing.T) {
	dsn, schema := testDSN(t), testSchema(t)
	a := openNode(t, dsn, schema, "node-a")
	b := openNode(t, dsn, schema, "node-b")
	p1, p2 := makePiece(t, 1, 300), makePiece(t, 2, 200)
	for _, step := range []struct {
		r *Repo
		p testPiece
	}{{a, p1}, {b, p1}, {b, p2}} {
		if err := step.r.AddFullIndex(step.p.key, step.p.idx); err != nil {
			t.Fatal(err)
		}
	}
	if got := lookup(t, a, p2.blocks[7]); !slices.Equal(got, []shard.Key{p2.key}) {
		t.Fatalf("node a's lookup of a block of b's piece = %v; want %v", got, p2.key)
	}
	if got := lookup(t, b, p1.blocks[0]); !slices.Equal(got, []shard.Key{p1.key}) {
		t.Fatalf("lookup = %v; want %v", got, p1.key)
	}
	if _, err := a.GetFullIndex(p2.key); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("node a's index of b's piece: %v; want ErrNotExist", err)
	}
	if st, err := a.StatFullIndex(p2.key); err != nil || st.Exists {
		t.Fatalf("node a's stat of b's piece = %+v, %v", st, err)
	}
	idx, err := a.GetFullIndex(p1.key)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range p1.blocks {
		var got []uint64
		if err := idx.GetAll(c, func(o uint64) bool { got = append(got, o); return true }); err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0] != p1.offs[string(c.Hash())] {
			t.Fatalf("offsets of %s = %v; want %d", c, got, p1.offs[string(c.Hash())])
		}
	}
	if err := idx.GetAll(p2.blocks[0], func(uint64) bool { return true }); !errors.Is(err, carindex.ErrNotFound) {
		t.Fatalf("offset of another piece's block: %v; want ErrNotFound", err)
	}
	n := 0
	if err := idx.(carindex.IterableIndex).ForEach(func(mh multihash.Multihash, off uint64) error {
		if p1.offs[string(mh)] != off {
			t.Fatalf("ForEach: %s at %d; want %d", mh, off, p1.offs[string(mh)])
		}
		n++
		return nil
	}); err != nil || n != len(p1.blocks) {
		t.Fatalf("ForEach: %d entries, %v; want %d", n, err, len(p1.blocks))
	}
	var mine []shard.Key
	_ = a.ForEach(func(k shard.Key) (bool, error) { mine = append(mine, k); return true, nil })
	if !slices.Equal(mine, []shard.Key{p1.key}) {
		t.Fatalf("node a's pieces = %v; want only %v", mine, p1.key)
	}

	if dropped, err := a.DropFullIndex(p1.key); err != nil || !dropped {
		t.Fatalf("drop from a = %v, %v", dropped, err)
	}
	if err := a.Reclaim(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := lookup(t, a, p1.blocks[3]); !slices.Equal(got, []shard.Key{p1.key}) {
		t.Fatalf("after a dropped the piece b holds: lookup = %v; want %v", got, p1.key)
	}
	if _, err := a.GetFullIndex(p1.key); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a's index after its drop: %v; want ErrNotExist", err)
	}
	if err := b.RemoveShard(context.Background(), nil, p1.key); err != nil {
		t.Fatal(err)
	}
	if err := b.Reclaim(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := lookup(t, a, p1.blocks[3]); len(got) != 0 {
		t.Fatalf("after both dropped it: lookup = %v", got)
	}
	if n := countEntries(t, dsn, schema); n != int64(len(p2.blocks)) {
		t.Fatalf("%d entries left; want only p2's %d", n, len(p2.blocks))
	}
}

// Pins issue 12: two nodes indexing one piece at once, and a node
// re-indexing it while the other destroys it, leave every holder with the
// complete entry set.
func TestConcurrentIndexingOfOnePiece(t *testing.T) {
	dsn, schema := testDSN(t), testSchema(t)
	a := openNode(t, dsn, schema, "node-a", Options{Batch: 50})
	b := openNode(t, dsn, schema, "node-b", Options{Batch: 50})
	p := makePiece(t, 3, 1000)
	for round := range 5 {
		var wg sync.WaitGroup
		var errA, errB error
		wg.Add(2)
		go func() { defer wg.Done(); errA = a.AddFullIndex(p.key, p.idx) }()
		go func() {
			defer wg.Done()
			if round%2 == 0 {
				errB = b.AddFullIndex(p.key, p.idx)
			} else {
				_, errB = b.DropFullIndex(p.key)
			}
		}()
		wg.Wait()
		if errA != nil || errB != nil {
			t.Fatalf("round %d: %v, %v", round, errA, errB)
		}
		if err := b.Reclaim(context.Background()); err != nil {
			t.Fatal(err)
		}
		idx, err := a.GetFullIndex(p.key)
		if err != nil {
			t.Fatal(err)
		}
		if n := idx.(carindex.IterableIndex).(*Index).Entries(); n != int64(len(p.blocks)) {
			t.Fatalf("round %d: a holds %d entries; want %d", round, n, len(p.blocks))
		}
		if round%2 == 1 { // a's re-indexing must not be undone by b's drop
			if _, err := a.DropFullIndex(p.key); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// failingIndex stops its iteration after n entries, as a write that
// cannot finish would.
type failingIndex struct {
	carindex.IterableIndex
	n int
}

var errBroken = errors.New("broken mid-insert")

func (f failingIndex) ForEach(fn func(multihash.Multihash, uint64) error) error {
	i := 0
	return f.IterableIndex.ForEach(func(mh multihash.Multihash, off uint64) error {
		if i == f.n {
			return errBroken
		}
		i++
		return fn(mh, off)
	})
}

// Pins issue 12: a piece whose entries could not all be written is an
// error naming the database and the piece, and is never reported.
func TestPartialInsertNotReported(t *testing.T) {
	dsn, schema := testDSN(t), testSchema(t)
	a := openNode(t, dsn, schema, "node-a", Options{Batch: 10})
	p := makePiece(t, 4, 100)
	err := a.AddFullIndex(p.key, failingIndex{p.idx, 55})
	if !errors.Is(err, errBroken) || !strings.Contains(err.Error(), p.key.String()) || !strings.Contains(err.Error(), a.Name()) {
		t.Fatalf("partial insert: %v; want the cause, naming the piece and %s", err, a.Name())
	}
	if n := countEntries(t, dsn, schema); n == 0 {
		t.Fatal("no entry was written: the test does not exercise a partial insert")
	}
	for _, c := range p.blocks {
		if got := lookup(t, a, c); len(got) != 0 {
			t.Fatalf("block %s of a partly written piece is reported in %v", c, got)
		}
	}
	if st, err := a.StatFullIndex(p.key); err != nil || st.Exists {
		t.Fatalf("stat of a partly written piece = %+v, %v", st, err)
	}
	if err := a.AddMultihashesForShard(context.Background(), nil, p.key); err == nil {
		t.Fatal("the top-level insert of a partly written piece succeeded")
	}
	// The interrupted holding is listed, so a start-up reconciliation finds it.
	var mine []shard.Key
	_ = a.ForEach(func(k shard.Key) (bool, error) { mine = append(mine, k); return true, nil })
	if !slices.Equal(mine, []shard.Key{p.key}) {
		t.Fatalf("pieces = %v; want the interrupted %v", mine, p.key)
	}
	if err := a.AddFullIndex(p.key, p.idx); err != nil {
		t.Fatal(err)
	}
	if got := lookup(t, a, p.blocks[99]); !slices.Equal(got, []shard.Key{p.key}) {
		t.Fatalf("after a full insert: lookup = %v", got)
	}
}

// terminate ends every backend of the application app.
func terminate(t testing.TB, app string) int {
	conn, err := pgx.Connect(context.Background(), testDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(),
		`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// hookIndex calls hook once, after n entries.
type hookIndex struct {
	carindex.IterableIndex
	n    int
	hook func()
}

func (h hookIndex) ForEach(fn func(multihash.Multihash, uint64) error) error {
	i := 0
	return h.IterableIndex.ForEach(func(mh multihash.Multihash, off uint64) error {
		if i++; i == h.n {
			h.hook()
		}
		return fn(mh, off)
	})
}

// Pins issue 12: connections the server terminates mid-insert and while
// idle are replaced without reopening: the insert completes with every
// entry, and later lookups answer.
func TestTerminatedConnectionsRecover(t *testing.T) {
	schema := testSchema(t)
	app := randomName("dagwrap_test_")
	dsn := dsnWithApp(t, app)
	a := openNode(t, dsn, schema, "node-a", Options{Batch: 2000})
	const n = 60000
	idx := counterIndex(t, 0, n)
	killed := 0
	key := shard.KeyFromCID(pieceKey(t, 5))
	if err := a.AddFullIndex(key, hookIndex{idx, n / 2, func() { killed = terminate(t, app) }}); err != nil {
		t.Fatalf("insert across terminated connections: %v", err)
	}
	if killed == 0 {
		t.Fatal("no connection was terminated: the test does not exercise a restart")
	}
	if got := countEntries(t, testDSN(t), schema); got != n {
		t.Fatalf("%d entries after the insert; want %d", got, n)
	}
	if terminate(t, app) == 0 {
		t.Fatal("no idle connection to terminate")
	}
	c := counterIndex(t, 0, 1)
	var first multihash.Multihash
	_ = c.ForEach(func(mh multihash.Multihash, _ uint64) error { first = mh; return nil })
	keys, err := a.GetShardsForMultihash(context.Background(), first)
	if err != nil || !slices.Equal(keys, []shard.Key{key}) {
		t.Fatalf("lookup on terminated idle connections = %v, %v", keys, err)
	}
}

// Pins issue 12: an unreachable database is an error naming host and
// database, never the password, and within the timeout.
func TestUnreachableNamesHostAndDatabase(t *testing.T) {
	r, err := Open("postgres://someone:s3cret@127.0.0.1:1/piecedir?sslmode=disable&connect_timeout=2", Options{NodeID: "n", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	err = r.Ensure(context.Background())
	if err == nil {
		t.Fatal("Ensure on a closed port succeeded")
	}
	if msg := err.Error(); !strings.Contains(msg, "127.0.0.1:1/piecedir") || strings.Contains(msg, "s3cret") {
		t.Fatalf("error %q: want host and database named, no password", msg)
	}
}

// Pins issue 12: Close ends the calls and the background work; later calls
// fail at once rather than hang.
func TestCloseStopsCalls(t *testing.T) {
	dsn, schema := testDSN(t), testSchema(t)
	r, err := Open(dsn, Options{NodeID: "n", Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	p := makePiece(t, 6, 10)
	if err := r.AddFullIndex(p.key, p.idx); err != nil {
		t.Fatal(err)
	}
	idx, err := r.GetFullIndex(p.key)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idx.GetAll(p.blocks[0], func(uint64) bool { return true }); err == nil {
		t.Fatal("an offset read after Close succeeded")
	}
	if _, err := r.GetShardsForMultihash(context.Background(), p.blocks[0].Hash()); err == nil {
		t.Fatal("a lookup after Close succeeded")
	}
}

// indexesOf lists the indexes of schema's entries table.
func indexesOf(t testing.TB, dsn, schema string) []string {
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(context.Background(),
		`SELECT indexname FROM pg_catalog.pg_indexes WHERE schemaname = $1 AND tablename = 'entries' ORDER BY indexname`, schema)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// A schema at version 1 (the (piece_id, mh) index, its entries written by
// that version) is upgraded at Start: the index is replaced by (piece_id,
// off), and the entries written before still list, look up and drop. A
// schema created at version 2 never had the old index.
func TestSchemaUpgradeFromVersion1(t *testing.T) {
	dsn, schema := testDSN(t), testSchema(t)
	s := pgx.Identifier{schema}.Sanitize()
	sqlExec(t, dsn, `CREATE SCHEMA `+s)
	sqlExec(t, dsn, `CREATE TABLE `+s+`.version (version INT PRIMARY KEY)`)
	for _, stmt := range migrations(s)[0] {
		sqlExec(t, dsn, stmt)
	}
	sqlExec(t, dsn, `CREATE INDEX entries_piece ON `+s+`.entries (piece_id, mh)`)
	sqlExec(t, dsn, `INSERT INTO `+s+`.version VALUES (1)`)
	old, err := Open(dsn, Options{NodeID: "a", Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	p := makePiece(t, 9, 300)
	// Entries as version 1 wrote them: by INSERT, the old index in place.
	old.q.entriesTable = pgx.Identifier{"no such schema", "entries"} // no COPY
	if err := old.AddFullIndex(p.key, p.idx); err != nil {
		t.Fatal(err)
	}
	a := openNode(t, dsn, schema, "a") // Ensure upgrades
	if got := indexesOf(t, dsn, schema); !slices.Equal(got, []string{"entries_piece_off", "entries_pkey"}) {
		t.Fatalf("indexes after the upgrade: %v", got)
	}
	if v, err := a.version(context.Background()); err != nil || v != 2 {
		t.Fatalf("version after the upgrade: %d %v", v, err)
	}
	idx, err := a.GetFullIndex(p.key)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := idx.(carindex.IterableIndex).ForEach(func(multihash.Multihash, uint64) error { n++; return nil }); err != nil || n != len(p.blocks) {
		t.Fatalf("entries listed after the upgrade: %d %v, want %d", n, err, len(p.blocks))
	}
	if got := lookup(t, a, p.blocks[7]); !slices.Equal(got, []shard.Key{p.key}) {
		t.Fatalf("lookup after the upgrade: %v", got)
	}
	fresh := testSchema(t)
	openNode(t, dsn, fresh, "b")
	if got := indexesOf(t, dsn, fresh); !slices.Equal(got, []string{"entries_piece_off", "entries_pkey"}) {
		t.Fatalf("indexes of a new schema: %v", got)
	}
}
