package dagwrap

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	_ "unsafe" // for go:linkname

	ds "github.com/ipfs/go-datastore"
	measure "github.com/ipfs/go-ds-measure"
	gometrics "github.com/ipfs/go-metrics-interface"
	"github.com/prometheus/client_golang/prometheus"
)

// go-ds-measure creates its metrics through go-metrics-interface, whose
// constructor is process-wide and set once (InjectImpl). dagwrap installs,
// once per process, a router in front of it: names in a Wrapper's own
// scope (datastorePrefix + "#<id>.") become Prometheus metrics on that
// Wrapper's Registerer, named dagwrap_datastore_*; every other name goes to
// what go-metrics-interface would have used without dagwrap: the
// constructor the node injected before, or none (no-op metrics). Nothing is
// registered on prometheus.DefaultRegisterer.

// injectedImpl is go-metrics-interface's constructor (its unexported
// ctorImpl). go-metrics-interface has no other way to read it, and wrapping
// the node's implementation needs it: InjectImpl refuses a second one. Read
// and written only by installRouter, once; go.mod pins the version whose
// variable this is, and TestMetricsProcessWide checks the wrapping.
//
//go:linkname injectedImpl github.com/ipfs/go-metrics-interface.ctorImpl
var injectedImpl gometrics.InternalNew

var (
	routerOnce sync.Once
	router     = &metricsRouter{sinks: make(map[string]*metrics)}
	scopeSeq   atomic.Uint64
)

// metricsRouter routes go-metrics-interface names to the Wrappers whose
// go-ds-measure is being created, and every other name to next.
type metricsRouter struct {
	next gometrics.InternalNew // set before the router is installed

	mu    sync.Mutex
	sinks map[string]*metrics // by scope id, while measure.New runs
}

// installRouter puts the router in front of go-metrics-interface's
// constructor, once per process.
func installRouter() {
	routerOnce.Do(func() {
		if !gometrics.Active() {
			// Without an implementation go-metrics-interface hands out
			// no-op metrics: keep handing out exactly those.
			noop := gometrics.New(datastorePrefix, "")
			router.next = func(string, string) gometrics.Creator { return noop }
			if gometrics.InjectImpl(router.new) == nil {
				return
			}
			// The node injected one in between: wrap it as below.
		}
		router.next = injectedImpl
		injectedImpl = router.new
	})
}

func (r *metricsRouter) new(name, help string) gometrics.Creator {
	if rest, ok := strings.CutPrefix(name, datastorePrefix+"#"); ok {
		if id, metric, ok := strings.Cut(rest, "."); ok {
			r.mu.Lock()
			m := r.sinks[id]
			r.mu.Unlock()
			if m != nil {
				return &promCreator{
					m:    m,
					name: metricsNamespace + "_datastore_" + strings.ReplaceAll(metric, ".", "_"),
					help: help,
				}
			}
		}
	}
	return r.next(name, help)
}

// measureDatastore wraps d in go-ds-measure, whose operation counts and
// latencies then appear on the Wrapper's registerer as dagwrap_datastore_*.
// Without metrics d is returned as it is: measuring into no-op metrics
// would still cost a clock read per operation.
func (m *metrics) measureDatastore(d ds.Batching) ds.Batching {
	if m == nil {
		return d
	}
	installRouter()
	id := strconv.FormatUint(scopeSeq.Add(1), 10)
	// go-ds-measure creates every metric in New: the scope is routed only
	// while it runs.
	router.mu.Lock()
	router.sinks[id] = m
	router.mu.Unlock()
	defer func() {
		router.mu.Lock()
		delete(router.sinks, id)
		router.mu.Unlock()
	}()
	return measure.New(datastorePrefix+"#"+id, d)
}

// promCreator creates one go-ds-measure metric on a Wrapper's registerer.
type promCreator struct {
	m          *metrics
	name, help string
}

var _ gometrics.Creator = (*promCreator)(nil)

// register registers c; a metric that cannot be registered still counts,
// unexported, so the datastore works either way.
func (p *promCreator) register(c prometheus.Collector) {
	if err := p.m.reg.Register(c); err != nil {
		p.m.log.Warnw("datastore metric not exported", "metric", p.name, "error", fmt.Errorf("register %s: %w", p.name, err))
	}
}

func (p *promCreator) Counter() gometrics.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: p.name, Help: p.help})
	p.register(c)
	return c
}

func (p *promCreator) CounterVec(labels []string) gometrics.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: p.name, Help: p.help}, labels)
	p.register(c)
	return counterVec{c}
}

func (p *promCreator) Gauge() gometrics.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: p.name, Help: p.help})
	p.register(g)
	return g
}

func (p *promCreator) Histogram(buckets []float64) gometrics.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: p.name, Help: p.help, Buckets: buckets})
	p.register(h)
	return h
}

func (p *promCreator) Summary(o gometrics.SummaryOpts) gometrics.Summary {
	s := prometheus.NewSummary(prometheus.SummaryOpts{
		Name: p.name, Help: p.help,
		Objectives: o.Objectives, MaxAge: o.MaxAge, AgeBuckets: o.AgeBuckets, BufCap: o.BufCap,
	})
	p.register(s)
	return s
}

type counterVec struct{ *prometheus.CounterVec }

func (c counterVec) WithLabelValues(lvs ...string) gometrics.Counter {
	return c.CounterVec.WithLabelValues(lvs...)
}

// recordingRegisterer registers on the node's registerer and remembers what
// it registered, to unregister it on Close.
type recordingRegisterer struct {
	inner prometheus.Registerer

	mu         sync.Mutex
	registered []prometheus.Collector
}

var _ prometheus.Registerer = (*recordingRegisterer)(nil)

func (r *recordingRegisterer) Register(c prometheus.Collector) error {
	if err := r.inner.Register(c); err != nil {
		return err
	}
	r.mu.Lock()
	r.registered = append(r.registered, c)
	r.mu.Unlock()
	return nil
}

func (r *recordingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r *recordingRegisterer) Unregister(c prometheus.Collector) bool {
	r.mu.Lock()
	for i, rc := range r.registered {
		if rc == c {
			r.registered = append(r.registered[:i], r.registered[i+1:]...)
			break
		}
	}
	r.mu.Unlock()
	return r.inner.Unregister(c)
}

func (r *recordingRegisterer) unregisterAll() {
	r.mu.Lock()
	cs := r.registered
	r.registered = nil
	r.mu.Unlock()
	for _, c := range cs {
		r.inner.Unregister(c)
	}
}
