package dagwrap

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// ErrNotPieceCID is returned when a CID given as a piece is not a piece CID
// (CommP): v1 with codec fil-commitment-unsealed and multihash
// sha2-256-trunc254-padded, or v2 (FRC-0069, multihash
// fr32-sha256-trunc254-padbintree), which is mapped to its v1 form.
var ErrNotPieceCID = errors.New("not a piece CID")

// fr32PadBinTree is the multihash of v2 piece CIDs (FRC-0069), which
// go-multihash v0.2.1 does not name.
const fr32PadBinTree = 0x1011

// pieceV1 returns the v1 piece CID that keys pc's shard: pc itself for a v1
// piece CID, the v1 form of a v2 one, an error wrapping ErrNotPieceCID for
// anything else (a block CID typed where a piece was meant, say).
func pieceV1(pc cid.Cid) (cid.Cid, error) {
	if !pc.Defined() {
		return cid.Undef, fmt.Errorf("piece CID: %w", ErrUndefinedCID)
	}
	dec, err := multihash.Decode(pc.Hash())
	if err != nil {
		return cid.Undef, fmt.Errorf("piece CID %s: %w: %v", pc, ErrNotPieceCID, err)
	}
	switch {
	case pc.Prefix().Codec == cid.FilCommitmentUnsealed && dec.Code == multihash.SHA2_256_TRUNC254_PADDED && len(dec.Digest) == 32:
		return pc, nil
	case pc.Prefix().Codec == cid.Raw && dec.Code == fr32PadBinTree:
		// Digest: uvarint padding, one byte tree height, 32-byte root.
		_, n := binary.Uvarint(dec.Digest)
		if n <= 0 || len(dec.Digest) != n+1+32 {
			return cid.Undef, fmt.Errorf("piece CID %s: %w: malformed v2 digest", pc, ErrNotPieceCID)
		}
		mh, err := multihash.Encode(dec.Digest[n+1:], multihash.SHA2_256_TRUNC254_PADDED)
		if err != nil {
			return cid.Undef, fmt.Errorf("piece CID %s: %w", pc, err)
		}
		return cid.NewCidV1(cid.FilCommitmentUnsealed, mh), nil
	}
	return cid.Undef, fmt.Errorf("%s: %w (want codec fil-commitment-unsealed with multihash sha2-256-trunc254-padded, or a v2 piece CID)", pc, ErrNotPieceCID)
}
