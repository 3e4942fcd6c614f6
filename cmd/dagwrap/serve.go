package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/spstack/dagwrap/gateway"
)

// shutdownGrace is how long serve lets requests in flight finish once it is
// told to stop.
const shutdownGrace = 10 * time.Second

func (a *app) serveCmd() *cobra.Command {
	var addr string
	var maxRequests int
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "serve --http ADDR",
		Short: "Serve the root's blocks and pieces over HTTP until interrupted",
		Long: `serve answers retrievals over HTTP from the root's pieces until SIGINT or SIGTERM:

  GET/HEAD /ipfs/{cid}?format=raw    one block (or Accept: application/vnd.ipld.raw)
  GET      /ipfs/{cid}?format=car    a CAR of the DAG (or Accept: application/vnd.ipld.car),
                                     dag-scope=block|entity|all (default all)
  GET/HEAD /piece/{pieceCID}         the piece's unsealed bytes, with Range support

It is an IPFS trustless gateway: no deserialised responses (406). Blocks are found
across every registered piece through the top-level index. It prints the address it
listens on to stderr, and holds the root's lock like every command.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErrorf("%s: takes no arguments (usage: %s)", cmd.CommandPath(), cmd.UseLine())
			}
			if addr == "" {
				return usageErrorf("%s: --http ADDR is required (e.g. 127.0.0.1:8080)", cmd.CommandPath())
			}
			return nil
		},
		RunE: a.action(func(ctx context.Context, n *node) error {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("--http %s: %w", addr, err)
			}
			h := gateway.New(n.w.Blockstore(), n.w, gateway.WithMaxRequests(maxRequests), gateway.WithTimeout(timeout))
			srv := &http.Server{
				Handler:           h,
				ReadHeaderTimeout: 10 * time.Second,
				BaseContext:       func(net.Listener) context.Context { return ctx },
			}
			fmt.Fprintf(a.stderr, "serving http://%s\n", ln.Addr())
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(ln) }()
			select {
			case err := <-errc:
				return fmt.Errorf("http server: %w", err)
			case <-ctx.Done():
			}
			sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
			defer cancel()
			err = srv.Shutdown(sctx)
			if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
				err = serr
			}
			if err != nil {
				return fmt.Errorf("http server: stop: %w", err)
			}
			fmt.Fprintln(a.stderr, "stopped")
			return nil
		}),
	}
	cmd.Flags().StringVar(&addr, "http", "", "address to listen on (host:port; port 0 picks a free one)")
	cmd.Flags().IntVar(&maxRequests, "max-requests", 64, "requests served at once; more are refused with 503")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Hour, "bound on each request, a whole piece download included")
	a.metricsFlag(cmd)
	return cmd
}
