package dagwrap

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
)

// The core tests run on either index backend: the embedded one (default)
// or, with DAGWRAP_TEST_BACKEND=pg, the PostgreSQL piece directory at
// $DAGWRAP_TEST_PG (test.sh runs them both ways).
const (
	backendEnv    = "DAGWRAP_TEST_BACKEND"
	testPGEnv     = "DAGWRAP_TEST_PG"
	testSchemaEnv = "DAGWRAP_TEST_PG_SCHEMA" // a crash helper's parent's schema
)

func onPG() bool { return os.Getenv(backendEnv) == "pg" }

// skipOnPG skips a test about the embedded index's files.
func skipOnPG(t testing.TB, why string) {
	t.Helper()
	if onPG() {
		t.Skip("embedded index only: " + why)
	}
}

// testPG is the test server's DSN; tests that need it skip without it.
func testPG(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(testPGEnv)
	if dsn == "" {
		if onPG() {
			t.Fatalf("%s=pg but %s is not set", backendEnv, testPGEnv)
		}
		t.Skip(testPGEnv + " is not set: run ./test.sh, which starts a PostgreSQL server")
	}
	return dsn
}

var (
	runID      = randomHex(4)
	schemasMu  sync.Mutex
	schemaByTB = map[string]string{}
)

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// testSchemaName is the test's own schema, the same for each Wrapper the
// test opens (a crash helper uses its parent's), dropped at the end.
func testSchemaName(t testing.TB) string {
	t.Helper()
	if s := os.Getenv(testSchemaEnv); s != "" {
		return s
	}
	schemasMu.Lock()
	defer schemasMu.Unlock()
	if s, ok := schemaByTB[t.Name()]; ok {
		return s
	}
	h := sha256.Sum256([]byte(t.Name()))
	s := "t_" + runID + "_" + hex.EncodeToString(h[:6])
	schemaByTB[t.Name()] = s
	dsn := testPG(t)
	t.Cleanup(func() {
		schemasMu.Lock()
		delete(schemaByTB, t.Name())
		schemasMu.Unlock()
		conn, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			return
		}
		defer conn.Close(context.Background())
		_, _ = conn.Exec(context.Background(), `DROP SCHEMA IF EXISTS `+pgx.Identifier{s}.Sanitize()+` CASCADE`)
	})
	return s
}

// init puts every Wrapper the tests open without index options of their
// own on the test server when DAGWRAP_TEST_BACKEND=pg, in a schema of its
// root's (a root reopened, by a crash helper too, finds its directory).
// Those schemas are left to the throwaway server test.sh starts.
func init() {
	if !onPG() {
		return
	}
	dsn := os.Getenv(testPGEnv)
	testBackend = func(c *Config, o *options) {
		if c.IndexDSN != "" || o.db.pool != nil || o.irepo != nil || o.top != nil || dsn == "" {
			return
		}
		h := sha256.Sum256([]byte(c.RootDir))
		c.IndexDSN = dsn
		if o.db.schema == "" {
			o.db.schema = "r_" + hex.EncodeToString(h[:8])
		}
	}
}
