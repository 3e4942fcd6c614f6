package dagwrap

import (
	"errors"

	"github.com/filecoin-project/dagstore"
)

var (
	// ErrUndefinedCID is returned when a piece or block CID is cid.Undef.
	ErrUndefinedCID = errors.New("undefined CID")

	// ErrRootLocked is returned by New when another process or Wrapper
	// already holds the root folder.
	ErrRootLocked = errors.New("root folder is locked by another dagwrap instance")

	// ErrNotStarted is returned by calls that need the dagstore running when
	// Start has not been called (or failed).
	ErrNotStarted = errors.New("dagwrap: not started")

	// ErrClosed is returned by calls made after Close.
	ErrClosed = errors.New("dagwrap: closed")

	// ErrShardUnknown is returned for pieces the dagstore does not know. It
	// is the dagstore's own sentinel, so errors.Is works with either name.
	ErrShardUnknown = dagstore.ErrShardUnknown

	// ErrShardExists is returned when registering a piece that is already
	// registered. It is the dagstore's own sentinel.
	ErrShardExists = dagstore.ErrShardExists

	// ErrShardInUse is returned when destroying a shard that has open
	// accessors, is being registered eagerly or initialised.
	ErrShardInUse = errors.New("shard in use")

	// ErrShardErrored is returned when initialising a shard that is
	// errored: it needs a recovery instead.
	ErrShardErrored = errors.New("shard is errored")

	// ErrShardNotErrored is returned when recovering a shard that is not
	// errored.
	ErrShardNotErrored = errors.New("shard is not errored")

	// ErrHashMismatch is returned by a blockstore with HashOnRead enabled
	// when a block's bytes do not hash to its CID.
	ErrHashMismatch = errors.New("block bytes do not match their CID")

	// ErrBlockNotFound is returned by GetPiecesContainingBlock when no
	// registered piece holds the block.
	ErrBlockNotFound = errors.New("no piece holds the block")
)
