package dagwrap

import (
	"sync"

	"github.com/filecoin-project/dagstore/shard"
)

// pieceLocks serialises the multi-step operations on one piece (register,
// destroy and its cleanup, start-up reconciliation) without a global lock.
type pieceLocks struct {
	mu sync.Mutex
	m  map[shard.Key]*pieceLock
	// pending counts the acquires and recoveries queued for each piece
	// whose result has not arrived yet (see hold); idle holds the channels
	// to close when a piece's count drops to zero.
	pending map[shard.Key]int
	idle    map[shard.Key][]chan struct{}
	// open counts the accessors of each piece that callers hold (open
	// blockstores): the fact destroy refuses on, instead of the dagstore's
	// "active references" error text.
	open map[shard.Key]int
	// registering counts each piece's eager registrations whose result has
	// not arrived: until the dagstore begins initialising, the shard is
	// still new, and a destroy would remove it under the initialisation.
	registering map[shard.Key]int
}

type pieceLock struct {
	sync.Mutex
	users int
}

// lock locks key and returns its unlock func. Entries live only while used.
func (p *pieceLocks) lock(key shard.Key) func() {
	p.mu.Lock()
	if p.m == nil {
		p.m = make(map[shard.Key]*pieceLock)
	}
	l := p.m[key]
	if l == nil {
		l = &pieceLock{}
		p.m[key] = l
	}
	l.users++
	p.mu.Unlock()

	l.Lock()
	return func() {
		l.Unlock()
		p.mu.Lock()
		if l.users--; l.users == 0 {
			delete(p.m, key)
		}
		p.mu.Unlock()
	}
}

// hold records an acquire or recovery queued for key, until the returned
// func (or unhold) is called once its result arrives. While one is
// pending the shard may be initialising or recovering, and the dagstore
// would destroy it anyway and then write it back, so destroy refuses.
// Call it with the piece locked, right after queueing.
func (p *pieceLocks) hold(key shard.Key) func() {
	p.count(&p.pending, key)
	return sync.OnceFunc(func() { p.unhold(key) })
}

// count adds one to key's entry in *m, creating the map if needed.
func (p *pieceLocks) count(m *map[shard.Key]int, key shard.Key) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if *m == nil {
		*m = make(map[shard.Key]int)
	}
	(*m)[key]++
}

// unhold ends one hold of key.
func (p *pieceLocks) unhold(key shard.Key) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending[key]--; p.pending[key] <= 0 {
		delete(p.pending, key)
		for _, ch := range p.idle[key] {
			close(ch)
		}
		delete(p.idle, key)
	}
}

// whenIdle returns a channel closed once no acquire or recovery of key is
// pending.
func (p *pieceLocks) whenIdle(key shard.Key) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	ch := make(chan struct{})
	if p.pending[key] <= 0 {
		close(ch)
		return ch
	}
	if p.idle == nil {
		p.idle = make(map[shard.Key][]chan struct{})
	}
	p.idle[key] = append(p.idle[key], ch)
	return ch
}

// held reports whether an acquire or recovery of key is pending.
func (p *pieceLocks) held(key shard.Key) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pending[key] > 0
}

// registers records an eager registration of key queued, until the
// returned func is called once its result arrives. Call it with the piece
// locked, right after queueing.
func (p *pieceLocks) registers(key shard.Key) func() {
	p.count(&p.registering, key)
	return sync.OnceFunc(func() { p.uncount(&p.registering, key) })
}

// registeringCount returns how many eager registrations of key are pending.
func (p *pieceLocks) registeringCount(key shard.Key) int { return p.countOf(&p.registering, key) }

// uncount takes one from key's entry in *m, dropping it at zero.
func (p *pieceLocks) uncount(m *map[shard.Key]int, key shard.Key) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if (*m)[key]--; (*m)[key] <= 0 {
		delete(*m, key)
	}
}

// countOf returns key's entry in *m.
func (p *pieceLocks) countOf(m *map[shard.Key]int, key shard.Key) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return (*m)[key]
}

// opened records an accessor of key handed to a caller, until the returned
// func is called once the accessor is closed. Call it before the acquire's
// hold ends, so destroy never sees the piece free while it is served.
func (p *pieceLocks) opened(key shard.Key) func() {
	p.count(&p.open, key)
	return sync.OnceFunc(func() { p.uncount(&p.open, key) })
}

// openCount returns how many accessors of key callers hold.
func (p *pieceLocks) openCount(key shard.Key) int { return p.countOf(&p.open, key) }
