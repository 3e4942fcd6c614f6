// Package pgindex is dagwrap's piece directory on the PostgreSQL wire
// protocol (pgx/v5): the per-piece block offsets (the dagstore's
// index.FullIndexRepo) and the multihash -> pieces index (index.Inverted),
// shared by every node that points at the same database.
//
// Tables, in a schema of their own (see schema.go):
//
//	entries  (mh, piece_id) -> off    one row per (multihash, piece): both lookups
//	pieces   id <-> piece CID         a small id per piece, never reused
//	holdings (piece_id, node) -> state  which node holds which piece, indexing|complete
//	reclaim  piece_id                 ids whose entries are being deleted
//
// A piece is reported only while some node holds it complete: a node writes
// its holding "indexing", then the entries, then "complete", so a piece is
// never reported with part of its entries. A node's destroy removes only its
// own holding; the last holding's removal retires the piece's id (a later
// indexing gets a new one) and its entries are deleted in the background, so
// a reclaim never touches the entries of a piece being indexed again.
//
// The SQL sticks to what PostgreSQL 13+, YugabyteDB YSQL and CockroachDB all
// run: no extensions, no advisory locks, no LISTEN/NOTIFY; row locks (FOR
// UPDATE) and ON CONFLICT for concurrency.
package pgindex

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/filecoin-project/dagstore/index"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Defaults of Options' zero fields.
const (
	DefaultSchema  = "dagwrap"
	DefaultTimeout = 30 * time.Second
	DefaultBatch   = 20000
)

// Options configure a Repo.
type Options struct {
	// NodeID identifies this node's holdings (required). A node keeps it
	// across restarts; two nodes never share one.
	NodeID string
	// Schema holds the tables; "" means DefaultSchema.
	Schema string
	// Timeout bounds every database call; 0 means DefaultTimeout.
	Timeout time.Duration
	// Batch is the number of entries per insert statement; 0 means DefaultBatch.
	Batch int
	// Log receives background failures; nil drops them.
	Log Logger
}

// Logger is what a Repo logs its background failures to.
type Logger interface {
	Errorw(msg string, keysAndValues ...any)
}

// Repo is the piece directory in one database schema. It implements the
// dagstore's index.FullIndexRepo and index.Inverted, plus RemoveShard. Its
// methods are safe for concurrent use; Close stops its calls and its
// background reclaim.
type Repo struct {
	pool    *pgxpool.Pool
	ownPool bool
	name    string // host:port/dbname, for errors (never the password)
	node    string
	timeout time.Duration
	batch   int
	q       queries
	log     Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{} // wakes the reclaimer

	mu   sync.Mutex
	held map[shard.Key]int64 // this node's complete holdings: piece id
}

var (
	_ index.FullIndexRepo = (*Repo)(nil)
	_ index.Inverted      = (*Repo)(nil)
)

// Open connects a pool of its own to the database at dsn (a postgres://
// URL); Close closes it. Nothing is sent before the first call: Ensure
// checks the database and creates the schema.
func Open(dsn string, o Options) (*Repo, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("index database: %w", err) // pgx redacts the password
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("index database %s: %w", dbName(cfg.ConnConfig), err)
	}
	r, err := New(pool, o)
	if err != nil {
		pool.Close()
		return nil, err
	}
	r.ownPool = true
	return r, nil
}

// New uses the node's pool, which the node closes (Close does not).
func New(pool *pgxpool.Pool, o Options) (*Repo, error) {
	if pool == nil {
		return nil, errors.New("index database: no pool")
	}
	if o.NodeID == "" {
		return nil, errors.New("index database: a node id is required")
	}
	if o.Schema == "" {
		o.Schema = DefaultSchema
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Batch <= 0 {
		o.Batch = DefaultBatch
	}
	r := &Repo{
		pool: pool, name: dbName(pool.Config().ConnConfig), node: o.NodeID,
		timeout: o.Timeout, batch: o.Batch, q: newQueries(o.Schema), log: o.Log,
		kick: make(chan struct{}, 1), held: map[shard.Key]int64{},
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.wg.Add(1)
	go r.reclaimLoop()
	return r, nil
}

// Name is the database as errors name it: host:port/dbname.
func (r *Repo) Name() string { return r.name }

// Close stops the calls in flight and the background reclaim (resumed by
// the next Ensure of any node), and closes the pool if Open made it.
func (r *Repo) Close() error {
	r.cancel()
	r.wg.Wait()
	if r.ownPool {
		r.pool.Close()
	}
	return nil
}

func dbName(c *pgx.ConnConfig) string {
	host := c.Host
	if c.Port != 0 && (len(host) == 0 || host[0] != '/') {
		host = net.JoinHostPort(host, strconv.Itoa(int(c.Port)))
	}
	return host + "/" + c.Database
}

// errorf names the database and wraps the cause.
func (r *Repo) errorf(format string, args ...any) error {
	return fmt.Errorf("index database %s: "+format, append([]any{r.name}, args...)...)
}

// call runs f under a context bounded by parent, the timeout and Close.
// A call that failed on a broken connection (the server restarted, or
// terminated the backend) or on a serialization conflict is made again, on
// a fresh connection, within the same timeout: every call here is
// idempotent. The attempts back off (0.1 s doubling, about 3 s in all), so
// a server restart (a second or two) is ridden out, while a server that
// stays down fails the call soon.
func (r *Repo) call(parent context.Context, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(parent, r.timeout)
	defer cancel()
	stop := context.AfterFunc(r.ctx, cancel)
	defer stop()
	var err error
	backoff := 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		if err = f(ctx); err == nil || !retryable(err) || ctx.Err() != nil || attempt == retries {
			break
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		backoff *= 2
	}
	if err != nil && r.ctx.Err() != nil {
		return fmt.Errorf("closed: %w", err)
	}
	return err
}

// retries is how many times a call is made again after a broken connection.
const retries = 5

// retryable reports a failure of the connection rather than of the
// statement: a network error, a terminated backend, a conflict.
func retryable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "40001", pgErr.Code == "40P01": // serialization failure, deadlock
			return true
		case len(pgErr.Code) == 5 && (pgErr.Code[:2] == "08" || pgErr.Code[:3] == "57P"):
			return true // connection exception, operator intervention (terminate, shutdown)
		}
		return false
	}
	// Not from the server: retry only what says the connection broke (an
	// answer such as "no rows" is not retried: with the back-off, every
	// lookup of an unknown piece took seconds).
	var netErr net.Error
	var connErr *pgconn.ConnectError
	return errors.As(err, &netErr) || errors.As(err, &connErr) || pgconn.SafeToRetry(err) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, pgconn.ErrConnClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED)
}
