// Command dagwrap-bench measures dagwrap against the original design (a
// sequential-only mount that copies pieces into transients/) and against
// go-car's and the dagstore's own primitives on the same files, in one run,
// and prints a markdown table: each case's dagwrap figure, its baseline,
// their ratio (always dagwrap ÷ baseline) and the target.
//
//	go run ./cmd/dagwrap-bench              # the defaults take a few minutes
//	go run ./cmd/dagwrap-bench -cases 1,2 -big-piece 256MiB
//
// It generates its own pieces (CARv1 of random raw blocks and small dag-pb
// and dag-cbor nodes, zero-padded, with their CommP piece CIDs) in a
// temporary folder that it removes at the end (-keep keeps it).
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spstack/dagwrap/internal/cargen"
	"github.com/spstack/dagwrap/internal/testkit"
)

type config struct {
	dir, cases            string
	keep                  bool
	bigPiece, smallPiece  uint64
	bigBlock, smallBlock  uint64
	nodeEvery             int
	reps, seqReps, fbReps int
	deals                 int
	lookupPieces, lookups int
	lookupBlocks          int
	tliPieces, tliMHs     int
	tliShared             float64
	tliScale              int
	clients               int
	retrievalPieces       int
	retrievalRequests     int
	touchPieces           int
	restartShards         int
	indexDSN              string // case 13's database
	cpuProf, memProf      string
	records               int // case 15
	recordsBlock          uint64
	recordsFloor          bool
}

type bench struct {
	cfg   config
	work  string
	store *testkit.Files
	// pg makes openWrapper put the piece directory in the database, in
	// schema pgSchema (case 14).
	pg       bool
	pgSchema string
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// sizeFlag is a byte size flag that reads "1GiB", "256MiB", "1048576".
type sizeFlag struct{ v *uint64 }

func (f sizeFlag) String() string {
	if f.v == nil {
		return ""
	}
	return humanize.IBytes(*f.v)
}

func (f sizeFlag) Set(s string) error {
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return err
	}
	*f.v = n
	return nil
}

func parseFlags() config {
	c := config{bigPiece: 4 << 30, smallPiece: 2 << 30, bigBlock: 256 << 10, smallBlock: 1 << 10, recordsBlock: 64}
	flag.StringVar(&c.dir, "dir", "", "folder for generated pieces and roots (default: a new temporary folder)")
	flag.BoolVar(&c.keep, "keep", false, "keep the generated files")
	flag.StringVar(&c.cases, "cases", "1,2,3,4,5,6,7,8,9,10,11,12,13,14", "cases to run (6 comes with 1 and 2; 13 and 14 need -index-dsn; 15, a piece of -records blocks, only if asked)")
	flag.Var(sizeFlag{&c.bigPiece}, "big-piece", "padded size of the piece of big blocks")
	flag.Var(sizeFlag{&c.bigBlock}, "big-block", "raw block size of the big-block piece")
	flag.Var(sizeFlag{&c.smallPiece}, "small-piece", "padded size of the piece of small blocks")
	flag.Var(sizeFlag{&c.smallBlock}, "small-block", "raw block size of the small-block piece")
	flag.IntVar(&c.nodeEvery, "node-every", 8, "a small dag-pb or dag-cbor node after every N raw blocks")
	flag.IntVar(&c.reps, "reps", 5, "repetitions of each measurement (median reported)")
	flag.IntVar(&c.seqReps, "seq-reps", 3, "repetitions of measurements of the sequential mount (each copies a whole piece)")
	flag.IntVar(&c.fbReps, "first-block-reps", 30, "repetitions of the first-block-after-GC measurement")
	flag.IntVar(&c.deals, "deals", 100_000, "deals migrated in case 4")
	flag.IntVar(&c.lookupPieces, "lookup-pieces", 1000, "indexed pieces in case 5")
	flag.IntVar(&c.lookupBlocks, "lookup-blocks", 1000, "blocks per piece in case 5")
	flag.IntVar(&c.lookups, "lookups", 10_000, "lookups timed in cases 5 and 7")
	flag.IntVar(&c.tliPieces, "tli-pieces", 1000, "pieces added to the top-level indexes in case 7")
	flag.IntVar(&c.tliMHs, "tli-mhs", 1000, "multihashes per piece in case 7")
	flag.IntVar(&c.tliScale, "tli-scale", 20_000_000, "entries added to the top-level index in case 9")
	flag.Float64Var(&c.tliShared, "tli-shared", 0.1, "share of each piece's multihashes common to every piece in case 7")
	flag.IntVar(&c.clients, "clients", 64, "concurrent clients in case 10")
	flag.IntVar(&c.retrievalPieces, "retrieval-pieces", 200, "pieces read at random in case 10")
	flag.IntVar(&c.retrievalRequests, "retrieval-requests", 20_000, "block requests timed in case 10")
	flag.IntVar(&c.touchPieces, "touch-pieces", 10_000, "pieces touched once each for case 10's memory row")
	flag.IntVar(&c.restartShards, "restart-shards", 1_000_000, "lazily registered shards in case 12's restart")
	flag.StringVar(&c.indexDSN, "index-dsn", os.Getenv("DAGWRAP_INDEX_DSN"), "postgres:// URL for case 13, the PostgreSQL piece directory (default $DAGWRAP_INDEX_DSN; none: skipped)")
	flag.IntVar(&c.records, "records", 55_000_000, "blocks of the piece of case 15 (opt-in: -cases 15)")
	flag.Var(sizeFlag{&c.recordsBlock}, "records-block", "raw block size of case 15's piece")
	flag.BoolVar(&c.recordsFloor, "records-floor", true, "time go-car's GenerateIndexFromFile on case 15's piece too")
	flag.StringVar(&c.cpuProf, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.StringVar(&c.memProf, "memprofile", "", "write a heap profile to this file right after case 4's migration (still open) or at the end of the run")
	flag.Parse()
	return c
}

func main() {
	cfg := parseFlags()
	if err := run(cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "dagwrap-bench:", err)
		os.Exit(1)
	}
}

