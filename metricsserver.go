package dagwrap

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// MetricsServer serves a Prometheus registry at /metrics, for a command that
// has no HTTP server of its own (the CLI's --metrics-addr). A node that has
// one mounts promhttp.HandlerFor(registry, ...) there instead.
type MetricsServer struct {
	srv  *http.Server
	addr net.Addr
	done chan struct{}
	err  error // set before done is closed
}

// ServeMetrics listens on addr (host:port; port 0 picks a free one) and
// serves g's metrics at /metrics in the background until Close. A scrape
// that fails to collect some metrics still returns the others; the failure
// is logged.
func ServeMetrics(addr string, g prometheus.Gatherer) (*MetricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dagwrap: serve metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog:      promErrorLog{},
		ErrorHandling: promhttp.ContinueOnError,
	}))
	s := &MetricsServer{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		addr: ln.Addr(),
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.err = err
		}
	}()
	return s, nil
}

// Addr is the address the server listens on, with the port it picked.
func (s *MetricsServer) Addr() string { return s.addr.String() }

// Close stops the server, ending scrapes in progress, and returns once its
// goroutine has exited.
func (s *MetricsServer) Close() error {
	err := s.srv.Close()
	<-s.done
	if err = errors.Join(err, s.err); err != nil {
		return fmt.Errorf("dagwrap: metrics server: %w", err)
	}
	return nil
}

// promErrorLog logs promhttp's collection errors.
type promErrorLog struct{}

func (promErrorLog) Println(v ...any) { log.Warn(append([]any{"metrics: "}, v...)...) }
