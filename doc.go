// Package dagwrap embeds a filecoin-project/dagstore in a storage
// provider's node: one Wrapper owns one dagstore root (shard records in
// LevelDB, per-piece indexes, a compact multihash -> pieces index,
// transient copies), reads pieces through the node's MinerAPI under the
// `lotus://` mount scheme so Lotus roots open unchanged, and serves them as
// read-only blockstores.
//
// A node calls New, then Start, registers pieces as deals are handed off
// (RegisterShard), serves them (LoadShard, GetPiecesContainingBlock) and
// calls Close, after which nothing writes under the root.
package dagwrap
