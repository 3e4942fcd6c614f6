package dagwrap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
	gometrics "github.com/ipfs/go-metrics-interface"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// scrape gathers g and returns the value of the series name{labels} (label
// pairs as "k", "v", ...): a counter's or gauge's value, a histogram's
// sample count. ok is false when there is no such series.
func scrape(t testing.TB, g prometheus.Gatherer, name string, labels ...string) (v float64, ok bool) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue series
				}
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				return m.GetCounter().GetValue(), true
			case dto.MetricType_GAUGE:
				return m.GetGauge().GetValue(), true
			case dto.MetricType_HISTOGRAM:
				return float64(m.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

// value is scrape that fails the test when the series is missing.
func value(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	v, ok := scrape(t, g, name, labels...)
	if !ok {
		t.Fatalf("no series %s%v", name, labels)
	}
	return v
}

func expectValue(t testing.TB, g prometheus.Gatherer, want float64, name string, labels ...string) {
	t.Helper()
	if got := value(t, g, name, labels...); got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

func waitValue(t testing.TB, g prometheus.Gatherer, want float64, name string, labels ...string) {
	t.Helper()
	waitFor(t, name+strings.Join(labels, ","), func() bool {
		v, _ := scrape(t, g, name, labels...)
		return v == want
	})
}

// filesIn counts the files in dir and their bytes, independently of the
// code under test.
func filesIn(t testing.TB, dir string) (n int, size int64) {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		n++
		size += st.Size()
	}
	return n, size
}

// TestMetricsMatchOperations runs real operations, scrapes the registry and
// checks every number against what happened.
func TestMetricsMatchOperations(t *testing.T) {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	api := newFakeAPI(false) // sequential reads: pieces are copied to transients
	good := api.addPiece(t, "testdata/sample.car")
	bad := api.addPiece(t, "testdata/corrupt.car")
	root := t.TempDir()
	w := openWith(t, root, api, Config{GCInterval: time.Hour}, WithMetrics(reg))
	<-w.reconciled // its writes would be counted too

	if err := w.RegisterShardSync(ctx, good, "", true); err != nil {
		t.Fatal(err)
	}
	if err := w.RegisterShardSync(ctx, bad, "", true); err == nil {
		t.Fatal("registering a corrupt piece eagerly succeeded")
	}
	expectValue(t, reg, 1, "dagwrap_operations_total", "op", "register", "outcome", "success")
	expectValue(t, reg, 1, "dagwrap_operations_total", "op", "register", "outcome", "failure")
	expectValue(t, reg, 1, "dagwrap_operation_duration_seconds", "op", "register", "outcome", "success")
	// The corrupt piece fails to index and gets its one automatic recovery,
	// which fails to index again. The trace goroutine sees these events
	// after the fact.
	waitValue(t, reg, 2, "dagwrap_shard_events_total", "event", "fail")
	expectValue(t, reg, 2, "dagwrap_shard_events_total", "event", "register")
	expectValue(t, reg, 1, "dagwrap_shard_events_total", "event", "recover")
	expectValue(t, reg, 0, "dagwrap_shard_events_total", "event", "destroy")
	expectValue(t, reg, 1, "dagwrap_operations_total", "op", "index", "outcome", "success")
	expectValue(t, reg, 1, "dagwrap_operations_total", "op", "index", "outcome", "failure")
	expectValue(t, reg, 0, "dagwrap_operations_total", "op", "recover", "outcome", "success")
	expectValue(t, reg, 1, "dagwrap_operations_total", "op", "recover", "outcome", "failure")
	expectValue(t, reg, 1, "dagwrap_operation_duration_seconds", "op", "index", "outcome", "success")
	expectValue(t, reg, 1, "dagwrap_shards", "state", "available")
	expectValue(t, reg, 1, "dagwrap_shards", "state", "errored")
	expectValue(t, reg, 0, "dagwrap_shards", "state", "serving")

	bs, err := w.LoadShard(ctx, good)
	if err != nil {
		t.Fatal(err)
	}
	expectValue(t, reg, 1, "dagwrap_shards", "state", "serving")
	if _, err := bs.Get(ctx, carBlocks(t, "testdata/sample.car")[0].Cid()); err != nil {
		t.Fatal(err)
	}
	if err := bs.Close(); err != nil {
		t.Fatal(err)
	}
	waitValue(t, reg, 1, "dagwrap_shards", "state", "available") // the release is processed after Close returns
	if _, err := w.LoadShard(ctx, bad); err == nil {
		t.Fatal("loading an errored shard succeeded")
	}
	expectValue(t, reg, 1, "dagwrap_operations_total", "op", "acquire", "outcome", "success")
	expectValue(t, reg, 1, "dagwrap_operations_total", "op", "acquire", "outcome", "failure")
	expectValue(t, reg, 1, "dagwrap_operation_duration_seconds", "op", "acquire", "outcome", "success")

	// Disk: the metrics must say what the folders hold.
	tdir := filepath.Join(root, transientsDir)
	n, size := filesIn(t, tdir)
	goodTransient, err := os.Stat(transientPath(root, shard.KeyFromCID(good)))
	if err != nil {
		t.Fatalf("the sequential piece has no transient: %v", err)
	}
	if size < goodTransient.Size() {
		t.Fatalf("transients hold %d bytes, less than the good piece's %d", size, goodTransient.Size())
	}
	expectValue(t, reg, float64(n), "dagwrap_transients")
	expectValue(t, reg, float64(size), "dagwrap_transients_bytes")
	st, err := w.st.irepo.StatFullIndex(shard.KeyFromCID(good))
	if err != nil || !st.Exists {
		t.Fatalf("no index for the good piece: %v", err)
	}
	expectValue(t, reg, 1, "dagwrap_indexes")
	expectValue(t, reg, float64(st.Size), "dagwrap_indexes_bytes")

	if _, err := w.shards.gc(ctx); err != nil {
		t.Fatal(err)
	}
	expectValue(t, reg, 1, "dagwrap_operations_total", "op", "gc", "outcome", "success")
	if n, _ := filesIn(t, tdir); n != 0 {
		t.Fatalf("%d transients left after GC", n)
	}
	expectValue(t, reg, 0, "dagwrap_transients")
	expectValue(t, reg, 0, "dagwrap_transients_bytes")

	// LevelDB, through go-ds-measure: shard records are single puts (the
	// top-level index has a LevelDB of its own); only a migration's group
	// commit batches them, one batched put per registration.
	expectValue(t, reg, 0, "dagwrap_datastore_batchput_total")
	migrateN(t, w, 3)
	expectValue(t, reg, 3, "dagwrap_datastore_batchput_total")
	puts := value(t, reg, "dagwrap_datastore_put_total")
	if puts == 0 {
		t.Error("no datastore puts counted, though shard state was persisted")
	}
	expectValue(t, reg, puts, "dagwrap_datastore_put_latency_seconds")

	// Nothing was in flight or waiting at the end.
	for _, th := range []string{throttleStorage, throttleUnseal} {
		expectValue(t, reg, 0, "dagwrap_minerapi_calls_in_flight", "throttle", th)
		expectValue(t, reg, 0, "dagwrap_minerapi_calls_waiting", "throttle", th)
	}

	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if mfs, _ := reg.Gather(); len(mfs) != 0 {
		t.Errorf("Close left %d metric families registered, first %s", len(mfs), mfs[0].GetName())
	}
}

// variant writes the CAR at src zero-padded to size bytes: with the same
// blocks, a distinct piece if the padding reaches another power-of-two piece
// size (within one, the piece CID does not change).
func variant(t testing.TB, src string, size int) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "variant.car")
	if err := os.WriteFile(p, append(b, make([]byte, size-len(b))...), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestMetricsThrottleGauges holds fetches at the API and checks the calls
// in flight and waiting on each throttle, and loads whose callers gave up.
func TestMetricsThrottleGauges(t *testing.T) {
	reg := prometheus.NewRegistry()
	api := newFakeAPI(true)
	api.gate = make(chan struct{})
	sealedA := api.addPiece(t, "testdata/sample.car")
	sealedB := api.addPiece(t, "testdata/padded.car")
	plainC := api.addPiece(t, variant(t, "testdata/sample.car", 40000)) // a 64 KiB piece
	plainD := api.addPiece(t, variant(t, "testdata/sample.car", 70000)) // a 128 KiB piece
	if len(map[cid.Cid]bool{sealedA: true, sealedB: true, plainC: true, plainD: true}) != 4 {
		t.Fatal("the four pieces are not distinct")
	}
	api.setSealed(sealedA, true)
	api.setSealed(sealedB, true)
	w := openWith(t, t.TempDir(), api, Config{MaxConcurrencyStorageCalls: 2, MaxConcurrentUnseals: 1}, WithMetrics(reg))
	// Registered first: a load of an unregistered piece asks the MinerAPI
	// for it before registering, and that call would take a storage slot.
	for _, pc := range []cid.Cid{sealedA, sealedB, plainC, plainD} {
		if err := w.RegisterShardSync(context.Background(), pc, "", false); err != nil {
			t.Fatal(err)
		}
	}

	type loaded struct{ err error }
	results := make(chan loaded, 4)
	var cancels []context.CancelFunc
	load := func(pc cid.Cid) {
		ctx, cancel := context.WithCancel(context.Background())
		cancels = append(cancels, cancel)
		go func() {
			bs, err := w.LoadShard(ctx, pc)
			if err == nil {
				_ = bs.Close()
			}
			results <- loaded{err}
		}()
	}
	gauge := func(name, th string) func() bool {
		return func() bool { v, _ := scrape(t, reg, name, "throttle", th); return v > 0 }
	}
	is := func(want float64, name, th string) func() bool {
		return func() bool { v, _ := scrape(t, reg, name, "throttle", th); return v == want }
	}
	load(sealedA) // holds the unseal slot and a storage slot, at the gate
	waitFor(t, "A unsealing", func() bool {
		return gauge("dagwrap_minerapi_calls_in_flight", throttleUnseal)() && is(1, "dagwrap_minerapi_calls_in_flight", throttleStorage)()
	})
	load(sealedB) // waits for the unseal slot
	waitFor(t, "B waiting to unseal", is(1, "dagwrap_minerapi_calls_waiting", throttleUnseal))
	load(plainC) // holds the second storage slot, at the gate
	waitFor(t, "C fetching", is(2, "dagwrap_minerapi_calls_in_flight", throttleStorage))
	load(plainD) // waits for a storage slot
	waitFor(t, "D waiting for storage", is(1, "dagwrap_minerapi_calls_waiting", throttleStorage))
	expectValue(t, reg, 1, "dagwrap_minerapi_calls_in_flight", "throttle", throttleUnseal)
	expectValue(t, reg, 4, "dagwrap_shards", "state", "initializing")

	// The callers give up; the fetches go on under the Wrapper.
	for _, cancel := range cancels {
		cancel()
	}
	for range 4 {
		if r := <-results; !errors.Is(r.err, context.Canceled) {
			t.Fatalf("load after cancel: %v, want context.Canceled", r.err)
		}
	}
	expectValue(t, reg, 4, "dagwrap_operations_total", "op", "acquire", "outcome", "cancelled")
	close(api.gate)
	waitValue(t, reg, 4, "dagwrap_operations_total", "op", "index", "outcome", "success")
	for _, th := range []string{throttleStorage, throttleUnseal} {
		waitFor(t, "throttles idle", is(0, "dagwrap_minerapi_calls_in_flight", th))
		waitFor(t, "throttles idle", is(0, "dagwrap_minerapi_calls_waiting", th))
	}
	// The accessors that arrived after their callers left were closed.
	waitValue(t, reg, 4, "dagwrap_shards", "state", "available")
	expectValue(t, reg, 4, "dagwrap_operations_total", "op", "register", "outcome", "success")
}

// TestMetricsOffRegistersNothing checks that a Wrapper without WithMetrics
// registers nothing, not even on the global registry, including after
// another Wrapper injected the go-metrics-interface bridge.
func TestMetricsOffRegistersNothing(t *testing.T) {
	ctx := context.Background()
	api := newFakeAPI(true)
	pc := api.addPiece(t, "testdata/sample.car")
	withMetrics := openWith(t, t.TempDir(), api, Config{}, WithMetrics(prometheus.NewRegistry()))
	without := openWith(t, t.TempDir(), api, Config{})
	for _, w := range []*Wrapper{withMetrics, without} {
		if err := w.RegisterShardSync(ctx, pc, "", true); err != nil {
			t.Fatal(err)
		}
	}
	if without.m != nil {
		t.Fatal("a Wrapper without WithMetrics has metrics")
	}
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "dagwrap") {
			t.Errorf("%s is on the global registry", mf.GetName())
		}
	}
}

