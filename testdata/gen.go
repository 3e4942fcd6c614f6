//go:build ignore

// gen writes the CAR fixtures in this folder. Run from the repository root:
//
//	go run testdata/gen.go
//
// The output is deterministic, so re-running it changes nothing.
package main

import (
	"context"
	"math/rand"
	"os"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/ipld/go-car/v2/blockstore"
	"github.com/multiformats/go-multihash"
	"github.com/multiformats/go-varint"
)

func main() {
	write("testdata/sample.car", 1, 40, 0)
	// An unsealed piece as the sealing subsystem returns it: the CAR, then
	// zeros up to the unpadded size of a 64 KiB piece (64 KiB x 127/128).
	write("testdata/padded.car", 2, 30, 65024)
	corrupt("testdata/sample.car", "testdata/corrupt.car")
}

func write(path string, seed int64, n int, padTo int64) {
	rng := rand.New(rand.NewSource(seed))
	var blks []blocks.Block
	for i := 0; i < n; i++ {
		var data []byte
		codec := uint64(cid.Raw)
		if i%3 == 0 {
			// small dag-cbor-like node: a CBOR byte string
			payload := make([]byte, 20+rng.Intn(80))
			rng.Read(payload)
			data = append([]byte{0x58, byte(len(payload))}, payload...)
			codec = cid.DagCBOR
		} else {
			data = make([]byte, 64+rng.Intn(1500))
			rng.Read(data)
		}
		mh, err := multihash.Sum(data, multihash.SHA2_256, -1)
		check(err)
		blk, err := blocks.NewBlockWithCid(data, cid.NewCidV1(codec, mh))
		check(err)
		blks = append(blks, blk)
	}
	_ = os.Remove(path)
	bs, err := blockstore.OpenReadWrite(path, []cid.Cid{blks[0].Cid()}, blockstore.WriteAsCarV1(true))
	check(err)
	for _, b := range blks {
		check(bs.Put(context.Background(), b))
	}
	check(bs.Finalize())
	if padTo > 0 {
		check(os.Truncate(path, padTo))
	}
}

// corrupt copies src and garbles the CID of its 20th section, so the header
// and the first blocks read but indexing fails.
func corrupt(src, dst string) {
	b, err := os.ReadFile(src)
	check(err)
	hl, n, err := varint.FromUvarint(b)
	check(err)
	off := n + int(hl)
	for i := 0; i < 19; i++ {
		sl, n, err := varint.FromUvarint(b[off:])
		check(err)
		off += n + int(sl)
	}
	_, n, err = varint.FromUvarint(b[off:])
	check(err)
	for i := 0; i < 8; i++ {
		b[off+n+i] = 0xff
	}
	check(os.WriteFile(dst, b, 0o644))
}

func check(err error) {
	if err != nil {
		panic(err)
	}
}
