package dagwrapfx_test

import (
	"context"
	"fmt"
	"os"

	"github.com/spstack/dagwrap"
	"github.com/spstack/dagwrap/dagwrapfx"
	"github.com/spstack/dagwrap/internal/testkit"
	"go.uber.org/fx"
)

// Wire the Wrapper into a node built with fx: the node supplies the
// Config and its MinerAPI, the module provides the Wrapper and starts and
// closes it with the application.
func Example() {
	root, err := os.MkdirTemp("", "dagwrapfx-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(root)
	api := &testkit.Files{} // stands for the node's MinerAPI
	piece, err := api.Serve("../testdata/sample.car")
	if err != nil {
		panic(err)
	}

	var w *dagwrap.Wrapper
	app := fx.New(
		fx.NopLogger,
		fx.Supply(dagwrap.Config{RootDir: root}),
		fx.Provide(func() dagwrap.MinerAPI { return api }),
		dagwrapfx.Module,
		dagwrapfx.Options(dagwrap.WithLoggerName("node/dagwrap")),
		fx.Invoke(func(lc fx.Lifecycle, w *dagwrap.Wrapper) {
			// A deal handed off once the node runs: register its piece.
			lc.Append(fx.StartHook(func(ctx context.Context) error {
				return w.RegisterShardSync(ctx, piece, "", true)
			}))
		}),
		fx.Populate(&w),
	)
	ctx := context.Background()
	if err := app.Start(ctx); err != nil {
		fmt.Println("start:", err)
		return
	}
	info, err := w.ShardInfo(piece)
	fmt.Println("started:", info.State, err)
	if err := app.Stop(ctx); err != nil {
		fmt.Println("stop:", err)
		return
	}
	_, err = w.ShardInfo(piece)
	fmt.Println("stopped:", err)
	// Output:
	// started: ShardStateAvailable <nil>
	// stopped: shard info of piece baga6ea4seaqd7exthe4fo7ek3bp62grmw5eu555vgzm42plhbuycczq3pjptwcq: dagwrap: closed
}
