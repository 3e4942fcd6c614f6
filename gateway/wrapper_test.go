package gateway

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	trustlessutils "github.com/ipld/go-trustless-utils"

	"github.com/spstack/dagwrap"
	"github.com/spstack/dagwrap/piecedir"
)

// The handler over a real Wrapper: blocks found across pieces through the
// top-level index, CARs walked across two pieces and checked by
// go-trustless-utils' verifier, and piece downloads from the MinerAPI.
func TestOverAWrapper(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	dir := piecedir.New(filepath.Join(root, "pieces"))
	w, err := dagwrap.New(dagwrap.Config{RootDir: root}, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	var dags []dag
	var pieces []piecedir.Piece
	for seed := uint64(1); seed <= 2; seed++ {
		d := writeDAG(t, src, seed, false)
		p, _, err := dir.Import(ctx, d.path)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.RegisterShardSync(ctx, p.PieceCID, "", true); err != nil {
			t.Fatal(err)
		}
		dags, pieces = append(dags, d), append(pieces, p)
	}
	srv := serve(t, New(w.Blockstore(), w))

	for i, d := range dags {
		for _, b := range d.blocks {
			resp, body := get(t, http.MethodGet, srv.URL+"/ipfs/"+b.Cid().String()+"?format=raw")
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, b.RawData()) {
				t.Fatalf("dag %d: block %s: %s", i, b.Cid(), resp.Status)
			}
		}
		for _, scope := range []trustlessutils.DagScope{trustlessutils.DagScopeAll, trustlessutils.DagScopeEntity, trustlessutils.DagScopeBlock} {
			resp, body := get(t, http.MethodGet, srv.URL+"/ipfs/"+d.root.String()+"?format=car&dag-scope="+string(scope))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("dag %d: CAR %s: %s", i, scope, resp.Status)
			}
			res, err := verifyCAR(bytes.NewReader(body), trustlessutils.Request{Root: d.root, Scope: scope, Duplicates: true})
			if err != nil {
				t.Fatalf("dag %d: CAR %s fails verification: %v", i, scope, err)
			}
			// Every block but the separate UnixFS file is reachable from
			// the root, some twice.
			if scope == trustlessutils.DagScopeAll && int(res.BlocksIn) < len(d.blocks)-1 {
				t.Fatalf("dag %d: CAR of the whole DAG has %d blocks, want at least %d", i, res.BlocksIn, len(d.blocks)-1)
			}
		}
		want, err := os.ReadFile(filepath.Join(dir.Path(), pieces[i].File))
		if err != nil {
			t.Fatal(err)
		}
		resp, body := get(t, http.MethodGet, srv.URL+"/piece/"+pieces[i].PieceCID.String(), "Range", "bytes=10-1033")
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, want[10:1034]) {
			t.Fatalf("dag %d: piece range: %s, %d bytes", i, resp.Status, len(body))
		}
	}
	unknown := writeDAG(t, src, 9, false)
	if resp, _ := get(t, http.MethodGet, srv.URL+"/ipfs/"+unknown.root.String()+"?format=raw"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a block no piece holds: %s", resp.Status)
	}
}
