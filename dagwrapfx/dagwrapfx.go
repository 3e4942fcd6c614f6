// Package dagwrapfx wires a dagwrap.Wrapper into an fx application. It is
// a package of its own so that the dagwrap library does not depend on fx.
//
// The graph must provide a dagwrap.Config and a dagwrap.MinerAPI. Module
// provides the *dagwrap.Wrapper, started with the application and closed
// when it stops:
//
//	fx.New(
//		fx.Supply(dagwrap.Config{RootDir: "/var/lib/node/dagstore"}),
//		fx.Provide(newMinerAPI), // returns dagwrap.MinerAPI
//		dagwrapfx.Module,
//		dagwrapfx.Options(dagwrap.WithDatastore(nodeDS)),
//	)
//
// If the graph has a prometheus.Registerer (provided as that interface
// type, e.g. with fx.As), dagwrap's metrics are registered on it.
package dagwrapfx

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spstack/dagwrap"
	"go.uber.org/fx"
)

// OptionGroup is the fx value group whose dagwrap.Options Module applies.
// Value groups are unordered: give each kind of option once.
const OptionGroup = "dagwrap.options"

// Params is what Module takes from the graph.
type Params struct {
	fx.In

	Lifecycle fx.Lifecycle
	Config    dagwrap.Config
	API       dagwrap.MinerAPI
	// Registerer, if the graph has one, receives dagwrap's metrics (an
	// explicit dagwrap.WithMetrics option wins over it).
	Registerer prometheus.Registerer `optional:"true"`
	Options    []dagwrap.Option      `group:"dagwrap.options"`
}

// Module provides the *dagwrap.Wrapper (see NewWrapper).
var Module = fx.Module("dagwrap", fx.Provide(NewWrapper))

// NewWrapper opens the Wrapper and ties it to the lifecycle: Start on
// start, Close on stop. A Wrapper whose Start fails is closed at once, so
// that a failed application start releases the root.
func NewWrapper(p Params) (*dagwrap.Wrapper, error) {
	var opts []dagwrap.Option
	if p.Registerer != nil {
		opts = append(opts, dagwrap.WithMetrics(p.Registerer))
	}
	opts = append(opts, p.Options...)
	w, err := dagwrap.New(p.Config, p.API, opts...)
	if err != nil {
		return nil, err
	}
	p.Lifecycle.Append(fx.Hook{
		OnStart: func(ctx context.Context) error {
			if err := w.Start(ctx); err != nil {
				return errors.Join(err, w.Close())
			}
			return nil
		},
		OnStop: func(context.Context) error { return w.Close() },
	})
	return w, nil
}

// Options adds dagwrap options (WithDatastore, WithIndexRepo,
// WithTopLevelIndex, WithLoggerName, WithMetrics) to the Wrapper that
// Module provides.
func Options(opts ...dagwrap.Option) fx.Option {
	vals := make([]any, len(opts))
	for i, o := range opts {
		vals[i] = fx.Annotated{Group: OptionGroup, Target: o}
	}
	return fx.Supply(vals...)
}
