// Package cargen writes synthetic unsealed pieces for benchmarks and tests:
// a CARv1 of random raw blocks and small dag-pb and dag-cbor nodes linking
// them, followed by zero padding up to the unpadded size of a Filecoin piece,
// together with the piece's real CID (CommP).
//
// The output is a function of the Spec alone: the same Spec always writes
// the same bytes and so the same piece CID.
package cargen

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
	"math/rand/v2"
	"os"

	commp "github.com/filecoin-project/go-fil-commp-hashhash"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	dagpb "github.com/ipld/go-codec-dagpb"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/datamodel"
	"github.com/ipld/go-ipld-prime/fluent/qp"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	"github.com/ipld/go-ipld-prime/node/basicnode"
	"github.com/multiformats/go-multihash"
)

// Spec describes a piece to generate.
type Spec struct {
	// PieceSize is the padded piece size: a power of two, at least 128.
	// The file holds UnpaddedSize(PieceSize) bytes.
	PieceSize uint64
	// BlockSize is the size of each raw block.
	BlockSize int
	// NodeEvery adds a small node linking the previous NodeEvery raw blocks
	// (dag-pb and dag-cbor in turn) after every NodeEvery raw blocks, as a
	// UnixFS-like DAG would; 0 means raw blocks only.
	NodeEvery int
	// MaxBlocks stops after this many blocks (nodes included); 0 fills the
	// piece with as many as fit.
	MaxBlocks int
	// Seed selects the content; pieces with different seeds share no block.
	Seed uint64
	// RecordCIDs keeps every block's CID in Piece.CIDs.
	RecordCIDs bool
}

// Piece describes a generated piece.
type Piece struct {
	Path      string
	CID       cid.Cid   // CommP: fil-commitment-unsealed, sha2-256-trunc254-padded
	PieceSize uint64    // padded
	Size      int64     // file size: the unpadded piece size
	CARSize   int64     // bytes of CARv1 before the zero padding
	Blocks    int       // blocks in the CAR, nodes included
	DataBytes int64     // bytes of block data (excluding CIDs and lengths)
	Root      cid.Cid   // the CAR's root, its first block
	Last      cid.Cid   // the CAR's last block
	CIDs      []cid.Cid // every block's CID in order, if Spec.RecordCIDs
}

// UnpaddedSize is the number of bytes a padded piece of size padded holds.
func UnpaddedSize(padded uint64) uint64 { return padded - padded/128 }

// Write generates the piece described by s into path, replacing any file.
func Write(path string, s Spec) (Piece, error) {
	if s.PieceSize < 128 || bits.OnesCount64(s.PieceSize) != 1 {
		return Piece{}, fmt.Errorf("cargen: piece size %d is not a power of two >= 128", s.PieceSize)
	}
	if s.BlockSize <= 0 {
		return Piece{}, fmt.Errorf("cargen: block size %d must be positive", s.BlockSize)
	}
	f, err := os.Create(path)
	if err != nil {
		return Piece{}, fmt.Errorf("cargen: %w", err)
	}
	p, err := write(f, s)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("cargen: %w", cerr)
	}
	if err != nil {
		_ = os.Remove(path)
		return Piece{}, err
	}
	p.Path = path
	return p, nil
}

// gen holds the state of one piece being written.
type gen struct {
	s      Spec
	out    *bufio.Writer
	cp     *commp.Calc
	rng    *rand.ChaCha8
	limit  int64 // unpadded size
	p      Piece
	buf    []byte
	hdr    []byte
	recent []cid.Cid // raw blocks since the last node
	nodes  int
}

