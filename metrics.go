package dagwrap

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/filecoin-project/dagstore/throttle"
	logging "github.com/ipfs/go-log/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// Metric names. Everything dagwrap exports starts with "dagwrap_"; the
// README's metrics list says what each one means.
const (
	metricsNamespace = "dagwrap"
	// datastorePrefix names go-ds-measure's metrics of the shard-state
	// datastore: dagwrap_datastore_<op>_total, _errors_total, _latency_seconds.
	// Each Wrapper's go-metrics-interface scope adds "#<id>" to it (see
	// metricsregistry.go): '#' is not valid in a Prometheus name, so such a
	// name can never land on another implementation's registry.
	datastorePrefix = "dagwrap.datastore"
)

// Operations counted in dagwrap_operations_total and timed in
// dagwrap_operation_duration_seconds.
const (
	opRegister = "register" // a registration, from the call to its result
	opAcquire  = "acquire"  // LoadShard, from the call to the blockstore
	opIndex    = "index"    // a shard's initialisation: fetch and index
	opRecover  = "recover"  // a recovery: drop the index, fetch and index again
	opGC       = "gc"       // one transients GC run
)

// Outcomes of an operation.
const (
	outcomeSuccess   = "success"
	outcomeFailure   = "failure"
	outcomeCancelled = "cancelled" // the caller's context ended, or the Wrapper closed
)

// Throttles of MinerAPI calls, as labels.
const (
	throttleStorage = "storage" // every MinerAPI call (Config.MaxConcurrencyStorageCalls)
	throttleUnseal  = "unseal"  // fetches of sealed pieces (Config.MaxConcurrentUnseals)
)

// durationBuckets spans a lookup of an indexed shard (milliseconds) to an
// unseal and index of a 64 GiB piece (an hour).
var durationBuckets = []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600}

// traceEvents names the dagstore's operations in dagwrap_shard_events_total.
var traceEvents = map[dagstore.OpType]string{
	dagstore.OpShardRegister:      "register",
	dagstore.OpShardInitialize:    "initialize",
	dagstore.OpShardMakeAvailable: "make_available",
	dagstore.OpShardDestroy:       "destroy",
	dagstore.OpShardAcquire:       "acquire",
	dagstore.OpShardFail:          "fail",
	dagstore.OpShardRelease:       "release",
	dagstore.OpShardRecover:       "recover",
}

// stateLabels names shard states in dagwrap_shards.
var stateLabels = map[dagstore.ShardState]string{
	dagstore.ShardStateNew:          "new",
	dagstore.ShardStateInitializing: "initializing",
	dagstore.ShardStateAvailable:    "available",
	dagstore.ShardStateServing:      "serving",
	dagstore.ShardStateRecovering:   "recovering",
	dagstore.ShardStateErrored:      "errored",
	dagstore.ShardStateUnknown:      "unknown",
}

// metrics is one Wrapper's instrumentation. A nil *metrics (no WithMetrics)
// is valid: every method is then a no-op that reads no clock.
type metrics struct {
	reg *recordingRegisterer
	log *logging.ZapEventLogger

	ops      *prometheus.CounterVec
	duration *prometheus.HistogramVec
	events   *prometheus.CounterVec
	inFlight *prometheus.GaugeVec
	waiting  *prometheus.GaugeVec

	// pending times the initialisations and recoveries under way, by shard.
	// Only the trace goroutine touches it.
	pending map[shard.Key]pendingOp
}

type pendingOp struct {
	op    string
	start time.Time
}

