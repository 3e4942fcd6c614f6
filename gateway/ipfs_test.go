package gateway

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/ipfs/go-cid"
	trustlessutils "github.com/ipld/go-trustless-utils"
	"github.com/ipld/go-trustless-utils/traversal"
	"github.com/multiformats/go-multihash"
)

const (
	acceptRaw = "application/vnd.ipld.raw"
	acceptCAR = "application/vnd.ipld.car"
)

func checkImmutable(t *testing.T, h func(string) string, contentType, etag string) {
	t.Helper()
	for k, want := range map[string]string{
		"Content-Type":           contentType,
		"Etag":                   etag,
		"Cache-Control":          "public, max-age=29030400, immutable",
		"X-Content-Type-Options": "nosniff",
	} {
		if got := h(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
}

// Pins issue 13: GET/HEAD /ipfs/{cid} as a raw block, by Accept and by
// ?format=raw, with Go's client and curl: the exact bytes and the trustless
// gateway's headers.
func TestRawBlock(t *testing.T) {
	d := writeDAG(t, t.TempDir(), 1, false)
	srv := serve(t, New(openBlocks(t, d.path), nil))
	for i, b := range []int{0, 3, len(d.blocks) - 1} {
		blk := d.blocks[b]
		url := srv.URL + "/ipfs/" + blk.Cid().String()
		etag := `"` + blk.Cid().String() + `.raw"`
		var resp *http.Response
		var body []byte
		if i%2 == 0 {
			resp, body = get(t, http.MethodGet, url, "Accept", acceptRaw)
		} else {
			resp, body = get(t, http.MethodGet, url+"?format=raw")
		}
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, blk.RawData()) {
			t.Fatalf("GET %s: %d, %d bytes; want 200 and the block's %d bytes", url, resp.StatusCode, len(body), len(blk.RawData()))
		}
		checkImmutable(t, resp.Header.Get, acceptRaw, etag)
		if got := resp.Header.Get("Content-Length"); got != strconv.Itoa(len(blk.RawData())) {
			t.Errorf("Content-Length %q, want %d", got, len(blk.RawData()))
		}

		resp, body = get(t, http.MethodHead, url, "Accept", acceptRaw)
		if resp.StatusCode != http.StatusOK || len(body) != 0 || resp.ContentLength != int64(len(blk.RawData())) {
			t.Fatalf("HEAD %s: %d, body %d bytes, Content-Length %d; want 200, empty, %d", url, resp.StatusCode, len(body), resp.ContentLength, len(blk.RawData()))
		}
		checkImmutable(t, resp.Header.Get, acceptRaw, etag)

		cbody, hdr, status, err := curl(t, url, "-H", "Accept: "+acceptRaw)
		if err != nil || status != http.StatusOK || !bytes.Equal(cbody, blk.RawData()) {
			t.Fatalf("curl %s: %v, status %d, %d bytes; want 200 and the block", url, err, status, len(cbody))
		}
		checkImmutable(t, func(k string) string { return hdr[lower(k)] }, acceptRaw, etag)
		_, hdr, status, err = curl(t, url+"?format=raw", "-I")
		if err != nil || status != http.StatusOK || hdr["content-length"] != strconv.Itoa(len(blk.RawData())) {
			t.Fatalf("curl -I %s: %v, status %d, Content-Length %q", url, err, status, hdr["content-length"])
		}
	}
}

// Pins issue 13: a CAR for each dag-scope (and the default, all), with
// dups=y and dups=n, passes go-trustless-utils' independent verifier and
// holds exactly the blocks the scope selects; curl gets the same CAR.
func TestCARScopes(t *testing.T) {
	d := writeDAG(t, t.TempDir(), 2, false)
	if len(d.raw) != 4*len(d.nodes) {
		t.Fatalf("fixture: %d raw blocks under %d nodes, want 4 each", len(d.raw), len(d.nodes))
	}
	unique := uint64(1 + 5*len(d.nodes)) // root, nodes, their leaves
	withDups := unique + 5               // the root links the first node (and its 4 leaves) again
	srv := serve(t, New(openBlocks(t, d.path), nil))
	for _, tc := range []struct {
		query  string
		accept string
		scope  trustlessutils.DagScope
		dups   bool
		blocks uint64
	}{
		{"", acceptCAR, trustlessutils.DagScopeAll, true, withDups},
		{"?dag-scope=all", acceptCAR + ";dups=n", trustlessutils.DagScopeAll, false, unique},
		{"?format=car&dag-scope=block", "", trustlessutils.DagScopeBlock, true, 1},
		{"?dag-scope=entity", acceptCAR, trustlessutils.DagScopeEntity, true, 1}, // a dag-cbor root is its own entity
		{"?dag-scope=all", "*/*", trustlessutils.DagScopeAll, true, withDups},
	} {
		url := srv.URL + "/ipfs/" + d.root.String() + tc.query
		req := trustlessutils.Request{Root: d.root, Scope: tc.scope, Duplicates: tc.dups}
		var hdr []string
		if tc.accept != "" {
			hdr = []string{"Accept", tc.accept}
		}
		resp, body := get(t, http.MethodGet, url, hdr...)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
		}
		ct := "application/vnd.ipld.car;version=1;order=dfs;dups=y"
		if !tc.dups {
			ct = "application/vnd.ipld.car;version=1;order=dfs;dups=n"
		}
		checkImmutable(t, resp.Header.Get, ct, req.Etag())
		res, err := verifyCAR(bytes.NewReader(body), req)
		if err != nil {
			t.Fatalf("GET %s: the CAR fails verification: %v", url, err)
		}
		if res.BlocksIn != tc.blocks {
			t.Errorf("GET %s: %d blocks, want %d", url, res.BlocksIn, tc.blocks)
		}
		t.Logf("%s (Accept %q): %d blocks, %d bytes", tc.query, tc.accept, res.BlocksIn, len(body))

		args := []string{"-H", "Accept: " + tc.accept}
		if tc.accept == "" {
			args = nil
		}
		cbody, _, status, err := curl(t, url, args...)
		if err != nil || status != http.StatusOK || !bytes.Equal(cbody, body) {
			t.Fatalf("curl %s: %v, status %d, %d bytes; want 200 and the %d bytes Go's client got", url, err, status, len(cbody), len(body))
		}
	}

	// HEAD checks the root and sends the headers only.
	resp, body := get(t, http.MethodHead, srv.URL+"/ipfs/"+d.root.String(), "Accept", acceptCAR)
	if resp.StatusCode != http.StatusOK || len(body) != 0 {
		t.Fatalf("HEAD CAR: %d, %d bytes; want 200 and no body", resp.StatusCode, len(body))
	}
	// The Etag answers a conditional request without walking.
	req := trustlessutils.Request{Root: d.root, Scope: trustlessutils.DagScopeAll, Duplicates: true}
	resp, _ = get(t, http.MethodGet, srv.URL+"/ipfs/"+d.root.String(), "Accept", acceptCAR, "If-None-Match", req.Etag())
	if resp.StatusCode != http.StatusNotModified {
		t.Fatalf("GET CAR with If-None-Match: %d, want 304", resp.StatusCode)
	}
}