func write(f *os.File, s Spec) (Piece, error) {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], s.Seed)
	copy(seed[8:], "dagwrap cargen")
	g := &gen{
		s:     s,
		out:   bufio.NewWriterSize(f, 1<<20),
		cp:    &commp.Calc{},
		rng:   rand.NewChaCha8(seed),
		limit: int64(UnpaddedSize(s.PieceSize)),
		p:     Piece{PieceSize: s.PieceSize},
		buf:   make([]byte, s.BlockSize),
	}
	root, err := g.cborNode(nil)
	if err != nil {
		return Piece{}, err
	}
	rootCID, err := sum(cid.DagCBOR, root)
	if err != nil {
		return Piece{}, err
	}
	if err := g.header(rootCID); err != nil {
		return Piece{}, err
	}
	g.p.Root = rootCID
	if ok, err := g.section(rootCID, root); err != nil || !ok {
		if err == nil {
			err = fmt.Errorf("cargen: piece size %d is too small for one block", s.PieceSize)
		}
		return Piece{}, err
	}
	for g.s.MaxBlocks == 0 || g.p.Blocks < g.s.MaxBlocks {
		ok, err := g.next()
		if err != nil {
			return Piece{}, err
		}
		if !ok {
			break
		}
	}
	g.p.CARSize = g.p.Size
	if err := g.pad(); err != nil {
		return Piece{}, err
	}
	if err := g.out.Flush(); err != nil {
		return Piece{}, fmt.Errorf("cargen: %w", err)
	}
	digest, padded, err := g.cp.Digest()
	if err != nil {
		return Piece{}, fmt.Errorf("cargen: piece commitment: %w", err)
	}
	if padded != s.PieceSize {
		return Piece{}, fmt.Errorf("cargen: piece commitment is over %d bytes, want %d", padded, s.PieceSize)
	}
	if g.p.CID, err = PieceCID(digest); err != nil {
		return Piece{}, err
	}
	return g.p, nil
}

// next writes the next block: a node when NodeEvery raw blocks are pending,
// a raw block otherwise. It reports false when the block does not fit.
func (g *gen) next() (bool, error) {
	if g.s.NodeEvery > 0 && len(g.recent) >= g.s.NodeEvery {
		var data []byte
		var codec uint64
		var err error
		if g.nodes%2 == 0 {
			data, err = g.pbNode(g.recent)
			codec = cid.DagProtobuf
		} else {
			data, err = g.cborNode(g.recent)
			codec = cid.DagCBOR
		}
		if err != nil {
			return false, err
		}
		c, err := sum(codec, data)
		if err != nil {
			return false, err
		}
		g.nodes++
		g.recent = g.recent[:0]
		return g.section(c, data)
	}
	_, _ = g.rng.Read(g.buf)
	c, err := sum(cid.Raw, g.buf)
	if err != nil {
		return false, err
	}
	ok, err := g.section(c, g.buf)
	if ok {
		g.recent = append(g.recent, c)
	}
	return ok, err
}

func sum(codec uint64, data []byte) (cid.Cid, error) {
	mh, err := multihash.Sum(data, multihash.SHA2_256, -1)
	if err != nil {
		return cid.Undef, fmt.Errorf("cargen: hash: %w", err)
	}
	return cid.NewCidV1(codec, mh), nil
}

// emit writes bytes to the file and to the piece commitment.
func (g *gen) emit(b []byte) error {
	if _, err := g.out.Write(b); err != nil {
		return fmt.Errorf("cargen: %w", err)
	}
	if _, err := g.cp.Write(b); err != nil {
		return fmt.Errorf("cargen: piece commitment: %w", err)
	}
	g.p.Size += int64(len(b))
	return nil
}

// header writes the CARv1 header: dag-cbor {roots: [root], version: 1}.
func (g *gen) header(root cid.Cid) error {
	n, err := qp.BuildMap(basicnode.Prototype.Map, 2, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "roots", qp.List(1, func(la datamodel.ListAssembler) {
			qp.ListEntry(la, qp.Link(cidlink.Link{Cid: root}))
		}))
		qp.MapEntry(ma, "version", qp.Int(1))
	})
	if err != nil {
		return fmt.Errorf("cargen: header: %w", err)
	}
	var b bytes.Buffer
	if err := dagcbor.Encode(n, &b); err != nil {
		return fmt.Errorf("cargen: header: %w", err)
	}
	return g.emit(append(binary.AppendUvarint(nil, uint64(b.Len())), b.Bytes()...))
}

// section writes one CARv1 section if it fits in the piece.
func (g *gen) section(c cid.Cid, data []byte) (bool, error) {
	cb := c.Bytes()
	n := uint64(len(cb) + len(data))
	g.hdr = binary.AppendUvarint(g.hdr[:0], n)
	if g.p.Size+int64(len(g.hdr))+int64(n) > g.limit {
		return false, nil
	}
	g.hdr = append(g.hdr, cb...)
	if err := g.emit(g.hdr); err != nil {
		return false, err
	}
	if err := g.emit(data); err != nil {
		return false, err
	}
	g.p.Blocks++
	g.p.DataBytes += int64(len(data))
	g.p.Last = c
	if g.s.RecordCIDs {
		g.p.CIDs = append(g.p.CIDs, c)
	}
	return true, nil
}