// newMetrics registers w's metrics on reg; a nil reg means no metrics. A
// registry that already holds them (another Wrapper's) is an error.
func newMetrics(w *Wrapper, reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		reg: &recordingRegisterer{inner: reg},
		log: w.log,
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "operations_total",
			Help: "Shard operations (register, acquire, index, recover, gc) by outcome (success, failure, cancelled).",
		}, []string{"op", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Name: "operation_duration_seconds",
			Help:    "Latency of shard operations, by operation and outcome (migration registrations are counted, not timed).",
			Buckets: durationBuckets,
		}, []string{"op", "outcome"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "shard_events_total",
			Help: "Events processed by the dagstore's event loop, by kind.",
		}, []string{"event"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Name: "minerapi_calls_in_flight",
			Help: "MinerAPI calls holding a slot of each throttle (storage: every call; unseal: fetches of sealed pieces).",
		}, []string{"throttle"}),
		waiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Name: "minerapi_calls_waiting",
			Help: "MinerAPI calls waiting for a slot of each throttle.",
		}, []string{"throttle"}),
		pending: make(map[shard.Key]pendingOp),
	}
	// Every series exists from the start, so rate() and alerts see zeros
	// instead of gaps.
	for _, op := range []string{opRegister, opAcquire, opIndex, opRecover, opGC} {
		for _, oc := range []string{outcomeSuccess, outcomeFailure, outcomeCancelled} {
			m.ops.WithLabelValues(op, oc)
			m.duration.WithLabelValues(op, oc)
		}
	}
	for _, ev := range traceEvents {
		m.events.WithLabelValues(ev)
	}
	for _, th := range []string{throttleStorage, throttleUnseal} {
		m.inFlight.WithLabelValues(th)
		m.waiting.WithLabelValues(th)
	}
	for _, c := range []prometheus.Collector{m.ops, m.duration, m.events, m.inFlight, m.waiting, newStateCollector(w)} {
		if err := m.reg.Register(c); err != nil {
			m.unregister()
			return nil, errors.Join(errors.New("register metrics (Wrappers sharing a Registerer need their own labels: prometheus.WrapRegistererWith)"), err)
		}
	}
	return m, nil
}

// now returns the start time of an operation to observe; zero without metrics.
func (m *metrics) now() time.Time {
	if m == nil {
		return time.Time{}
	}
	return time.Now()
}

// observe counts an operation by outcome and, if start is set, times it.
func (m *metrics) observe(op string, start time.Time, err error) {
	if m == nil {
		return
	}
	oc := outcome(err)
	m.ops.WithLabelValues(op, oc).Inc()
	if !start.IsZero() {
		m.duration.WithLabelValues(op, oc).Observe(time.Since(start).Seconds())
	}
}

// count counts an operation whose latency is not known.
func (m *metrics) count(op string, err error) { m.observe(op, time.Time{}, err) }

func outcome(err error) string {
	switch {
	case err == nil:
		return outcomeSuccess
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded), errors.Is(err, ErrClosed):
		return outcomeCancelled
	default:
		return outcomeFailure
	}
}

// errShardFailed stands for a failure trace that carries no error.
var errShardFailed = errors.New("shard failed")

// trace counts a dagstore event and times initialisations and recoveries,
// from the event that starts one to the MakeAvailable or Fail that ends it.
// Called by the trace goroutine only.
func (m *metrics) trace(t dagstore.Trace) {
	if m == nil {
		return
	}
	if ev, ok := traceEvents[t.Op]; ok {
		m.events.WithLabelValues(ev).Inc()
	}
	switch t.Op {
	case dagstore.OpShardInitialize:
		m.pending[t.Key] = pendingOp{op: opIndex, start: time.Now()}
	case dagstore.OpShardRecover:
		// A refused recovery (the shard was not errored) leaves the state as is.
		if t.After.ShardState == dagstore.ShardStateRecovering {
			m.pending[t.Key] = pendingOp{op: opRecover, start: time.Now()}
		}
	case dagstore.OpShardMakeAvailable, dagstore.OpShardFail:
		p, ok := m.pending[t.Key]
		if !ok {
			return // a failed acquire, say: not an initialisation
		}
		delete(m.pending, t.Key)
		var err error
		if t.Op == dagstore.OpShardFail {
			if err = t.After.Error; err == nil {
				err = errShardFailed
			}
		}
		m.observe(p.op, p.start, err)
	case dagstore.OpShardDestroy:
		delete(m.pending, t.Key)
	}
}

