package dagwrap

import (
	"context"

	"github.com/filecoin-project/dagstore/index"
	"github.com/filecoin-project/dagstore/shard"
	ds "github.com/ipfs/go-datastore"
	logging "github.com/ipfs/go-log/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// Option replaces one of the parts a Wrapper builds by default, for a node
// that already has its own. New(cfg, api) with no options keeps every default:
// LevelDB under RootDir/datastore, the FS index repo under RootDir/index,
// dagwrap's own top-level index, the "dagwrap" logger and no metrics.
type Option func(*options)

type options struct {
	store      ds.Batching
	irepo      index.FullIndexRepo
	top        index.Inverted
	loggerName string
	registerer prometheus.Registerer
	db         indexDBOptions
}

// WithDatastore keeps shard state (and dagwrap's top-level index, unless
// WithTopLevelIndex replaces it) in the node's datastore instead of LevelDB
// under RootDir. Pass a datastore of its own, such as a namespace.Wrap of the
// node's, as dagwrap writes under /dagstore and /dagwrap.
//
// The node owns it: Close syncs it but does not close it. RootDir is still
// required and still locked; it holds the transients and the migration
// marker (and the index repo unless WithIndexRepo replaces it).
func WithDatastore(d ds.Batching) Option {
	return func(o *options) { o.store = d }
}

// WithIndexRepo keeps the shards' CARv2 indexes in the node's repo instead of
// the FS repo under RootDir/index. Destroying a shard drops its index there.
func WithIndexRepo(r index.FullIndexRepo) Option {
	return func(o *options) { o.irepo = r }
}

// WithTopLevelIndex uses the node's multihash -> pieces index instead of
// dagwrap's own. The dagstore adds every indexed piece to it and
// GetPiecesContainingBlock reads it.
//
// dagwrap's own index also removes a destroyed piece's entries and is
// reconciled with the shard indexes at start-up; the node's index is trusted
// as it is. If it has a method RemoveShard(ctx, index.MultihashIterator,
// shard.Key) error, destroy calls it; otherwise a destroyed piece's entries
// stay behind (lookups never report a piece the dagstore does not know).
func WithTopLevelIndex(idx index.Inverted) Option {
	return func(o *options) { o.top = idx }
}

// WithLoggerName logs under name (go-log/v2) instead of "dagwrap", and the
// dagstore's shard events under name+".dagstore" instead of "dagstore", so the
// node sets their levels with its own logging configuration.
func WithLoggerName(name string) Option {
	return func(o *options) { o.loggerName = name }
}

// WithMetrics registers dagwrap's Prometheus metrics on reg; Close
// unregisters them. They are all named dagwrap_*: shards by state, operation
// counts by outcome and latencies (register, acquire, index, recover, gc),
// dagstore events, transients and indexes on disk, MinerAPI calls in flight
// and waiting on each throttle, and the shard-state datastore's operations
// (go-ds-measure, routed to reg through go-metrics-interface; see the
// README). Without WithMetrics nothing is measured and nothing is
// registered anywhere.
//
// Two Wrappers cannot register on one registry as they are: give each its
// own labels with prometheus.WrapRegistererWith.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(o *options) { o.registerer = reg }
}

// shardRemover is a top-level index that can forget a destroyed shard.
// dagwrap's own index is one; a node's index may be one.
type shardRemover interface {
	RemoveShard(ctx context.Context, it index.MultihashIterator, k shard.Key) error
}

var _ shardRemover = (*topIndex)(nil)

// loggers returns the Wrapper's loggers: dagwrap's and the one dagstore
// events are logged to, named after WithLoggerName if given.
func (o options) loggers() (main, events *logging.ZapEventLogger) {
	if o.loggerName == "" {
		return log, traceLog
	}
	return logging.Logger(o.loggerName), logging.Logger(o.loggerName + ".dagstore")
}
