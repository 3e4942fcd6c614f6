package dagwrap

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/filecoin-project/dagstore/index"
	"github.com/filecoin-project/dagstore/shard"
	carindex "github.com/ipld/go-car/v2/index"
)

// writeGate admits writes under the root until Close closes it. The
// dagstore runs initialisations and acquires in goroutines its own Close
// does not wait for; every write they can make under the root (a transient
// copy, an index, a top-level index entry, a shard record) goes through
// dagwrap code that enters this gate, so that once Close has closed it and
// the writes in flight have ended, nothing writes under the root any more.
type writeGate struct {
	// ctx ends when the gate closes (or the Wrapper's context does): it
	// cancels the copies in flight.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	active sync.WaitGroup
	temps  map[string]struct{} // temporary files of copies in flight
}

func newWriteGate(parent context.Context) *writeGate {
	ctx, cancel := context.WithCancel(parent)
	return &writeGate{ctx: ctx, cancel: cancel, temps: make(map[string]struct{})}
}

// enter admits one write, or fails with ErrClosed; call the returned func
// when the write is done. Keep what runs inside short and never blocking on
// a MinerAPI: close waits for it.
func (g *writeGate) enter() (func(), error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, ErrClosed
	}
	g.active.Add(1)
	return g.active.Done, nil
}

// track records a temporary file, removed by close if still there.
func (g *writeGate) track(path string) {
	g.mu.Lock()
	g.temps[path] = struct{}{}
	g.mu.Unlock()
}

func (g *writeGate) untrack(path string) {
	g.mu.Lock()
	delete(g.temps, path)
	g.mu.Unlock()
}

// close refuses every later write, cancels the copies in flight, waits
// for the writes in flight to end and removes the temporary files of the
// copies that did not finish. It is safe to call more than once.
func (g *writeGate) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.cancel()
	g.active.Wait()
	g.mu.Lock()
	defer g.mu.Unlock()
	for p := range g.temps {
		_ = os.Remove(p)
		delete(g.temps, p)
	}
}

// gatedIndexRepo is the index repo as the dagstore sees it: its writes go
// through the gate.
type gatedIndexRepo struct {
	index.FullIndexRepo
	gate *writeGate
}

func (r gatedIndexRepo) AddFullIndex(key shard.Key, idx carindex.Index) error {
	done, err := r.gate.enter()
	if err != nil {
		return fmt.Errorf("write index: %w", err)
	}
	defer done()
	return r.FullIndexRepo.AddFullIndex(key, idx)
}

func (r gatedIndexRepo) DropFullIndex(key shard.Key) (bool, error) {
	done, err := r.gate.enter()
	if err != nil {
		return false, fmt.Errorf("drop index: %w", err)
	}
	defer done()
	return r.FullIndexRepo.DropFullIndex(key)
}

// gatedInverted is the top-level index as the dagstore sees it: its
// inserts go through the gate, and stop when it closes.
type gatedInverted struct {
	index.Inverted
	gate *writeGate
}

func (g gatedInverted) AddMultihashesForShard(ctx context.Context, mhs index.MultihashIterator, k shard.Key) error {
	done, err := g.gate.enter()
	if err != nil {
		return fmt.Errorf("add to top-level index: %w", err)
	}
	defer done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(g.gate.ctx, cancel)()
	return g.Inverted.AddMultihashesForShard(ctx, mhs, k)
}
