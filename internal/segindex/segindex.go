// Package segindex reads the data segment index (FRC-0058) at the end of an
// unpadded piece, with go-data-segment's own decoding and checks. The root
// package indexes the segments it lists; piecedir accepts an aggregate
// whose first bytes are not a CAR because of it.
package segindex

import (
	"errors"
	"fmt"
	"io"

	"github.com/filecoin-project/go-data-segment/datasegment"
	"github.com/filecoin-project/go-data-segment/fr32"
	"github.com/filecoin-project/go-state-types/abi"
	"github.com/ipfs/go-cid"
)

// Entry is one non-empty entry of a piece's data segment index.
type Entry struct {
	Number int // position in the index, from 0
	Desc   datasegment.SegmentDesc
	// Err says why the entry is not trusted (bad checksum or alignment,
	// or a segment outside the piece's data area); nil: valid.
	Err error
}

// Offset is where the segment starts in the unpadded piece.
func (e Entry) Offset() uint64 { return e.Desc.UnpaddedOffest() }

// Size is the segment's length in the unpadded piece.
func (e Entry) Size() uint64 { return e.Desc.UnpaddedLength() }

// PieceCID is the segment's own piece CID (its CommDs).
func (e Entry) PieceCID() cid.Cid { return e.Desc.PieceCID() }

// PaddedSize is the padded size of a piece of n unpadded bytes: the
// smallest power of two (at least 128) whose unpadded size (x 127/128)
// holds n bytes. A piece file as deals store it (piecedir's, Lotus's
// unsealed copy) holds exactly that unpadded size.
func PaddedSize(n uint64) uint64 {
	p := uint64(128)
	for p-p/128 < n && p < 1<<62 {
		p <<= 1
	}
	return p
}

// probeEntries is how many entries are looked at before a piece whose index
// area holds no valid entry is declared not an aggregate: an index lists
// its entries from the start of its area (go-data-segment writes them so),
// and the area of an ordinary piece is either zero padding or CAR data.
const probeEntries = 16

// Read returns the entries of the data segment index of the unpadded piece
// r of size bytes, in index order, up to the first empty (all-zero) entry,
// and whether the piece is an aggregate: it has an index area and at least
// one valid entry. Entries that fail validation are returned with Err set.
func Read(r io.ReaderAt, size int64) ([]Entry, bool, error) {
	if size <= 0 {
		return nil, false, nil
	}
	padded := PaddedSize(uint64(size))
	unpadded := padded - padded/128
	if uint64(size) != unpadded || padded < 2048 {
		return nil, false, nil // no room for an index area, or not a whole piece
	}
	deal := abi.PaddedPieceSize(padded)
	maxEntries := uint64(datasegment.MaxIndexEntriesInDeal(deal))
	areaPadded := maxEntries * datasegment.EntrySize
	if areaPadded >= padded {
		return nil, false, nil
	}
	start := datasegment.DataSegmentIndexStartOffset(deal)
	dataEnd := padded - areaPadded // where segments must end, padded
	sr := io.NewSectionReader(r, int64(start), int64(unpadded-start))

	var out []Entry
	valid := 0
	in := make([]byte, 127)
	pad := make([]byte, 128)
	for n := 0; uint64(n) < maxEntries; n += 2 {
		if _, err := io.ReadFull(sr, in); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, false, fmt.Errorf("read data segment index at %d: %w", start+uint64(n/2)*127, err)
		}
		fr32.Pad(in, pad)
		for j := 0; j < 2; j++ {
			raw := pad[j*datasegment.EntrySize : (j+1)*datasegment.EntrySize]
			if allZero(raw) {
				return finish(out, valid)
			}
			e := Entry{Number: n + j}
			if err := e.Desc.UnmarshalBinary(raw); err != nil {
				e.Err = err
			} else {
				e.Err = check(e.Desc, dataEnd)
			}
			if e.Err == nil {
				valid++
			}
			out = append(out, e)
		}
		if valid == 0 && len(out) >= probeEntries {
			return nil, false, nil
		}
	}
	return finish(out, valid)
}

func finish(out []Entry, valid int) ([]Entry, bool, error) {
	if valid == 0 {
		return nil, false, nil
	}
	return out, true, nil
}

// check validates an entry as go-data-segment does (checksum, alignment)
// and checks its segment lies in the piece's data area, before the index.
func check(d datasegment.SegmentDesc, dataEnd uint64) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("index entry fails validation: %w", err)
	}
	if d.Size == 0 {
		return errors.New("index entry describes an empty segment")
	}
	if d.Offset > dataEnd || d.Size > dataEnd-d.Offset {
		return fmt.Errorf("segment (padded offset %d, size %d) does not end before the index at %d", d.Offset, d.Size, dataEnd)
	}
	return nil
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
