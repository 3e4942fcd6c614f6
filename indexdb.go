package dagwrap

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/spstack/dagwrap/internal/pgindex"
)

// The piece directory in a database (Config.IndexDSN or WithIndexPool):
// the per-piece offsets and the multihash -> pieces index live in a
// PostgreSQL-protocol database shared by every node pointing at it; shard
// records stay in the node's datastore. See internal/pgindex.

// nodeIDKey holds this node's identity in the shard-state datastore: its
// holdings in a shared directory are recorded under it.
var nodeIDKey = ds.NewKey("/dagwrap/node-id")

// testBackend, set only by the tests, puts a Wrapper that has no index
// options of its own on the database backend, so the core tests run on it.
var testBackend func(*Config, *options)

// indexDBOptions are the options of the database backend.
type indexDBOptions struct {
	pool    *pgxpool.Pool
	schema  string
	timeout time.Duration
}

// WithIndexPool keeps the piece directory in the database behind the
// node's pool (as Config.IndexDSN does with a pool of dagwrap's own). The
// node owns the pool: Close does not close it.
func WithIndexPool(p *pgxpool.Pool) Option {
	return func(o *options) { o.db.pool = p }
}

// WithIndexSchema names the database schema of the piece directory
// (default "dagwrap"); nodes sharing a directory use the same one.
func WithIndexSchema(name string) Option {
	return func(o *options) { o.db.schema = name }
}

// WithIndexTimeout bounds every call to the index database (default 30s).
func WithIndexTimeout(d time.Duration) Option {
	return func(o *options) { o.db.timeout = d }
}

// openIndexDB sets up the database backend if one is configured: it
// replaces the index repo and the top-level index in o. Nothing is sent to
// the database before Start.
func (st *stores) openIndexDB(ctx context.Context, cfg Config, o *options) error {
	if cfg.IndexDSN == "" && o.db.pool == nil {
		return nil
	}
	if cfg.IndexDSN != "" && o.db.pool != nil {
		return errors.New("Config.IndexDSN and WithIndexPool both given: use one")
	}
	if o.irepo != nil || o.top != nil {
		return errors.New("an index database (Config.IndexDSN or WithIndexPool) replaces the index repo and the top-level index: drop WithIndexRepo and WithTopLevelIndex")
	}
	node, err := st.nodeID(ctx)
	if err != nil {
		return err
	}
	po := pgindex.Options{NodeID: node, Schema: o.db.schema, Timeout: o.db.timeout, Log: st.log}
	var r *pgindex.Repo
	if o.db.pool != nil {
		r, err = pgindex.New(o.db.pool, po)
	} else {
		r, err = pgindex.Open(cfg.IndexDSN, po)
	}
	if err != nil {
		return err
	}
	st.indexDB = r
	o.irepo, o.top = r, r
	return nil
}

// nodeID returns this node's identity, created once.
func (st *stores) nodeID(ctx context.Context) (string, error) {
	b, err := st.store.Get(ctx, nodeIDKey)
	if err == nil {
		return string(b), nil
	}
	if !errors.Is(err, ds.ErrNotFound) {
		return "", fmt.Errorf("read node id: %w", err)
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return "", fmt.Errorf("make node id: %w", err)
	}
	s := hex.EncodeToString(id)
	if err := st.store.Put(ctx, nodeIDKey, []byte(s)); err != nil {
		return "", fmt.Errorf("write node id: %w", err)
	}
	if err := st.store.Sync(ctx, nodeIDKey); err != nil {
		return "", fmt.Errorf("write node id: %w", err)
	}
	return s, nil
}
