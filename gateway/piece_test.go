package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
)

// waitClosed waits for n Close calls on fp's pieces: the handler closes a
// piece before it returns, which may be after the client has its answer.
func waitClosed(t *testing.T, fp *filePieces, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		<-fp.closed
	}
	if o, c := fp.opens.Load(), fp.closes.Load(); o != c {
		t.Fatalf("%d pieces opened, %d closed", o, c)
	}
}

// Pins issue 13: GET/HEAD /piece/{pieceCID} answers the piece's bytes, whole
// or by a single Range (206, Content-Range), 416 for an unsatisfiable range,
// with Go's client and curl, and closes every piece it opened.
func TestPieceDownload(t *testing.T) {
	dir := t.TempDir()
	fp := newFilePieces()
	p := fp.addPiece(t, dir, 7, 64<<10)
	want, err := os.ReadFile(p.Path)
	if err != nil {
		t.Fatal(err)
	}
	size := int64(len(want))
	srv := serve(t, New(openBlocks(t, writeDAG(t, dir, 8, false).path), fp))
	url := srv.URL + "/piece/" + p.CID.String()
	etag := `"` + p.CID.String() + `"`

	resp, body := get(t, http.MethodGet, url)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, want) {
		t.Fatalf("GET %s: %d, %d bytes; want 200 and the piece's %d bytes", url, resp.StatusCode, len(body), size)
	}
	for k, v := range map[string]string{"Content-Type": "application/piece", "Etag": etag, "Accept-Ranges": "bytes", "Content-Length": strconv.FormatInt(size, 10)} {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("GET %s: %s %q, want %q", url, k, got, v)
		}
	}
	waitClosed(t, fp, 1)

	resp, body = get(t, http.MethodHead, url)
	if resp.StatusCode != http.StatusOK || len(body) != 0 || resp.ContentLength != size {
		t.Fatalf("HEAD %s: %d, %d bytes, Content-Length %d; want 200, empty, %d", url, resp.StatusCode, len(body), resp.ContentLength, size)
	}
	waitClosed(t, fp, 1)

	for _, tc := range []struct {
		rng        string
		from, to   int64 // inclusive
		curlOption string
	}{
		{"bytes=100-199", 100, 199, "100-199"},
		{"bytes=-10", size - 10, size - 1, "-10"},
		{fmt.Sprintf("bytes=%d-", size-1000), size - 1000, size - 1, fmt.Sprintf("%d-", size-1000)},
		{"bytes=0-0", 0, 0, "0-0"},
	} {
		cr := fmt.Sprintf("bytes %d-%d/%d", tc.from, tc.to, size)
		resp, body := get(t, http.MethodGet, url, "Range", tc.rng)
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, want[tc.from:tc.to+1]) {
			t.Fatalf("GET %s Range %s: %d, %d bytes; want 206 and bytes %d-%d", url, tc.rng, resp.StatusCode, len(body), tc.from, tc.to)
		}
		if got := resp.Header.Get("Content-Range"); got != cr {
			t.Errorf("Range %s: Content-Range %q, want %q", tc.rng, got, cr)
		}
		if resp.ContentLength != tc.to-tc.from+1 {
			t.Errorf("Range %s: Content-Length %d, want %d", tc.rng, resp.ContentLength, tc.to-tc.from+1)
		}
		waitClosed(t, fp, 1)

		cbody, hdr, status, err := curl(t, url, "-r", tc.curlOption)
		if err != nil || status != http.StatusPartialContent || !bytes.Equal(cbody, want[tc.from:tc.to+1]) || hdr["content-range"] != cr {
			t.Fatalf("curl -r %s %s: %v, status %d, %d bytes, Content-Range %q; want 206, bytes %d-%d", tc.curlOption, url, err, status, len(cbody), hdr["content-range"], tc.from, tc.to)
		}
		waitClosed(t, fp, 1)
	}

	resp, _ = get(t, http.MethodGet, url, "Range", fmt.Sprintf("bytes=%d-", size))
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes */%d", size) {
		t.Fatalf("GET %s past the end: %d, Content-Range %q; want 416, bytes */%d", url, resp.StatusCode, resp.Header.Get("Content-Range"), size)
	}
	waitClosed(t, fp, 1)

	// Several ranges: http.ServeContent's multipart answer, read from its own
	// goroutine; the piece is still closed once (and never read closed).
	resp, body = get(t, http.MethodGet, url, "Range", "bytes=0-9,1000-1099")
	if resp.StatusCode != http.StatusPartialContent || !strings.HasPrefix(resp.Header.Get("Content-Type"), "multipart/byteranges") ||
		!bytes.Contains(body, want[:10]) || !bytes.Contains(body, want[1000:1100]) {
		t.Fatalf("GET %s two ranges: %d %s, %d bytes; want 206 multipart/byteranges with both", url, resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
	}
	waitClosed(t, fp, 1)

	cbody, _, status, err := curl(t, url)
	if err != nil || status != http.StatusOK || !bytes.Equal(cbody, want) {
		t.Fatalf("curl %s: %v, status %d, %d bytes; want 200 and the piece", url, err, status, len(cbody))
	}
	_, _, status, err = curl(t, url, "-r", fmt.Sprintf("%d-%d", size+10, size+20))
	if err != nil || status != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("curl -r past the end: %v, status %d; want 416", err, status)
	}
	waitClosed(t, fp, 2)
}