// TestMetricsOneRegistryTwoWrappers checks that two Wrappers cannot
// silently share series, that labels separate them (datastore metrics
// included), and that Close frees the registry for a new Wrapper.
func TestMetricsOneRegistryTwoWrappers(t *testing.T) {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	api := newFakeAPI(true)
	sample := api.addPiece(t, "testdata/sample.car")
	padded := api.addPiece(t, "testdata/padded.car")

	first := openWith(t, t.TempDir(), api, Config{}, WithMetrics(reg))
	if _, err := New(Config{RootDir: t.TempDir()}, api, WithMetrics(reg)); err == nil {
		t.Fatal("a second Wrapper registered the same series on one registry")
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again := openWith(t, t.TempDir(), api, Config{}, WithMetrics(reg))
	if err := again.Close(); err != nil {
		t.Fatal(err)
	}

	// A registry keeps a metric's label names for its lifetime: the
	// labelled Wrappers get one of their own.
	reg = prometheus.NewRegistry()
	a := openWith(t, t.TempDir(), api, Config{}, WithMetrics(prometheus.WrapRegistererWith(prometheus.Labels{"instance": "a"}, reg)))
	b := openWith(t, t.TempDir(), api, Config{}, WithMetrics(prometheus.WrapRegistererWith(prometheus.Labels{"instance": "b"}, reg)))
	<-a.reconciled
	<-b.reconciled
	if err := a.RegisterShardSync(ctx, sample, "", true); err != nil {
		t.Fatal(err)
	}
	if err := b.RegisterShardSync(ctx, padded, "", true); err != nil {
		t.Fatal(err)
	}
	expectValue(t, reg, 1, "dagwrap_shards", "instance", "a", "state", "available")
	expectValue(t, reg, 1, "dagwrap_shards", "instance", "b", "state", "available")
	migrateN(t, a, 2)
	migrateN(t, b, 5)
	expectValue(t, reg, 2, "dagwrap_datastore_batchput_total", "instance", "a")
	expectValue(t, reg, 5, "dagwrap_datastore_batchput_total", "instance", "b")
}

func TestOutcome(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{nil, outcomeSuccess},
		{errors.New("boom"), outcomeFailure},
		{ErrShardExists, outcomeFailure},
		{context.Canceled, outcomeCancelled},
		{context.DeadlineExceeded, outcomeCancelled},
		{ErrClosed, outcomeCancelled},
	} {
		if got := outcome(c.err); got != c.want {
			t.Errorf("outcome(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}

// TestServeMetrics scrapes a Wrapper's metrics over HTTP, as Prometheus
// would, on the loopback interface.
func TestServeMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	api := newFakeAPI(true)
	pc := api.addPiece(t, "testdata/sample.car")
	w := openWith(t, t.TempDir(), api, Config{}, WithMetrics(reg))
	if err := w.RegisterShardSync(context.Background(), pc, "", true); err != nil {
		t.Fatal(err)
	}
	srv, err := ServeMetrics("127.0.0.1:0", reg)
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + srv.Addr() + "/metrics"
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`dagwrap_shards{state="available"} 1`,
		`dagwrap_operations_total{op="register",outcome="success"} 1`,
		`dagwrap_datastore_put_total `,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.Get(url); err == nil {
		_ = resp.Body.Close()
		t.Fatal("the server still answers after Close")
	}
	if _, err := ServeMetrics("127.0.0.1:-1", reg); err == nil {
		t.Fatal("ServeMetrics accepted a bad address")
	}
}

// BenchmarkMetricsHooks compares the hooks on the hot paths with metrics
// off (the default) and on: a throttled call and an observed operation.
func BenchmarkMetricsHooks(b *testing.B) {
	ctx := context.Background()
	noop := func(context.Context) error { return nil }
	on, err := newMetrics(&Wrapper{log: log}, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		m    *metrics
	}{{"off", nil}, {"on", on}} {
		b.Run("throttle/"+c.name, func(b *testing.B) {
			a := newGatedAPI(ctx, newFakeAPI(true), 100, 5)
			c.m.meterThrottles(a)
			for b.Loop() {
				_ = a.storage.Do(ctx, noop)
			}
		})
		b.Run("observe/"+c.name, func(b *testing.B) {
			for b.Loop() {
				c.m.observe(opAcquire, c.m.now(), nil)
			}
		})
	}
}

// metricsScenarioEnv names the scenario that the helper process
// TestMetricsScenario runs. go-metrics-interface takes one implementation
// per process, so each scenario needs a fresh process.
const metricsScenarioEnv = "DAGWRAP_METRICS_SCENARIO"

// TestMetricsProcessWide pins issue 10 item 1: the datastore metrics
// (go-ds-measure) reach each Wrapper's own Registerer with their names of
// today, nothing lands on the global registry, and a go-metrics-interface
// scope that is not dagwrap's behaves as it would without dagwrap; both in a
// process where nobody injected an implementation and in one where the node
// injected its own first (as Lotus and Boost do).
func TestMetricsProcessWide(t *testing.T) {
	for _, sc := range []string{"uninjected", "preinjected"} {
		t.Run(sc, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestMetricsScenario$", "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), metricsScenarioEnv+"="+sc, "GOLOG_LOG_LEVEL=error")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("scenario %s: %v\n%s", sc, err, out)
			}
			if !strings.Contains(string(out), "--- PASS: TestMetricsScenario") {
				t.Fatalf("scenario %s did not run:\n%s", sc, out)
			}
		})
	}
}

