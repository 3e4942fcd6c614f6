package pgindex

import (
	"context"
	"errors"

	"github.com/filecoin-project/dagstore/index"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/jackc/pgx/v5"
)

// DropFullIndex removes this node's holding of the piece. The piece's
// entries go when its last holding does (in the background, see Reclaim);
// until then other nodes keep reporting it.
func (r *Repo) DropFullIndex(key shard.Key) (bool, error) {
	return r.drop(r.ctx, key)
}

// RemoveShard is DropFullIndex for the top-level index (the same rows).
func (r *Repo) RemoveShard(ctx context.Context, _ index.MultihashIterator, key shard.Key) error {
	_, err := r.drop(ctx, key)
	return err
}

func (r *Repo) drop(ctx context.Context, key shard.Key) (bool, error) {
	r.mu.Lock()
	delete(r.held, key) // from now on, asked of the database
	r.mu.Unlock()
	var dropped, retired bool
	err := r.call(ctx, func(ctx context.Context) error {
		dropped, retired = false, false
		return pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
			var id int64
			err := tx.QueryRow(ctx, r.q.lockPiece, key.String()).Scan(&id)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			if err != nil {
				return err
			}
			tag, err := tx.Exec(ctx, r.q.dropHolding, id, r.node)
			if err != nil {
				return err
			}
			dropped = tag.RowsAffected() > 0
			var others bool
			if err := tx.QueryRow(ctx, r.q.anyHolding, id).Scan(&others); err != nil || others {
				return err
			}
			// The last holding: retire the id; its entries are reclaimed.
			if _, err := tx.Exec(ctx, r.q.retirePiece, id); err != nil {
				return err
			}
			retired = true
			_, err = tx.Exec(ctx, r.q.addReclaim, id)
			return err
		})
	})
	if err != nil {
		return false, r.errorf("piece %s: remove this node's holding: %w", key, err)
	}
	if retired {
		r.wake()
	}
	return dropped, nil
}

func (r *Repo) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// reclaimLoop deletes retired pieces' entries when woken, until Close.
func (r *Repo) reclaimLoop() {
	defer r.wg.Done()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.kick:
		}
		if err := r.Reclaim(r.ctx); err != nil && r.ctx.Err() == nil && r.log != nil {
			r.log.Errorw("reclaiming retired pieces' entries failed; retried at the next destroy or start", "error", err)
		}
	}
}

// Reclaim deletes the entries of every retired piece id (any node's: ids
// are never reused, so this never touches a live piece), in batches.
func (r *Repo) Reclaim(ctx context.Context) error {
	var ids []int64
	err := r.call(ctx, func(ctx context.Context) error {
		ids = ids[:0]
		rows, err := r.pool.Query(ctx, r.q.pendingReclaims)
		if err != nil {
			return err
		}
		var id int64
		_, err = pgx.ForEachRow(rows, []any{&id}, func() error { ids = append(ids, id); return nil })
		return err
	})
	if err != nil {
		return r.errorf("list reclaims: %w", err)
	}
	for _, id := range ids {
		for {
			var n int64
			if err := r.call(ctx, func(ctx context.Context) error {
				tag, err := r.pool.Exec(ctx, r.q.deleteEntries, id, r.batch)
				n = tag.RowsAffected()
				return err
			}); err != nil {
				return r.errorf("reclaim entries of retired piece id %d: %w", id, err)
			}
			if n == 0 {
				break
			}
		}
		if err := r.call(ctx, func(ctx context.Context) error {
			_, err := r.pool.Exec(ctx, r.q.doneClaim, id)
			return err
		}); err != nil {
			return r.errorf("reclaim retired piece id %d: %w", id, err)
		}
	}
	return nil
}