// Pins issue 13: a client that disconnects mid-download cancels the
// request's context, and the handler closes the piece it opened.
func TestPieceClientDisconnectClosesPiece(t *testing.T) {
	dir := t.TempDir()
	fp := newFilePieces()
	p := fp.addPiece(t, dir, 9, 1<<20)
	release := make(chan struct{})
	fp.gate = func() error { <-release; return nil } // holds every read after the first
	fp.ctxs = make(chan context.Context, 1)
	srv := serve(t, New(openBlocks(t, writeDAG(t, dir, 10, false).path), fp))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/piece/"+p.CID.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET piece: %d, want 200", resp.StatusCode)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	serverCtx := <-fp.ctxs
	cancel() // the client goes away mid-body
	_ = resp.Body.Close()
	<-serverCtx.Done() // the server noticed, while the piece read is held
	if !errors.Is(serverCtx.Err(), context.Canceled) {
		t.Fatalf("server context: %v, want canceled by the disconnect", serverCtx.Err())
	}
	close(release)
	if got := <-fp.closed; got != p.CID {
		t.Fatalf("closed piece %s, want %s", got, p.CID)
	}
	if o, c := fp.opens.Load(), fp.closes.Load(); o != 1 || c != 1 {
		t.Fatalf("%d opens, %d closes; want 1 and 1", o, c)
	}
}

// Pins issue 13: a piece read that fails after the first byte leaves the
// body short of its Content-Length and the connection closed, so the
// client sees an unexpected EOF, never a clean short piece; the piece is
// closed.
func TestPieceReadErrorMidBody(t *testing.T) {
	dir := t.TempDir()
	fp := newFilePieces()
	p := fp.addPiece(t, dir, 15, 1<<20)
	fp.gate = func() error { return errors.New("sector read failed") }
	srv := serve(t, New(openBlocks(t, writeDAG(t, dir, 16, false).path), fp))
	resp, err := http.Get(srv.URL + "/piece/" + p.CID.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("GET piece failing mid-body: %d, %v after %d of %d bytes; want 200 then an unexpected EOF", resp.StatusCode, err, len(body), p.Size)
	}
	_, _, _, err = curl(t, srv.URL+"/piece/"+p.CID.String())
	if err == nil {
		t.Fatal("curl of a piece failing mid-body: exit 0, want a failed transfer")
	}
	waitClosed(t, fp, 2)
}

