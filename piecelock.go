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
