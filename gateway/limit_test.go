package gateway

import (
	"bytes"
	"net/http"
	"testing"
	"time"
)

// Pins issue 13: at most WithMaxRequests requests are served at once; one
// more is answered at once with 503 and Retry-After, and a slot freed is
// usable again. The held requests wait on a gate in Blocks, not on time.
func TestRequestLimit(t *testing.T) {
	d := writeDAG(t, t.TempDir(), 20, false)
	g := &gatedBlocks{Blocks: openBlocks(t, d.path), entered: make(chan struct{}), release: make(chan struct{})}
	srv := serve(t, New(g, nil, WithMaxRequests(2)))
	blk := d.blocks[2]
	url := srv.URL + "/ipfs/" + blk.Cid().String() + "?format=raw"

	type result struct {
		status int
		body   []byte
	}
	results := make(chan result, 2)
	for i := 0; i < 2; i++ {
		go func() {
			resp, err := http.Get(url)
			if err != nil {
				results <- result{status: -1, body: []byte(err.Error())}
				return
			}
			defer resp.Body.Close()
			var b bytes.Buffer
			_, _ = b.ReadFrom(resp.Body)
			results <- result{resp.StatusCode, b.Bytes()}
		}()
	}
	<-g.entered
	<-g.entered // both slots are held inside Blocks.Get

	resp, body := get(t, http.MethodGet, url)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("third request: %d %q, Retry-After %q; want 503 with Retry-After 1", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	_, _, status, err := curl(t, srv.URL+"/ipfs/"+d.root.String(), "-H", "Accept: "+acceptCAR)
	if err != nil || status != http.StatusServiceUnavailable {
		t.Fatalf("curl while full: %v, status %d; want 503", err, status)
	}

	close(g.release)
	for i := 0; i < 2; i++ {
		r := <-results
		if r.status != http.StatusOK || !bytes.Equal(r.body, blk.RawData()) {
			t.Fatalf("held request: %d %q, want 200 and the block", r.status, r.body)
		}
	}
	// A held request's slot is given back before its (small, buffered)
	// answer leaves the server, so the limit has room again now.
	resp, body = get(t, http.MethodGet, url)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, blk.RawData()) {
		t.Fatalf("after the release: %d, want 200 and the block", resp.StatusCode)
	}
}

// Pins issue 13: the per-request timeout bounds the calls into Blocks: a
// Get that only returns when its context ends makes a 504, not a hang.
func TestRequestTimeout(t *testing.T) {
	d := writeDAG(t, t.TempDir(), 21, false)
	g := &gatedBlocks{Blocks: openBlocks(t, d.path), entered: make(chan struct{}, 8), release: make(chan struct{})}
	srv := serve(t, New(g, nil, WithTimeout(20*time.Millisecond)))
	for _, accept := range []string{acceptRaw, acceptCAR} {
		resp, body := get(t, http.MethodGet, srv.URL+"/ipfs/"+d.root.String(), "Accept", accept)
		if resp.StatusCode != http.StatusGatewayTimeout {
			t.Fatalf("Accept %s with Blocks stuck: %d %q, want 504", accept, resp.StatusCode, body)
		}
	}
}
