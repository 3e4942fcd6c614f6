package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/ipfs/go-cid"
	"github.com/spf13/cobra"

	"github.com/spstack/dagwrap"
)

// dealJSON is one deal of the migrate command's input.
type dealJSON struct {
	DealID    uint64 `json:"deal_id"`
	PieceCID  string `json:"piece_cid"`
	HandedOff *bool  `json:"handed_off"` // absent means true: listed deals are usually sealed
}

// readDeals reads a JSON array of deals. Every problem names the file and,
// where there is one, the deal.
func readDeals(path string) ([]dagwrap.Deal, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("deals file: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var in []dealJSON
	if err := dec.Decode(&in); err != nil {
		return nil, fmt.Errorf("deals file %s: want a JSON array of {\"deal_id\", \"piece_cid\", \"handed_off\"}: %w", path, err)
	}
	deals := make([]dagwrap.Deal, 0, len(in))
	for i, d := range in {
		pc, err := cid.Decode(d.PieceCID)
		if err != nil {
			return nil, fmt.Errorf("deals file %s: deal %d (entry %d): piece CID %q: %w", path, d.DealID, i, d.PieceCID, err)
		}
		if pc.Prefix().Codec != cid.FilCommitmentUnsealed {
			return nil, fmt.Errorf("deals file %s: deal %d (entry %d): %s is not a piece CID", path, d.DealID, i, pc)
		}
		deals = append(deals, dagwrap.Deal{DealID: d.DealID, PieceCID: pc, HandedOff: d.HandedOff == nil || *d.HandedOff})
	}
	return deals, nil
}

func (a *app) migrateCmd() *cobra.Command {
	var dealsFile string
	var deals []dagwrap.Deal
	cmd := &cobra.Command{
		Use:   "migrate --deals FILE.json",
		Short: "Register the pieces of existing deals once (the one-time migration)",
		Long: `migrate registers the piece of every handed-off deal in FILE.json as a lazily
initialised shard, then writes the migration marker, so that it runs once per
root. FILE.json is a JSON array of {"deal_id": N, "piece_cid": "baga...",
"handed_off": true}; handed_off defaults to true. If any registration fails,
no marker is written and the next run migrates again.`,
		Args: positional(0),
		// The file is read before the root is opened, so that a bad file
		// is reported as such whatever the state of the root.
		PreRunE: func(*cobra.Command, []string) error {
			var err error
			if deals, err = readDeals(dealsFile); err != nil {
				return &failure{err}
			}
			return nil
		},
		RunE: a.action(func(ctx context.Context, n *node) error {
			migrated, err := n.w.MigrateDeals(ctx, deals)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(map[string]any{"migrated": migrated, "deals": len(deals)})
			}
			if migrated {
				fmt.Fprintf(a.stdout, "migrated %d deals; their shards are initialised on first read, or by init-all\n", len(deals))
			} else {
				fmt.Fprintln(a.stdout, "already migrated: the root has the migration marker; nothing done")
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&dealsFile, "deals", "", "JSON file listing the deals (required)")
	_ = cmd.MarkFlagRequired("deals")
	a.metricsFlag(cmd)
	return cmd
}
