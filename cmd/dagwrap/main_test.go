package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/spstack/dagwrap/internal/cargen"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	"github.com/ipld/go-car/v2/blockstore"
	"github.com/multiformats/go-multihash"

	"github.com/spstack/dagwrap"
	"github.com/spstack/dagwrap/piecedir"
)

const (
	sampleCAR  = "../../testdata/sample.car"
	paddedCAR  = "../../testdata/padded.car"
	corruptCAR = "../../testdata/corrupt.car"
)

// bin is the dagwrap binary, built once for the whole test run.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dagwrap-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "dagwrap")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building dagwrap:", err)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

// runIn runs the binary in dir with extra environment; the root is left to
// the command's defaults.
func runIn(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	// A bound on a hung command only; no assertion depends on time.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	// A race-enabled binary sleeps a second at exit unless told not to;
	// a race it finds makes it exit 66, which fails the test.
	cmd.Env = append(withoutRootEnv(), "GORACE=atexit_sleep_ms=0")
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		res.code = exit.ExitCode()
	default:
		t.Fatalf("dagwrap %v: %v", args, err)
	}
	return res
}

func withoutRootEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, RootEnv+"=") {
			env = append(env, kv)
		}
	}
	return env
}

// dw runs the binary on root, from this package's folder.
func dw(t *testing.T, root string, args ...string) result {
	t.Helper()
	return runIn(t, "", nil, append([]string{"--root", root}, args...)...)
}

// ok runs the binary on root and fails the test unless it exits 0.
func ok(t *testing.T, root string, args ...string) result {
	t.Helper()
	r := dw(t, root, args...)
	if r.code != 0 {
		t.Fatalf("dagwrap %v: exit %d\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
	}
	return r
}

// fails runs the binary on root and checks its exit code and that stderr
// holds every one of want.
func fails(t *testing.T, root string, code int, want []string, args ...string) result {
	t.Helper()
	r := dw(t, root, args...)
	if r.code != code {
		t.Fatalf("dagwrap %v: exit %d, want %d\nstdout: %s\nstderr: %s", args, r.code, code, r.stdout, r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Fatalf("dagwrap %v: stderr %q does not mention %q", args, r.stderr, w)
		}
	}
	return r
}

func decode(t *testing.T, r result, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, r.stdout)
	}
}

// pieceCID is the CommP of a file, computed here independently.
func pieceCID(t *testing.T, path string) cid.Cid {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pc, _, err := cargen.CommP(f)
	if err != nil {
		t.Fatal(err)
	}
	return pc
}

// readCAR returns a CAR's roots and blocks.
func readCAR(t *testing.T, path string) ([]cid.Cid, []blocks.Block) {
	t.Helper()
	roots, blks, err := cargen.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	return roots, blks
}

// makeCAR writes a CARv1 of n random blocks, distinct per seed.
func makeCAR(t *testing.T, dir string, seed int64, n int) string {
	t.Helper()
	path := filepath.Join(dir, fmt.Sprintf("gen-%d.car", seed))
	if err := cargen.WriteSmall(path, seed, n); err != nil {
		t.Fatal(err)
	}
	return path
}

type importRow struct {
	File      string   `json:"file"`
	PieceCID  string   `json:"piece_cid"`
	PieceSize uint64   `json:"piece_size"`
	CARSize   uint64   `json:"car_size"`
	Blocks    int      `json:"blocks"`
	Roots     []string `json:"roots"`
	Status    string   `json:"status"`
}

type shardRow struct {
	PieceCID string `json:"piece_cid"`
	State    string `json:"state"`
	Error    string `json:"error"`
}

func listShards(t *testing.T, root string, args ...string) []shardRow {
	t.Helper()
	var rows []shardRow
	decode(t, ok(t, root, append([]string{"list", "--json"}, args...)...), &rows)
	return rows
}

