package main

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/filecoin-project/dagstore/mount"
	"github.com/ipfs/go-cid"
	"github.com/spstack/dagwrap"
	"github.com/spstack/dagwrap/internal/cargen"
)

// pieceStore serves generated pieces from their files. randomAPI and seqAPI
// present it to dagwrap as the two kinds of node API.
type pieceStore struct {
	mu     sync.RWMutex
	pieces map[cid.Cid]cargen.Piece
}

func newPieceStore() *pieceStore {
	return &pieceStore{pieces: map[cid.Cid]cargen.Piece{}}
}

func (s *pieceStore) add(p cargen.Piece) {
	s.mu.Lock()
	s.pieces[p.CID] = p
	s.mu.Unlock()
}

func (s *pieceStore) get(pc cid.Cid) (cargen.Piece, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p, ok := s.pieces[pc]
	if !ok {
		return cargen.Piece{}, fmt.Errorf("piece %s: not in the piece folder", pc)
	}
	return p, nil
}

func (s *pieceStore) open(pc cid.Cid) (*os.File, error) {
	p, err := s.get(pc)
	if err != nil {
		return nil, err
	}
	return os.Open(p.Path)
}

func (s *pieceStore) GetUnpaddedCARSize(_ context.Context, pc cid.Cid) (uint64, error) {
	p, err := s.get(pc)
	return uint64(p.Size), err
}

func (s *pieceStore) IsUnsealed(_ context.Context, pc cid.Cid) (bool, error) {
	_, err := s.get(pc)
	return err == nil, err
}

func (s *pieceStore) Start(context.Context) error { return nil }

// randomAPI hands out the piece files themselves: ReadAt and Seek work, and
// it says so.
type randomAPI struct{ *pieceStore }

var _ dagwrap.RandomAccessMinerAPI = randomAPI{}

func (a randomAPI) FetchUnsealedPiece(_ context.Context, pc cid.Cid) (mount.Reader, error) {
	return a.open(pc)
}

func (randomAPI) RandomAccess() bool { return true }

// seqAPI is a MinerAPI of the original design: its readers only stream, so
// each piece is copied into transients/ before it is used.
type seqAPI struct{ *pieceStore }

func (a seqAPI) FetchUnsealedPiece(_ context.Context, pc cid.Cid) (mount.Reader, error) {
	f, err := a.open(pc)
	if err != nil {
		return nil, err
	}
	return seqReader{f}, nil
}

type seqReader struct{ f *os.File }

func (r seqReader) Read(p []byte) (int, error)        { return r.f.Read(p) }
func (r seqReader) Close() error                      { return r.f.Close() }
func (r seqReader) ReadAt([]byte, int64) (int, error) { return 0, mount.ErrRandomAccessUnsupported }
func (r seqReader) Seek(int64, int) (int64, error)    { return 0, mount.ErrSeekUnsupported }
