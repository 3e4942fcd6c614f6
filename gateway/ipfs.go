package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/ipfs/go-cid"
	trustlesshttp "github.com/ipld/go-trustless-utils/http"
)

// serveIPFS answers /ipfs/{cid}[/path]: a raw block or a CAR, whichever the
// request prefers (Accept first, then ?format=), 406 for anything else.
func (h *handler) serveIPFS(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	root, path, err := trustlesshttp.ParseUrlPath(r.URL.Path)
	if err != nil {
		badRequest(w, fmt.Sprintf("%s: want /ipfs/{cid}: %v", r.URL.Path, err))
		return
	}
	ct, err := negotiate(r)
	if err != nil {
		http.Error(w, "trustless gateway: only application/vnd.ipld.raw or application/vnd.ipld.car (or ?format=raw|car): "+err.Error(), http.StatusNotAcceptable)
		return
	}
	if ct.IsRaw() {
		if path.Len() > 0 {
			badRequest(w, fmt.Sprintf("%s: a path below the CID is not supported for a raw block; ask for a CAR", r.URL.Path))
			return
		}
		h.serveRaw(ctx, w, r, root)
		return
	}
	h.serveCAR(ctx, w, r, root, path.String(), ct.Duplicates)
}

// negotiate picks the response type: an explicit ?format=raw|car wins over
// Accept (as the path gateway specification says, and so that curl's
// default "Accept: */*" does not turn ?format=raw into a CAR); otherwise the
// most preferred raw or CAR type of Accept (*/* and application/* mean CAR).
func negotiate(r *http.Request) (trustlesshttp.ContentType, error) {
	switch r.URL.Query().Get("format") {
	case trustlesshttp.FormatParameterRaw:
		return trustlesshttp.DefaultContentType().WithMimeType(trustlesshttp.MimeTypeRaw), nil
	case trustlesshttp.FormatParameterCar:
		ct := trustlesshttp.DefaultContentType()
		for _, a := range trustlesshttp.ParseAccept(r.Header.Get("Accept")) {
			if a.MimeType == trustlesshttp.MimeTypeCar { // keep its dups=
				ct.Duplicates = a.Duplicates
				break
			}
		}
		return ct, nil
	}
	accepts, err := trustlesshttp.CheckFormat(r)
	if err != nil {
		return trustlesshttp.ContentType{}, err
	}
	for _, ct := range accepts {
		if ct.IsRaw() || ct.IsCar() {
			return ct, nil
		}
	}
	return trustlesshttp.ContentType{}, errors.New("no acceptable type")
}

// serveRaw answers one block's bytes; http.ServeContent does the
// conditional requests and ranges.
func (h *handler) serveRaw(ctx context.Context, w http.ResponseWriter, r *http.Request, c cid.Cid) {
	var content io.ReadSeeker
	if r.Method == http.MethodHead {
		n, err := h.blocks.GetSize(ctx, c)
		if err != nil {
			h.fail(w, r, fmt.Errorf("block %s: %w", c, err))
			return
		}
		content = io.NewSectionReader(unreadable{}, 0, int64(n))
	} else {
		blk, err := h.blocks.Get(ctx, c)
		if err != nil {
			h.fail(w, r, fmt.Errorf("block %s: %w", c, err))
			return
		}
		content = bytes.NewReader(blk.RawData())
	}
	immutable(w.Header(), trustlesshttp.MimeTypeRaw, `"`+c.String()+`.raw"`)
	w.Header().Set("Content-Disposition", `attachment; filename="`+c.String()+`.bin"`)
	w.Header().Set("X-Ipfs-Path", r.URL.Path)
	http.ServeContent(w, r, "", time.Time{}, content)
}

// unreadable is content that is never read: behind an io.SectionReader it
// gives HEAD's http.ServeContent the block's size without loading it.
type unreadable struct{}

func (unreadable) ReadAt([]byte, int64) (int, error) {
	return 0, errors.New("gateway: HEAD content is not readable")
}