func TestImportListLookupGetExport(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	var rows []importRow
	decode(t, ok(t, root, "import", "--json", sampleCAR, paddedCAR), &rows)
	cars := []string{sampleCAR, paddedCAR}
	if len(rows) != 2 {
		t.Fatalf("import printed %+v", rows)
	}
	for i, car := range cars {
		want := pieceCID(t, car)
		roots, blks := readCAR(t, car)
		r := rows[i]
		if r.PieceCID != want.String() || r.Blocks != len(blks) || r.Roots[0] != roots[0].String() || r.Status != "imported" {
			t.Fatalf("%s: import row %+v, want piece %s, %d blocks, root %s", car, r, want, len(blks), roots[0])
		}
	}
	if rows[0].PieceSize != 32768 || rows[1].PieceSize != 65536 {
		t.Fatalf("piece sizes %d, %d", rows[0].PieceSize, rows[1].PieceSize)
	}

	// Text output names the same pieces.
	text := ok(t, root, "list").stdout
	shards := listShards(t, root)
	if len(shards) != 2 {
		t.Fatalf("list: %+v", shards)
	}
	for _, s := range shards {
		if s.State != "available" || !strings.Contains(text, s.PieceCID) {
			t.Fatalf("shard %+v; text list:\n%s", s, text)
		}
	}
	quiet := strings.Fields(ok(t, root, "list", "-q").stdout)
	if len(quiet) != 2 || quiet[0] != shards[0].PieceCID || quiet[1] != shards[1].PieceCID {
		t.Fatalf("list -q: %v", quiet)
	}

	// Importing again changes nothing.
	decode(t, ok(t, root, "import", "--json", sampleCAR), &rows)
	if rows[0].Status != "exists" || len(listShards(t, root)) != 2 {
		t.Fatalf("second import: %+v", rows)
	}

	for _, car := range cars {
		pc := pieceCID(t, car).String()
		roots, blks := readCAR(t, car)

		// lookup, as text and JSON
		var lk struct {
			BlockCID string   `json:"block_cid"`
			Pieces   []string `json:"pieces"`
		}
		b := blks[len(blks)/2]
		decode(t, ok(t, root, "lookup", "--json", b.Cid().String()), &lk)
		if lk.BlockCID != b.Cid().String() || len(lk.Pieces) != 1 || lk.Pieces[0] != pc {
			t.Fatalf("%s: lookup %s = %+v, want [%s]", car, b.Cid(), lk, pc)
		}
		if got := strings.TrimSpace(ok(t, root, "lookup", b.Cid().String()).stdout); got != pc {
			t.Fatalf("%s: lookup text %q", car, got)
		}

		// get: a few blocks to stdout, one to a file, the root block by flag
		for _, b := range []blocks.Block{blks[0], blks[1], blks[len(blks)-1]} {
			if got := ok(t, root, "get", pc, b.Cid().String()).stdout; got != string(b.RawData()) {
				t.Fatalf("%s: get %s returned %d bytes that differ from the CAR's", car, b.Cid(), len(got))
			}
		}
		out := filepath.Join(t.TempDir(), "block.bin")
		ok(t, root, "get", pc, blks[2].Cid().String(), "-o", out)
		if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, blks[2].RawData()) {
			t.Fatalf("%s: get -o wrote different bytes: %v", car, err)
		}
		if got := ok(t, root, "get", "--root-block", pc).stdout; got != string(blks[0].RawData()) || !blks[0].Cid().Equals(roots[0]) {
			t.Fatalf("%s: get --root-block returned other bytes", car)
		}

		// export round-trips to the same roots and block set
		exported := filepath.Join(t.TempDir(), "out.car")
		r := ok(t, root, "export", pc, "-o", exported)
		if !strings.Contains(r.stdout, fmt.Sprintf("exported %d blocks", len(blks))) {
			t.Fatalf("%s: export said %q", car, r.stdout)
		}
		gotRoots, got := readCAR(t, exported)
		if len(gotRoots) != 1 || !gotRoots[0].Equals(roots[0]) {
			t.Fatalf("%s: exported roots %v, want %v", car, gotRoots, roots)
		}
		if blockSet(got) != blockSet(blks) {
			t.Fatalf("%s: exported blocks differ from the CAR's", car)
		}

		// info, as JSON
		var info struct {
			State       string `json:"state"`
			Indexed     bool   `json:"indexed"`
			IndexBlocks int    `json:"index_blocks"`
			IndexSize   int64  `json:"index_size"`
			CARBlocks   int    `json:"car_blocks"`
		}
		decode(t, ok(t, root, "info", "--json", pc), &info)
		if info.State != "available" || !info.Indexed || info.IndexBlocks != len(blks) || info.CARBlocks != len(blks) || info.IndexSize <= 0 {
			t.Fatalf("%s: info %+v", car, info)
		}
	}
}

// blockSet renders a set of blocks (CID and bytes) comparably.
func blockSet(bs []blocks.Block) string {
	var keys []string
	for _, b := range bs {
		keys = append(keys, b.Cid().String()+"="+fmt.Sprintf("%x", b.RawData()))
	}
	sort.Strings(keys)
	return strings.Join(keys, "\n")
}

