package gateway

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	format "github.com/ipfs/go-ipld-format"
	logging "github.com/ipfs/go-log/v2"
	trustlesshttp "github.com/ipld/go-trustless-utils/http"

	"github.com/spstack/dagwrap"
)

// Blocks is the read-only blockstore blocks are served from (dagwrap's
// cross-piece blockstore satisfies it). An error for which go-ipld-format's
// IsNotFound is true means the block is unknown.
type Blocks interface {
	Has(ctx context.Context, c cid.Cid) (bool, error)
	Get(ctx context.Context, c cid.Cid) (blocks.Block, error)
	GetSize(ctx context.Context, c cid.Cid) (int, error)
}

// Pieces opens a piece's bytes by piece CID; a *dagwrap.Wrapper is one. An
// error for which go-ipld-format's IsNotFound is true means the piece is
// unknown.
type Pieces interface {
	OpenPiece(ctx context.Context, pieceCid cid.Cid) (Piece, error)
}

// Piece is one open piece: random access and its length. The handler closes
// it before the request's handler returns.
type Piece = dagwrap.PieceReader

// Logger is what the handler logs through; *logging.ZapEventLogger
// satisfies it.
type Logger interface {
	Debugw(msg string, keysAndValues ...any)
	Warnw(msg string, keysAndValues ...any)
}

// Defaults of the options.
const (
	DefaultMaxRequests = 64
	DefaultTimeout     = time.Minute
)

type config struct {
	maxRequests int
	timeout     time.Duration
	log         Logger
}

// Option configures New.
type Option func(*config)

// WithMaxRequests bounds the requests served at once (default 64); a request
// beyond it is answered at once with 503 and Retry-After: 1. n < 1 means the
// default.
func WithMaxRequests(n int) Option {
	return func(c *config) {
		if n >= 1 {
			c.maxRequests = n
		}
	}
}

// WithTimeout bounds each request, from its arrival to its last byte
// (default 1 minute; a whole large piece needs more). d <= 0 means the
// default.
func WithTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.timeout = d
		}
	}
}

// WithLogger sets the logger (default: go-log's "dagwrap/gateway").
func WithLogger(l Logger) Option {
	return func(c *config) {
		if l != nil {
			c.log = l
		}
	}
}

type handler struct {
	blocks  Blocks
	pieces  Pieces
	slots   chan struct{} // one token per request being served
	timeout time.Duration
	log     Logger
}

// New returns the gateway's handler over b and p; p may be nil, and then
// /piece/ answers 404. The handler serves /ipfs/ and /piece/ at the root of
// its URL space (mount it with http.StripPrefix under another prefix).
func New(b Blocks, p Pieces, opts ...Option) http.Handler {
	c := config{maxRequests: DefaultMaxRequests, timeout: DefaultTimeout}
	for _, o := range opts {
		o(&c)
	}
	if c.log == nil {
		c.log = logging.Logger("dagwrap/gateway")
	}
	return &handler{blocks: b, pieces: p, slots: make(chan struct{}, c.maxRequests), timeout: c.timeout, log: c.log}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var serve func(context.Context, http.ResponseWriter, *http.Request)
	switch {
	case strings.HasPrefix(r.URL.Path, "/ipfs/"):
		serve = h.serveIPFS
	case strings.HasPrefix(r.URL.Path, "/piece/") && h.pieces != nil:
		serve = h.servePiece
	default:
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method "+r.Method+" not allowed: GET or HEAD only", http.StatusMethodNotAllowed)
		return
	}
	select {
	case h.slots <- struct{}{}:
		defer func() { <-h.slots }()
	default:
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too many requests at once, retry later", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
	defer cancel()
	// The deadline bounds writes to a slow client too; it stays on a
	// kept-alive connection unless reset, so reset it on the way out.
	rc := http.NewResponseController(w)
	if dl, ok := ctx.Deadline(); ok && rc.SetWriteDeadline(dl) == nil {
		defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()
	}
	serve(ctx, w, r.WithContext(ctx))
}

// statusOf maps an error from Blocks or Pieces to the status answered
// before the first byte.
func statusOf(err error) int {
	switch {
	case format.IsNotFound(err):
		return http.StatusNotFound
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// fail answers err before the first byte, dropping the success headers
// already set.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := statusOf(err)
	if code == http.StatusInternalServerError {
		h.log.Warnw("gateway request failed", "path", r.URL.Path, "error", err)
	} else {
		h.log.Debugw("gateway request failed", "path", r.URL.Path, "status", code, "error", err)
	}
	for _, k := range []string{"Etag", "Cache-Control", "Content-Disposition", "Accept-Ranges", "X-Ipfs-Path", "X-Ipfs-Roots"} {
		w.Header().Del(k)
	}
	http.Error(w, err.Error(), code)
}

// badRequest answers 400 with msg.
func badRequest(w http.ResponseWriter, msg string) {
	http.Error(w, msg, http.StatusBadRequest)
}

// immutable sets the headers every successful content answer carries.
func immutable(h http.Header, contentType, etag string) {
	h.Set("Content-Type", contentType)
	h.Set("Etag", etag)
	h.Set("Cache-Control", trustlesshttp.ResponseCacheControlHeader)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Add("Vary", "Accept")
}

// notFound is the error for a CID Blocks answered Has false for.
func notFound(c cid.Cid) error { return format.ErrNotFound{Cid: c} }
