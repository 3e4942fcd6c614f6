package pgindex

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// SchemaVersion is the version of the tables this package reads and writes.
const SchemaVersion = 2

// migrations[v-1] brings the schema from version v-1 to v. Each statement
// is idempotent, so nodes starting at once may all run them.
func migrations(s string) [][]string {
	return [][]string{{
		`CREATE TABLE IF NOT EXISTS ` + s + `.pieces (
			id BIGSERIAL PRIMARY KEY,
			piece TEXT NOT NULL UNIQUE)`,
		// The primary key leads with the multihash: on a distributed engine
		// the rows spread by multihash, and one key answers both lookups.
		`CREATE TABLE IF NOT EXISTS ` + s + `.entries (
			mh BYTEA NOT NULL,
			piece_id BIGINT NOT NULL,
			off BIGINT NOT NULL,
			PRIMARY KEY (mh, piece_id))`,
		// Version 1 also indexed (piece_id, mh) as entries_piece; version 2
		// replaces it (see dropOldIndex), so new schemas never build it.
		`CREATE TABLE IF NOT EXISTS ` + s + `.holdings (
			piece_id BIGINT NOT NULL,
			node TEXT NOT NULL,
			state SMALLINT NOT NULL,
			PRIMARY KEY (piece_id, node))`,
		`CREATE INDEX IF NOT EXISTS holdings_node ON ` + s + `.holdings (node)`,
		`CREATE TABLE IF NOT EXISTS ` + s + `.reclaim (piece_id BIGINT PRIMARY KEY)`,
	}, {
		// Version 2: a piece's entries are found by (piece_id, off), a key
		// of 16 bytes instead of one that repeats the multihash: every
		// insert writes this index too, and on a busy server the smaller
		// one is cheaper to maintain. A piece's offsets are unique (one
		// entry per block, at its section's offset).
		`CREATE INDEX IF NOT EXISTS entries_piece_off ON ` + s + `.entries (piece_id, off)`,
	}}
}

// Ensure checks that the database answers and creates or upgrades the
// schema. It is idempotent and safe when several nodes run it at once. It
// also resumes the reclaims a Close or crash interrupted.
func (r *Repo) Ensure(ctx context.Context) error {
	var err error
	// Concurrent CREATE ... IF NOT EXISTS can still collide in the catalog
	// (PostgreSQL checks for the name before it inserts it): the loser
	// runs again and finds it there.
	for attempt := 0; attempt < 20; attempt++ {
		if err = r.call(ctx, r.ensure); err == nil || !catalogRace(err) {
			break
		}
	}
	if err != nil {
		return r.errorf("schema %s: %w", r.q.schema, err)
	}
	r.wake()
	return nil
}

func (r *Repo) ensure(ctx context.Context) error {
	s := r.q.schema
	if _, err := r.pool.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+s); err != nil {
		return err
	}
	if _, err := r.pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+s+`.version (version INT PRIMARY KEY)`); err != nil {
		return err
	}
	cur, err := r.version(ctx)
	if err != nil {
		return err
	}
	if cur > SchemaVersion {
		return fmt.Errorf("schema is at version %d, newer than this dagwrap's (%d)", cur, SchemaVersion)
	}
	steps := migrations(s)
	for v := cur + 1; v <= SchemaVersion; v++ {
		for _, stmt := range steps[v-1] {
			if _, err := r.pool.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("upgrade to version %d: %w", v, err)
			}
		}
		if v == 2 {
			if err := r.dropOldIndex(ctx); err != nil {
				return fmt.Errorf("upgrade to version %d: %w", v, err)
			}
		}
		if _, err := r.pool.Exec(ctx, `INSERT INTO `+s+`.version (version) VALUES ($1) ON CONFLICT DO NOTHING`, v); err != nil {
			return fmt.Errorf("upgrade to version %d: %w", v, err)
		}
	}
	return nil
}

// dropOldIndex drops version 1's (piece_id, mh) index where a version 1
// schema built it. It is looked up first, so that a schema created at
// version 2 never runs the DROP, whose index-name syntax engines differ on.
func (r *Repo) dropOldIndex(ctx context.Context) error {
	var n int
	if err := r.pool.QueryRow(ctx, `SELECT count(*) FROM pg_catalog.pg_indexes WHERE schemaname = $1 AND indexname = 'entries_piece'`,
		r.q.schemaName).Scan(&n); err != nil || n == 0 {
		return err
	}
	_, err := r.pool.Exec(ctx, `DROP INDEX IF EXISTS `+r.q.schema+`.entries_piece`)
	return err
}

