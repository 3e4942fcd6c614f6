package dagwrap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/filecoin-project/dagstore"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
)

// TestConcurrentOperations runs hundreds of goroutines that load, read,
// close, register, destroy, look up and GC over tens of pieces at once.
// Afterwards every shard must be available, none may hold an accessor
// (destroy succeeds on each), the shards must be the same after a restart
// (no destroyed shard comes back), and goroutines and open files must
// return to their starting level.
func TestConcurrentOperations(t *testing.T) {
	for _, random := range []bool{true, false} {
		t.Run(fmt.Sprintf("random=%v", random), func(t *testing.T) {
			goroutines, fds := baseline(t)
			api := newFakeAPI(random)
			pieces := makePieces(t, api, t.TempDir(), 24)
			root := t.TempDir()
			w, err := New(Config{RootDir: root, MaxConcurrentIndex: 3}, api)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if err := w.Start(ctx); err != nil {
				t.Fatal(err)
			}
			for _, p := range pieces[:len(pieces)/2] {
				if err := w.RegisterShardSync(ctx, p.pc, "", true); err != nil {
					t.Fatal(err)
				}
			}

			blks := map[cid.Cid][]blocks.Block{}
			for _, p := range pieces {
				blks[p.pc] = carBlocks(t, p.path)
			}
			const workers, opsEach = 200, 6
			start := make(chan struct{})
			errs := make(chan error, workers*opsEach)
			var wg sync.WaitGroup
			for i := 0; i < workers; i++ {
				wg.Add(1)
				go func(seed int64) {
					defer wg.Done()
					rng := rand.New(rand.NewSource(seed))
					<-start
					for j := 0; j < opsEach; j++ {
						if err := randomOp(ctx, w, rng, pieces, blks); err != nil {
							errs <- err
						}
					}
				}(int64(i))
			}
			close(start)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}

			// Releases are queued by Close; the states follow. Every shard
			// ends available (or new), none errored or stuck in between.
			var unsettled []string
			defer func() {
				if t.Failed() {
					t.Logf("shards not available:\n%s", strings.Join(unsettled, "\n"))
				}
			}()
			waitFor(t, "every shard available or new", func() bool {
				shards, err := w.ListShards()
				if err != nil {
					t.Fatal(err)
				}
				unsettled = unsettled[:0]
				for _, s := range shards {
					// New: registered lazily and not loaded since.
					if s.State != dagstore.ShardStateAvailable && s.State != dagstore.ShardStateNew {
						unsettled = append(unsettled, fmt.Sprintf("%s: %s %v", s.PieceCID, s.State, s.Error))
					}
				}
				return len(unsettled) == 0
			})
			before := shardKeys(t, w)
			t.Logf("%d shards after the storm", len(before))
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}

			w = openWrapper(t, root, api)
			<-w.reconciled
			if after := shardKeys(t, w); strings.Join(after, " ") != strings.Join(before, " ") {
				t.Fatalf("shards changed across a restart:\nbefore %v\nafter  %v", before, after)
			}
			for _, p := range pieces {
				if _, err := w.ShardInfo(p.pc); err != nil {
					continue
				}
				if err := readAll(t, w, p); err != nil {
					t.Error(err)
				}
				checkLookups(t, w, p, t.Errorf)
			}
			// No accessor is left open: every shard can be destroyed.
			for _, k := range before {
				c, _ := cid.Decode(k)
				// Every blockstore was closed: destroy needs no retry.
				if err := w.DestroyShardSync(ctx, c); err != nil {
					t.Fatalf("destroy %s: %v", k, err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			w = openWrapper(t, root, api)
			<-w.reconciled
			if after := shardKeys(t, w); len(after) != 0 {
				t.Fatalf("destroyed shards back after a restart: %v", after)
			}
			if idx := listDir(t, filepath.Join(root, indexDir)); len(idx) > 1 { // .version
				t.Fatalf("indexes left: %v", idx)
			}
			for _, p := range pieces {
				if got, err := w.GetPiecesContainingBlock(carBlocks(t, p.path)[0].Cid()); !errors.Is(err, ErrBlockNotFound) {
					t.Fatalf("lookup after destroying everything: %v, %v", got, err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			settled(t, goroutines, fds)
		})
	}
}

// randomOp does one random operation and returns an error only for an
// outcome the concurrency does not explain.
func randomOp(ctx context.Context, w *Wrapper, rng *rand.Rand, pieces []testPiece, blocksOf map[cid.Cid][]blocks.Block) error {
	p := pieces[rng.Intn(len(pieces))]
	blks := blocksOf[p.pc]
	switch op := rng.Intn(10); {
	case op < 5:
		bs, err := w.LoadShard(ctx, p.pc)
		if errors.Is(err, ErrShardUnknown) {
			return nil // destroyed between its lazy registration and the acquire
		}
		if err != nil {
			return fmt.Errorf("load: %w", err)
		}
		defer bs.Close()
		for _, i := range []int{0, rng.Intn(len(blks))} {
			got, err := bs.Get(ctx, blks[i].Cid())
			if err != nil {
				return fmt.Errorf("get: %w", err)
			}
			if !bytes.Equal(got.RawData(), blks[i].RawData()) {
				return fmt.Errorf("piece %s: block %s: wrong bytes", p.pc, blks[i].Cid())
			}
		}
	case op == 5:
		err := w.RegisterShardSync(ctx, p.pc, "", rng.Intn(2) == 0)
		// A destroy of the same piece may win the race (ErrShardUnknown).
		if err != nil && !errors.Is(err, ErrShardExists) && !errors.Is(err, ErrShardUnknown) {
			return fmt.Errorf("register: %w", err)
		}
	case op == 6:
		err := w.DestroyShardSync(ctx, p.pc)
		if err != nil && !errors.Is(err, ErrShardUnknown) && !errors.Is(err, ErrShardInUse) {
			return fmt.Errorf("destroy: %w", err)
		}
	case op == 7:
		resch := make(chan dagstore.ShardResult, 1)
		err := w.DestroyShard(ctx, p.pc, resch)
		if err == nil {
			err = (<-resch).Error
		}
		if err != nil && !errors.Is(err, ErrShardUnknown) && !errors.Is(err, ErrShardInUse) {
			return fmt.Errorf("destroy async: %w", err)
		}
	case op == 8:
		if _, err := w.shards.dagst.GC(ctx); err != nil {
			return fmt.Errorf("gc: %w", err)
		}
	default:
		if _, err := w.GetPiecesContainingBlock(blks[0].Cid()); err != nil && !errors.Is(err, ErrBlockNotFound) {
			return fmt.Errorf("lookup: %w", err)
		}
		if _, err := w.ListShards(); err != nil {
			return fmt.Errorf("list: %w", err)
		}
	}
	return nil
}

func shardKeys(t testing.TB, w *Wrapper) []string {
	t.Helper()
	shards, err := w.ListShards()
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 0, len(shards))
	for _, s := range shards {
		keys = append(keys, s.PieceCID.String())
	}
	sort.Strings(keys)
	return keys
}

// A destroy that came right after an eager registration was queued used to
// find the shard still new (the dagstore had not yet begun initialising it)
// and go ahead: the dagstore then finished the initialisation of a shard it
// no longer had, the purge deleted the copy being made for it, and the
// registration failed with the raw "move transient into place" error, or
// reported success for a piece that was gone. Each round races one destroy
// against one registration; a pending eager registration must keep the
// shard, as an initialising one does.
func TestDestroyRefusedWhileEagerRegistrationPending(t *testing.T) {
	ctx := context.Background()
	api := newFakeAPI(false) // sequential: the registration copies the piece into transients/
	w := openWrapper(t, t.TempDir(), api)
	for round := 0; round < 100; round++ {
		pc := api.addPiece(t, makeCAR(t, int64(round), 20))
		// The fetch waits until the destroy has answered, so the
		// registration is pending throughout.
		gate := make(chan struct{})
		api.gate = gate
		res := make(chan dagstore.ShardResult, 1)
		if err := w.RegisterShard(ctx, pc, "", true, res); err != nil {
			t.Fatal(err)
		}
		derr := w.DestroyShardSync(ctx, pc)
		close(gate)
		if r := <-res; r.Error != nil {
			t.Fatalf("round %d: registration failed (the destroy said %v): %v", round, derr, r.Error)
		}
		if !errors.Is(derr, ErrShardInUse) {
			t.Fatalf("round %d: a destroy while the eager registration was pending returned %v, want ErrShardInUse", round, derr)
		}
		if _, err := w.ShardInfo(pc); err != nil {
			t.Fatalf("round %d: after the refused destroy: %v", round, err)
		}
		if err := w.DestroyShardSync(ctx, pc); err != nil {
			t.Fatalf("round %d: destroy after the registration: %v", round, err)
		}
	}
}
