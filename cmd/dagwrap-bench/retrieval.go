package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"

	"github.com/spstack/dagwrap"
	"github.com/spstack/dagwrap/gateway"
	"github.com/spstack/dagwrap/internal/cargen"
)

// Case 10: retrieval by block through the cross-piece blockstore.

// manyPieces generates and registers n small pieces (1 KiB blocks).
func (b *bench) manyPieces(w *dagwrap.Wrapper, name string, n int, pieceSize uint64, seed uint64) ([]cargen.Piece, error) {
	ps := make([]cargen.Piece, n)
	for i := range ps {
		p, err := cargen.Write(filepath.Join(b.work, fmt.Sprintf("%s-%d.car", name, i)), cargen.Spec{
			PieceSize: pieceSize, BlockSize: 1 << 10, Seed: seed + uint64(i), RecordCIDs: true,
		})
		if err != nil {
			return nil, err
		}
		b.store.Add(p.CID, p.Path, uint64(p.Size))
		if err := w.RegisterShardSync(context.Background(), p.CID, "", true); err != nil {
			return nil, err
		}
		ps[i] = p
	}
	return ps, nil
}

// request is one random block of one piece.
type request struct {
	piece cid.Cid
	block cid.Cid
}

// runClients makes the requests from clients goroutines and returns the
// requests per second, each request's latency and the errors.
func runClients[R any](clients int, reqs []R, get func(R) error) (float64, []time.Duration, int64) {
	lat := make([]time.Duration, len(reqs))
	var next, errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(len(reqs)) {
					return
				}
				t := time.Now()
				if err := get(reqs[i]); err != nil {
					if errs.Add(1) == 1 {
						logf("  first error: %v", err)
					}
				}
				lat[i] = time.Since(t)
			}
		}()
	}
	wg.Wait()
	return float64(len(reqs)) / time.Since(start).Seconds(), lat, errs.Load()
}

func (b *bench) case10(small cargen.Piece, label string) ([]row, error) {
	ctx := context.Background()
	w, root, err := b.openWrapper(b.store, 0)
	if err != nil {
		return nil, err
	}
	defer closeWrapper(w, root)
	if err := w.RegisterShardSync(ctx, small.CID, "", true); err != nil {
		return nil, err
	}
	all := w.Blockstore()
	var rows []row

	// 10a: every block of one piece, once it is open.
	logf("case 10: blocks/s through Blockstore vs LoadShard, %s", label)
	cids := small.CIDs[:min(len(small.CIDs), 200_000)]
	readAll := func(get func(context.Context, cid.Cid) (blocks.Block, error)) error {
		for _, c := range cids {
			if _, err := get(ctx, c); err != nil {
				return err
			}
		}
		return nil
	}
	loaded, err := w.LoadShard(ctx, small.CID)
	if err != nil {
		return nil, err
	}
	defer loaded.Close()
	if err := readAll(all.Get); err != nil { // opens the piece in the cache
		return nil, err
	}
	var viaAll, viaLoad []time.Duration
	for range b.cfg.reps {
		t, err := timeOnce(func() error { return readAll(loaded.Get) })
		if err != nil {
			return nil, err
		}
		viaLoad = append(viaLoad, t)
		if t, err = timeOnce(func() error { return readAll(all.Get) }); err != nil {
			return nil, err
		}
		viaAll = append(viaAll, t)
	}
	rate := func(d time.Duration) float64 { return float64(len(cids)) / d.Seconds() }
	rows = append(rows, row{Case: "10", What: "blocks/s of one open piece, " + label + ": Blockstore vs LoadShard's blockstore",
		Unit: perSec, Dagwrap: rate(median(viaAll)), Baseline: rate(median(viaLoad)), Target: "ratio ≥ 0.8", met: ratioAtLeast(0.8)})

	// 10b: 64 clients, random blocks across many pieces.
	logf("case 10: %d clients, random blocks across %d pieces", b.cfg.clients, b.cfg.retrievalPieces)
	ps, err := b.manyPieces(w, "retrieval", b.cfg.retrievalPieces, 1<<20, 1000)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(10, 10))
	reqs := make([]request, b.cfg.retrievalRequests)
	for i := range reqs {
		p := ps[rng.IntN(len(ps))]
		reqs[i] = request{piece: p.CID, block: p.CIDs[rng.IntN(len(p.CIDs))]}
	}
	perRequest := func(r request) error {
		bs, err := w.LoadShard(ctx, r.piece)
		if err != nil {
			return err
		}
		defer bs.Close()
		_, err = bs.Get(ctx, r.block)
		return err
	}
	throughAll := func(r request) error { _, err := all.Get(ctx, r.block); return err }
	runClients(b.cfg.clients, reqs[:min(len(reqs), 1000)], throughAll) // warm the cache
	baseRate, baseLat, baseErrs := runClients(b.cfg.clients, reqs, perRequest)
	allRate, allLat, allErrs := runClients(b.cfg.clients, reqs, throughAll)
	slices.Sort(baseLat)
	slices.Sort(allLat)
	what := fmt.Sprintf("%d clients, random 1 KiB blocks across %d pieces", b.cfg.clients, len(ps))
	rows = append(rows,
		row{Case: "10", What: what + ": requests/s, Blockstore vs LoadShard+Get+Close per request",
			Unit: perSec, Dagwrap: allRate, Baseline: baseRate, Target: "ratio ≥ 10", met: ratioAtLeast(10)},
		row{Case: "10", What: what + ": p99 latency", Unit: seconds,
			Dagwrap: percentile(allLat, 99).Seconds(), Baseline: percentile(baseLat, 99).Seconds()},
		row{Case: "10", What: what + ": errors", Unit: plain,
			Dagwrap: float64(allErrs), Baseline: float64(baseErrs), Target: "0", met: valueAtMost(0)},
	)

	// 10d: the same over HTTP, through the gateway on loopback.
	httpRows, err := b.overHTTP(w, ps, reqs, throughAll)
	if err != nil {
		return nil, err
	}
	rows = append(rows, httpRows...)

	// 10c: memory after touching many more pieces than the cache keeps.
	logf("case 10: RSS after touching %d pieces", b.cfg.touchPieces)
	w2, root2, err := b.openWrapper(b.store, 0)
	if err != nil {
		return nil, err
	}
	defer closeWrapper(w2, root2)
	many, err := b.manyPieces(w2, "touch", b.cfg.touchPieces, 64<<10, 100_000)
	if err != nil {
		return nil, err
	}
	bs2 := w2.Blockstore()
	touch := func(ps []cargen.Piece) (uint64, error) {
		for _, p := range ps {
			if _, err := bs2.Get(ctx, p.CIDs[0]); err != nil {
				return 0, err
			}
		}
		runtime.GC()
		return procStatusBytes("VmRSS")
	}
	bound := min(dagwrap.DefaultOpenPieces, len(many))
	atBound, err := touch(many[:bound])
	if err != nil {
		return nil, err
	}
	after, err := touch(many[bound:])
	if err != nil {
		return nil, err
	}
	rows = append(rows, row{Case: "10", What: fmt.Sprintf("RSS after touching %d pieces vs after the cache's bound (%d)", len(many), bound),
		Unit: bytesU, Dagwrap: float64(after), Baseline: float64(atBound), Target: "ratio ≤ 1.5", met: ratioAtMost(1.5)})
	return rows, nil
}

