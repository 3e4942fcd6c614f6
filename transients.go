package dagwrap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/filecoin-project/dagstore/mount"
	"github.com/filecoin-project/dagstore/shard"
	"github.com/filecoin-project/dagstore/throttle"
)

// resolveLink returns path with symlinks resolved, or path itself if that
// fails (it does not exist yet, say). The dagstore's start-up sweep of the
// transients folder would delete the folder itself if it were a symlink,
// as operators make it to put transients on another disk.
func resolveLink(path string) string {
	if resolved, err := filepath.EvalSymlinks(path); err == nil {
		return resolved
	}
	return path
}

// Names in the transients folder: a finished copy, and the copy being made.
// Files named as the dagstore's own copier named them (.partial) are left
// by older versions and Lotus; GC removes them.
const (
	transientPrefix   = "transient-"
	transientComplete = ".complete"
	transientTemp     = ".tmp"
	transientPartial  = ".partial"
)

// transientPath is where a piece's copy lives once complete.
func transientPath(root string, key shard.Key) string {
	return filepath.Join(root, transientsDir, transientPrefix+key.String()+transientComplete)
}

// copyBufSize is how much of a stream one read and one write of a copy move.
const copyBufSize = 256 << 10

// transients makes the copies of pieces a sequential-only MinerAPI
// streams: the dagstore needs random access, and its own copier writes in
// goroutines nobody can stop (see writeGate). A copy is made inside the
// mount's Fetch, written to a temporary file and renamed into place, never
// longer than the piece's size. Concurrent fetches of one piece share one
// copy. The dagstore's start-up sweep deletes every copy (no shard record
// names one), so a copy left by a crash is never trusted.
type transients struct {
	dir  string
	gate *writeGate
	// ready bounds copies of pieces that are unsealed
	// (Config.MaxConcurrentReadyFetches); nil means no bound.
	ready throttle.Throttler

	mu      sync.Mutex
	flights map[shard.Key]*flight // copies in flight
}

// flight is one copy in flight; its waiters read err once done is closed.
type flight struct {
	done      chan struct{}
	err       error
	cancelled bool // its maker's context ended: waiters try again
}

func newTransients(dir string, gate *writeGate, readyFetches int) *transients {
	t := &transients{dir: dir, gate: gate, flights: make(map[shard.Key]*flight)}
	if readyFetches > 0 {
		t.ready = throttle.Fixed(readyFetches)
	}
	return t
}

func (t *transients) path(key shard.Key) string {
	return filepath.Join(t.dir, transientPrefix+key.String()+transientComplete)
}

func (t *transients) tempPath(key shard.Key) string {
	return filepath.Join(t.dir, transientPrefix+key.String()+transientTemp)
}

// copying reports whether a copy of key is in flight.
func (t *transients) copying(key shard.Key) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.flights[key]
	return ok
}

// source is how a copy gets the piece: its size, whether it is unsealed
// (asked only when ready fetches are bounded) and its stream.
type source struct {
	size     uint64
	unsealed func(context.Context) (bool, error)
	fetch    func(context.Context) (mount.Reader, error)
}

// open returns the piece's copy, open for reading, making it first (from
// the source's stream) unless a copy of exactly its size exists.
func (t *transients) open(ctx context.Context, key shard.Key, src source) (*os.File, error) {
	size := src.size
	for {
		if f := t.reuse(key, size); f != nil {
			return f, nil
		}
		t.mu.Lock()
		fl, busy := t.flights[key]
		if !busy {
			fl = &flight{done: make(chan struct{})}
			t.flights[key] = fl
		}
		t.mu.Unlock()
		if busy {
			select {
			case <-fl.done:
				if fl.err != nil && !fl.cancelled {
					return nil, fl.err
				}
				continue // done (open it) or abandoned (make it)
			case <-ctx.Done():
				return nil, fmt.Errorf("piece %s: waiting for its copy: %w", key, ctx.Err())
			}
		}
		f, err := t.throttled(ctx, key, src)
		t.mu.Lock()
		delete(t.flights, key)
		t.mu.Unlock()
		fl.err, fl.cancelled = err, err != nil && ctx.Err() != nil
		close(fl.done)
		return f, err
	}
}

// reuse opens the complete copy if it has the piece's size.
func (t *transients) reuse(key shard.Key, size uint64) *os.File {
	f, err := os.Open(t.path(key))
	if err != nil {
		return nil
	}
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() && uint64(st.Size()) == size {
		return f
	}
	_ = f.Close()
	return nil
}

