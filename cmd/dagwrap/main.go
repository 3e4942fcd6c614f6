// Command dagwrap administers a dagwrap root folder directly: it imports CAR
// files as pieces, lists, initialises, recovers, garbage-collects and
// destroys shards, looks blocks up and reads them back. It mirrors (and
// extends) `lotus-miner dagstore`, but needs no running node: every command
// opens the root itself, so it fails with a clear message while another
// process (a node, or another dagwrap command) holds the root.
//
// Pieces live in <root>/pieces, a folder of padded CARv1 files named by
// their piece CIDs (see package piecedir).
//
// Exit codes: 0 success, 1 operational failure, 2 usage error.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/ipfs/go-cid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/spstack/dagwrap"
	"github.com/spstack/dagwrap/piecedir"
)

const (
	// RootEnv names the environment variable that sets the default root.
	RootEnv = "DAGWRAP_ROOT"
	// IndexDSNEnv names the environment variable that sets --index-dsn's default.
	IndexDSNEnv = "DAGWRAP_INDEX_DSN"
	// DefaultRoot is the root used when neither --root nor $DAGWRAP_ROOT is set.
	DefaultRoot = "./dagwrap-data"
	// piecesDir is the piece folder's name under the root.
	piecesDir = "pieces"
)

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns its exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := newRootCmd(stdout, stderr)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var fail *failure
	if errors.As(err, &fail) {
		fmt.Fprintf(stderr, "dagwrap: %v\n", fail.err)
		return exitFail
	}
	// Anything not marked as an operational failure comes from parsing the
	// command line: cobra's own errors and ours.
	fmt.Fprintf(stderr, "dagwrap: %v\nRun 'dagwrap --help' for usage.\n", err)
	return exitUsage
}

// failure marks an error as operational (exit 1) rather than a usage error.
type failure struct{ err error }

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

// usageError is a bad command line detected by a command itself.
type usageError struct{ msg string }

func (u *usageError) Error() string { return u.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// app holds what every command shares: the root, the output streams and
// the output format.
type app struct {
	root        string
	json        bool
	metricsAddr string // set by long-running commands' --metrics-addr
	indexDSN    string // --index-dsn: the piece directory's database; "" = under the root
	stdout      io.Writer
	stderr      io.Writer
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	a := &app{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "dagwrap",
		Short: "Administer a dagwrap root: pieces, shards, indexes and blocks",
		Long: `dagwrap administers a dagwrap root folder: the dagstore's shard state, indexes,
transients and a folder of unsealed pieces (<root>/pieces).

The root is --root, else $` + RootEnv + `, else ` + DefaultRoot + `. Only one process can
use a root at a time.

Exit codes: 0 success, 1 operational failure, 2 usage error.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(*cobra.Command, []string) {
			if a.root == "" {
				a.root = os.Getenv(RootEnv)
			}
			if a.root == "" {
				a.root = DefaultRoot
			}
			if a.indexDSN == "" {
				a.indexDSN = os.Getenv(IndexDSNEnv)
			}
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&a.root, "root", "", "root folder (default $"+RootEnv+", else "+DefaultRoot+")")
	root.PersistentFlags().BoolVar(&a.json, "json", false, "print JSON instead of text")
	root.PersistentFlags().StringVar(&a.indexDSN, "index-dsn", "", "postgres:// URL of a shared piece directory (default $"+IndexDSNEnv+", else indexes under the root)")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageErrorf("%s: %v", c.CommandPath(), err)
	})
	root.AddCommand(
		a.importCmd(),
		a.listCmd(),
		a.infoCmd(),
		a.initCmd(),
		a.initAllCmd(),
		a.recoverCmd(),
		a.recoverAllCmd(),
		a.gcCmd(),
		a.lookupCmd(),
		a.getCmd(),
		a.exportCmd(),
		a.destroyCmd(),
		a.migrateCmd(),
		a.serveCmd(),
	)
	return root
}

// node is an open root: the piece folder and the Wrapper over it.
type node struct {
	root    string
	dir     *piecedir.Dir
	w       *dagwrap.Wrapper
	metrics *dagwrap.MetricsServer // nil without --metrics-addr
}

// open opens and starts the root. A root held by another process is a
// failure that says so.
func (a *app) open(ctx context.Context) (*node, error) {
	root, err := filepath.Abs(a.root)
	if err != nil {
		return nil, fmt.Errorf("root %s: %w", a.root, err)
	}
	n := &node{root: root, dir: piecedir.New(filepath.Join(root, piecesDir))}
	var opts []dagwrap.Option
	if a.metricsAddr != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		if n.metrics, err = dagwrap.ServeMetrics(a.metricsAddr, reg); err != nil {
			return nil, fmt.Errorf("--metrics-addr: %w", err)
		}
		fmt.Fprintf(a.stderr, "metrics at http://%s/metrics\n", n.metrics.Addr())
		opts = append(opts, dagwrap.WithMetrics(reg))
	}
	n.w, err = dagwrap.New(dagwrap.Config{RootDir: root, IndexDSN: a.indexDSN}, n.dir, opts...)
	if errors.Is(err, dagwrap.ErrRootLocked) {
		err = fmt.Errorf("root %s is in use by another process (a node or another dagwrap command); stop it or use another --root", root)
	}
	if err != nil {
		n.closeMetrics()
		return nil, err
	}
	if err := n.w.Start(ctx); err != nil {
		_ = n.close()
		return nil, err
	}
	return n, nil
}

func (n *node) close() error {
	err := n.w.Close()
	n.closeMetrics()
	return err
}

func (n *node) closeMetrics() {
	if n.metrics != nil {
		_ = n.metrics.Close()
	}
}

// metricsFlag adds --metrics-addr to a long-running command.
func (a *app) metricsFlag(cmd *cobra.Command) {
	cmd.Flags().StringVar(&a.metricsAddr, "metrics-addr", "", "serve Prometheus metrics at http://ADDR/metrics while the command runs (e.g. 127.0.0.1:9469)")
}

// shard returns the piece's shard, or an error saying it is not registered.
// Commands check this first so that they never register a piece by accident
// (Wrapper.LoadShard registers unknown pieces).
func (n *node) shard(pc cid.Cid) (dagwrap.ShardInfo, error) {
	si, err := n.w.ShardInfo(pc)
	if errors.Is(err, dagwrap.ErrShardUnknown) {
		return si, fmt.Errorf("piece %s is not registered in root %s (see: dagwrap list)", pc, n.root)
	}
	return si, err
}

// action adapts a command body: it opens the root, runs fn, closes the
// root, and marks any error as an operational failure. Arguments are
// checked before (by each command's Args), so a bad command line is a
// usage error even when the root cannot be opened.
func (a *app) action(fn func(ctx context.Context, n *node) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		ctx := cmd.Context()
		n, err := a.open(ctx)
		if err != nil {
			return &failure{err}
		}
		err = fn(ctx, n)
		if cerr := n.close(); cerr != nil && err == nil {
			err = cerr
		}
		if err != nil {
			return &failure{err}
		}
		return nil
	}
}