// TestMetricsScenario is the helper process of TestMetricsProcessWide; it
// does nothing in a normal test run.
func TestMetricsScenario(t *testing.T) {
	sc := os.Getenv(metricsScenarioEnv)
	if sc == "" {
		t.Skip("helper process of TestMetricsProcessWide")
	}
	var node *recordingImpl // the node's own implementation, if it injected one
	switch sc {
	case "uninjected":
		if gometrics.Active() {
			t.Fatal("go-metrics-interface has an implementation before the test injected one")
		}
	case "preinjected":
		node = &recordingImpl{}
		if err := gometrics.InjectImpl(node.new); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("unknown scenario %q", sc)
	}
	// Another library's metric, created through go-metrics-interface.
	const foreignName = "otherlib.requests_total"
	foreign := func() gometrics.Creator { return gometrics.New(foreignName, "A library's requests.") }
	before := fmt.Sprintf("%T", foreign())

	ctx := context.Background()
	api := newFakeAPI(true)
	sample := api.addPiece(t, "testdata/sample.car")
	padded := api.addPiece(t, "testdata/padded.car")
	regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
	a := openWith(t, t.TempDir(), api, Config{}, WithMetrics(regA))
	b := openWith(t, t.TempDir(), api, Config{}, WithMetrics(regB))
	if err := a.RegisterShardSync(ctx, sample, "", true); err != nil {
		t.Fatal(err)
	}
	if err := b.RegisterShardSync(ctx, padded, "", true); err != nil {
		t.Fatal(err)
	}
	migrateN(t, a, 2)
	migrateN(t, b, 5)
	expectValue(t, regA, 2, "dagwrap_datastore_batchput_total")
	expectValue(t, regB, 5, "dagwrap_datastore_batchput_total")

	// Every go-ds-measure metric, named as go-metrics-prometheus named them.
	want := map[string]bool{}
	for _, op := range []string{"put", "sync", "get", "has", "getsize", "delete", "query", "check", "scrub", "gc", "du", "batchput", "batchdelete", "batchcommit"} {
		for _, s := range []string{"_total", "_errors_total", "_latency_seconds"} {
			want["dagwrap_datastore_"+op+s] = true
		}
	}
	for _, op := range []string{"put", "get", "batchput"} {
		want["dagwrap_datastore_"+op+"_size_bytes"] = true
	}
	for _, reg := range []*prometheus.Registry{regA, regB} {
		got := map[string]bool{}
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if strings.HasPrefix(mf.GetName(), "dagwrap_datastore_") {
				got[mf.GetName()] = true
			}
		}
		if !maps.Equal(got, want) {
			t.Errorf("datastore metrics on a Wrapper's registry:\n got %v\nwant %v", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
		}
	}

	// The other library's metric is what it would be without dagwrap: a
	// no-op, or the node's implementation.
	c := foreign()
	if after := fmt.Sprintf("%T", c); after != before {
		t.Errorf("another library's metric is a %s after a Wrapper opened, %s before", after, before)
	}
	c.Counter().Inc()
	if node != nil {
		if got := node.names(); !slices.Equal(got, []string{foreignName, foreignName}) {
			t.Errorf("the node's implementation created %q, want only the other library's %s twice", got, foreignName)
		}
	}
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "dagwrap") || strings.HasPrefix(mf.GetName(), "otherlib") {
			t.Errorf("%s is on the global registry", mf.GetName())
		}
	}
}