// Pins issue 13: dag-scope=entity of a UnixFS file is the file's node and
// its leaves, and entity-bytes narrows it to the leaves holding the range.
func TestCAREntityUnixFSFile(t *testing.T) {
	d := writeDAG(t, t.TempDir(), 5, false)
	srv := serve(t, New(openBlocks(t, d.path), nil))
	to := int64(299) // the first leaf (cargen's raw blocks are 300 bytes)
	for _, tc := range []struct {
		query  string
		req    trustlessutils.Request
		blocks uint64
	}{
		{"?dag-scope=entity", trustlessutils.Request{Scope: trustlessutils.DagScopeEntity}, 5},
		{"?dag-scope=entity&entity-bytes=0:299", trustlessutils.Request{Scope: trustlessutils.DagScopeEntity, Bytes: &trustlessutils.ByteRange{From: 0, To: &to}}, 2},
		{"?dag-scope=block", trustlessutils.Request{Scope: trustlessutils.DagScopeBlock}, 1},
	} {
		tc.req.Root, tc.req.Duplicates = d.file, true
		url := srv.URL + "/ipfs/" + d.file.String() + tc.query
		resp, body := get(t, http.MethodGet, url, "Accept", acceptCAR)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
		}
		if got := resp.Header.Get("Etag"); got != tc.req.Etag() {
			t.Errorf("GET %s: Etag %s, want %s", url, got, tc.req.Etag())
		}
		res, err := verifyCAR(bytes.NewReader(body), tc.req)
		if err != nil {
			t.Fatalf("GET %s: the CAR fails verification: %v", url, err)
		}
		if res.BlocksIn != tc.blocks {
			t.Errorf("GET %s: %d blocks, want %d", url, res.BlocksIn, tc.blocks)
		}
	}
}

