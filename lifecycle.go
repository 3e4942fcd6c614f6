package dagwrap

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Start starts the MinerAPI, restores shard state and starts the dagstore
// with its GC, trace and recovery goroutines. Close stops them all. Start
// returns when ctx ends, even if the MinerAPI's Start does not. A failed
// Start leaves the Wrapper not started (calls fail with ErrNotStarted) and
// can be retried. Calls with a context made meanwhile wait for it.
func (w *Wrapper) Start(ctx context.Context) error {
	w.ops.RLock() // Close waits for a Start in flight, like any call
	defer w.ops.RUnlock()
	w.mu.Lock()
	switch w.state {
	case starting:
		w.mu.Unlock()
		return errors.New("dagwrap: Start is already running")
	case started:
		w.mu.Unlock()
		return errors.New("dagwrap: already started")
	case closed:
		w.mu.Unlock()
		return ErrClosed
	}
	w.state, w.startDone = starting, make(chan struct{})
	w.mu.Unlock()

	// Every step before the dagstore's Start can be redone; a dagstore whose
	// Start failed is replaced by a fresh one at the next attempt.
	err := func() error {
		if err := w.api.Start(ctx); err != nil {
			return fmt.Errorf("dagwrap: start miner API: %w", err)
		}
		if w.st.indexDB != nil {
			if err := w.st.indexDB.Ensure(ctx); err != nil {
				return fmt.Errorf("dagwrap: %w", err)
			}
		}
		// Lookups on a Lotus root read its stock index from the first one on,
		// until the background reconciliation has rebuilt it.
		if w.st.tli != nil {
			if err := w.st.tli.detectOld(ctx); err != nil {
				return fmt.Errorf("dagwrap: %w", err)
			}
		}
		if err := w.shards.start(ctx); err != nil {
			return err
		}
		if w.st.tli != nil {
			w.st.tli.serveUnfinished(w.shards.known)
		}
		w.shards.spawn(func() { background{w.shards}.gcEvery(w.cfg.GCInterval) })
		w.shards.spawn(func() {
			defer close(w.reconciled)
			r := reconciler{s: w.shards, tli: w.st.tli, irepo: w.st.irepo, log: w.log}
			if err := r.run(w.ctx); err != nil && w.ctx.Err() == nil {
				w.log.Errorw("reconciling the top-level index with the shard indexes failed", "error", err)
			}
		})
		return nil
	}()
	w.mu.Lock()
	defer w.mu.Unlock()
	defer close(w.startDone)
	switch {
	case w.state == closed:
		return errors.Join(ErrClosed, err)
	case err != nil:
		w.state = created
		return err
	}
	w.state = started
	return nil
}

// beginCtx is begin for a call with a context: while Start runs, it waits
// for Start's outcome under ctx (or until Close) instead of failing.
func (w *Wrapper) beginCtx(ctx context.Context) (func(), error) {
	for {
		w.ops.RLock()
		w.mu.Lock()
		st, startDone := w.state, w.startDone
		w.mu.Unlock()
		switch st {
		case started:
			return w.ops.RUnlock, nil
		case created:
			w.ops.RUnlock()
			return nil, ErrNotStarted
		case closed:
			w.ops.RUnlock()
			return nil, ErrClosed
		}
		w.ops.RUnlock() // Start holds it shared too; Close must not wait for us
		select {
		case <-startDone:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for Start: %w", ctx.Err())
		case <-w.ctx.Done():
			return nil, ErrClosed
		}
	}
}

// detached runs call in a goroutine of its own and returns its result, or
// ctx's error as soon as ctx ends. It is for code the Wrapper does not
// control (the node's MinerAPI, a caller's callback), which may ignore its
// context: such a call then holds neither its caller nor Close. The
// goroutine ends when call returns; a result nobody waits for any more goes
// to drop (if not nil), which must not touch the Wrapper.
func detached[T any](ctx context.Context, call func() (T, error), drop func(T)) (T, error) {
	type result struct {
		v   T
		err error
	}
	out := make(chan result)
	abandoned := make(chan struct{})
	go func() {
		v, err := call()
		select {
		case out <- result{v, err}:
		case <-abandoned:
			if drop != nil {
				drop(v)
			}
		}
	}()
	select {
	case r := <-out:
		return r.v, r.err
	case <-ctx.Done():
		close(abandoned)
		var zero T
		return zero, ctx.Err()
	}
}

// progressFeed calls an OnInitProgress callback with each snapshot, in
// order and one call at a time, from a goroutine of its own, so that a
// callback that blocks holds neither InitAllShards nor Close. The goroutine
// stops calling once ctx ends and exits when the call it is in returns.
type progressFeed struct {
	fn   func(InitProgress)
	kick chan struct{} // something was queued, or the feed was closed
	done chan struct{} // closed when the goroutine exits

	mu      sync.Mutex
	pending []InitProgress
	closed  bool
}

func newProgressFeed(ctx context.Context, fn func(InitProgress)) *progressFeed {
	f := &progressFeed{fn: fn, kick: make(chan struct{}, 1), done: make(chan struct{})}
	if fn == nil {
		close(f.done)
		return f
	}
	go f.run(ctx)
	return f
}

// send queues a snapshot.
func (f *progressFeed) send(p InitProgress) {
	if f.fn == nil {
		return
	}
	f.mu.Lock()
	f.pending = append(f.pending, p)
	f.mu.Unlock()
	f.wake()
}

func (f *progressFeed) wake() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

func (f *progressFeed) run(ctx context.Context) {
	defer close(f.done)
	for {
		f.mu.Lock()
		batch, closed := f.pending, f.closed
		f.pending = nil
		f.mu.Unlock()
		for _, p := range batch {
			if ctx.Err() != nil {
				return
			}
			f.fn(p)
		}
		if len(batch) > 0 {
			continue
		}
		if closed {
			return
		}
		select {
		case <-f.kick:
		case <-ctx.Done():
			return
		}
	}
}

// finish waits, under ctx, until every queued snapshot has been delivered.
func (f *progressFeed) finish(ctx context.Context) {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.wake()
	select {
	case <-f.done:
	case <-ctx.Done():
	}
}
