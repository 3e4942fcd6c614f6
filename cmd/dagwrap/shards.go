package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/filecoin-project/dagstore"
	"github.com/ipfs/go-cid"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/spstack/dagwrap"
	"github.com/spstack/dagwrap/piecedir"
)

// shardJSON is one shard in JSON output.
type shardJSON struct {
	PieceCID string `json:"piece_cid"`
	State    string `json:"state"`
	Error    string `json:"error,omitempty"`
}

func toShardJSON(s dagwrap.ShardInfo) shardJSON {
	out := shardJSON{PieceCID: s.PieceCID.String(), State: dagwrap.StateName(s.State)}
	if s.Error != nil {
		out.Error = s.Error.Error()
	}
	return out
}

func (a *app) listCmd() *cobra.Command {
	var stateName string
	var quiet bool
	var filter *dagstore.ShardState
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List shards, with their state and error",
		Args: func(cmd *cobra.Command, args []string) error {
			if err := positional(0)(cmd, args); err != nil {
				return err
			}
			if stateName != "" {
				s, err := dagwrap.ParseState(stateName)
				if err != nil {
					return usageErrorf("--state: %v", err)
				}
				filter = &s
			}
			return nil
		},
		RunE: a.action(func(_ context.Context, n *node) error {
			shards, err := n.w.ListShards()
			if err != nil {
				return err
			}
			out := make([]shardJSON, 0, len(shards))
			for _, s := range shards {
				if filter == nil || s.State == *filter {
					out = append(out, toShardJSON(s))
				}
			}
			switch {
			case a.json:
				return a.printJSON(out)
			case quiet:
				for _, s := range out {
					fmt.Fprintln(a.stdout, s.PieceCID)
				}
				return nil
			}
			tw := a.table()
			fmt.Fprintln(tw, "PIECE CID\tSTATE\tERROR")
			for _, s := range out {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", s.PieceCID, s.State, oneLine(s.Error))
			}
			return tw.Flush()
		}),
	}
	cmd.Flags().StringVar(&stateName, "state", "", "only shards in this state: new, initializing, available, serving, recovering or errored")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print piece CIDs only, one a line")
	return cmd
}

// oneLine keeps a table row on one line.
func oneLine(s string) string {
	if s == "" {
		return "-"
	}
	return strings.ReplaceAll(s, "\n", "; ")
}

// infoJSON is the output of info.
type infoJSON struct {
	shardJSON
	Indexed    bool     `json:"indexed"`
	IndexSize  int64    `json:"index_size"`
	Blocks     int      `json:"index_blocks"`
	File       string   `json:"file,omitempty"`
	Size       uint64   `json:"size,omitempty"`
	PaddedSize uint64   `json:"padded_size,omitempty"`
	CARSize    uint64   `json:"car_size,omitempty"`
	CARBlocks  int      `json:"car_blocks,omitempty"`
	Roots      []string `json:"roots,omitempty"`
	// Oversized lists blocks left out of the index: larger than the
	// blockstore serves, so never announced.
	Oversized []oversizedJSON `json:"oversized_blocks,omitempty"`
	// Segments lists an aggregated piece's segments (FRC-0058).
	Segments []segmentJSON `json:"segments,omitempty"`
}

type oversizedJSON struct {
	CID    string `json:"cid"`
	Offset int64  `json:"offset"`
	Size   uint64 `json:"size"`
}

