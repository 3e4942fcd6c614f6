package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Pins issue 12: --index-dsn, defaulting to $DAGWRAP_INDEX_DSN, puts the
// piece directory in that database; an unreachable one fails the command
// naming host and database, never the password. The flag wins over the
// variable.
func TestIndexDSNFlagAndEnv(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	env := []string{IndexDSNEnv + "=postgres://u:pw-env@127.0.0.1:1/envdb?connect_timeout=2"}
	r := runIn(t, "", env, "--root", root, "list")
	if r.code != 1 || !strings.Contains(r.stderr, "127.0.0.1:1/envdb") || strings.Contains(r.stderr, "pw-env") {
		t.Fatalf("list with $%s unreachable: exit %d, stderr %q", IndexDSNEnv, r.code, r.stderr)
	}
	r = runIn(t, "", env, "--root", root, "--index-dsn", "postgres://u:pw-flag@127.0.0.1:1/flagdb?connect_timeout=2", "list")
	if r.code != 1 || !strings.Contains(r.stderr, "127.0.0.1:1/flagdb") || strings.Contains(r.stderr, "pw-flag") {
		t.Fatalf("list with --index-dsn unreachable: exit %d, stderr %q", r.code, r.stderr)
	}
}

// Pins issue 12: with --index-dsn on a real server, an imported piece's
// blocks are found and served through the database, and a second root on
// the same directory finds them too.
func TestIndexDSNImportLookupGet(t *testing.T) {
	dsn := os.Getenv("DAGWRAP_TEST_PG")
	if dsn == "" {
		t.Skip("DAGWRAP_TEST_PG is not set: run ./test.sh, which starts a PostgreSQL server")
	}
	root, other := filepath.Join(t.TempDir(), "root"), filepath.Join(t.TempDir(), "other")
	ok(t, root, "--index-dsn", dsn, "import", sampleCAR)
	piece := pieceCID(t, sampleCAR).String()
	_, blks := readCAR(t, sampleCAR)
	blk := blks[len(blks)-1].Cid().String()
	if out := ok(t, root, "--index-dsn", dsn, "lookup", blk).stdout; !strings.Contains(out, piece) {
		t.Fatalf("lookup through the database: %q; want %s", out, piece)
	}
	if out := ok(t, other, "--index-dsn", dsn, "lookup", blk).stdout; !strings.Contains(out, piece) {
		t.Fatalf("lookup from another root on the same directory: %q; want %s", out, piece)
	}
	if out := ok(t, root, "--index-dsn", dsn, "get", piece, blk).stdout; out != string(blks[len(blks)-1].RawData()) {
		t.Fatalf("get through the database: %d bytes; want the block's %d", len(out), len(blks[len(blks)-1].RawData()))
	}
	ok(t, root, "--index-dsn", dsn, "destroy", piece)
}