// recordingImpl is a node's go-metrics-interface implementation that
// remembers the names it was asked for; its metrics do nothing.
type recordingImpl struct {
	mu      sync.Mutex
	created []string
}

func (r *recordingImpl) new(name, _ string) gometrics.Creator {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.created = append(r.created, name)
	return recordingMetric{}
}

func (r *recordingImpl) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.created)
}

type recordingMetric struct{}

func (recordingMetric) Counter() gometrics.Counter                      { return recordingMetric{} }
func (recordingMetric) CounterVec([]string) gometrics.CounterVec        { return recordingMetric{} }
func (recordingMetric) Gauge() gometrics.Gauge                          { return recordingMetric{} }
func (recordingMetric) Histogram([]float64) gometrics.Histogram         { return recordingMetric{} }
func (recordingMetric) Summary(gometrics.SummaryOpts) gometrics.Summary { return recordingMetric{} }
func (recordingMetric) WithLabelValues(...string) gometrics.Counter     { return recordingMetric{} }
func (recordingMetric) Inc()                                            {}
func (recordingMetric) Dec()                                            {}
func (recordingMetric) Add(float64)                                     {}
func (recordingMetric) Sub(float64)                                     {}
func (recordingMetric) Set(float64)                                     {}
func (recordingMetric) Observe(float64)                                 {}

// TestNoDefaultRegistererAssignment pins issue 10 item 1: no library file
// points prometheus.DefaultRegisterer elsewhere, even for a moment (while it
// did, whatever any goroutine registered globally landed on a Wrapper's
// registry).
func TestNoDefaultRegistererAssignment(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	assign := regexp.MustCompile(`DefaultRegisterer\s*=[^=]`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if loc := assign.FindIndex(src); loc != nil {
			t.Errorf("%s assigns prometheus.DefaultRegisterer: %q", f, src[loc[0]:loc[1]])
		}
	}
}

// migrateN migrates n deals of pieces nobody registered yet: their records
// are written by the migration's group commit, one batched put each.
func migrateN(t *testing.T, w *Wrapper, n int) {
	t.Helper()
	deals := make([]Deal, n)
	for i := range deals {
		deals[i] = Deal{DealID: uint64(i), PieceCID: pieceCID(t, []byte(strings.Repeat(fmt.Sprint("deal ", i, " of ", n, " "), 8))), HandedOff: true}
	}
	if ok, err := w.MigrateDeals(context.Background(), deals); !ok || err != nil {
		t.Fatalf("migrate %d deals: %v %v", n, ok, err)
	}
}
