package pgindex

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/filecoin-project/dagstore/index"
	"github.com/filecoin-project/dagstore/shard"
	carindex "github.com/ipld/go-car/v2/index"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/multiformats/go-multihash"
)

// Holding states.
const (
	stateIndexing = 0
	stateComplete = 1
)

// AddFullIndex writes the piece's entries and marks this node's holding
// complete; only then is the piece reported. It returns an error naming the
// database and the piece if any entry could not be written: the dagstore
// then fails the shard (it checks this call, not the top-level insert).
// Entries another node already wrote are kept (the same piece has the same
// entries), so nodes indexing one piece at once are safe.
func (r *Repo) AddFullIndex(key shard.Key, idx carindex.Index) error {
	it, ok := idx.(carindex.IterableIndex)
	if !ok {
		return r.errorf("piece %s: index %T is not iterable", key, idx)
	}
	id, err := r.beginHolding(r.ctx, key)
	if err != nil {
		return r.errorf("piece %s: start indexing: %w", key, err)
	}
	if err := r.writeEntries(id, it); err != nil {
		return r.errorf("piece %s: write entries: %w", key, err)
	}
	if err := r.call(r.ctx, func(ctx context.Context) error {
		tag, err := r.pool.Exec(ctx, r.q.complete, id, r.node)
		if err == nil && tag.RowsAffected() != 1 {
			err = errors.New("this node's holding was removed while indexing")
		}
		return err
	}); err != nil {
		return r.errorf("piece %s: mark complete: %w", key, err)
	}
	r.mu.Lock()
	r.held[key] = id
	r.mu.Unlock()
	return nil
}

// beginHolding returns the piece's id, creating it, and records this node's
// holding as indexing. The piece's row is locked meanwhile, so that a
// concurrent last destroy either sees this holding and keeps the id, or
// retires the id first and this indexing gets a new one.
func (r *Repo) beginHolding(ctx context.Context, key shard.Key) (int64, error) {
	var id int64
	err := r.call(ctx, func(ctx context.Context) error {
		for range 3 { // the id may be retired between the insert and the lock
			found := false
			err := pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, r.q.insertPiece, key.String()); err != nil {
					return err
				}
				err := tx.QueryRow(ctx, r.q.lockPiece, key.String()).Scan(&id)
				if errors.Is(err, pgx.ErrNoRows) {
					return nil
				}
				if err != nil {
					return err
				}
				found = true
				_, err = tx.Exec(ctx, r.q.insertHolding, id, r.node)
				return err
			})
			if err != nil || found {
				return err
			}
		}
		return errors.New("the piece's id kept being retired by concurrent destroys")
	})
	return id, err
}

// writeEntries inserts the entries in batches of r.batch; two batches are
// in flight at once, on two connections, so the server works while the
// next batch is encoded and sent.
//
// A batch goes in by COPY, the cheapest bulk write, while the piece has no
// entries yet. A COPY that meets an entry already there (another node
// indexing the piece at once, or what an interrupted write left) writes
// nothing and fails whole: that batch and every later one go in by INSERT
// ... ON CONFLICT DO NOTHING instead. So do they after any other refusal
// of the COPY by the server (an engine without binary COPY, say): the
// INSERT then says whether the rows can be written at all.
func (r *Repo) writeEntries(id int64, it carindex.IterableIndex) error {
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	type batch struct {
		mhs  [][]byte
		offs []int64
	}
	var conflicted atomic.Bool
	write := func(ctx context.Context, b batch) error {
		if !conflicted.Load() {
			_, err := r.pool.CopyFrom(ctx, r.q.entriesTable, []string{"mh", "piece_id", "off"},
				pgx.CopyFromSlice(len(b.mhs), func(i int) ([]any, error) { return []any{b.mhs[i], id, b.offs[i]}, nil }))
			var pgErr *pgconn.PgError
			if err == nil || !errors.As(err, &pgErr) || retryable(err) {
				return err // done, or the connection broke: the call retries the COPY
			}
			conflicted.Store(true) // a unique violation (23505) or another refusal
		}
		_, err := r.pool.Exec(ctx, r.q.insertEntries, id, b.mhs, b.offs)
		return err
	}
	work := make(chan batch)
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			var err error
			for b := range work {
				if err != nil {
					continue // drain
				}
				err = r.call(ctx, func(ctx context.Context) error { return write(ctx, b) })
				if err != nil {
					cancel()
				}
			}
			errs <- err
		}()
	}
	cur := batch{mhs: make([][]byte, 0, r.batch), offs: make([]int64, 0, r.batch)}
	send := func() error {
		select {
		case work <- cur:
		case <-ctx.Done():
			return ctx.Err()
		}
		cur = batch{mhs: make([][]byte, 0, r.batch), offs: make([]int64, 0, r.batch)}
		return nil
	}
	iterErr := it.ForEach(func(mh multihash.Multihash, off uint64) error {
		if off > 1<<63-1 {
			return fmt.Errorf("offset %d of %s out of range", off, mh)
		}
		cur.mhs = append(cur.mhs, []byte(mh))
		cur.offs = append(cur.offs, int64(off))
		if len(cur.mhs) == r.batch {
			return send()
		}
		return nil
	})
	if iterErr == nil && len(cur.mhs) > 0 {
		iterErr = send()
	}
	close(work)
	err := errors.Join(<-errs, <-errs)
	if err != nil {
		return err // the insert's failure, not the cancellation it caused
	}
	return iterErr
}

// AddMultihashesForShard is the dagstore's top-level insert. The entries
// are written by AddFullIndex, which the dagstore calls first (and whose
// failure fails the shard): this only checks that this node holds the
// piece complete.
func (r *Repo) AddMultihashesForShard(ctx context.Context, _ index.MultihashIterator, key shard.Key) error {
	st, err := r.stat(ctx, key)
	if err != nil {
		return r.errorf("piece %s: %w", key, err)
	}
	if !st {
		return r.errorf("piece %s: no complete entries (they are written by AddFullIndex)", key)
	}
	return nil
}
