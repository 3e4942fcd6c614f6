package gateway

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// fr32PadBinTree is the multihash of v2 piece CIDs (FRC-0069), which
// go-multihash v0.2.3 does not name.
const fr32PadBinTree = 0x1011

// servePiece answers /piece/{pieceCID}: the piece's bytes, streamed from
// its ReaderAt; http.ServeContent does HEAD, ranges and conditionals.
func (h *handler) servePiece(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	s := strings.TrimPrefix(r.URL.Path, "/piece/")
	pc, err := cid.Parse(s)
	if err != nil {
		badRequest(w, fmt.Sprintf("piece %q: malformed CID: %v", s, err))
		return
	}
	if err := checkPieceCID(pc); err != nil {
		badRequest(w, err.Error())
		return
	}
	p, err := h.pieces.OpenPiece(ctx, pc)
	if err != nil {
		h.fail(w, r, fmt.Errorf("piece %s: %w", pc, err))
		return
	}
	g := &guardedPiece{ctx: ctx, p: p}
	defer func() {
		if err := g.Close(); err != nil {
			h.log.Warnw("closing piece", "piece", pc, "error", err)
		}
	}()
	w.Header().Set("Content-Type", "application/piece")
	w.Header().Set("Etag", `"`+pc.String()+`"`)
	w.Header().Set("Cache-Control", "public, max-age=29030400, immutable")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(w, r, "", time.Time{}, io.NewSectionReader(g, 0, p.Size()))
	// ServeContent drops a read error mid-body (the client sees a short
	// body); say it here unless the client or the timeout ended the read.
	if err := g.readErr(); err != nil && ctx.Err() == nil {
		h.log.Warnw("gateway piece read failed mid-body", "piece", pc, "error", err)
	}
}

// checkPieceCID accepts a v1 piece CID (fil-commitment-unsealed,
// sha2-256-trunc254-padded) or a v2 one (raw, fr32-sha256-trunc254-padbintree).
func checkPieceCID(pc cid.Cid) error {
	dec, err := multihash.Decode(pc.Hash())
	if err != nil {
		return fmt.Errorf("piece %s: malformed multihash: %v", pc, err)
	}
	switch {
	case pc.Prefix().Codec == cid.FilCommitmentUnsealed && dec.Code == multihash.SHA2_256_TRUNC254_PADDED && len(dec.Digest) == 32:
		return nil
	case pc.Prefix().Codec == cid.Raw && dec.Code == fr32PadBinTree:
		if _, n := binary.Uvarint(dec.Digest); n > 0 && len(dec.Digest) == n+1+32 {
			return nil
		}
	}
	return fmt.Errorf("%s is not a piece CID (want codec fil-commitment-unsealed with multihash sha2-256-trunc254-padded, or a v2 piece CID)", pc)
}

// guardedPiece reads a Piece under the request's context and refuses reads
// once closed: http.ServeContent reads a multi-range answer from its own
// goroutine, which may still be reading as the handler returns.
type guardedPiece struct {
	ctx    context.Context
	mu     sync.RWMutex
	p      Piece
	closed bool
	errMu  sync.Mutex
	err    error // the first read error other than EOF
}

var errPieceClosed = errors.New("gateway: piece already closed")

func (g *guardedPiece) ReadAt(b []byte, off int64) (int, error) {
	if err := g.ctx.Err(); err != nil {
		return 0, err
	}
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return 0, errPieceClosed
	}
	n, err := g.p.ReadAt(b, off)
	if err != nil && err != io.EOF {
		g.errMu.Lock()
		if g.err == nil {
			g.err = fmt.Errorf("reading %d bytes at %d: %w", len(b), off, err)
		}
		g.errMu.Unlock()
	}
	return n, err
}

func (g *guardedPiece) readErr() error {
	g.errMu.Lock()
	defer g.errMu.Unlock()
	return g.err
}

// Close closes the piece once no read is in flight.
func (g *guardedPiece) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	return g.p.Close()
}
