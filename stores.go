package dagwrap

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/filecoin-project/dagstore/index"
	ds "github.com/ipfs/go-datastore"
	levelds "github.com/ipfs/go-ds-leveldb"
	logging "github.com/ipfs/go-log/v2"
	ldberrors "github.com/syndtr/goleveldb/leveldb/errors"
	ldbopts "github.com/syndtr/goleveldb/leveldb/opt"

	"github.com/spstack/dagwrap/internal/pgindex"
)

// stores are where a Wrapper keeps its state: the shard-state datastore,
// the index repo and the top-level index (dagwrap's own, the node's, or the
// index database's).
type stores struct {
	store     ds.Batching // shard records and dagwrap's own keys, measured
	nodeStore bool        // store is the node's (WithDatastore): synced, not closed
	irepo     index.FullIndexRepo
	tli       *topLevel      // dagwrap's own top-level index; nil when another is in use
	top       index.Inverted // the top-level index in use: tli, the node's or indexDB
	indexDB   *pgindex.Repo  // the piece directory in a database, if configured
	log       *logging.ZapEventLogger
}

// open opens (creating if needed) the stores under root, or takes the
// node's from o. On error, close releases what was opened.
func (st *stores) open(ctx context.Context, cfg Config, o options, m *metrics) (err error) {
	store := o.store
	st.nodeStore = store != nil
	if store == nil {
		if store, err = openLevelDB(filepath.Join(cfg.RootDir, datastoreDir), st.log); err != nil {
			return fmt.Errorf("open shard-state datastore: %w", err)
		}
	}
	st.store = m.measureDatastore(store)
	if err := st.openIndexDB(ctx, cfg, &o); err != nil {
		return fmt.Errorf("index database: %w", err)
	}
	if st.irepo = o.irepo; st.irepo == nil {
		if st.irepo, err = newIndexRepo(filepath.Join(cfg.RootDir, indexDir)); err != nil {
			return fmt.Errorf("open index repo: %w", err)
		}
	}
	if st.top = o.top; st.top == nil {
		if st.tli, err = openTopLevel(topLevelPath(cfg.RootDir), st.store, st.log); err != nil {
			return err
		}
		if r, ok := st.irepo.(*indexRepo); ok { // its indexes can be memory-mapped
			st.tli.indexes = r
		}
		st.top = st.tli
	}
	return nil
}

// openLevelDB opens the shard-state LevelDB: no compression, synced
// writes, strict checks. A process killed in the middle of a journal write
// leaves a torn record at the journal's tail, which strict journal checks
// refuse to replay; that record was never acknowledged (writes are synced
// before they return), so it is dropped rather than the root refused: the
// journal checks are relaxed for the replay of that one open.
func openLevelDB(path string, log *logging.ZapEventLogger) (*levelds.Datastore, error) {
	opts := levelds.Options{Compression: ldbopts.NoCompression, NoSync: false, Strict: ldbopts.StrictAll}
	db, err := levelds.NewDatastore(path, &opts)
	if !ldberrors.IsCorrupted(err) {
		return db, err
	}
	log.Warnw("shard-state journal has a torn tail (the last run was killed mid-write); dropping it", "path", path, "error", err)
	opts.Strict = ldbopts.StrictAll &^ ldbopts.StrictJournal &^ ldbopts.StrictJournalChecksum
	return levelds.NewDatastore(path, &opts)
}

// close closes the stores the Wrapper opened. A node's datastore is only
// synced: the node closes it.
func (st *stores) close() error {
	if st.indexDB != nil {
		_ = st.indexDB.Close()
	}
	if st.tli != nil {
		if err := st.tli.close(); err != nil {
			st.log.Warnw("closing the top-level index", "error", err)
		}
	}
	if st.store == nil {
		return nil
	}
	if st.nodeStore {
		return st.store.Sync(context.Background(), ds.NewKey("/"))
	}
	return st.store.Close()
}
