package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/filecoin-project/dagstore"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	format "github.com/ipfs/go-ipld-format"
	"github.com/spf13/cobra"

	"github.com/spstack/dagwrap"
	"github.com/spstack/dagwrap/internal/fsutil"
	"github.com/spstack/dagwrap/piecedir"
)

func (a *app) importCmd() *cobra.Command {
	var lazy bool
	var files []string
	cmd := &cobra.Command{
		Use:   "import FILE...",
		Short: "Add CAR files to the piece folder and register them as shards",
		Long: `import copies each CAR file into the piece folder as a piece (the CAR followed by
zeros up to its unpadded piece size), computes its piece CID (CommP), registers
it and indexes it (unless --lazy), then prints the piece CID, sizes, block
count, root and status. A file that is not a CARv1 is refused, naming it,
before anything is written. Importing a piece again is harmless: it puts back
the piece's file if it is missing (status "restored", and an errored shard is
recovered) and indexes a shard registered with --lazy (status "indexed").
The source files are never modified.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf("%s: want at least one CAR file (usage: %s)", cmd.CommandPath(), cmd.UseLine())
			}
			files = args
			return nil
		},
		RunE: a.action(func(ctx context.Context, n *node) error {
			type row struct {
				File       string   `json:"file"`
				PieceCID   string   `json:"piece_cid"`
				PaddedSize uint64   `json:"piece_size"`
				CARSize    uint64   `json:"car_size"`
				Blocks     int      `json:"blocks"`
				Roots      []string `json:"roots"`
				Status     string   `json:"status"`
			}
			var rows []row
			failed := 0
			for _, f := range files {
				p, status, err := a.importOne(ctx, n, f, !lazy)
				if err != nil {
					failed++
					fmt.Fprintf(a.stderr, "dagwrap: %v\n", err)
					continue
				}
				rows = append(rows, row{File: f, PieceCID: p.PieceCID.String(), PaddedSize: p.PaddedSize,
					CARSize: p.CARSize, Blocks: p.Blocks, Roots: cidStrings(p.Roots), Status: status})
			}
			if a.json {
				if rows == nil {
					rows = []row{}
				}
				if err := a.printJSON(rows); err != nil {
					return err
				}
			} else if len(rows) > 0 {
				tw := a.table()
				fmt.Fprintln(tw, "FILE\tPIECE CID\tPIECE SIZE\tCAR SIZE\tBLOCKS\tROOT\tSTATUS")
				for _, r := range rows {
					root := "-"
					if len(r.Roots) > 0 {
						root = r.Roots[0]
					}
					fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%s\n", r.File, r.PieceCID, r.PaddedSize, r.CARSize, r.Blocks, root, r.Status)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d files failed to import", failed, len(files))
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&lazy, "lazy", false, "register without indexing; the shard is indexed on first read or by init / init-all")
	return cmd
}

// importOne imports one CAR and registers its piece. Its status says what
// was new: "imported", "restored" (the folder had lost the piece's file),
// "registered" (the folder had it), "indexed" (a lazily registered shard,
// now indexed) or "exists".
func (a *app) importOne(ctx context.Context, n *node, file string, eager bool) (piecedir.Piece, string, error) {
	p, imported, err := n.dir.Import(ctx, file)
	if err != nil {
		return piecedir.Piece{}, "", err
	}
	status := "imported"
	switch imported {
	case piecedir.Existed:
		status = "registered"
	case piecedir.Restored:
		status = "restored"
	}
	err = n.w.RegisterShardSync(ctx, p.PieceCID, "", eager)
	if errors.Is(err, dagwrap.ErrShardExists) {
		return a.importExisting(ctx, n, file, p, imported, eager)
	}
	if err != nil {
		return piecedir.Piece{}, "", fmt.Errorf("import %s: %w", file, err)
	}
	return p, status, nil
}

// importExisting finishes the import of a piece already registered: a shard
// that failed while its file was missing is recovered once the file is
// restored, and a lazily registered one is indexed if the import is eager.
func (a *app) importExisting(ctx context.Context, n *node, file string, p piecedir.Piece, imported piecedir.ImportStatus, eager bool) (piecedir.Piece, string, error) {
	si, err := n.w.ShardInfo(p.PieceCID)
	if err != nil {
		return piecedir.Piece{}, "", fmt.Errorf("import %s: %w", file, err)
	}
	status := "exists"
	if imported == piecedir.Restored {
		status = "restored"
		if si.Error != nil {
			if err := n.w.RecoverShard(ctx, p.PieceCID); err != nil {
				return piecedir.Piece{}, "", fmt.Errorf("import %s: piece file restored, but: %w", file, err)
			}
			return p, status, nil
		}
	}
	if si.Error != nil {
		return piecedir.Piece{}, "", fmt.Errorf("import %s: piece %s is registered but %s: %v (run: dagwrap recover %s)",
			file, p.PieceCID, dagwrap.StateName(si.State), si.Error, p.PieceCID)
	}
	if eager && si.State == dagstore.ShardStateNew {
		if err := n.w.InitShard(ctx, p.PieceCID); err != nil {
			return piecedir.Piece{}, "", fmt.Errorf("import %s: %w", file, err)
		}
		if status == "exists" {
			status = "indexed"
		}
	}
	return p, status, nil
}

func (a *app) lookupCmd() *cobra.Command {
	var bc cid.Cid
	return &cobra.Command{
		Use:   "lookup BLOCKCID",
		Short: "List the pieces that hold a block",
		Args:  positional(1, blockArg(&bc)),
		RunE: a.action(func(_ context.Context, n *node) error {
			pieces, err := n.w.GetPiecesContainingBlock(bc)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(map[string]any{"block_cid": bc.String(), "pieces": cidStrings(pieces)})
			}
			for _, pc := range pieces {
				fmt.Fprintln(a.stdout, pc)
			}
			return nil
		}),
	}
}

func (a *app) getCmd() *cobra.Command {
	var pc, bc cid.Cid
	var rootBlock bool
	var out string
	cmd := &cobra.Command{
		Use:   "get PIECE [BLOCKCID]",
		Short: "Read one block of a piece, checked against its CID",
		Long: `get reads a block of a piece and writes its bytes to stdout, or to -o FILE. The
block is located through the piece's index and its bytes are hashed and
checked against the CID before anything is written. --root-block reads the
first root of the piece's CAR, so no block CID needs to be known. With --json
it prints {"piece_cid", "block_cid", "size", "data"} instead, the bytes in
base64; with -o FILE as well, the bytes go to FILE and "file" replaces "data".`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := positional(1, pieceArg(&pc), blockArg(&bc))(cmd, args); err != nil {
				return err
			}
			if (len(args) == 2) == rootBlock {
				return usageErrorf("%s: give either a BLOCKCID or --root-block", cmd.CommandPath())
			}
			return nil
		},
		RunE: a.action(func(ctx context.Context, n *node) error {
			if rootBlock {
				roots, err := pieceRoots(n, pc)
				if err != nil {
					return err
				}
				bc = roots[0]
			}
			blk, err := readBlock(ctx, n, pc, bc)
			if err != nil {
				return err
			}
			if out != "" {
				if err := fsutil.WriteFileAtomic(filepath.Dir(out), filepath.Base(out), blk.RawData()); err != nil {
					return fmt.Errorf("piece %s: block %s: %w", pc, bc, err)
				}
			}
			if a.json {
				res := blockJSON{PieceCID: pc.String(), BlockCID: bc.String(), Size: len(blk.RawData()), File: out}
				if out == "" {
					data := blk.RawData()
					res.Data = &data
				}
				return a.printJSON(res)
			}
			if out == "" {
				_, err = a.stdout.Write(blk.RawData())
			}
			return err
		}),
	}
	cmd.Flags().BoolVar(&rootBlock, "root-block", false, "read the first root block of the piece's CAR")
	cmd.Flags().StringVarP(&out, "output", "o", "", "write the block to this file instead of stdout")
	return cmd
}

// blockJSON is the output of get --json.
type blockJSON struct {
	PieceCID string  `json:"piece_cid"`
	BlockCID string  `json:"block_cid"`
	Size     int     `json:"size"`
	Data     *[]byte `json:"data,omitempty"` // base64; a pointer so that an empty block still has "data"
	File     string  `json:"file,omitempty"`
}

// pieceRoots returns the roots of the piece's CAR, from the piece folder.
func pieceRoots(n *node, pc cid.Cid) ([]cid.Cid, error) {
	if _, err := n.shard(pc); err != nil {
		return nil, err
	}
	p, err := n.dir.Piece(pc)
	if err != nil {
		return nil, fmt.Errorf("piece %s: roots unknown: %w", pc, err)
	}
	if len(p.Roots) == 0 {
		return nil, fmt.Errorf("piece %s: its CAR has no root", pc)
	}
	return p.Roots, nil
}

// loadShard opens the piece's blockstore. Unlike Wrapper.LoadShard it
// never registers an unknown piece: an operator's typo must not leave a
// shard behind.
func loadShard(ctx context.Context, n *node, pc cid.Cid) (dagwrap.ClosableBlockstore, error) {
	if _, err := n.shard(pc); err != nil {
		return nil, err
	}
	return n.w.LoadShard(ctx, pc)
}

func readBlock(ctx context.Context, n *node, pc, bc cid.Cid) (blocks.Block, error) {
	bs, err := loadShard(ctx, n, pc)
	if err != nil {
		return nil, err
	}
	defer bs.Close()
	blk, err := bs.Get(ctx, bc)
	if format.IsNotFound(err) {
		return nil, fmt.Errorf("piece %s does not hold block %s", pc, bc)
	}
	if err != nil {
		return nil, err
	}
	if err := verify(blk); err != nil {
		return nil, fmt.Errorf("piece %s: %w", pc, err)
	}
	return blk, nil
}

// verify hashes the block's bytes and compares them with its CID.
func verify(b blocks.Block) error {
	got, err := b.Cid().Prefix().Sum(b.RawData())
	if err != nil {
		return fmt.Errorf("block %s: hash: %w", b.Cid(), err)
	}
	if !got.Equals(b.Cid()) {
		return fmt.Errorf("block %s: bytes hash to %s: the data is corrupt", b.Cid(), got)
	}
	return nil
}
