package gateway_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/ipld/go-car/v2/blockstore"
	"github.com/spstack/dagwrap/gateway"
)

// Example mounts the gateway on a server's mux and fetches a block raw and
// as a CAR. A node passes dagwrap's cross-piece blockstore as Blocks and its
// piece reader as Pieces; here Blocks is a CAR file and there are no pieces,
// so /piece/ answers 404.
func Example() {
	bs, err := blockstore.OpenReadOnly("../testdata/sample.car")
	if err != nil {
		panic(err)
	}
	defer bs.Close()
	roots, err := bs.Roots()
	if err != nil {
		panic(err)
	}

	gw := gateway.New(bs, nil, gateway.WithMaxRequests(16), gateway.WithTimeout(30*time.Second))
	mux := http.NewServeMux()
	mux.Handle("/ipfs/", gw)
	mux.Handle("/piece/", gw)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	for _, query := range []string{"?format=raw", "?format=car&dag-scope=block"} {
		resp, err := http.Get(srv.URL + "/ipfs/" + roots[0].String() + query)
		if err != nil {
			panic(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			panic(err)
		}
		fmt.Println(resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
	}
	// Output:
	// 200 application/vnd.ipld.raw 23
	// 200 application/vnd.ipld.car;version=1;order=dfs;dups=y 119
}
