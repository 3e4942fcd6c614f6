package toplevel

import (
	"context"
	"encoding/binary"

	"github.com/multiformats/go-multihash"
	"github.com/multiformats/go-varint"
	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/opt"
	"github.com/syndtr/goleveldb/leveldb/util"
)

// reclaim deletes the entries of removed pieces, then their piece records,
// until Close. Reclaims cut short by Close resume at the next Open.
func (x *Index) reclaim() {
	defer x.wg.Done()
	for {
		select {
		case <-x.kick:
		case <-x.ctx.Done():
			return
		}
		x.mu.Lock()
		batch := x.toPurge
		x.toPurge = nil
		x.mu.Unlock()
		scan := map[uint32]bool{}
		var done []uint32
		for _, p := range batch {
			if p.it == nil {
				scan[p.num] = true
				continue
			}
			num := p.num
			if err := x.writeEntries(x.ctx, p.it, func(b *leveldb.Batch, mh multihash.Multihash) { b.Delete(entryKey(mh, num)) }); err != nil {
				if x.ctx.Err() != nil {
					return
				}
				scan[num] = true // the index could not be read after all
				continue
			}
			done = append(done, num)
		}
		if len(scan) > 0 {
			if err := x.scanDelete(scan); err != nil {
				if x.ctx.Err() == nil {
					x.log.Errorw("top-level index: reclaiming removed pieces' entries failed; retried at the next start", "error", err)
				}
				if x.ctx.Err() != nil {
					return
				}
				continue
			}
			for num := range scan {
				done = append(done, num)
			}
		}
		x.forgetPieces(done)
	}
}

// scanDelete deletes every entry of the pieces in nums, found by a scan.
func (x *Index) scanDelete(nums map[uint32]bool) error {
	it := x.db.NewIterator(util.BytesPrefix([]byte{entryPrefix}), &opt.ReadOptions{DontFillCache: true})
	defer it.Release()
	b := new(leveldb.Batch)
	for it.Next() {
		if num, ok := entryPiece(it.Key()); ok && nums[num] {
			b.Delete(append([]byte(nil), it.Key()...))
			if b.Len() >= batchEntries {
				if err := x.db.Write(b, nil); err != nil {
					return err
				}
				b.Reset()
				if err := x.ctx.Err(); err != nil {
					return err
				}
			}
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	return x.db.Write(b, nil)
}

// entryPiece returns the piece number an entry key ends with.
func entryPiece(k []byte) (uint32, bool) {
	rest := k[1:]
	_, n, err := varint.FromUvarint(rest)
	if err != nil {
		return 0, false
	}
	l, m, err := varint.FromUvarint(rest[n:])
	if err != nil || uint64(len(rest)) < uint64(n+m)+l {
		return 0, false
	}
	rest = rest[uint64(n+m)+l:]
	num, c := binary.Uvarint(rest)
	if c <= 0 || c != len(rest) || num > uint64(^uint32(0)) {
		return 0, false
	}
	return uint32(num), true
}

// forgetPieces deletes the piece records of reclaimed pieces; the synced
// write also makes their entries' deletion durable.
func (x *Index) forgetPieces(nums []uint32) {
	if len(nums) == 0 {
		return
	}
	b := new(leveldb.Batch)
	for _, num := range nums {
		b.Delete(pieceRecord(num))
	}
	if err := x.db.Write(b, &opt.WriteOptions{Sync: true}); err != nil {
		x.log.Errorw("top-level index: forgetting reclaimed pieces failed", "error", err)
		return
	}
	x.mu.Lock()
	for _, num := range nums {
		if p := x.pieces[num]; p != nil && p.state == removed {
			delete(x.pieces, num)
		}
	}
	close(x.reclaimed)
	x.reclaimed = make(chan struct{})
	x.mu.Unlock()
	x.log.Infow("top-level index: reclaimed removed pieces' entries", "pieces", len(nums))
}

// WaitReclaimed returns once no removed piece's entries are left to
// reclaim, or ctx ended.
func (x *Index) WaitReclaimed(ctx context.Context) error {
	for {
		x.mu.Lock()
		left := false
		for _, p := range x.pieces {
			if p.state == removed {
				left = true
				break
			}
		}
		ch := x.reclaimed
		x.mu.Unlock()
		if !left {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