// meterThrottles makes the API's throttles report calls in flight and
// waiting. Without metrics the throttles stay as they are.
func (m *metrics) meterThrottles(a *gatedAPI) {
	if m == nil {
		return
	}
	a.storage = &meteredThrottle{inner: a.storage, inFlight: m.inFlight.WithLabelValues(throttleStorage), waiting: m.waiting.WithLabelValues(throttleStorage)}
	a.unseal = &meteredThrottle{inner: a.unseal, inFlight: m.inFlight.WithLabelValues(throttleUnseal), waiting: m.waiting.WithLabelValues(throttleUnseal)}
}

// meteredThrottle counts the calls waiting for and holding a throttle slot.
type meteredThrottle struct {
	inner             throttle.Throttler
	inFlight, waiting prometheus.Gauge
}

func (t *meteredThrottle) Do(ctx context.Context, fn func(context.Context) error) error {
	t.waiting.Inc()
	entered := false // Do runs fn on this goroutine, or not at all
	err := t.inner.Do(ctx, func(ctx context.Context) error {
		entered = true
		t.waiting.Dec()
		t.inFlight.Inc()
		defer t.inFlight.Dec()
		return fn(ctx)
	})
	if !entered {
		t.waiting.Dec()
	}
	return err
}

// unregister removes every metric the Wrapper registered, so that the node
// can open another Wrapper on the same registry. Safe more than once.
func (m *metrics) unregister() {
	if m == nil {
		return
	}
	m.reg.unregisterAll()
}

// stateCollector reports, at scrape time, what the dagstore and the disk
// hold: shards by state, transients and indexes. Reading them when scraped
// keeps no second copy of the dagstore's state and is exact after restarts.
type stateCollector struct {
	w                                                       *Wrapper
	shards, transients, transientBytes, indexes, indexBytes *prometheus.Desc
}

func newStateCollector(w *Wrapper) *stateCollector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, "", name), help, labels, nil)
	}
	return &stateCollector{
		w:              w,
		shards:         desc("shards", "Shards by state (records that cannot be restored count as errored).", "state"),
		transients:     desc("transients", "Transient copies of pieces in RootDir/transients."),
		transientBytes: desc("transients_bytes", "Bytes of the transient copies in RootDir/transients."),
		indexes:        desc("indexes", "Shard indexes in the index repo."),
		indexBytes:     desc("indexes_bytes", "Bytes of the shard indexes in the index repo."),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.shards, c.transients, c.transientBytes, c.indexes, c.indexBytes} {
		ch <- d
	}
}

// Collect reports nothing before Start and after Close.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	w := c.w
	done, err := w.begin()
	if err != nil {
		return
	}
	defer done()

	byState := make(map[string]int, len(stateLabels))
	for _, l := range stateLabels {
		byState[l] = 0
	}
	infos, bad := w.shards.all()
	for _, info := range infos {
		l, ok := stateLabels[info.ShardState]
		if !ok {
			l = stateLabels[dagstore.ShardStateUnknown]
		}
		byState[l]++
	}
	for k := range bad {
		if _, known := infos[k]; !known {
			byState[stateLabels[dagstore.ShardStateErrored]]++
		}
	}
	for l, n := range byState {
		ch <- prometheus.MustNewConstMetric(c.shards, prometheus.GaugeValue, float64(n), l)
	}

	if n, size, err := dirUsage(filepath.Join(w.cfg.RootDir, transientsDir)); err == nil {
		ch <- prometheus.MustNewConstMetric(c.transients, prometheus.GaugeValue, float64(n))
		ch <- prometheus.MustNewConstMetric(c.transientBytes, prometheus.GaugeValue, float64(size))
	} else {
		w.log.Debugw("metrics: cannot read the transients folder", "error", err)
	}
	if n, err := w.st.irepo.Len(); err == nil {
		ch <- prometheus.MustNewConstMetric(c.indexes, prometheus.GaugeValue, float64(n))
	}
	if size, err := w.st.irepo.Size(); err == nil {
		ch <- prometheus.MustNewConstMetric(c.indexBytes, prometheus.GaugeValue, float64(size))
	}
}

// dirUsage counts the regular files directly in dir and their bytes.
func dirUsage(dir string) (n int, size int64, err error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed since the listing: GC at work
		}
		n++
		size += info.Size()
	}
	return n, size, nil
}