// throttled is copy, bounded like the dagstore bounds its ready fetches:
// only pieces that are unsealed take a slot (an unseal would hold it idle).
func (t *transients) throttled(ctx context.Context, key shard.Key, src source) (*os.File, error) {
	if t.ready == nil {
		return t.copy(ctx, key, src.size, src.fetch)
	}
	unsealed, err := src.unsealed(ctx)
	if err != nil {
		return nil, fmt.Errorf("piece %s: check whether it is unsealed: %w", key, err)
	}
	if !unsealed {
		return t.copy(ctx, key, src.size, src.fetch)
	}
	var f *os.File
	ran := false
	err = t.ready.Do(ctx, func(ctx context.Context) (err error) {
		ran = true
		f, err = t.copy(ctx, key, src.size, src.fetch)
		return err
	})
	if err != nil && !ran {
		err = fmt.Errorf("piece %s: waiting to copy: %w", key, err)
	}
	return f, err
}

// copy copies the stream into a temporary file and renames it into place.
// The stream is read outside the gate (a stalled stream never holds up
// Close), each write inside it.
func (t *transients) copy(ctx context.Context, key shard.Key, size uint64, fetch func(context.Context) (mount.Reader, error)) (_ *os.File, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer context.AfterFunc(t.gate.ctx, func() { cancel(ErrClosed) })()

	tmp := t.tempPath(key)
	var out *os.File
	if err := t.write(func() (err error) {
		out, err = os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err == nil {
			t.gate.track(tmp)
		}
		return err
	}); err != nil {
		return nil, fmt.Errorf("piece %s: create transient: %w", key, err)
	}
	defer func() {
		_ = out.Close()
		if err != nil {
			// Once the gate is closed, Close has removed it.
			_ = t.write(func() error { return os.Remove(tmp) })
			t.gate.untrack(tmp)
		}
	}()
	r, err := fetch(ctx)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if err := t.fill(ctx, key, out, r, size); err != nil {
		return nil, err
	}
	var f *os.File
	if err := t.write(func() (err error) {
		if f, err = os.Open(tmp); err != nil {
			return err
		}
		if err = os.Rename(tmp, t.path(key)); err != nil {
			_ = f.Close()
		}
		return err
	}); err != nil {
		return nil, fmt.Errorf("piece %s: move transient into place: %w", key, err)
	}
	t.gate.untrack(tmp)
	return f, nil
}

// write runs fn inside the gate.
func (t *transients) write(fn func() error) error {
	done, err := t.gate.enter()
	if err != nil {
		return err
	}
	defer done()
	return fn()
}

// fill copies exactly size bytes of r into out. A stream that ends sooner
// is truncated; one that goes on is longer than the piece: both are
// errors, as cutting it to size could drop blocks if the size is wrong.
func (t *transients) fill(ctx context.Context, key shard.Key, out *os.File, r io.Reader, size uint64) error {
	buf := make([]byte, copyBufSize)
	var n uint64
	for n < size {
		if ctx.Err() != nil {
			return fmt.Errorf("piece %s: copy stopped: %w", key, context.Cause(ctx))
		}
		k, rerr := r.Read(buf[:min(uint64(len(buf)), size-n)])
		if k > 0 {
			if err := t.write(func() error { _, err := out.Write(buf[:k]); return err }); err != nil {
				return fmt.Errorf("piece %s: write transient: %w", key, err)
			}
			n += uint64(k)
		}
		if errors.Is(rerr, io.EOF) && n < size {
			return fmt.Errorf("piece %s is truncated: %d of %d bytes: %w", key, n, size, io.ErrUnexpectedEOF)
		}
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return fmt.Errorf("piece %s: read: %w", key, rerr)
		}
	}
	for {
		if ctx.Err() != nil {
			return fmt.Errorf("piece %s: copy stopped: %w", key, context.Cause(ctx))
		}
		k, rerr := r.Read(buf[:1])
		if k > 0 {
			return fmt.Errorf("piece %s is longer than its unpadded size, %d bytes", key, size)
		}
		if errors.Is(rerr, io.EOF) {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("piece %s: read: %w", key, rerr)
		}
	}
}

// transientKey returns the piece of a file in the transients folder, and
// whether the file is a complete copy; ok is false for names that are not
// a transient's.
func transientKey(name string) (key shard.Key, complete, ok bool) {
	rest, found := strings.CutPrefix(name, transientPrefix)
	if !found {
		return key, false, false
	}
	for _, suffix := range []string{transientComplete, transientTemp, transientPartial} {
		if k, cut := strings.CutSuffix(rest, suffix); cut && k != "" {
			return shard.KeyFromString(k), suffix == transientComplete, true
		}
	}
	return key, false, false
}

// remove deletes every file of the piece in the transients folder (a
// destroyed shard's). Callers hold the piece lock.
func (t *transients) remove(key shard.Key) error {
	base := filepath.Join(t.dir, transientPrefix+key.String())
	for _, suffix := range []string{transientComplete, transientTemp, transientPartial} {
		if err := os.Remove(base + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove transient: %w", err)
		}
	}
	return nil
}
