package piecedir

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"

	commp "github.com/filecoin-project/go-fil-commp-hashhash"
	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	"github.com/multiformats/go-multihash"

	"github.com/spstack/dagwrap/internal/segindex"
)

// scanned is what one pass over a piece's bytes establishes.
type scanned struct {
	pieceCID   cid.Cid
	paddedSize uint64 // the piece size deals use
	fileSize   uint64 // bytes read, CAR plus any zero padding
	carSize    uint64 // bytes of the CAR itself
	blocks     int
	roots      []cid.Cid
}

// unpaddedSize is the size of the unpadded piece: the CAR followed by zeros
// up to the padded size less its FR32 expansion (x 127/128).
func (s scanned) unpaddedSize() uint64 { return s.paddedSize / 128 * 127 }

// countingReader counts the bytes the CAR parser consumed, so the offset
// where the CAR ends is known although reads are buffered.
type countingReader struct {
	r *bufio.Reader
	n uint64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += uint64(n)
	return n, err
}

func (c *countingReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}

// readCARv1Header reads the CAR header at the start of r and returns the
// reader of the sections after it, or an error saying it is not a CARv1.
func readCARv1Header(r io.Reader) (*carv2.BlockReader, error) {
	br, err := carv2.NewBlockReader(r, carv2.ZeroLengthSectionAsEOF(true))
	if err != nil {
		return nil, fmt.Errorf("not a CAR: %w", err)
	}
	if br.Version != 1 {
		return nil, fmt.Errorf("a CARv%d, but a piece holds a CARv1", br.Version)
	}
	return br, nil
}

// scanPiece reads a piece once: it checks that it is a CARv1 whose blocks
// match their CIDs, followed by nothing but zeros, and computes its piece
// commitment (CommP) over every byte. Every byte read is also written to
// copyTo, which may be nil.
func scanPiece(r io.Reader, copyTo io.Writer) (scanned, error) {
	var calc commp.Calc
	sinks := []io.Writer{&calc}
	if copyTo != nil {
		sinks = append(sinks, copyTo)
	}
	src := &countingReader{r: bufio.NewReaderSize(io.TeeReader(r, io.MultiWriter(sinks...)), 1<<20)}

	var out scanned
	// A file that is not a CARv1 is refused at once: hashing the rest would
	// only name the error by the CommP of bytes that are no piece.
	br, err := readCARv1Header(src)
	if err != nil {
		return out, err
	}
	out.roots = br.Roots
	carErr := func() error {
		for {
			before := src.n
			_, err := br.Next()
			if errors.Is(err, io.EOF) {
				out.carSize = before
				return nil
			}
			if err != nil {
				return fmt.Errorf("block %d at offset %d: %w", out.blocks+1, before, err)
			}
			out.blocks++
		}
	}()
	// The rest must be zero padding. Read it all in any case, so that the
	// piece is hashed (and copied) whole and an error can name it.
	var nonZero int64 = -1
	buf := make([]byte, 1<<16)
	for {
		n, err := src.Read(buf)
		if nonZero < 0 {
			for i, b := range buf[:n] {
				if b != 0 {
					nonZero = int64(src.n) - int64(n) + int64(i)
					break
				}
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return out, fmt.Errorf("read: %w", err)
		}
	}
	out.fileSize = src.n
	if out.fileSize < commp.MinPiecePayload {
		return out, fmt.Errorf("%d bytes is too small for a piece (at least %d)", out.fileSize, commp.MinPiecePayload)
	}
	digest, padded, err := calc.Digest()
	if err != nil {
		return out, fmt.Errorf("compute piece commitment: %w", err)
	}
	mh, err := multihash.Encode(digest, multihash.SHA2_256_TRUNC254_PADDED)
	if err != nil {
		return out, fmt.Errorf("encode piece commitment: %w", err)
	}
	out.pieceCID = cid.NewCidV1(cid.FilCommitmentUnsealed, mh)
	out.paddedSize = padded
	if carErr != nil {
		return out, carErr
	}
	if nonZero >= 0 {
		return out, fmt.Errorf("non-zero data at offset %d, after the CAR ends at %d", nonZero, out.carSize)
	}
	return out, nil
}

// isAggregate reports whether the file f holds an aggregated piece
// (FRC-0058): a data segment index with at least one valid entry at the end
// of a file of a whole unpadded piece size. Its segments need not start
// with a CAR (and the first need not be one): the wrapper indexes the
// segments that are CARs.
func isAggregate(f *os.File) bool {
	st, err := f.Stat()
	if err != nil {
		return false
	}
	_, ok, err := segindex.Read(f, st.Size())
	return err == nil && ok
}

// scanAggregate reads an aggregated piece once, computing its CommP (the
// aggregate's piece CID, as go-data-segment computes it) over every byte;
// its segments are not parsed here. Every byte read is also written to
// copyTo, which may be nil.
func scanAggregate(r io.Reader, copyTo io.Writer) (scanned, error) {
	var calc commp.Calc
	sinks := []io.Writer{&calc}
	if copyTo != nil {
		sinks = append(sinks, copyTo)
	}
	n, err := io.Copy(io.MultiWriter(sinks...), r)
	if err != nil {
		return scanned{}, fmt.Errorf("read: %w", err)
	}
	digest, padded, err := calc.Digest()
	if err != nil {
		return scanned{}, fmt.Errorf("compute piece commitment: %w", err)
	}
	mh, err := multihash.Encode(digest, multihash.SHA2_256_TRUNC254_PADDED)
	if err != nil {
		return scanned{}, fmt.Errorf("encode piece commitment: %w", err)
	}
	return scanned{pieceCID: cid.NewCidV1(cid.FilCommitmentUnsealed, mh), paddedSize: padded, fileSize: uint64(n)}, nil
}
