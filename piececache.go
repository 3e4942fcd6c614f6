package dagwrap

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
)

// Defaults of the cross-piece blockstore's cache of open pieces.
const (
	DefaultOpenPieces     = 256
	DefaultOpenPieceIdle  = 2 * time.Minute
	minOpenPieceSweepTick = time.Second
)

// pieceCache keeps pieces open for the cross-piece blockstore: at most max
// of them (more only while in use), none idle longer than idle. Concurrent requests for one
// piece share one acquire. A piece in use is never closed under its users:
// an evicted one (destroy, GC, the bound) closes on its last release.
//
// Lock order (see shards.go): the piece lock, then mu. mu is never held
// while loading or closing a piece, which take piece locks and talk to the
// dagstore.
type pieceCache struct {
	w    *Wrapper
	max  int
	idle time.Duration

	mu      sync.Mutex
	entries map[shard.Key]*openPiece
	leaving map[shard.Key][]*openPiece // out of entries, not closed yet
	lru     list.List                  // loaded entries, least recently released first
	closed  bool
	sweeper sync.Once
	// recent is the entry last released: a DAG walk reads its blocks from
	// one piece, so the next block is tried there before any lookup.
	recent *openPiece
}

// openPiece is one cached piece; refs counts its users and the load in
// flight.
type openPiece struct {
	key   shard.Key
	ready chan struct{} // closed once bs or err is set
	bs    ClosableBlockstore
	err   error
	refs  int
	used  time.Time
	elem  *list.Element // in lru once loaded, until forgotten
	gone  chan struct{} // closed once bs is closed
	// evicted entries are out of entries and close on their last release.
	evicted bool
}

func newPieceCache(w *Wrapper, max int, idle time.Duration) *pieceCache {
	return &pieceCache{w: w, max: max, idle: idle, entries: map[shard.Key]*openPiece{}, leaving: map[shard.Key][]*openPiece{}}
}

// get returns the piece's blockstore, loading it if it is not open, and the
// func that ends this use of it. A load that failed because its caller's
// context ended is retried by the next waiter whose context is alive.
func (c *pieceCache) get(ctx context.Context, pieceCid cid.Cid) (ClosableBlockstore, func(), error) {
	key := shard.KeyFromCID(pieceCid)
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, nil, ErrClosed
		}
		e := c.entries[key]
		if e == nil {
			e = &openPiece{key: key, ready: make(chan struct{}), gone: make(chan struct{}), refs: 1}
			c.entries[key] = e
			c.mu.Unlock()
			c.startSweeper()
			return c.load(ctx, e, pieceCid)
		}
		c.ref(e)
		c.mu.Unlock()
		select {
		case <-e.ready:
		case <-ctx.Done():
			c.release(e)
			return nil, nil, ctx.Err()
		}
		if e.err == nil {
			return e.bs, c.releaser(e), nil
		}
		c.release(e)
		if !isContextErr(e.err) || ctx.Err() != nil {
			return nil, nil, e.err
		}
	}
}

// load opens the piece for the entry's first user. No lazy registration:
// the cache serves only pieces the node has registered.
func (c *pieceCache) load(ctx context.Context, e *openPiece, pieceCid cid.Cid) (ClosableBlockstore, func(), error) {
	var bs ClosableBlockstore
	sbs, err := c.w.shards.open(ctx, pieceCid, nil)
	if err == nil {
		bs = withAggregateKeys(c.w, sbs)
	} else {
		err = fmt.Errorf("load piece %s: %w", pieceCid, err)
	}
	c.mu.Lock()
	e.bs, e.err = bs, err
	close(e.ready)
	if err != nil {
		c.forget(e)
		c.left(e)
		e.refs--
		close(e.gone) // nothing to close
		c.mu.Unlock()
		return nil, nil, err
	}
	c.mu.Unlock()
	return bs, c.releaser(e), nil
}

// left drops e from the evicted entries awaiting their last release; mu
// is held.
func (c *pieceCache) left(e *openPiece) {
	l := c.leaving[e.key]
	for i, x := range l {
		if x == e {
			l = append(l[:i], l[i+1:]...)
			break
		}
	}
	if len(l) == 0 {
		delete(c.leaving, e.key)
	} else {
		c.leaving[e.key] = l
	}
}

// isContextErr reports whether err is a context's end, which says nothing
// about the piece.
func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// ref adds a user; mu is held.
func (c *pieceCache) ref(e *openPiece) { e.refs++ }