// Pins issue 13: status codes: 400 malformed CID or parameter, 404 unknown
// content or path (and /piece/ without Pieces), 405 other methods, 406 for
// neither a raw block nor a CAR.
func TestStatusCodes(t *testing.T) {
	dir := t.TempDir()
	d := writeDAG(t, dir, 11, false)
	fp := newFilePieces()
	p := fp.addPiece(t, dir, 12, 1<<10)
	bs := openBlocks(t, d.path)
	srv := serve(t, New(bs, fp))
	noPieces := serve(t, New(bs, nil))
	unknownBlock := writeDAG(t, dir, 13, false).root
	root := d.root.String()
	for _, tc := range []struct {
		srv          string
		method, path string
		hdr          []string
		want         int
	}{
		{srv.URL, "GET", "/ipfs/notacid", []string{"Accept", acceptRaw}, 400},
		{srv.URL, "GET", "/ipfs/", []string{"Accept", acceptRaw}, 400},
		{srv.URL, "GET", "/ipfs/" + root + "?dag-scope=bork", []string{"Accept", acceptCAR}, 400},
		{srv.URL, "GET", "/ipfs/" + root + "?dag-scope=entity&entity-bytes=bork", []string{"Accept", acceptCAR}, 400},
		{srv.URL, "GET", "/piece/notacid", nil, 400},
		{srv.URL, "GET", "/piece/" + root, nil, 400}, // a block CID is not a piece CID
		{srv.URL, "GET", "/ipfs/" + unknownBlock.String(), []string{"Accept", acceptRaw}, 404},
		{srv.URL, "HEAD", "/ipfs/" + unknownBlock.String(), []string{"Accept", acceptRaw}, 404},
		{srv.URL, "GET", "/ipfs/" + unknownBlock.String(), []string{"Accept", acceptCAR}, 404},
		{srv.URL, "HEAD", "/ipfs/" + unknownBlock.String(), []string{"Accept", acceptCAR}, 404},
		{srv.URL, "GET", "/ipfs/" + root + "/nosuchfield", []string{"Accept", acceptCAR}, 200}, // a path the DAG lacks: the CAR of the walk so far (the root), as the spec's verifier expects
		{srv.URL, "GET", "/piece/" + writeDAGPiece(t, dir).String(), nil, 404},
		{noPieces.URL, "GET", "/piece/" + p.CID.String(), nil, 404},
		{srv.URL, "GET", "/elsewhere", nil, 404},
		{srv.URL, "POST", "/ipfs/" + root, []string{"Accept", acceptRaw}, 405},
		{srv.URL, "DELETE", "/piece/" + p.CID.String(), nil, 405},
		{srv.URL, "GET", "/ipfs/" + root, nil, 406},
		{srv.URL, "GET", "/ipfs/" + root, []string{"Accept", "text/html"}, 406},
		{srv.URL, "GET", "/ipfs/" + root + "?format=dag-json", nil, 406},
		{srv.URL, "GET", "/ipfs/" + root + "?format=raw", []string{"Accept", "text/html"}, 200}, // ?format= wins
		{srv.URL, "GET", "/piece/" + p.CID.String(), nil, 200},
	} {
		resp, body := get(t, tc.method, tc.srv+tc.path, tc.hdr...)
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s %v: %d %q, want %d", tc.method, tc.path, tc.hdr, resp.StatusCode, body, tc.want)
		}
		if tc.want == 405 && resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s %s: Allow %q, want GET, HEAD", tc.method, tc.path, resp.Header.Get("Allow"))
		}
		if tc.want == 404 && resp.Header.Get("Etag") != "" {
			t.Errorf("%s %s: 404 with Etag %q", tc.method, tc.path, resp.Header.Get("Etag"))
		}
	}
	waitClosed(t, fp, 1)
}

// writeDAGPiece is the CID of a real piece nobody serves.
func writeDAGPiece(t *testing.T, dir string) cid.Cid {
	t.Helper()
	other := newFilePieces()
	return other.addPiece(t, dir, 14, 1<<10).CID
}
