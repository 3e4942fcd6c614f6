package testkit

import (
	"math/rand/v2"
	"os"

	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	"github.com/ipld/go-car/v2/blockstore"
	carindex "github.com/ipld/go-car/v2/index"
	"golang.org/x/exp/mmap"

	"github.com/spstack/dagwrap/internal/cargen"
)

// IndexOptions are the options the dagstore indexes pieces with.
var IndexOptions = []carv2.Option{carv2.ZeroLengthSectionAsEOF(true), carv2.StoreIdentityCIDs(true)}

// FloorIndex writes go-car's index of the CAR at carPath to idxPath: the
// prebuilt index of the floor measurements.
func FloorIndex(carPath, idxPath string) error {
	idx, err := carv2.GenerateIndexFromFile(carPath, IndexOptions...)
	if err != nil {
		return err
	}
	f, err := os.Create(idxPath)
	if err != nil {
		return err
	}
	if _, err := carindex.WriteTo(idx, f); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// FloorBlockstore opens go-car's read-only blockstore the way the dagstore
// opens a shard: memory-map the piece and read its index from disk. done
// unmaps the piece.
func FloorBlockstore(carPath, idxPath string) (bs *blockstore.ReadOnly, done func(), err error) {
	r, err := mmap.Open(carPath)
	if err != nil {
		return nil, nil, err
	}
	f, err := os.Open(idxPath)
	if err != nil {
		_ = r.Close()
		return nil, nil, err
	}
	idx, err := carindex.ReadFrom(f)
	_ = f.Close()
	if err == nil {
		bs, err = blockstore.NewReadOnly(r, idx, carv2.ZeroLengthSectionAsEOF(true))
	}
	if err != nil {
		_ = r.Close()
		return nil, nil, err
	}
	return bs, func() { _ = r.Close() }, nil
}

// RandomPieceCID makes a well-formed piece CID from rng's bits (a lazy
// registration never reads the piece).
func RandomPieceCID(rng *rand.Rand) cid.Cid {
	digest := make([]byte, 32)
	for i := range digest {
		digest[i] = byte(rng.Uint32())
	}
	digest[31] &= 0x3f // a CommP digest is a field element
	// 32 bytes always make a piece CID; were it ever not, the undefined
	// CID fails its registration with ErrUndefinedCID.
	c, _ := cargen.PieceCID(digest)
	return c
}