func TestInitAllWithConcurrency(t *testing.T) {
	root := t.TempDir()
	src := t.TempDir()
	var files []string
	for i := 0; i < 6; i++ {
		files = append(files, makeCAR(t, src, int64(i), 8))
	}
	ok(t, root, append([]string{"import", "--lazy"}, files...)...)
	if n := len(listShards(t, root, "--state", "new")); n != 6 {
		t.Fatalf("%d new shards after a lazy import, want 6", n)
	}
	r := ok(t, root, "init-all", "--concurrency", "3")
	// Not a terminal: plain progress lines, ending complete.
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if len(lines) != 7 || lines[0] != "progress: 0/6 (initialised 0, failed 0, skipped 0)" ||
		lines[6] != "progress: 6/6 (initialised 6, failed 0, skipped 0)" {
		t.Fatalf("progress lines:\n%s", r.stderr)
	}
	if !strings.Contains(r.stdout, "initialised 6, failed 0") {
		t.Fatalf("summary: %q", r.stdout)
	}
	if n := len(listShards(t, root, "--state", "available")); n != 6 {
		t.Fatalf("%d available shards after init-all, want 6", n)
	}
	// --metrics-addr serves Prometheus metrics while the command runs.
	r = ok(t, root, "init-all", "--metrics-addr", "127.0.0.1:0")
	if !strings.Contains(r.stderr, "metrics at http://127.0.0.1:") {
		t.Fatalf("init-all --metrics-addr did not serve metrics: %s", r.stderr)
	}
	fails(t, root, 1, []string{"--metrics-addr"}, "init-all", "--metrics-addr", "256.0.0.1:1")
	var res struct {
		Initialized []string `json:"initialized"`
	}
	decode(t, ok(t, root, "init-all", "--json"), &res)
	if len(res.Initialized) != 0 {
		t.Fatalf("second init-all initialised %v", res.Initialized)
	}
	// A lazily imported piece is indexed by init too, and can then be read.
	pc := pieceCID(t, sampleCAR).String()
	ok(t, root, "import", "--lazy", sampleCAR)
	if r := ok(t, root, "init", pc); !strings.Contains(r.stdout, "40 blocks indexed") {
		t.Fatalf("init: %q", r.stdout)
	}
}

func TestDestroy(t *testing.T) {
	root := t.TempDir()
	ok(t, root, "import", sampleCAR, paddedCAR)
	pc := pieceCID(t, sampleCAR).String()
	_, blks := readCAR(t, sampleCAR)
	if r := ok(t, root, "destroy", pc); !strings.Contains(r.stdout, pc) {
		t.Fatalf("destroy said %q", r.stdout)
	}
	shards := listShards(t, root)
	if len(shards) != 1 || shards[0].PieceCID == pc {
		t.Fatalf("after destroy: %+v", shards)
	}
	fails(t, root, 1, []string{blks[3].Cid().String(), "no piece holds"}, "lookup", blks[3].Cid().String())
	fails(t, root, 1, []string{pc, "not registered"}, "get", pc, blks[3].Cid().String())
	fails(t, root, 1, []string{pc, "not registered"}, "destroy", pc)
	if _, err := os.Stat(filepath.Join(root, "pieces", pc+".car")); err != nil {
		t.Fatalf("destroy without --remove-piece removed the piece: %v", err)
	}
	// Importing it again brings it back.
	ok(t, root, "import", sampleCAR)
	if got := ok(t, root, "get", pc, blks[3].Cid().String()).stdout; got != string(blks[3].RawData()) {
		t.Fatal("piece imported again serves other bytes")
	}
	ok(t, root, "destroy", "--remove-piece", pc)
	if _, err := os.Stat(filepath.Join(root, "pieces", pc+".car")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("--remove-piece left the file: %v", err)
	}
}

