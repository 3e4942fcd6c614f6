package dagwrapfx_test

import (
	"context"
	"errors"
	"testing"

	"github.com/spstack/dagwrap/internal/cargen"

	"github.com/filecoin-project/dagstore"
	"github.com/ipfs/go-cid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spstack/dagwrap"
	"github.com/spstack/dagwrap/dagwrapfx"
	"github.com/spstack/dagwrap/internal/testkit"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
)

// serve serves the CAR file at path as a piece of api and returns its
// piece CID.
func serve(t *testing.T, api *testkit.Files, path string) cid.Cid {
	t.Helper()
	pc, err := api.Serve(path)
	if err != nil {
		t.Fatal(err)
	}
	return pc
}

// TestModuleLifecycle builds an fx app with the module, starts it, loads a
// shard, stops it, and checks that the Wrapper is closed and its root and
// metrics released.
func TestModuleLifecycle(t *testing.T) {
	ctx := context.Background()
	api := &testkit.Files{}
	pc := serve(t, api, "../testdata/sample.car")
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
	api := &testkit.Files{StartErr: errors.New("lotus is down")}
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
