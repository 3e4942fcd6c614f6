package dagwrap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/ipfs/go-cid"
)

// testPGBinEnv names the folder of initdb and pg_ctl (set by test.sh), for
// the tests that need a server of their own to restart.
const testPGBinEnv = "DAGWRAP_TEST_PG_BIN"

// ownServer is a PostgreSQL server of one test's own, stopped and removed
// at cleanup.
type ownServer struct {
	bin, dir string
	dsn      string
}

// asPostgres runs a PostgreSQL program, as the postgres user when the test
// runs as root (the server refuses root).
func (s *ownServer) run(t testing.TB, prog string, args ...string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(s.bin, prog), args...)
	if os.Getuid() == 0 {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", filepath.Join(s.bin, prog)}, args...)...)
	}
	// Output to a file, not a pipe: the server pg_ctl starts inherits it,
	// and a pipe would stay open as long as the server runs.
	out, err := os.CreateTemp("", "dagwrap-pg-own-out-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(out.Name())
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(out.Name())
		t.Fatalf("%s %v: %v\n%s", prog, args, err, b)
	}
}

func startOwnServer(t testing.TB) *ownServer {
	t.Helper()
	bin := os.Getenv(testPGBinEnv)
	if bin == "" {
		t.Skip(testPGBinEnv + " is not set: run ./test.sh, which finds PostgreSQL's programs")
	}
	dir, err := os.MkdirTemp("", "dagwrap-pg-own-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if os.Getuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	s := &ownServer{bin: bin, dir: dir, dsn: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)}
	data := filepath.Join(dir, "data")
	s.run(t, "initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
	s.run(t, "pg_ctl", "-D", data, "-l", filepath.Join(dir, "server.log"), "-w", "-t", "60",
		"-o", fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s", port, dir), "start")
	t.Cleanup(func() { s.run(t, "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop") })
	return s
}

// restart stops the server (fast: connections are cut) and starts it again.
func (s *ownServer) restart(t testing.TB) {
	t.Helper()
	s.run(t, "pg_ctl", "-D", filepath.Join(s.dir, "data"), "-m", "fast", "-w", "-t", "60", "restart")
}

// Pins issue 12: a database restart during a large insert loses nothing
// that was reported done, and everything works again without restarting
// the node: the piece being written is either complete, or its shard
// failed and recovers.
func TestIndexDBRestartDuringInsert(t *testing.T) {
	srv := startOwnServer(t)
	ctx := context.Background()
	api := newFakeAPI(true)
	done := testPiece{path: makeCAR(t, 91, 50)}
	done.pc = api.servePath(t, done.path)
	large := testPiece{path: makeCAR(t, 92, 60_000)} // three batches of entries
	large.pc = api.servePath(t, large.path)
	w := pgWrapper(t, t.TempDir(), srv.dsn, "dagwrap", api)
	if err := w.RegisterShardSync(ctx, done.pc, "", true); err != nil {
		t.Fatal(err)
	}

	res := make(chan error, 1)
	go func() { res <- w.RegisterShardSync(ctx, large.pc, "", true) }()
	srv.restart(t)
	largeErr := <-res
	t.Logf("registration across the restart: %v", largeErr)

	check := func(p testPiece) {
		t.Helper()
		if err := readAll(t, w, p); err != nil {
			t.Fatalf("piece %s after the restart: %v", p.pc, err)
		}
		for _, b := range carBlocks(t, p.path) {
			if got := lookupPieces(t, w, b.Cid()); !slices.Equal(got, []cid.Cid{p.pc}) {
				t.Fatalf("piece %s: block %s after the restart: %v", p.pc, b.Cid(), got)
			}
		}
	}
	check(done)
	if largeErr != nil {
		if err := w.RecoverShard(ctx, large.pc); err != nil && !errors.Is(err, ErrShardNotErrored) {
			t.Fatalf("recovery after the restart: %v", err)
		}
	}
	check(large)
}