func TestRecoverAndGC(t *testing.T) {
	root := t.TempDir()
	src := t.TempDir()
	a, b := makeCAR(t, src, 1, 10), makeCAR(t, src, 2, 10)
	ok(t, root, "import", "--lazy", a, b)
	pa, pb := pieceCID(t, a).String(), pieceCID(t, b).String()
	// Garble both piece files, keeping their size, so indexing fails.
	saved := map[string][]byte{}
	for _, pc := range []string{pa, pb} {
		path := filepath.Join(root, "pieces", pc+".car")
		good, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		saved[path] = good
		bad := append([]byte{}, good...)
		for i := 60; i < 200; i++ {
			bad[i] = 0xff
		}
		if err := os.WriteFile(path, bad, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fails(t, root, 1, []string{pa}, "init", pa)
	r := fails(t, root, 1, []string{pb}, "init-all")
	if !strings.Contains(r.stdout, "failed 1") {
		t.Fatalf("init-all summary %q", r.stdout)
	}
	errored := listShards(t, root, "--state", "errored")
	if len(errored) != 2 || errored[0].Error == "" {
		t.Fatalf("errored shards: %+v", errored)
	}
	fails(t, root, 1, []string{pa}, "recover", pa) // still corrupt
	for path, good := range saved {
		if err := os.WriteFile(path, good, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if r := ok(t, root, "recover", pa); !strings.Contains(r.stdout, "recovered piece "+pa) {
		t.Fatalf("recover said %q", r.stdout)
	}
	var res struct {
		Recovered []string `json:"recovered"`
		Failed    []any    `json:"failed"`
	}
	decode(t, ok(t, root, "recover-all", "--json"), &res)
	if len(res.Recovered) != 1 || res.Recovered[0] != pb || len(res.Failed) != 0 {
		t.Fatalf("recover-all: %+v", res)
	}
	if n := len(listShards(t, root, "--state", "available")); n != 2 {
		t.Fatalf("%d available after recovery, want 2", n)
	}
	fails(t, root, 1, []string{pa, "not errored"}, "recover", pa)
	// Pieces are read in place: there are no transients to reclaim.
	var gc struct {
		Reclaimed []any `json:"reclaimed"`
		Bytes     int64 `json:"bytes"`
	}
	decode(t, ok(t, root, "gc", "--json"), &gc)
	if len(gc.Reclaimed) != 0 || gc.Bytes != 0 {
		t.Fatalf("gc: %+v", gc)
	}
}

func TestErrorPaths(t *testing.T) {
	root := t.TempDir()
	ok(t, root, "import", sampleCAR)
	pc := pieceCID(t, sampleCAR).String()
	unknown := pieceCID(t, paddedCAR).String()
	_, blks := readCAR(t, sampleCAR)
	_, other := readCAR(t, paddedCAR)

	// Unknown pieces and blocks: operational failures naming them.
	for _, args := range [][]string{{"info", unknown}, {"init", unknown}, {"recover", unknown},
		{"get", unknown, blks[0].Cid().String()}, {"export", unknown, "-o", filepath.Join(t.TempDir(), "x.car")}, {"destroy", unknown}} {
		fails(t, root, 1, []string{unknown, "not registered"}, args...)
	}
	fails(t, root, 1, []string{"no piece holds"}, "lookup", other[0].Cid().String())
	fails(t, root, 1, []string{pc, other[0].Cid().String(), "does not hold"}, "get", pc, other[0].Cid().String())
	if n := len(listShards(t, root)); n != 1 {
		t.Fatalf("failed commands registered pieces: %d shards", n)
	}

	// Bad CIDs and bad command lines: usage errors.
	fails(t, root, 2, []string{`bad piece CID "not-a-cid"`}, "info", "not-a-cid")
	fails(t, root, 2, []string{"not a piece CID"}, "info", blks[0].Cid().String())
	fails(t, root, 2, []string{`bad block CID "zzz"`}, "lookup", "zzz")
	fails(t, root, 2, []string{`bad block CID`}, "get", pc, "bafy-broken")
	fails(t, root, 2, []string{"want 1 arguments, got 0"}, "info")
	fails(t, root, 2, []string{"BLOCKCID or --root-block"}, "get", pc)
	fails(t, root, 2, []string{`"output" not set`}, "export", pc)
	fails(t, root, 2, []string{"unknown command"}, "frobnicate")
	fails(t, root, 2, []string{"unknown flag"}, "list", "--frob")
	fails(t, root, 2, []string{"--concurrency must be at least 1"}, "init-all", "--concurrency", "0")
	fails(t, root, 2, []string{`unknown shard state "broken"`}, "list", "--state", "broken")
	fails(t, root, 2, []string{"at least one CAR file"}, "import")

	// A corrupt CAR is rejected whole, naming the file and its piece.
	r := fails(t, root, 1, []string{"corrupt.car", pieceCID(t, corruptCAR).String(), "block 20"}, "import", corruptCAR)
	if r.stdout != "" {
		t.Fatalf("a failed import printed %q", r.stdout)
	}
	if n := len(listShards(t, root)); n != 1 {
		t.Fatalf("a corrupt CAR was registered: %d shards", n)
	}
	// One bad file does not stop the others.
	r = fails(t, root, 1, []string{"corrupt.car", "1 of 2 files failed"}, "import", corruptCAR, paddedCAR)
	if !strings.Contains(r.stdout, unknown) {
		t.Fatalf("the good file of a mixed import was not imported: %q", r.stdout)
	}

	// A bad deals file names itself.
	deals := filepath.Join(t.TempDir(), "deals.json")
	if err := os.WriteFile(deals, []byte(`[{"deal_id": 7, "piece_cid": "nope"}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	fails(t, root, 1, []string{"deals.json", "deal 7", "nope"}, "migrate", "--deals", deals)
}

func TestLockedRoot(t *testing.T) {
	root := t.TempDir()
	ok(t, root, "import", sampleCAR)
	// This process holds the root, as a running node would.
	w, err := dagwrap.New(dagwrap.Config{RootDir: root}, piecedir.New(filepath.Join(root, "pieces")))
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"list"}, {"import", paddedCAR}, {"gc"}} {
		fails(t, root, 1, []string{root, "in use by another process"}, args...)
	}
	// A usage error is still a usage error.
	fails(t, root, 2, []string{"bad piece CID"}, "info", "x")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(listShards(t, root)); n != 1 {
		t.Fatalf("after the lock is released: %d shards", n)
	}
}

func TestDefaultRoot(t *testing.T) {
	cwd := t.TempDir()
	if r := runIn(t, cwd, nil, "import", sampleCAR0(t)); r.code != 0 {
		t.Fatalf("import on the default root: %d %s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(cwd, DefaultRoot, "pieces")); err != nil {
		t.Fatalf("default root not used: %v", err)
	}
	envRoot := filepath.Join(t.TempDir(), "env-root")
	if r := runIn(t, cwd, []string{RootEnv + "=" + envRoot}, "list", "-q"); r.code != 0 || r.stdout != "" {
		t.Fatalf("list on $%s: %d %q %s", RootEnv, r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(envRoot); err != nil {
		t.Fatalf("$%s not used: %v", RootEnv, err)
	}
	// --root wins over the environment.
	r := runIn(t, cwd, []string{RootEnv + "=" + envRoot}, "--root", filepath.Join(cwd, DefaultRoot), "list", "-q")
	if r.code != 0 || strings.TrimSpace(r.stdout) != pieceCID(t, sampleCAR).String() {
		t.Fatalf("--root over $%s: %d %q %s", RootEnv, r.code, r.stdout, r.stderr)
	}
}

// sampleCAR0 is sampleCAR as an absolute path, for commands run elsewhere.
func sampleCAR0(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs(sampleCAR)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMigrate(t *testing.T) {
	root := t.TempDir()
	// A piece placed in the piece folder by hand is adopted on start.
	if err := os.MkdirAll(filepath.Join(root, "pieces"), 0o755); err != nil {
		t.Fatal(err)
	}
	car, _ := os.ReadFile(paddedCAR)
	if err := os.WriteFile(filepath.Join(root, "pieces", "deal-5.car"), car, 0o644); err != nil {
		t.Fatal(err)
	}
	pc := pieceCID(t, paddedCAR).String()
	deals := filepath.Join(t.TempDir(), "deals.json")
	body := `[{"deal_id": 5, "piece_cid": "` + pc + `"}, {"deal_id": 6, "piece_cid": "` + pc + `", "handed_off": false}]`
	if err := os.WriteFile(deals, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := ok(t, root, "migrate", "--deals", deals); !strings.Contains(r.stdout, "migrated 1 handed-off deal (1 piece); skipped 1 deal not handed off") {
		t.Fatalf("migrate said %q", r.stdout)
	}
	shards := listShards(t, root)
	if len(shards) != 1 || shards[0].PieceCID != pc || shards[0].State != "new" {
		t.Fatalf("after migrate: %+v", shards)
	}
	if r := ok(t, root, "migrate", "--deals", deals); !strings.Contains(r.stdout, "already migrated") {
		t.Fatalf("second migrate said %q", r.stdout)
	}
	ok(t, root, "init-all")
	_, blks := readCAR(t, paddedCAR)
	if got := ok(t, root, "get", pc, blks[5].Cid().String()).stdout; got != string(blks[5].RawData()) {
		t.Fatal("migrated piece serves other bytes")
	}
}

func TestCorruptedPieceIsNeverServed(t *testing.T) {
	root := t.TempDir()
	ok(t, root, "import", sampleCAR)
	pc := pieceCID(t, sampleCAR).String()
	_, blks := readCAR(t, sampleCAR)
	last := blks[len(blks)-1]
	// Flip a byte inside the last block's data, after it was indexed.
	path := filepath.Join(root, "pieces", pc+".car")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	car, _ := os.ReadFile(sampleCAR)
	b[len(car)-3] ^= 0xff
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	fails(t, root, 1, []string{pc, last.Cid().String(), "corrupt"}, "get", pc, last.Cid().String())
	out := filepath.Join(t.TempDir(), "out.car")
	fails(t, root, 1, []string{pc, last.Cid().String(), "corrupt"}, "export", pc, "-o", out)
	if ents, _ := os.ReadDir(filepath.Dir(out)); len(ents) != 0 {
		t.Fatalf("a failed export left %d files behind", len(ents))
	}
	// Other blocks still read.
	if got := ok(t, root, "get", pc, blks[0].Cid().String()).stdout; got != string(blks[0].RawData()) {
		t.Fatal("an intact block of a damaged piece reads wrong")
	}
}

// trickyCAR writes, with go-car's own writer, a CARv1 whose sections a
// multihash-keyed copy loses: an identity CID as the root and another one
// inside, the same multihash under raw, dag-pb and dag-cbor, a CIDv0 next
// to the CIDv1 of the same bytes, and a section repeated verbatim.
func trickyCAR(t *testing.T, dir string) string {
	t.Helper()
	var blks []blocks.Block
	add := func(data []byte, c cid.Cid) {
		b, err := blocks.NewBlockWithCid(data, c)
		if err != nil {
			t.Fatal(err)
		}
		blks = append(blks, b)
	}
	identity := func(data []byte) cid.Cid {
		mh, err := multihash.Sum(data, multihash.IDENTITY, -1)
		if err != nil {
			t.Fatal(err)
		}
		return cid.NewCidV1(cid.Raw, mh)
	}
	shared := bytes.Repeat([]byte("the same bytes under several codecs "), 8)
	mh, err := multihash.Sum(shared, multihash.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	add([]byte("an identity root"), identity([]byte("an identity root")))
	add(shared, cid.NewCidV1(cid.Raw, mh))
	add(shared, cid.NewCidV1(cid.DagProtobuf, mh))
	add(shared, cid.NewCidV1(cid.DagCBOR, mh))
	add(shared, cid.NewCidV0(mh))
	add([]byte("identity, inside"), identity([]byte("identity, inside")))
	_, more := readCAR(t, sampleCAR)
	blks = append(blks, more[:5]...)
	blks = append(blks, blks[1]) // the very same section again
	path := filepath.Join(dir, "tricky.car")
	bs, err := blockstore.OpenReadWrite(path, []cid.Cid{blks[0].Cid()}, blockstore.WriteAsCarV1(true),
		blockstore.UseWholeCIDs(true), blockstore.AllowDuplicatePuts(true), carv2.StoreIdentityCIDs(true))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blks {
		if err := bs.Put(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	if err := bs.Finalize(); err != nil {
		t.Fatal(err)
	}
	if _, got := readCAR(t, path); len(got) != len(blks) {
		t.Fatalf("go-car wrote %d sections of %d", len(got), len(blks))
	}
	return path
}

// TestExportIsTheImportedCARVerbatim pins issue 9 item 1: export writes the
// piece's CARv1 exactly as it was imported (identity CIDs, one multihash
// under several codecs, CIDv0 next to CIDv1, repeated sections; no zero
// padding), counts every section, and the file has the piece's CommP.
func TestExportIsTheImportedCARVerbatim(t *testing.T) {
	root := t.TempDir()
	out := t.TempDir()
	tricky := trickyCAR(t, t.TempDir())
	for _, car := range []string{tricky, sampleCAR, paddedCAR} {
		var rows []importRow
		decode(t, ok(t, root, "import", "--json", car), &rows)
		pc := rows[0].PieceCID
		src, err := os.ReadFile(car)
		if err != nil {
			t.Fatal(err)
		}
		_, sections := readCAR(t, car)
		exported := filepath.Join(out, filepath.Base(car))
		r := ok(t, root, "export", pc, "-o", exported)
		if !strings.Contains(r.stdout, fmt.Sprintf("exported %d blocks", len(sections))) {
			t.Fatalf("%s: export said %q, want %d blocks", car, r.stdout, len(sections))
		}
		got, err := os.ReadFile(exported)
		if err != nil {
			t.Fatal(err)
		}
		if want := src[:rows[0].CARSize]; !bytes.Equal(got, want) {
			t.Fatalf("%s: exported %d bytes that differ from the imported CAR's %d", car, len(got), len(want))
		}
		if car != paddedCAR { // padded.car's own zeros are not part of the CAR
			if got := pieceCID(t, exported).String(); got != pc {
				t.Fatalf("%s: exported CAR has CommP %s, want the piece's %s", car, got, pc)
			}
		}
		var js struct {
			Blocks int `json:"blocks"`
		}
		decode(t, ok(t, root, "export", "--json", pc, "-o", exported), &js)
		if js.Blocks != len(sections) {
			t.Fatalf("%s: export --json counted %d blocks, want %d", car, js.Blocks, len(sections))
		}
	}
	if ents, _ := os.ReadDir(out); len(ents) != 3 {
		t.Fatalf("export folder holds %d files, want the 3 exports only", len(ents))
	}
	// Exporting onto the piece's own file would cut its padding off.
	pc := pieceCID(t, sampleCAR).String()
	own := filepath.Join(root, "pieces", pc+".car")
	fails(t, root, 1, []string{pc, "the piece's own file"}, "export", pc, "-o", own)
	if st, err := os.Stat(own); err != nil || st.Size() != 32512 {
		t.Fatalf("the piece file was changed: %v", err)
	}
}

// TestExportRemovesStaleTempFiles pins issue 9 item 3 (export temp files):
// the temporary file a killed export leaves in the output folder is removed
// by the next export there, while one still being written (locked by its
// writer) is left alone.
func TestExportRemovesStaleTempFiles(t *testing.T) {
	root := t.TempDir()
	ok(t, root, "import", sampleCAR)
	pc := pieceCID(t, sampleCAR).String()
	out := t.TempDir()
	stale := filepath.Join(out, exportTempPrefix+"123"+exportTempSuffix)
	if err := os.WriteFile(stale, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	// A killed export's lock file, with and without its temporary file.
	staleLock := filepath.Join(out, exportTempPrefix+"456"+exportTempSuffix+exportLockSuffix)
	for _, p := range []string{stale + exportLockSuffix, staleLock} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	busy, err := createExportTemp(out)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Abort()
	ok(t, root, "export", pc, "-o", filepath.Join(out, "a.car"))
	for _, p := range []string{stale, stale + exportLockSuffix, staleLock} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s of a killed export is still there: %v", p, err)
		}
	}
	for _, p := range []string{busy.Name(), busy.Name() + exportLockSuffix} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s of an export still running was removed: %v", p, err)
		}
	}
	// The finished export left neither its temporary file nor its lock.
	ents, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 3 {
		t.Fatalf("output folder holds %d files, want a.car and the running export's two: %v", len(ents), ents)
	}
}

// cancelAfter cancels ctx once the first read has returned: an interrupt
// (SIGTERM) arriving in the middle of an export.
type cancelAfter struct {
	r      io.Reader
	cancel context.CancelCauseFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p[:min(len(p), 1024)])
	c.cancel(errors.New("terminated signal received"))
	return n, err
}

// TestInterruptedExportNamesPieceFileAndCause pins issue 9 item 3 (export
// messages): an export interrupted part-way says which piece, which file and
// why, and leaves no file behind.
func TestInterruptedExportNamesPieceFileAndCause(t *testing.T) {
	pc := pieceCID(t, sampleCAR)
	f, err := os.Open(sampleCAR)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	out := t.TempDir()
	path := filepath.Join(out, "out.car")
	_, err = writeExport(ctx, pc, &cancelAfter{r: f, cancel: cancel}, path)
	if err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted export: %v, want context.Canceled", err)
	}
	for _, want := range []string{pc.String(), path, "terminated signal received"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("interrupted export: %q does not mention %q", err, want)
		}
	}
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Fatalf("an interrupted export left %d files", len(ents))
	}
}

// TestMigrateRejectsAnyDealsFileButOneArray pins issue 9 item 2: the deals
// file is exactly one JSON array of deal objects with the documented keys;
// anything else names the file and where, and registers nothing.
func TestMigrateRejectsAnyDealsFileButOneArray(t *testing.T) {
	root := t.TempDir()
	pc := pieceCID(t, sampleCAR).String()
	one := `[{"deal_id": 5, "piece_cid": "` + pc + `"}]`
	dir := t.TempDir()
	for i, tc := range []struct {
		body string
		want []string
	}{
		{one + " " + `[{"deal_id": 6, "piece_cid": "` + pc + `"}]`, []string{"line 1", "after the array"}},
		{one + "\n garbage", []string{"line 2", "after the array"}},
		{"null", []string{"line 1", "JSON array"}},
		{`{"deal_id": 5, "piece_cid": "` + pc + `"}`, []string{"line 1", "JSON array"}},
		{"[\n" + `{"Deal_ID": 5, "piece_cid": "` + pc + `"}]`, []string{"line 2", `"Deal_ID"`}},
		{"[\n" + `{"deal_id": 5, "piece_cid": "` + pc + `", "handedoff": true}]`, []string{"line 2", `"handedoff"`}},
		{"[\n" + `{"deal_id": 5, "piece_cid": "` + pc + `", "deal_id": 6}]`, []string{"line 2", `"deal_id"`, "twice"}},
		{`[{"piece_cid": "` + pc + `"}]`, []string{"line 1", "entry 0", `"deal_id"`, "missing"}},
		{`[{"deal_id": 5}]`, []string{"line 1", "deal 5", `"piece_cid"`, "missing"}},
		{`[{"deal_id": null, "piece_cid": "` + pc + `"}]`, []string{"line 1", `"deal_id"`, "null"}},
		{`[{"deal_id": 5, "piece_cid": "` + pc + `", "handed_off": "yes"}]`, []string{"line 1", `"handed_off"`}},
		{`[{"deal_id": 5, "piece_cid": "` + pc + `"}, 7]`, []string{"line 1", "entry 1", "object"}},
		{`[{"deal_id": 5, "piece_cid": "` + pc + `"}`, []string{"line 1", "unexpected end"}},
	} {
		path := filepath.Join(dir, fmt.Sprintf("deals-%d.json", i))
		if err := os.WriteFile(path, []byte(tc.body), 0o644); err != nil {
			t.Fatal(err)
		}
		fails(t, root, 1, append([]string{path}, tc.want...), "migrate", "--deals", path)
	}
	if n := len(listShards(t, root)); n != 0 {
		t.Fatalf("bad deals files registered %d shards", n)
	}
	if _, err := os.Stat(filepath.Join(root, ".shard-registration-complete")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a bad deals file wrote the migration marker: %v", err)
	}
	fails(t, root, 2, []string{"--deals"}, "migrate")
	fails(t, root, 2, []string{"--deals"}, "migrate", "--deals", "")
}

// TestMigrateCountsHandedOffDeals pins issue 9 item 3 (migration count): the
// summary counts handed-off deals apart from those skipped.
func TestMigrateCountsHandedOffDeals(t *testing.T) {
	root := t.TempDir()
	a, b := pieceCID(t, sampleCAR).String(), pieceCID(t, paddedCAR).String()
	deals := filepath.Join(t.TempDir(), "deals.json")
	body := `[{"deal_id": 1, "piece_cid": "` + a + `"}, {"deal_id": 2, "piece_cid": "` + a + `"},
	{"deal_id": 3, "piece_cid": "` + b + `", "handed_off": false}]`
	if err := os.WriteFile(deals, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	var js struct {
		Migrated  bool `json:"migrated"`
		Deals     int  `json:"deals"`
		HandedOff int  `json:"handed_off"`
		Pieces    int  `json:"pieces"`
	}
	decode(t, ok(t, root, "migrate", "--json", "--deals", deals), &js)
	if !js.Migrated || js.Deals != 3 || js.HandedOff != 2 || js.Pieces != 1 {
		t.Fatalf("migrate --json: %+v, want 3 deals, 2 handed off, 1 piece", js)
	}
	root2 := t.TempDir()
	r := ok(t, root2, "migrate", "--deals", deals)
	if !strings.Contains(r.stdout, "migrated 2 handed-off deals (1 piece)") || !strings.Contains(r.stdout, "1 deal not handed off") {
		t.Fatalf("migrate said %q", r.stdout)
	}
}

// TestImportOfNonCARNamesFileAndCause pins issue 9 item 3 (non-CAR import):
// a file that is not a CAR fails naming the file and the cause, with no
// piece CID computed from its bytes and nothing added to the piece folder.
func TestImportOfNonCARNamesFileAndCause(t *testing.T) {
	root := t.TempDir()
	ok(t, root, "import", sampleCAR)
	before := folderNames(t, filepath.Join(root, "pieces"))
	junk := filepath.Join(t.TempDir(), "junk.car")
	if err := os.WriteFile(junk, bytes.Repeat([]byte("not a CAR at all. "), 4000), 0o644); err != nil {
		t.Fatal(err)
	}
	r := fails(t, root, 1, []string{"junk.car", "not a CAR"}, "import", junk)
	if strings.Contains(r.stderr, "baga") {
		t.Fatalf("a non-CAR import was named by a piece CID: %s", r.stderr)
	}
	if after := folderNames(t, filepath.Join(root, "pieces")); after != before {
		t.Fatalf("piece folder was %s, is %s", before, after)
	}
	if n := len(listShards(t, root)); n != 1 {
		t.Fatalf("%d shards after a non-CAR import, want 1", n)
	}
}

func folderNames(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return strings.Join(names, " ")
}

// TestGetJSON pins issue 9 item 3 (get --json): with --json, get prints
// JSON naming the piece and block, with its size and bytes (base64).
func TestGetJSON(t *testing.T) {
	root := t.TempDir()
	ok(t, root, "import", sampleCAR)
	pc := pieceCID(t, sampleCAR).String()
	_, blks := readCAR(t, sampleCAR)
	b := blks[3]
	var js struct {
		PieceCID string `json:"piece_cid"`
		BlockCID string `json:"block_cid"`
		Size     int    `json:"size"`
		Data     []byte `json:"data"`
		File     string `json:"file"`
	}
	decode(t, ok(t, root, "get", "--json", pc, b.Cid().String()), &js)
	if js.PieceCID != pc || js.BlockCID != b.Cid().String() || js.Size != len(b.RawData()) || !bytes.Equal(js.Data, b.RawData()) {
		t.Fatalf("get --json: %+v", js)
	}
	// With -o the bytes go to the file and the JSON says where.
	out := filepath.Join(t.TempDir(), "block.bin")
	js.Data = nil
	decode(t, ok(t, root, "get", "--json", "--root-block", pc, "-o", out), &js)
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, blks[0].RawData()) || js.File != out || js.Data != nil || js.Size != len(got) {
		t.Fatalf("get --json -o: %+v, file %v", js, err)
	}
}

// TestEagerImportIndexesALazyShard pins issue 9 item 3 (import --lazy,
// then import): the second import asks for indexing, so it indexes.
func TestEagerImportIndexesALazyShard(t *testing.T) {
	root := t.TempDir()
	ok(t, root, "import", "--lazy", sampleCAR)
	if s := listShards(t, root); len(s) != 1 || s[0].State != "new" {
		t.Fatalf("after a lazy import: %+v", s)
	}
	var rows []importRow
	decode(t, ok(t, root, "import", "--json", sampleCAR), &rows)
	if s := listShards(t, root); len(s) != 1 || s[0].State != "available" {
		t.Fatalf("after an eager import of the lazy shard: %+v (import said %+v)", s, rows)
	}
	if rows[0].Status != "indexed" {
		t.Fatalf("import status %q, want indexed", rows[0].Status)
	}
	// Importing once more changes nothing.
	decode(t, ok(t, root, "import", "--json", sampleCAR), &rows)
	if rows[0].Status != "exists" {
		t.Fatalf("third import status %q, want exists", rows[0].Status)
	}
}

// TestImportRestoresAMissingPieceFile pins issue 9 item 4 (CLI part): the
// manifest knows the piece but its file is gone; importing the same CAR
// puts the file back, and the piece serves again.
func TestImportRestoresAMissingPieceFile(t *testing.T) {
	root := t.TempDir()
	ok(t, root, "import", sampleCAR)
	pc := pieceCID(t, sampleCAR).String()
	_, blks := readCAR(t, sampleCAR)
	path := filepath.Join(root, "pieces", pc+".car")
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	fails(t, root, 1, []string{pc}, "get", pc, blks[1].Cid().String()) // the shard errors
	var rows []importRow
	decode(t, ok(t, root, "import", "--json", sampleCAR), &rows)
	if rows[0].Status != "restored" {
		t.Fatalf("import status %q, want restored", rows[0].Status)
	}
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("piece file not restored as it was: %v", err)
	}
	if s := listShards(t, root); len(s) != 1 || s[0].State != "available" {
		t.Fatalf("after the restore: %+v", s)
	}
	if got := ok(t, root, "get", pc, blks[1].Cid().String()).stdout; got != string(blks[1].RawData()) {
		t.Fatal("restored piece serves other bytes")
	}
}
