package dagwrapfx_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/spstack/dagwrap/internal/cargen"

	"github.com/filecoin-project/dagstore"
	"github.com/filecoin-project/dagstore/mount"
	"github.com/ipfs/go-cid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spstack/dagwrap"
	"github.com/spstack/dagwrap/dagwrapfx"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
)

// carAPI is a MinerAPI serving CAR files from disk as unsealed pieces.
type carAPI struct {
	pieces   map[cid.Cid]string
	startErr error
}

func (a *carAPI) add(t *testing.T, path string) cid.Cid {
	t.Helper()
	pc, err := a.serve(path)
	if err != nil {
		t.Fatal(err)
	}
	return pc
}

// serve serves the CAR file at path and returns its piece CID (CommP).
func (a *carAPI) serve(path string) (cid.Cid, error) {
	f, err := os.Open(path)
	if err != nil {
		return cid.Undef, err
	}
	defer f.Close()
	pc, _, err := cargen.CommP(f)
	if err != nil {
		return cid.Undef, err
	}
	if a.pieces == nil {
		a.pieces = map[cid.Cid]string{}
	}
	a.pieces[pc] = path
	return pc, nil
}

func (a *carAPI) path(pc cid.Cid) (string, error) {
	if p, ok := a.pieces[pc]; ok {
		return p, nil
	}
	return "", fmt.Errorf("no piece %s", pc)
}

func (a *carAPI) FetchUnsealedPiece(_ context.Context, pc cid.Cid) (mount.Reader, error) {
	p, err := a.path(pc)
	if err != nil {
		return nil, err
	}
	return os.Open(p)
}

func (a *carAPI) GetUnpaddedCARSize(_ context.Context, pc cid.Cid) (uint64, error) {
	p, err := a.path(pc)
	if err != nil {
		return 0, err
	}
	st, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	return uint64(st.Size()), nil
}

func (a *carAPI) IsUnsealed(_ context.Context, pc cid.Cid) (bool, error) {
	_, err := a.path(pc)
	return err == nil, err
}

func (a *carAPI) Start(context.Context) error { return a.startErr }
func (a *carAPI) RandomAccess() bool          { return true }

// TestModuleLifecycle builds an fx app with the module, starts it, loads a
// shard, stops it, and checks that the Wrapper is closed and its root and
// metrics released.
func TestModuleLifecycle(t *testing.T) {
	ctx := context.Background()
	api := &carAPI{}
	pc := api.add(t, "../testdata/sample.car")
	root := t.TempDir()
	reg := prometheus.NewRegistry()

	var w *dagwrap.Wrapper
	app := fxtest.New(t,
		fx.Supply(dagwrap.Config{RootDir: root}),
		fx.Provide(func() dagwrap.MinerAPI { return api }),
		fx.Provide(func() prometheus.Registerer { return reg }),
		dagwrapfx.Module,
		dagwrapfx.Options(dagwrap.WithLoggerName("fxtest/dagwrap")),
		fx.Populate(&w),
	)
	app.RequireStart()

	bs, err := w.LoadShard(ctx, pc)
	if err != nil {
		t.Fatal(err)
	}
	root0, err := carRoot("../testdata/sample.car")
	if err != nil {
		t.Fatal(err)
	}
	if blk, err := bs.Get(ctx, root0); err != nil || blk.Cid() != root0 {
		t.Fatalf("get root block: %v", err)
	}
	if err := bs.Close(); err != nil {
		t.Fatal(err)
	}
	info, err := w.ShardInfo(pc)
	if err != nil || (info.State != dagstore.ShardStateAvailable && info.State != dagstore.ShardStateServing) {
		t.Fatalf("shard info: %+v, %v", info, err)
	}
	if mfs, _ := reg.Gather(); len(mfs) == 0 {
		t.Fatal("the graph's Registerer got no metrics")
	}

	app.RequireStop()
	if _, err := w.LoadShard(ctx, pc); !errors.Is(err, dagwrap.ErrClosed) {
		t.Fatalf("LoadShard after stop: %v, want ErrClosed", err)
	}
	if mfs, _ := reg.Gather(); len(mfs) != 0 {
		t.Fatalf("%d metric families left after stop", len(mfs))
	}
	again, err := dagwrap.New(dagwrap.Config{RootDir: root}, api)
	if err != nil {
		t.Fatalf("the root is still locked after stop: %v", err)
	}
	_ = again.Close()
}

// TestModuleFailedStartReleasesRoot checks that an application whose
// Wrapper fails to start leaves the root unlocked.
func TestModuleFailedStartReleasesRoot(t *testing.T) {
	api := &carAPI{startErr: errors.New("lotus is down")}
	root := t.TempDir()
	app := fx.New(
		fx.NopLogger,
		fx.Supply(dagwrap.Config{RootDir: root}),
		fx.Provide(func() dagwrap.MinerAPI { return api }),
		dagwrapfx.Module,
		fx.Invoke(func(*dagwrap.Wrapper) {}),
	)
	if err := app.Err(); err != nil {
		t.Fatal(err)
	}
	if err := app.Start(context.Background()); err == nil {
		t.Fatal("the app started though the miner API failed to")
	}
	w, err := dagwrap.New(dagwrap.Config{RootDir: root}, api)
	if err != nil {
		t.Fatalf("the root is still locked after a failed start: %v", err)
	}
	_ = w.Close()
}

func carRoot(path string) (cid.Cid, error) {
	roots, _, err := cargen.Read(path)
	if err != nil {
		return cid.Undef, err
	}
	if len(roots) == 0 {
		return cid.Undef, errors.New("CAR has no root")
	}
	return roots[0], nil
}
