// Package gateway serves blocks and pieces over HTTP: the IPFS trustless
// gateway protocol (https://specs.ipfs.tech/http-gateways/trustless-gateway/)
// for blocks, and Filecoin piece downloads.
//
// New returns an http.Handler over a read-only blockstore (Blocks) and an
// opener of pieces (Pieces). It answers:
//
//   - GET/HEAD /ipfs/{cid} with Accept: application/vnd.ipld.raw or
//     ?format=raw: the block's bytes (Etag "{cid}.raw", immutable caching,
//     X-Content-Type-Options: nosniff, Range honoured).
//   - GET/HEAD /ipfs/{cid}[/path] with Accept: application/vnd.ipld.car (or
//     */*, application/*) or ?format=car, and dag-scope=block|entity|all
//     (default all), entity-bytes, dups=y|n in the Accept header: a CARv1
//     with {cid} as its only root, streamed in depth-first order while
//     go-trustless-utils' traversal walks the DAG over Blocks. HEAD checks
//     the root exists and sends the headers only. A path the DAG lacks
//     answers 200 with the blocks walked looking for it (a verifier's
//     traversal.CheckPath tells the path was not reached).
//   - GET/HEAD /piece/{pieceCID} (a v1 or v2 piece CID): the piece's bytes
//     read from its ReaderAt, never loaded whole (Range, 206 and
//     Content-Range, 416 when unsatisfiable, several ranges as
//     multipart/byteranges, Etag "{pieceCID}", Content-Type
//     application/piece).
//
// Status codes: 400 for a malformed CID, path or parameter; 404 for content
// Blocks or Pieces do not have (an error for which go-ipld-format's
// IsNotFound is true) and for other URL paths, or /piece/ when Pieces is nil;
// 405 for methods other than GET and HEAD; 406 when the request asks for
// neither a raw block nor a CAR (no deserialised responses); 503 with
// Retry-After: 1 when WithMaxRequests requests are already being served (the
// limit is server-wide, not per client, hence 503 rather than 429); 504 when
// the per-request timeout ends before the first byte; 500 for any other
// error before the first byte.
//
// A failure after the first byte of a CAR (a block missing or unreadable
// mid-walk, the timeout, the client gone) cannot change the status any
// more: the handler then closes the connection without HTTP/1.1's final
// zero-length chunk, so a client sees an unexpected EOF and a verifying
// client (traversal.Config.VerifyCar) reports the missing block. On HTTP/2
// the stream ends as usual and only verification shows it incomplete (the
// alternative, a panic with http.ErrAbortHandler, is not made). A piece
// read that fails mid-body leaves it short of its Content-Length, which the
// server likewise turns into a closed connection.
//
// Every call to Blocks and Pieces gets the request's context bounded by the
// per-request timeout (WithTimeout), which also bounds writes to a slow
// client (so it must cover a whole piece download); a client that
// disconnects cancels it. Every opened Piece is closed
// before the handler returns.
package gateway
