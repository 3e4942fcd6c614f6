package dagwrap

import (
	"github.com/filecoin-project/dagstore/index"
	ds "github.com/ipfs/go-datastore"
)

// NewTopLevelIndex returns the top-level index a Wrapper gives its dagstore,
// over d: one key per (multihash, piece), so an insert never reads or
// rewrites another piece's entries. It is the index.Inverted to compare
// with the dagstore's index.NewInverted, or to use in a dagstore of one's
// own; a Wrapper builds its own and needs nothing from the caller.
func NewTopLevelIndex(d ds.Batching) index.Inverted {
	return newTopIndex(d)
}