func (a *app) infoCmd() *cobra.Command {
	var pc cid.Cid
	return &cobra.Command{
		Use:   "info PIECE",
		Short: "Show a shard's state, index statistics and piece file",
		Args:  positional(1, pieceArg(&pc)),
		RunE: a.action(func(ctx context.Context, n *node) error {
			si, err := n.shard(pc)
			if err != nil {
				return err
			}
			out := infoJSON{shardJSON: toShardJSON(si)}
			if segs, err := n.w.Segments(ctx, pc); err == nil {
				out.Segments = toSegmentsJSON(segs)
			} else if si.State != dagstore.ShardStateErrored {
				return err
			}
			// A record that could not be restored has no stats; it is
			// still worth showing.
			if st, err := n.w.IndexStats(pc); err == nil {
				out.Indexed, out.IndexSize, out.Blocks = st.Indexed, st.IndexSize, st.Blocks
				for _, b := range st.Oversized {
					out.Oversized = append(out.Oversized, oversizedJSON{CID: b.CID.String(), Offset: b.Offset, Size: b.Size})
				}
			} else if si.State != dagstore.ShardStateErrored {
				return err
			}
			if p, err := n.dir.Piece(pc); err == nil {
				out.File = filepath.Join(n.dir.Path(), p.File)
				out.Size, out.PaddedSize, out.CARSize, out.CARBlocks = p.Size, p.PaddedSize, p.CARSize, p.Blocks
				out.Roots = cidStrings(p.Roots)
			} else if !errors.Is(err, piecedir.ErrUnknownPiece) {
				return err
			}
			if a.json {
				return a.printJSON(out)
			}
			tw := a.table()
			fmt.Fprintf(tw, "piece:\t%s\n", out.PieceCID)
			fmt.Fprintf(tw, "state:\t%s\n", out.State)
			fmt.Fprintf(tw, "error:\t%s\n", oneLine(out.Error))
			if out.Indexed {
				fmt.Fprintf(tw, "index:\t%d blocks, %d bytes\n", out.Blocks, out.IndexSize)
			} else {
				fmt.Fprintf(tw, "index:\tnone yet (run: dagwrap init %s)\n", out.PieceCID)
			}
			for _, b := range out.Oversized {
				fmt.Fprintf(tw, "not indexed:\tblock %s (%d bytes at offset %d): over the blockstore's 8 MiB section limit\n", b.CID, b.Size, b.Offset)
			}
			if out.File == "" {
				fmt.Fprintf(tw, "file:\tnot in the piece folder\n")
			} else {
				fmt.Fprintf(tw, "file:\t%s\n", out.File)
				fmt.Fprintf(tw, "piece size:\t%d padded, %d unpadded\n", out.PaddedSize, out.Size)
				if len(out.Segments) == 0 { // an aggregate's CARs are its segments'
					fmt.Fprintf(tw, "CAR:\t%d bytes, %d blocks\n", out.CARSize, out.CARBlocks)
					fmt.Fprintf(tw, "roots:\t%s\n", strings.Join(out.Roots, " "))
				}
			}
			printSegments(tw, out.Segments)
			return tw.Flush()
		}),
	}
}

func (a *app) initCmd() *cobra.Command {
	var pc cid.Cid
	return &cobra.Command{
		Use:   "init PIECE",
		Short: "Fetch and index one shard now",
		Args:  positional(1, pieceArg(&pc)),
		RunE: a.action(func(ctx context.Context, n *node) error {
			if _, err := n.shard(pc); err != nil {
				return err
			}
			if err := n.w.InitShard(ctx, pc); err != nil {
				return err
			}
			st, err := n.w.IndexStats(pc)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(map[string]any{"piece_cid": pc.String(), "index_blocks": st.Blocks, "index_size": st.IndexSize})
			}
			fmt.Fprintf(a.stdout, "initialised piece %s: %d blocks indexed\n", pc, st.Blocks)
			return nil
		}),
	}
}