func run(cfg config, stdout io.Writer) error {
	want := map[string]bool{}
	for _, c := range strings.Split(cfg.cases, ",") {
		want[strings.TrimSpace(c)] = true
	}
	work := cfg.dir
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("", "dagwrap-bench-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	if !cfg.keep {
		defer os.RemoveAll(work)
	}
	stopProfile, err := startCPUProfile(cfg.cpuProf)
	if err != nil {
		return err
	}
	defer stopProfile()
	b := &bench{cfg: cfg, work: work, store: &testkit.Files{}}
	machine := machineLine(work)
	logf("%s", machine)
	start := time.Now()

	var rows []row
	add := func(r []row, err error) error {
		if err != nil {
			return err
		}
		rows = append(rows, r...)
		return nil
	}
	// Case 4 first: its memory figures are cleanest before the pieces exist.
	if want["4"] {
		if err := add(b.case4()); err != nil {
			return fmt.Errorf("case 4: %w", err)
		}
	}
	needPieces := want["1"] || want["2"] || want["3"] || want["6"] || want["8"] || want["10"] || want["14"]
	if needPieces {
		big, err := b.generate("big", cfg.bigPiece, cfg.bigBlock, 1)
		if err != nil {
			return err
		}
		small, err := b.generate("small", cfg.smallPiece, cfg.smallBlock, 2)
		if err != nil {
			return err
		}
		bigLabel := fmt.Sprintf("%s piece of %s blocks", humanize.IBytes(cfg.bigPiece), humanize.IBytes(cfg.bigBlock))
		smallLabel := fmt.Sprintf("%s piece of %s blocks", humanize.IBytes(cfg.smallPiece), humanize.IBytes(cfg.smallBlock))
		var case6 []row
		split := func(r []row, err error) error {
			if err != nil {
				return err
			}
			for _, x := range r {
				if x.Case == "6" {
					case6 = append(case6, x)
				} else {
					rows = append(rows, x)
				}
			}
			return nil
		}
		if want["1"] || want["6"] {
			if err := split(b.case1(big, bigLabel, 1.2)); err != nil {
				return fmt.Errorf("case 1: %w", err)
			}
			if err := split(b.case1(small, smallLabel, 0.25)); err != nil {
				return fmt.Errorf("case 1: %w", err)
			}
		}
		if want["2"] || want["6"] {
			if err := split(b.case2(big, bigLabel, true, 1.5)); err != nil {
				return fmt.Errorf("case 2: %w", err)
			}
			smallRows, err := b.case2(small, smallLabel, false, 3)
			if err := split(smallRows, err); err != nil {
				return fmt.Errorf("case 2: %w", err)
			}
			if err := add(b.firstBlockScaling(small, smallRows, smallLabel)); err != nil {
				return fmt.Errorf("case 2: %w", err)
			}
		}
		if want["3"] {
			for _, p := range []struct {
				p     cargen.Piece
				label string
			}{{big, bigLabel}, {small, smallLabel}} {
				if err := add(b.case3(p.p, p.label)); err != nil {
					return fmt.Errorf("case 3: %w", err)
				}
			}
		}
		if want["8"] {
			if err := add(b.case8(small, smallLabel)); err != nil {
				return fmt.Errorf("case 8: %w", err)
			}
		}
		if want["14"] {
			if err := add(b.case14(small, smallLabel)); err != nil {
				return fmt.Errorf("case 14: %w", err)
			}
		}
		if want["10"] {
			if err := add(b.case10(small, smallLabel)); err != nil {
				return fmt.Errorf("case 10: %w", err)
			}
		}
		rows = append(rows, case6...)
		for _, p := range []cargen.Piece{big, small} {
			_ = os.Remove(p.Path)
			_ = os.Remove(p.Path + ".idx")
		}
	}
	if want["5"] {
		if err := add(b.case5()); err != nil {
			return fmt.Errorf("case 5: %w", err)
		}
	}
	if want["7"] {
		if err := add(b.case7()); err != nil {
			return fmt.Errorf("case 7: %w", err)
		}
	}
	if want["9"] {
		if err := add(b.case9()); err != nil {
			return fmt.Errorf("case 9: %w", err)
		}
	}
	if want["13"] {
		if err := add(b.case13()); err != nil {
			return fmt.Errorf("case 13: %w", err)
		}
	}
	if want["12"] {
		if err := add(b.case12()); err != nil {
			return fmt.Errorf("case 12: %w", err)
		}
	}
	if want["11"] {
		if err := add(b.case11()); err != nil {
			return fmt.Errorf("case 11: %w", err)
		}
	}
	if want["15"] {
		if err := add(b.case15()); err != nil {
			return fmt.Errorf("case 15: %w", err)
		}
	}
	if !want["4"] {
		writeHeapProfile(cfg.memProf, "at the end")
	}
	slices.SortStableFunc(rows, func(a, b row) int { // by case number
		x, _ := strconv.Atoi(a.Case)
		y, _ := strconv.Atoi(b.Case)
		return x - y
	})

	out := bufio.NewWriter(stdout)
	defer out.Flush()
	fmt.Fprintf(out, "Machine: %s. Total run: %s.\n\n", machine, time.Since(start).Round(time.Second))
	writeTable(out, rows)
	return nil
}

