package pgindex

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/filecoin-project/dagstore/index"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	carindex "github.com/ipld/go-car/v2/index"
	"github.com/jackc/pgx/v5"
	"github.com/multiformats/go-multicodec"
	"github.com/multiformats/go-multihash"
)

// pageSize is the number of entries ForEach reads per query.
const pageSize = 10000

// errNoIndex says this node holds no complete entries of the piece: it is
// both the dagstore's index.ErrNotFound and os.ErrNotExist (what dagwrap
// checks of a missing index).
var errNoIndex = fmt.Errorf("%w: %w", index.ErrNotFound, os.ErrNotExist)

// pieceID returns the piece's id if this node holds it complete.
func (r *Repo) pieceID(ctx context.Context, key shard.Key) (int64, bool, error) {
	r.mu.Lock()
	id, ok := r.held[key]
	r.mu.Unlock()
	if ok {
		return id, true, nil
	}
	var state int16
	err := r.call(ctx, func(ctx context.Context) error {
		return r.pool.QueryRow(ctx, r.q.myHolding, key.String(), r.node).Scan(&id, &state)
	})
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && state != stateComplete) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	r.mu.Lock()
	r.held[key] = id
	r.mu.Unlock()
	return id, true, nil
}

func (r *Repo) stat(ctx context.Context, key shard.Key) (bool, error) {
	_, ok, err := r.pieceID(ctx, key)
	return ok, err
}

// StatFullIndex reports whether this node holds the piece complete. Size is
// not known (the rows live in the database) and is 0.
func (r *Repo) StatFullIndex(key shard.Key) (index.Stat, error) {
	ok, err := r.stat(r.ctx, key)
	if err != nil {
		return index.Stat{}, r.errorf("piece %s: %w", key, err)
	}
	return index.Stat{Exists: ok}, nil
}

// GetFullIndex returns the piece's index, read from the database on
// demand: nothing is loaded, whatever the piece's size. It fails with
// os.ErrNotExist if this node does not hold the piece complete.
func (r *Repo) GetFullIndex(key shard.Key) (carindex.Index, error) {
	id, ok, err := r.pieceID(r.ctx, key)
	if err != nil {
		return nil, r.errorf("piece %s: %w", key, err)
	}
	if !ok {
		return nil, r.errorf("piece %s: %w", key, errNoIndex)
	}
	return &Index{r: r, key: key, id: id}, nil
}

// GetShardsForMultihash returns every piece in the directory that holds mh
// complete, whichever node indexed it, or ds.ErrNotFound.
func (r *Repo) GetShardsForMultihash(ctx context.Context, mh multihash.Multihash) ([]shard.Key, error) {
	keys, err := r.queryKeys(ctx, r.q.lookup, []byte(mh))
	if err != nil {
		return nil, r.errorf("look up %s: %w", mh, err)
	}
	if len(keys) == 0 {
		return nil, ds.ErrNotFound
	}
	return keys, nil
}

// ForEach calls f with every piece this node holds, in any state (an
// interrupted indexing's holding included), until f returns false.
func (r *Repo) ForEach(f func(shard.Key) (bool, error)) error {
	keys, err := r.myPieces(r.ctx)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if more, err := f(k); err != nil || !more {
			return err
		}
	}
	return nil
}

func (r *Repo) myPieces(ctx context.Context) ([]shard.Key, error) {
	keys, err := r.queryKeys(ctx, r.q.myPieces, r.node)
	if err != nil {
		return nil, r.errorf("list this node's pieces: %w", err)
	}
	return keys, nil
}

// Len counts this node's pieces.
func (r *Repo) Len() (int, error) {
	keys, err := r.myPieces(r.ctx)
	return len(keys), err
}

// Size is 0: the entries live in the database, not on local disk.
func (r *Repo) Size() (uint64, error) { return 0, nil }