func (a *app) initAllCmd() *cobra.Command {
	var concurrency int
	var includeSealed bool
	cmd := &cobra.Command{
		Use:   "init-all",
		Short: "Fetch and index every shard not initialised yet",
		Long: `init-all initialises every shard still in state new (registered lazily), a
bounded number at a time. Pieces that are sealed only are skipped unless
--include-sealed: unsealing one takes minutes of CPU.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := positional(0)(cmd, args); err != nil {
				return err
			}
			if concurrency < 1 {
				return usageErrorf("--concurrency must be at least 1, got %d", concurrency)
			}
			return nil
		},
		RunE: a.action(func(ctx context.Context, n *node) error {
			progress := a.progress("initialising shards")
			res, err := n.w.InitAllShards(ctx,
				dagwrap.InitConcurrency(concurrency),
				dagwrap.IncludeSealed(includeSealed),
				dagwrap.OnInitProgress(progress.update))
			progress.finish()
			total := len(res.Initialized) + len(res.Skipped) + len(res.Failed)
			if a.json {
				if jerr := a.printJSON(map[string]any{
					"initialized": cidStrings(res.Initialized),
					"skipped":     cidStrings(res.Skipped),
					"failed":      pieceErrors(res.Failed),
				}); jerr != nil {
					return jerr
				}
			} else {
				fmt.Fprintf(a.stdout, "initialised %d, failed %d, skipped %d sealed of %d shards\n",
					len(res.Initialized), len(res.Failed), len(res.Skipped), total)
				if len(res.Skipped) > 0 {
					fmt.Fprintln(a.stdout, "sealed pieces were skipped: add --include-sealed to unseal them")
				}
			}
			return err
		}),
	}
	cmd.Flags().IntVar(&concurrency, "concurrency", dagwrap.DefaultInitConcurrency, "shards initialised at once")
	cmd.Flags().BoolVar(&includeSealed, "include-sealed", false, "also initialise pieces that must be unsealed first")
	a.metricsFlag(cmd)
	return cmd
}

// progress shows InitAllShards' progress on stderr: a bar on a terminal,
// plain lines otherwise (logs, pipes, tests).
type progress struct {
	a    *app
	desc string
	bar  *progressbar.ProgressBar
	tty  bool
}

func (a *app) progress(desc string) *progress {
	p := &progress{a: a, desc: desc}
	if f, ok := a.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
	}
	return p
}

func (p *progress) update(s dagwrap.InitProgress) {
	finished := s.Done + s.Failed + s.Skipped
	if !p.tty {
		fmt.Fprintf(p.a.stderr, "progress: %d/%d (initialised %d, failed %d, skipped %d)\n", finished, s.Total, s.Done, s.Failed, s.Skipped)
		return
	}
	if p.bar == nil {
		p.bar = progressbar.NewOptions(s.Total,
			progressbar.OptionSetWriter(p.a.stderr),
			progressbar.OptionSetDescription(p.desc),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionClearOnFinish(),
		)
	}
	p.bar.Describe(fmt.Sprintf("%s (%d failed, %d skipped)", p.desc, s.Failed, s.Skipped))
	_ = p.bar.Set(finished)
}

func (p *progress) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}

func (a *app) recoverCmd() *cobra.Command {
	var pc cid.Cid
	return &cobra.Command{
		Use:   "recover PIECE",
		Short: "Re-fetch and re-index an errored shard",
		Args:  positional(1, pieceArg(&pc)),
		RunE: a.action(func(ctx context.Context, n *node) error {
			if _, err := n.shard(pc); err != nil {
				return err
			}
			if err := n.w.RecoverShard(ctx, pc); err != nil {
				return err
			}
			if a.json {
				return a.printJSON(map[string]any{"recovered": []string{pc.String()}})
			}
			fmt.Fprintf(a.stdout, "recovered piece %s\n", pc)
			return nil
		}),
	}
}

func (a *app) recoverAllCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "recover-all",
		Short: "Recover every errored shard",
		Args:  positional(0),
		RunE: a.action(func(ctx context.Context, n *node) error {
			res, err := n.w.RecoverAllShards(ctx)
			if a.json {
				if jerr := a.printJSON(map[string]any{"recovered": cidStrings(res.Recovered), "failed": pieceErrors(res.Failed)}); jerr != nil {
					return jerr
				}
			} else {
				for _, pc := range res.Recovered {
					fmt.Fprintf(a.stdout, "recovered piece %s\n", pc)
				}
				fmt.Fprintf(a.stdout, "recovered %d, failed %d\n", len(res.Recovered), len(res.Failed))
			}
			return err
		}),
	}
}

func (a *app) gcCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Remove the transient copies of shards not being read",
		Args:  positional(0),
		RunE: a.action(func(ctx context.Context, n *node) error {
			res, err := n.w.GC(ctx)
			if a.json {
				type reclaimed struct {
					PieceCID string `json:"piece_cid"`
					Bytes    int64  `json:"bytes"`
				}
				rs := make([]reclaimed, 0, len(res.Reclaimed))
				for _, r := range res.Reclaimed {
					rs = append(rs, reclaimed{r.PieceCID.String(), r.Bytes})
				}
				if jerr := a.printJSON(map[string]any{"reclaimed": rs, "bytes": res.Bytes, "failed": pieceErrors(res.Failed)}); jerr != nil {
					return jerr
				}
			} else {
				for _, r := range res.Reclaimed {
					fmt.Fprintf(a.stdout, "reclaimed %d bytes of piece %s\n", r.Bytes, r.PieceCID)
				}
				fmt.Fprintf(a.stdout, "reclaimed %d transients, %d bytes\n", len(res.Reclaimed), res.Bytes)
			}
			return err
		}),
	}
}

func (a *app) destroyCmd() *cobra.Command {
	var pc cid.Cid
	var removePiece bool
	cmd := &cobra.Command{
		Use:   "destroy PIECE",
		Short: "Destroy a shard: its record, index, transient and block lookups",
		Args:  positional(1, pieceArg(&pc)),
		RunE: a.action(func(ctx context.Context, n *node) error {
			if _, err := n.shard(pc); err != nil {
				return err
			}
			if err := n.w.DestroyShardSync(ctx, pc); err != nil {
				return err
			}
			removed := false
			if removePiece {
				if err := n.dir.Remove(pc); err != nil && !errors.Is(err, piecedir.ErrUnknownPiece) {
					return err
				}
				removed = true
			}
			if a.json {
				return a.printJSON(map[string]any{"destroyed": pc.String(), "piece_removed": removed})
			}
			fmt.Fprintf(a.stdout, "destroyed piece %s\n", pc)
			if removed {
				fmt.Fprintf(a.stdout, "removed piece %s from the piece folder\n", pc)
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&removePiece, "remove-piece", false, "also delete the piece's file from the piece folder")
	return cmd
}
