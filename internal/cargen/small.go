package cargen

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/ipld/go-car/v2/blockstore"
	"github.com/multiformats/go-multihash"
)

// WriteSmall writes a CARv1 of n random raw blocks of 100 to 799 bytes,
// the same for the same seed and disjoint across seeds, rooted at its first
// block, with no padding: the small pieces tests use.
func WriteSmall(path string, seed int64, n int) error {
	if n < 1 {
		return fmt.Errorf("cargen: %d blocks: need at least one", n)
	}
	rng := rand.New(rand.NewSource(seed))
	blks := make([]blocks.Block, 0, n)
	for i := 0; i < n; i++ {
		data := make([]byte, 100+rng.Intn(700))
		rng.Read(data)
		mh, err := multihash.Sum(data, multihash.SHA2_256, -1)
		if err != nil {
			return fmt.Errorf("cargen: %w", err)
		}
		b, err := blocks.NewBlockWithCid(data, cid.NewCidV1(cid.Raw, mh))
		if err != nil {
			return fmt.Errorf("cargen: %w", err)
		}
		blks = append(blks, b)
	}
	bs, err := blockstore.OpenReadWrite(path, []cid.Cid{blks[0].Cid()}, blockstore.WriteAsCarV1(true))
	if err != nil {
		return fmt.Errorf("cargen: %w", err)
	}
	for _, b := range blks {
		if err := bs.Put(context.Background(), b); err != nil {
			bs.Discard()
			return fmt.Errorf("cargen: %w", err)
		}
	}
	if err := bs.Finalize(); err != nil {
		return fmt.Errorf("cargen: %w", err)
	}
	return nil
}

// Multihashes is a list of multihashes usable as the dagstore's
// index.MultihashIterator.
type Multihashes []multihash.Multihash

// ForEach calls fn on each multihash in order, stopping at its first error.
func (l Multihashes) ForEach(fn func(multihash.Multihash) error) error {
	for _, mh := range l {
		if err := fn(mh); err != nil {
			return err
		}
	}
	return nil
}

// CounterMultihash is the sha2-256 multihash of i: distinct per i, cheap to
// make in bulk for index workloads.
func CounterMultihash(i uint64) multihash.Multihash {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], i)
	d := sha256.Sum256(b[:])
	mh, _ := multihash.Encode(d[:], multihash.SHA2_256) // cannot fail for sha2-256 of 32 bytes
	return mh
}