// Pins issue 13: a path below the root CID selects through the DAG (here
// dag-cbor fields), as go-trustless-utils' path selector does.
func TestCARPath(t *testing.T) {
	d := writeDAG(t, t.TempDir(), 3, false)
	srv := serve(t, New(openBlocks(t, d.path), nil))
	url := srv.URL + "/ipfs/" + d.root.String() + "/links/1?dag-scope=all"
	resp, body := get(t, http.MethodGet, url, "Accept", acceptCAR)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	res, err := verifyCAR(bytes.NewReader(body), trustlessutils.Request{Root: d.root, Path: "links/1", Scope: trustlessutils.DagScopeAll, Duplicates: true})
	if err != nil {
		t.Fatalf("GET %s: the CAR fails verification: %v", url, err)
	}
	if res.BlocksIn != 1+1+4 { // root, links/1, its 4 leaves
		t.Errorf("GET %s: %d blocks, want 6", url, res.BlocksIn)
	}
	resp, _ = get(t, http.MethodGet, srv.URL+"/ipfs/"+d.root.String()+"/links/1", "Accept", acceptRaw)
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("raw block with a path: %d, want 400", resp.StatusCode)
	}
}

// Pins issue 13: a block missing mid-walk ends the stream without a clean
// end: Go's client reads an unexpected EOF, curl fails, and the verifier
// rejects what arrived as missing a block.
func TestCARMissingBlockMidWalk(t *testing.T) {
	d := writeDAG(t, t.TempDir(), 4, true)
	srv := serve(t, New(openBlocks(t, d.path), nil))
	url := srv.URL + "/ipfs/" + d.root.String()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", acceptCAR)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d, want 200 (the root exists)", url, resp.StatusCode)
	}
	body, err := io.ReadAll(resp.Body)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("reading the CAR: %v after %d bytes, want an unexpected EOF", err, len(body))
	}
	_, verr := verifyCAR(bytes.NewReader(body), trustlessutils.Request{Root: d.root, Scope: trustlessutils.DagScopeAll, Duplicates: true})
	if !errors.Is(verr, traversal.ErrMissingBlock) {
		t.Fatalf("verifying the truncated CAR: %v, want ErrMissingBlock", verr)
	}

	cbody, _, status, err := curl(t, url, "-H", "Accept: "+acceptCAR)
	if err == nil {
		t.Fatalf("curl %s: exit 0 with status %d and %d bytes, want a failed transfer", url, status, len(cbody))
	}
	t.Logf("curl: %v", err)
	if _, verr := verifyCAR(bytes.NewReader(cbody), trustlessutils.Request{Root: d.root, Scope: trustlessutils.DagScopeAll, Duplicates: true}); verr == nil {
		t.Fatal("the CAR curl got verifies, want a failure")
	}
}

// Pins issue 13: an identity CID carries its block, so a CAR of it is a
// header with no block sections (what the verifier expects), not an empty
// body; raw gives the inlined bytes.
func TestIdentityRoot(t *testing.T) {
	d := writeDAG(t, t.TempDir(), 6, false)
	srv := serve(t, New(openBlocks(t, d.path), nil))
	mh, err := multihash.Sum([]byte("inline block"), multihash.IDENTITY, -1)
	if err != nil {
		t.Fatal(err)
	}
	id := cid.NewCidV1(cid.Raw, mh)
	resp, body := get(t, http.MethodGet, srv.URL+"/ipfs/"+id.String()+"?format=car")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CAR of an identity CID: %d %q", resp.StatusCode, body)
	}
	res, err := verifyCAR(bytes.NewReader(body), trustlessutils.Request{Root: id, Scope: trustlessutils.DagScopeAll, Duplicates: true})
	if err != nil {
		t.Fatalf("CAR of an identity CID (%d bytes) fails verification: %v", len(body), err)
	}
	if res.BlocksIn != 0 {
		t.Errorf("CAR of an identity CID: %d block sections, want 0", res.BlocksIn)
	}
	resp, body = get(t, http.MethodGet, srv.URL+"/ipfs/"+id.String()+"?format=raw")
	if resp.StatusCode != http.StatusOK || string(body) != "inline block" {
		t.Fatalf("raw identity block: %d %q, want 200 \"inline block\"", resp.StatusCode, body)
	}
}