// forget takes e out of the cache, so no new user finds it, and counts it
// as leaving until it is closed (or its load fails); mu is held.
func (c *pieceCache) forget(e *openPiece) {
	if c.entries[e.key] == e {
		delete(c.entries, e.key)
		c.leaving[e.key] = append(c.leaving[e.key], e)
	}
	if e.elem != nil {
		c.lru.Remove(e.elem)
		e.elem = nil
	}
	if c.recent == e {
		c.recent = nil
	}
	e.evicted = true
}

func (c *pieceCache) releaser(e *openPiece) func() {
	return sync.OnceFunc(func() { c.release(e) })
}

// release ends one use of e. The last user of an evicted entry closes it;
// otherwise it becomes idle, and while more than max pieces are open the
// least recently used idle ones are closed. (No allocation on this path:
// it runs once per block read.)
func (c *pieceCache) release(e *openPiece) {
	var toClose []*openPiece
	c.mu.Lock()
	e.refs--
	if e.refs == 0 && e.bs != nil {
		if e.evicted {
			toClose = append(toClose, e)
		} else {
			e.used = time.Now()
			if e.elem == nil {
				e.elem = c.lru.PushBack(e)
			} else {
				c.lru.MoveToBack(e.elem)
			}
			c.recent = e
			for el := c.lru.Front(); el != nil && c.lru.Len() > c.max; {
				old, next := el.Value.(*openPiece), el.Next()
				if old.refs == 0 {
					c.forget(old)
					toClose = append(toClose, old)
				}
				el = next
			}
		}
	}
	c.mu.Unlock()
	c.closeAll(toClose)
}

// closeAll closes the entries' pieces; each Close returns once the
// dagstore has processed the release.
func (c *pieceCache) closeAll(es []*openPiece) int {
	for _, e := range es {
		if err := e.bs.Close(); err != nil {
			c.w.log.Warnw("closing a cached piece", "piece", e.key, "error", err)
		}
		c.mu.Lock()
		c.left(e)
		c.mu.Unlock()
		close(e.gone)
	}
	return len(es)
}

// evict takes the piece out of the cache and returns channels closed once
// every open copy of it is closed: at once if nobody uses it, else on the
// last release (copies evicted earlier and still in use included).
func (c *pieceCache) evict(key shard.Key) []<-chan struct{} {
	c.mu.Lock()
	var toClose []*openPiece
	if e := c.entries[key]; e != nil {
		c.forget(e)
		if e.refs == 0 {
			toClose = append(toClose, e)
		} // else in use, or a load in flight: closed on its last release
	}
	var gone []<-chan struct{}
	for _, e := range c.leaving[key] { // every copy not closed yet
		gone = append(gone, e.gone)
	}
	c.mu.Unlock()
	c.closeAll(toClose)
	return gone
}

// withRecent runs fn on the most recently used open piece, if there is
// one, and reports whether it did.
func (c *pieceCache) withRecent(fn func(pc shard.Key, bs ClosableBlockstore)) bool {
	c.mu.Lock()
	e := c.recent
	if e == nil || c.closed {
		c.mu.Unlock()
		return false
	}
	c.ref(e)
	c.mu.Unlock()
	fn(e.key, e.bs)
	c.release(e)
	return true
}

// has reports whether the piece is open (or opening).
func (c *pieceCache) has(key shard.Key) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entries[key] != nil
}

// sweep closes the idle entries unused since before now-idle, and with
// all set, every idle entry, and returns how many it closed.
func (c *pieceCache) sweep(now time.Time, all bool) int {
	var toClose []*openPiece
	c.mu.Lock()
	for el := c.lru.Front(); el != nil; {
		e, next := el.Value.(*openPiece), el.Next()
		el = next
		if e.refs > 0 {
			continue // in use: it moves back when released
		}
		if !all && now.Sub(e.used) < c.idle {
			break // the rest were released later
		}
		c.forget(e)
		toClose = append(toClose, e)
	}
	c.mu.Unlock()
	return c.closeAll(toClose)
}

// startSweeper starts, once, the goroutine that closes idle pieces; it
// ends with the Wrapper's context.
func (c *pieceCache) startSweeper() {
	c.sweeper.Do(func() {
		tick := max(c.idle/2, minOpenPieceSweepTick)
		c.w.shards.spawn(func() {
			t := time.NewTicker(tick)
			defer t.Stop()
			for {
				select {
				case now := <-t.C:
					done, err := c.w.begin() // Close waits for a sweep in flight
					if err != nil {
						return
					}
					c.sweep(now, false)
					done()
				case <-c.w.ctx.Done():
					return
				}
			}
		})
	})
}

// close closes every open piece; Close calls it once no call is in
// flight, so no piece is in use.
func (c *pieceCache) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.sweep(time.Time{}, true)
}
