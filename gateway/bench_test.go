package gateway

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"testing"

	blocks "github.com/ipfs/go-block-format"
)

// benchClients is the number of concurrent clients each benchmark runs.
const benchClients = 64

func parallel64(b *testing.B) {
	b.SetParallelism((benchClients + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
}

// benchClient keeps a connection per client alive.
func benchClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConns: benchClients, MaxIdleConnsPerHost: benchClients}}
}

func benchBlocks(b *testing.B) (dag, []blocks.Block) {
	d := writeDAG(b, b.TempDir(), 30, false)
	return d, d.blocks
}

// BenchmarkRawBlockHTTP: random raw blocks over loopback HTTP, 64 clients.
func BenchmarkRawBlockHTTP(b *testing.B) {
	d, blks := benchBlocks(b)
	srv := serve(b, New(openBlocks(b, d.path), nil))
	client := benchClient()
	b.ReportAllocs()
	parallel64(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			blk := blks[rand.IntN(len(blks))]
			resp, err := client.Get(srv.URL + "/ipfs/" + blk.Cid().String() + "?format=raw")
			if err != nil {
				b.Error(err)
				return
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || n != int64(len(blk.RawData())) {
				b.Errorf("GET block: %d, %d bytes, %v", resp.StatusCode, n, err)
				return
			}
		}
	})
}

// BenchmarkRawBlockInProcess: the same reads straight from Blocks.
func BenchmarkRawBlockInProcess(b *testing.B) {
	d, blks := benchBlocks(b)
	bs := openBlocks(b, d.path)
	b.ReportAllocs()
	parallel64(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			blk := blks[rand.IntN(len(blks))]
			got, err := bs.Get(b.Context(), blk.Cid())
			if err != nil || len(got.RawData()) != len(blk.RawData()) {
				b.Errorf("Get: %v", err)
				return
			}
		}
	})
}

const benchRange = 64 << 10

// BenchmarkPieceRangeHTTP: random 64 KiB ranges of an 8 MiB piece over
// loopback HTTP, 64 clients.
func BenchmarkPieceRangeHTTP(b *testing.B) {
	dir := b.TempDir()
	fp := newFilePieces()
	fp.closed = nil // nothing waits for closes here
	p := fp.addPiece(b, dir, 31, 8<<20)
	srv := serve(b, New(nil, fp))
	client := benchClient()
	b.SetBytes(benchRange)
	parallel64(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			off := rand.Int64N(p.Size - benchRange)
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/piece/"+p.CID.String(), nil)
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+benchRange-1))
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusPartialContent || n != benchRange {
				b.Errorf("GET range: %d, %d bytes, %v", resp.StatusCode, n, err)
				return
			}
		}
	})
}

// BenchmarkPieceRangeInProcess: the same ranges read with ReadAt.
func BenchmarkPieceRangeInProcess(b *testing.B) {
	fp := newFilePieces()
	p := fp.addPiece(b, b.TempDir(), 31, 8<<20)
	f, err := os.Open(p.Path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.SetBytes(benchRange)
	parallel64(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, benchRange)
		for pb.Next() {
			off := rand.Int64N(p.Size - benchRange)
			if _, err := f.ReadAt(buf, off); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