// overHTTP measures raw blocks and 64 KiB piece ranges over HTTP with
// b.cfg.clients clients against the same reads in process.
func (b *bench) overHTTP(w *dagwrap.Wrapper, ps []cargen.Piece, reqs []request, inProcess func(request) error) ([]row, error) {
	logf("case 10: raw blocks and piece ranges over HTTP, %d clients", b.cfg.clients)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: gateway.New(w.Blockstore(), w, gateway.WithMaxRequests(4*b.cfg.clients))}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	base := "http://" + ln.Addr().String()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: b.cfg.clients}}
	fetch := func(url, rng string, want int) error {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode/100 != 2 || (want >= 0 && n != int64(want)) {
			return fmt.Errorf("%s: %s, %d bytes", url, resp.Status, n)
		}
		return nil
	}
	raw := func(r request) error { return fetch(base+"/ipfs/"+r.block.String()+"?format=raw", "", -1) }
	inRate, _, _ := runClients(b.cfg.clients, reqs, inProcess)
	httpRate, httpLat, httpErrs := runClients(b.cfg.clients, reqs, raw)
	slices.Sort(httpLat)

	// Piece ranges: the same piece offsets, over HTTP and by ReadAt.
	const span = 64 << 10
	rng := rand.New(rand.NewPCG(11, 11))
	type pieceRange struct {
		pc  cid.Cid
		off int64
	}
	ranges := make([]pieceRange, max(len(reqs)/4, 1))
	for i := range ranges {
		p := ps[rng.IntN(len(ps))]
		ranges[i] = pieceRange{p.CID, rng.Int64N(p.Size - span)}
	}
	ctx := context.Background()
	readAt := func(pr pieceRange) error {
		r, err := w.OpenPiece(ctx, pr.pc)
		if err != nil {
			return err
		}
		defer r.Close()
		buf := make([]byte, span)
		_, err = r.ReadAt(buf, pr.off)
		return err
	}
	byHTTP := func(pr pieceRange) error {
		return fetch(base+"/piece/"+pr.pc.String(), fmt.Sprintf("bytes=%d-%d", pr.off, pr.off+span-1), span)
	}
	localRate, _, _ := runClients(b.cfg.clients, ranges, readAt)
	rangeRate, _, rangeErrs := runClients(b.cfg.clients, ranges, byHTTP)
	mbps := func(perSec float64) float64 { return perSec * span / 1e6 }
	what := fmt.Sprintf("%d clients over HTTP (gateway, loopback)", b.cfg.clients)
	return []row{
		{Case: "10", What: what + ": raw 1 KiB blocks/s vs Blockstore.Get in process", Unit: perSec, Dagwrap: httpRate, Baseline: inRate},
		{Case: "10", What: what + ": raw block p99 latency", Unit: seconds, Dagwrap: percentile(httpLat, 99).Seconds(), Baseline: none},
		{Case: "10", What: what + ": 64 KiB piece ranges vs OpenPiece+ReadAt in process", Unit: mbPerSec, Dagwrap: mbps(rangeRate), Baseline: mbps(localRate)},
		{Case: "10", What: what + ": errors (raw blocks + piece ranges)", Unit: plain, Dagwrap: float64(httpErrs + rangeErrs), Baseline: none, Target: "0", met: valueAtMost(0)},
	}, nil
}