// pad fills the rest of the piece with zeros; a zero-length section reads
// as the end of the CAR.
func (g *gen) pad() error {
	zeros := make([]byte, 64<<10)
	for g.p.Size < g.limit {
		n := min(int64(len(zeros)), g.limit-g.p.Size)
		if err := g.emit(zeros[:n]); err != nil {
			return err
		}
	}
	return nil
}

// pbNode encodes a dag-pb node linking to links, with a little data.
func (g *gen) pbNode(links []cid.Cid) ([]byte, error) {
	data := make([]byte, 8+g.rng.Uint64()%24)
	_, _ = g.rng.Read(data)
	n, err := qp.BuildMap(dagpb.Type.PBNode, 2, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "Links", qp.List(int64(len(links)), func(la datamodel.ListAssembler) {
			for _, l := range links {
				qp.ListEntry(la, qp.Map(2, func(ma datamodel.MapAssembler) {
					qp.MapEntry(ma, "Hash", qp.Link(cidlink.Link{Cid: l}))
					qp.MapEntry(ma, "Tsize", qp.Int(int64(g.s.BlockSize)))
				}))
			}
		}))
		qp.MapEntry(ma, "Data", qp.Bytes(data))
	})
	if err != nil {
		return nil, fmt.Errorf("cargen: dag-pb node: %w", err)
	}
	var b bytes.Buffer
	if err := dagpb.Encode(n, &b); err != nil {
		return nil, fmt.Errorf("cargen: dag-pb node: %w", err)
	}
	return b.Bytes(), nil
}

// cborNode encodes a dag-cbor node linking to links, with a little data.
func (g *gen) cborNode(links []cid.Cid) ([]byte, error) {
	data := make([]byte, 8+g.rng.Uint64()%24)
	_, _ = g.rng.Read(data)
	n, err := qp.BuildMap(basicnode.Prototype.Map, 2, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "data", qp.Bytes(data))
		qp.MapEntry(ma, "links", qp.List(int64(len(links)), func(la datamodel.ListAssembler) {
			for _, l := range links {
				qp.ListEntry(la, qp.Link(cidlink.Link{Cid: l}))
			}
		}))
	})
	if err != nil {
		return nil, fmt.Errorf("cargen: dag-cbor node: %w", err)
	}
	var b bytes.Buffer
	if err := dagcbor.Encode(n, &b); err != nil {
		return nil, fmt.Errorf("cargen: dag-cbor node: %w", err)
	}
	return b.Bytes(), nil
}

// PieceCID turns a CommP digest into a piece CID.
func PieceCID(digest []byte) (cid.Cid, error) {
	mh, err := multihash.Encode(digest, multihash.SHA2_256_TRUNC254_PADDED)
	if err != nil {
		return cid.Undef, fmt.Errorf("cargen: piece CID: %w", err)
	}
	return cid.NewCidV1(cid.FilCommitmentUnsealed, mh), nil
}

// CommP computes the piece CID and padded size of the bytes r yields: at
// least 65 bytes, the unpadded piece (CAR and zero padding).
func CommP(r io.Reader) (cid.Cid, uint64, error) {
	var cp commp.Calc
	if _, err := io.Copy(&cp, r); err != nil {
		return cid.Undef, 0, fmt.Errorf("cargen: piece commitment: %w", err)
	}
	digest, padded, err := cp.Digest()
	if err != nil {
		return cid.Undef, 0, fmt.Errorf("cargen: piece commitment: %w", err)
	}
	c, err := PieceCID(digest)
	return c, padded, err
}

// Read returns the roots and every block of the CAR at path, in file order;
// zero padding after the last block ends it, as in an unsealed piece.
func Read(path string) ([]cid.Cid, []blocks.Block, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	br, err := carv2.NewBlockReader(f, carv2.ZeroLengthSectionAsEOF(true))
	if err != nil {
		return nil, nil, fmt.Errorf("cargen: read %s: %w", path, err)
	}
	var out []blocks.Block
	for {
		b, err := br.Next()
		if err == io.EOF {
			return br.Roots, out, nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("cargen: read %s: %w", path, err)
		}
		out = append(out, b)
	}
}
