package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	"github.com/spf13/cobra"
)

func (a *app) exportCmd() *cobra.Command {
	var pc cid.Cid
	var out string
	segment := -1
	cmd := &cobra.Command{
		Use:   "export PIECE -o FILE",
		Short: "Write a piece's CAR back out, byte for byte, checking every block",
		Long: `export writes the piece's CARv1 to FILE exactly as it was imported: every byte from
the start of the piece to the end of its last section (the zero padding after
it is left out), so every section comes out, in the piece's order, duplicates
and identity CIDs included, and FILE has the piece's CommP. Each block's bytes
are checked against its CID on the way; a block that does not match fails the
export, naming the piece and the block, and FILE is not written. FILE is
replaced only once it is complete and synced. An aggregated piece (FRC-0058)
is no one CAR: --segment N writes segment N's CAR (see dagwrap info).`,
		Args: positional(1, pieceArg(&pc)),
		RunE: a.action(func(ctx context.Context, n *node) error {
			export := exportPiece
			if segment >= 0 {
				export = func(ctx context.Context, n *node, pc cid.Cid, out string) (exported, error) {
					return exportSegment(ctx, n, pc, segment, out)
				}
			}
			res, err := export(ctx, n, pc, out)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(map[string]any{"piece_cid": pc.String(), "file": out, "blocks": res.sections, "bytes": res.bytes})
			}
			fmt.Fprintf(a.stdout, "exported %d blocks (%d bytes) of piece %s to %s\n", res.sections, res.bytes, pc, out)
			return nil
		}),
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "the CAR file to write (required)")
	_ = cmd.MarkFlagRequired("output")
	cmd.Flags().IntVar(&segment, "segment", -1, "of an aggregated piece, the segment whose CAR to write (numbered from 0, see info)")
	return cmd
}

// exported says what an export wrote.
type exported struct {
	sections int   // CAR sections (blocks), identity CIDs and repeats included
	bytes    int64 // bytes of the CARv1
}

// exportPiece writes the registered piece's CAR to path.
func exportPiece(ctx context.Context, n *node, pc cid.Cid, path string) (exported, error) {
	if _, err := n.shard(pc); err != nil {
		return exported{}, err
	}
	piece, err := n.dir.FetchUnsealedPiece(ctx, pc)
	if err != nil {
		return exported{}, fmt.Errorf("export to %s: %w", path, err)
	}
	defer piece.Close()
	if err := refuseAggregate(pc, piece); err != nil {
		return exported{}, err
	}
	// Renaming the export over the piece's own file would cut its padding off.
	if f, ok := piece.(*os.File); ok {
		if a, err := f.Stat(); err == nil {
			if b, err := os.Stat(path); err == nil && os.SameFile(a, b) {
				return exported{}, fmt.Errorf("export piece %s to %s: that is the piece's own file", pc, path)
			}
		}
	}
	return writeExport(ctx, pc, piece, path)
}

// writeExport copies the CARv1 at the start of piece to path, verbatim:
// go-car's block reader parses each section (and checks its bytes against
// its CID) from a reader that copies exactly the bytes it consumes, and the
// copy is cut where the last section ends.
func writeExport(ctx context.Context, pc cid.Cid, piece io.Reader, path string) (exported, error) {
	fail := func(format string, args ...any) (exported, error) {
		return exported{}, fmt.Errorf("export piece %s to %s: "+format, append([]any{pc, path}, args...)...)
	}
	dir := filepath.Dir(path)
	removeStaleExportTemps(dir)
	tmp, err := createExportTemp(dir)
	if err != nil {
		return fail("%w", err)
	}
	defer tmp.Abort()
	out := bufio.NewWriterSize(tmp, 1<<20)
	src := &copyingReader{r: bufio.NewReaderSize(&ctxReader{ctx: ctx, r: piece}, 1<<20), w: out}
	interrupted := func(sections int) (exported, error) {
		return fail("interrupted after %d blocks: %w", sections, interruption(ctx))
	}

	br, err := carv2.NewBlockReader(src, carv2.ZeroLengthSectionAsEOF(true))
	switch {
	case ctx.Err() != nil:
		return interrupted(0)
	case src.werr != nil:
		return fail("%w", src.werr)
	case err != nil:
		return fail("the piece does not start with a CAR header: %w", err)
	case br.Version != 1:
		return fail("the piece holds a CARv%d, not a CARv1", br.Version)
	}
	var res exported
	for {
		end := src.n
		_, err := br.Next()
		if errors.Is(err, io.EOF) && src.werr == nil {
			res.bytes = end
			break
		}
		switch {
		case ctx.Err() != nil:
			return interrupted(res.sections)
		case src.werr != nil:
			return fail("%w", src.werr)
		case err != nil:
			return exported{}, fmt.Errorf("export piece %s to %s: the piece is corrupt at block %d (offset %d): %w", pc, path, res.sections+1, end, err)
		}
		res.sections++
	}
	// The reader consumed the zero-length section that ends the CAR, if any;
	// it is padding, not CAR.
	if err := out.Flush(); err != nil {
		return fail("%w", err)
	}
	if err := tmp.Truncate(res.bytes); err != nil {
		return fail("%w", err)
	}
	// Closing drops the lock once the file has its final name.
	if err := tmp.Commit(path); err != nil {
		return fail("%w", err)
	}
	return res, nil
}

// interruption is why ctx ended: the signal, when one stopped the command.
func interruption(ctx context.Context) error {
	cause := context.Cause(ctx)
	if cause == nil || errors.Is(cause, ctx.Err()) {
		if cause == nil {
			return ctx.Err()
		}
		return cause
	}
	return fmt.Errorf("%w: %w", cause, ctx.Err())
}

// copyingReader hands the CAR parser bytes one read at a time and copies
// exactly those bytes to w, counting them. It is an io.ByteReader, so the
// parser reads no further ahead than it consumes.
type copyingReader struct {
	r    *bufio.Reader
	w    io.Writer
	n    int64
	werr error // the first write error; reads fail from then on
}

func (c *copyingReader) Read(p []byte) (int, error) {
	if c.werr != nil {
		return 0, c.werr
	}
	n, err := c.r.Read(p)
	if n > 0 {
		if _, werr := c.w.Write(p[:n]); werr != nil {
			c.werr = werr
			return 0, werr
		}
		c.n += int64(n)
	}
	return n, err
}

func (c *copyingReader) ReadByte() (byte, error) {
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return 0, err
	}
	return b[0], nil
}

// ctxReader stops a long read when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r *ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