// Index is one piece's index in the database: a go-car IterableIndex whose
// every call is a query (bounded by the Repo's timeout and Close).
type Index struct {
	r   *Repo
	key shard.Key
	id  int64
}

var _ carindex.IterableIndex = (*Index)(nil)

// Codec is the codec the index's content corresponds to.
func (x *Index) Codec() multicodec.Code { return multicodec.CarMultihashIndexSorted }

// GetAll calls fn with the block's offset in the piece (one per block), or
// returns carindex.ErrNotFound.
func (x *Index) GetAll(c cid.Cid, fn func(uint64) bool) error {
	var offs []int64
	err := x.r.call(context.Background(), func(ctx context.Context) error {
		offs = offs[:0]
		rows, err := x.r.pool.Query(ctx, x.r.q.offsets, []byte(c.Hash()), x.id)
		if err != nil {
			return err
		}
		var off int64
		_, err = pgx.ForEachRow(rows, []any{&off}, func() error {
			offs = append(offs, off)
			return nil
		})
		return err
	})
	if err != nil {
		return x.r.errorf("piece %s: offset of %s: %w", x.key, c, err)
	}
	if len(offs) == 0 {
		return carindex.ErrNotFound
	}
	for _, off := range offs {
		if !fn(uint64(off)) {
			break
		}
	}
	return nil
}

// ForEach calls f with every (multihash, offset) of the piece, in offset
// order (the piece's own), reading a page at a time.
func (x *Index) ForEach(f func(multihash.Multihash, uint64) error) error {
	after := int64(-1)
	for {
		var mhs [][]byte
		var offs []int64
		err := x.r.call(context.Background(), func(ctx context.Context) error {
			mhs, offs = mhs[:0], offs[:0]
			rows, err := x.r.pool.Query(ctx, x.r.q.page, x.id, after, pageSize)
			if err != nil {
				return err
			}
			var mh []byte
			var off int64
			_, err = pgx.ForEachRow(rows, []any{&mh, &off}, func() error {
				mhs = append(mhs, append([]byte(nil), mh...))
				offs = append(offs, off)
				return nil
			})
			return err
		})
		if err != nil {
			return x.r.errorf("piece %s: read entries: %w", x.key, err)
		}
		for i, mh := range mhs {
			if err := f(multihash.Multihash(mh), uint64(offs[i])); err != nil {
				return err
			}
		}
		if len(mhs) < pageSize {
			return nil
		}
		after = offs[len(offs)-1]
	}
}

// Entries counts the piece's entries (a query).
func (x *Index) Entries() int64 {
	var n int64
	if err := x.r.call(context.Background(), func(ctx context.Context) error {
		return x.r.pool.QueryRow(ctx, x.r.q.count, x.id).Scan(&n)
	}); err != nil {
		return 0
	}
	return n
}

// errInDatabase refuses what would copy the whole index into memory.
var errInDatabase = errors.New("index lives in the database: not marshalled or loaded")

// Marshal is not supported: export an index with ForEach.
func (x *Index) Marshal(io.Writer) (uint64, error) { return 0, errInDatabase }

// Unmarshal is not supported (read-only).
func (x *Index) Unmarshal(io.Reader) error { return errInDatabase }

// Load is not supported (read-only).
func (x *Index) Load([]carindex.Record) error { return errInDatabase }

// queryKeys runs a query whose rows are piece keys, as one call (retried
// whole on a broken connection).
func (r *Repo) queryKeys(ctx context.Context, sql string, arg any) ([]shard.Key, error) {
	var keys []shard.Key
	err := r.call(ctx, func(ctx context.Context) error {
		keys = keys[:0]
		rows, err := r.pool.Query(ctx, sql, arg)
		if err != nil {
			return err
		}
		var piece string
		_, err = pgx.ForEachRow(rows, []any{&piece}, func() error {
			keys = append(keys, shard.KeyFromString(piece))
			return nil
		})
		return err
	})
	return keys, err
}
