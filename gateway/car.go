package gateway

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-unixfsnode"
	carv2 "github.com/ipld/go-car/v2"
	carstorage "github.com/ipld/go-car/v2/storage"
	"github.com/ipld/go-ipld-prime/datamodel"
	"github.com/ipld/go-ipld-prime/linking"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	trustlessutils "github.com/ipld/go-trustless-utils"
	trustlesshttp "github.com/ipld/go-trustless-utils/http"
	"github.com/ipld/go-trustless-utils/traversal"
	"github.com/multiformats/go-multihash"
)

// serveCAR answers a CARv1 of the DAG under root that the request's path,
// dag-scope and entity-bytes select, written block by block as
// go-trustless-utils' traversal loads them from Blocks.
func (h *handler) serveCAR(ctx context.Context, w http.ResponseWriter, r *http.Request, root cid.Cid, path string, dups bool) {
	scope, err := trustlesshttp.ParseScope(r)
	if err != nil {
		badRequest(w, fmt.Sprintf("%s: %v (want block, entity or all)", r.URL.Path, err))
		return
	}
	byteRange, err := trustlesshttp.ParseByteRange(r)
	if err != nil {
		badRequest(w, fmt.Sprintf("%s: %v (want from:to)", r.URL.Path, err))
		return
	}
	req := trustlessutils.Request{Root: root, Path: path, Scope: scope, Bytes: byteRange, Duplicates: dups}
	etag := req.Etag()
	immutable(w.Header(), trustlesshttp.DefaultContentType().WithDuplicates(dups).String(), etag)
	w.Header().Set("Content-Disposition", `attachment; filename="`+root.String()+`.car"`)
	w.Header().Set("X-Ipfs-Path", r.URL.Path)
	w.Header().Set("X-Ipfs-Roots", root.String())
	if r.Method == http.MethodHead {
		if ok, err := h.blocks.Has(ctx, root); err != nil || !ok {
			if err == nil {
				err = notFound(root)
			}
			h.fail(w, r, fmt.Errorf("root block %s: %w", root, err))
			return
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}

	s := &carStream{ctx: ctx, blocks: h.blocks, out: w, root: root, dups: dups}
	lsys := cidlink.DefaultLinkSystem()
	lsys.StorageReadOpener = s.open
	unixfsnode.AddUnixFSReificationToLinkSystem(&lsys)
	cfg := traversal.Config{Root: root, Selector: req.Selector()}
	_, err = cfg.Traverse(ctx, lsys, nil)
	switch {
	case err == nil:
		if s.car == nil { // an identity root: a CAR of the header alone
			if err := s.begin(); err != nil {
				h.log.Debugw("gateway CAR header not sent", "path", r.URL.Path, "error", err)
			}
		}
		return
	case s.car == nil:
		// Nothing written yet: the status can still say what went wrong.
		h.fail(w, r, fmt.Errorf("CAR of %s: %w", root, err))
	default:
		if ctx.Err() != nil { // the client went away or the timeout ended it
			h.log.Debugw("gateway CAR stream aborted after its first byte", "path", r.URL.Path, "blocks", s.written, "error", err)
		} else {
			h.log.Warnw("gateway CAR stream aborted after its first byte", "path", r.URL.Path, "blocks", s.written, "error", err)
		}
		abort(w)
	}
}

// carStream writes each block the traversal loads to the response; the CAR
// header goes out with the first block, so an unknown root is still a 404.
type carStream struct {
	ctx     context.Context // the request's, for a LinkContext without one
	blocks  Blocks
	out     io.Writer
	root    cid.Cid
	dups    bool
	car     carstorage.WritableCar
	written int
}

// open is the traversal's linking.BlockReadOpener.
func (s *carStream) open(lc linking.LinkContext, l datamodel.Link) (io.Reader, error) {
	cl, ok := l.(cidlink.Link)
	if !ok {
		return nil, fmt.Errorf("link %s is not a CID", l)
	}
	c := cl.Cid
	// Identity CIDs carry their block; a CAR does not hold them (as the
	// verifier expects).
	if dec, err := multihash.Decode(c.Hash()); err == nil && dec.Code == multihash.IDENTITY {
		return bytes.NewReader(dec.Digest), nil
	}
	ctx := lc.Ctx
	if ctx == nil {
		ctx = s.ctx
	}
	blk, err := s.blocks.Get(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("block %s: %w", c, err)
	}
	if s.car == nil {
		if err := s.begin(); err != nil {
			return nil, err
		}
	}
	if err := s.car.Put(ctx, c.KeyString(), blk.RawData()); err != nil {
		return nil, fmt.Errorf("block %s: writing to the client: %w", c, err)
	}
	s.written++
	return bytes.NewReader(blk.RawData()), nil
}

// begin writes the CAR header.
func (s *carStream) begin() error {
	car, err := carstorage.NewWritable(s.out, []cid.Cid{s.root}, carv2.WriteAsCarV1(true), carv2.AllowDuplicatePuts(s.dups))
	if err != nil {
		return fmt.Errorf("CAR header: %w", err)
	}
	s.car = car
	return nil
}

// abort ends a response whose status is already sent without a clean end:
// on HTTP/1.x it closes the connection before the final zero-length chunk
// (what has been written is flushed first), so the client reads an
// unexpected EOF. Where the connection cannot be taken over (HTTP/2) the
// stream ends as usual, and only the client's verification of the CAR (which
// a trustless client always does) shows it incomplete: net/http's other way,
// panicking with http.ErrAbortHandler, is a panic this library does not make.
func abort(w http.ResponseWriter) {
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	if conn, _, err := rc.Hijack(); err == nil {
		_ = conn.Close()
	}
}