func (b *bench) generate(name string, pieceSize, blockSize uint64, seed uint64) (cargen.Piece, error) {
	logf("generating a %s piece of %s blocks", humanize.IBytes(pieceSize), humanize.IBytes(blockSize))
	p, err := cargen.Write(filepath.Join(b.work, name+".car"), cargen.Spec{
		PieceSize: pieceSize, BlockSize: int(blockSize), NodeEvery: b.cfg.nodeEvery, Seed: seed, RecordCIDs: true,
	})
	if err != nil {
		return cargen.Piece{}, fmt.Errorf("generate %s piece: %w", name, err)
	}
	logf("  %s: %s blocks, CAR %s of %s, piece %s", name, commas(p.Blocks), humanize.IBytes(uint64(p.CARSize)), humanize.IBytes(uint64(p.Size)), p.CID)
	b.store.Add(p.CID, p.Path, uint64(p.Size))
	return p, nil
}

func commas(n int) string { return humanize.Comma(int64(n)) }

// machineLine describes where the run happens: CPUs, memory, file system.
func machineLine(dir string) string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := "unknown"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				if kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64); err == nil {
					mem = humanize.IBytes(kb << 10)
				}
			}
		}
	}
	load := ""
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = ", load average " + strings.Join(strings.Fields(string(b))[:3], " ") + " at start"
	}
	return fmt.Sprintf("%d CPUs (%s), %s RAM, work folder on %s, %s %s/%s%s",
		runtime.NumCPU(), model, mem, fsType(dir), runtime.Version(), runtime.GOOS, runtime.GOARCH, load)
}

func fsType(dir string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return "unknown fs"
	}
	names := map[int64]string{0xEF53: "ext4", 0x58465342: "xfs", 0x01021994: "tmpfs", 0x9123683E: "btrfs",
		0x794c7630: "overlayfs", 0x2FC12FC1: "zfs", 0x6969: "nfs"}
	if n, ok := names[int64(st.Type)]; ok {
		return n
	}
	return fmt.Sprintf("fs 0x%x", st.Type)
}