func (r *Repo) version(ctx context.Context) (int, error) {
	var v *int32
	if err := r.pool.QueryRow(ctx, `SELECT max(version) FROM `+r.q.schema+`.version`).Scan(&v); err != nil {
		return 0, err
	}
	if v == nil {
		return 0, nil
	}
	return int(*v), nil
}

// catalogRace reports a duplicate-name error from concurrent DDL.
func catalogRace(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "23505", "42P06", "42P07", "42710": // unique violation, duplicate schema/table/object
		return true
	}
	return false
}

// queries holds the statements, with the schema name quoted in.
type queries struct {
	schema                   string
	schemaName               string         // unquoted, for the catalog
	entriesTable             pgx.Identifier // for COPY
	insertPiece, lockPiece   string
	insertHolding, complete  string
	insertEntries            string
	lookup, offsets, entries string
	page, count              string
	myHolding, myPieces      string
	dropHolding, anyHolding  string
	retirePiece, addReclaim  string
	pendingReclaims          string
	deleteEntries, doneClaim string
}

func newQueries(schema string) queries {
	s := pgx.Identifier{schema}.Sanitize()
	return queries{
		schema:        s,
		schemaName:    schema,
		entriesTable:  pgx.Identifier{schema, "entries"},
		insertPiece:   `INSERT INTO ` + s + `.pieces (piece) VALUES ($1) ON CONFLICT (piece) DO NOTHING`,
		lockPiece:     `SELECT id FROM ` + s + `.pieces WHERE piece = $1 FOR UPDATE`,
		insertHolding: `INSERT INTO ` + s + `.holdings (piece_id, node, state) VALUES ($1, $2, 0) ON CONFLICT (piece_id, node) DO NOTHING`,
		complete:      `UPDATE ` + s + `.holdings SET state = 1 WHERE piece_id = $1 AND node = $2`,
		insertEntries: `INSERT INTO ` + s + `.entries (mh, piece_id, off)
			SELECT t.m, $1, t.o FROM unnest($2::BYTEA[], $3::BIGINT[]) AS t(m, o)
			ON CONFLICT DO NOTHING`,
		lookup: `SELECT p.piece FROM ` + s + `.entries e JOIN ` + s + `.pieces p ON p.id = e.piece_id
			WHERE e.mh = $1 AND EXISTS (SELECT 1 FROM ` + s + `.holdings h WHERE h.piece_id = e.piece_id AND h.state = 1)`,
		offsets: `SELECT off FROM ` + s + `.entries WHERE mh = $1 AND piece_id = $2`,
		page: `SELECT mh, off FROM ` + s + `.entries WHERE piece_id = $1 AND off > $2
			ORDER BY off LIMIT $3`,
		count: `SELECT count(*) FROM ` + s + `.entries WHERE piece_id = $1`,
		myHolding: `SELECT h.piece_id, h.state FROM ` + s + `.holdings h JOIN ` + s + `.pieces p ON p.id = h.piece_id
			WHERE p.piece = $1 AND h.node = $2`,
		myPieces: `SELECT p.piece FROM ` + s + `.holdings h JOIN ` + s + `.pieces p ON p.id = h.piece_id
			WHERE h.node = $1`,
		dropHolding:     `DELETE FROM ` + s + `.holdings WHERE piece_id = $1 AND node = $2`,
		anyHolding:      `SELECT EXISTS (SELECT 1 FROM ` + s + `.holdings WHERE piece_id = $1)`,
		retirePiece:     `DELETE FROM ` + s + `.pieces WHERE id = $1`,
		addReclaim:      `INSERT INTO ` + s + `.reclaim (piece_id) VALUES ($1) ON CONFLICT DO NOTHING`,
		pendingReclaims: `SELECT piece_id FROM ` + s + `.reclaim`,
		deleteEntries: `DELETE FROM ` + s + `.entries WHERE piece_id = $1 AND off IN
			(SELECT off FROM ` + s + `.entries WHERE piece_id = $1 LIMIT $2)`,
		doneClaim: `DELETE FROM ` + s + `.reclaim WHERE piece_id = $1`,
	}
}
