package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"text/tabwriter"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"github.com/spf13/cobra"
)

// positional checks the count of positional arguments (at least min, at
// most one per parser) and parses each, so a bad argument is a usage error
// found before the root is opened.
func positional(min int, parsers ...func(string) error) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < min || len(args) > len(parsers) {
			want := fmt.Sprint(min)
			if len(parsers) != min {
				want = fmt.Sprintf("%d to %d", min, len(parsers))
			}
			return usageErrorf("%s: want %s arguments, got %d (usage: %s)", cmd.CommandPath(), want, len(args), cmd.UseLine())
		}
		for i, arg := range args {
			if err := parsers[i](arg); err != nil {
				return err
			}
		}
		return nil
	}
}

// pieceArg parses a piece CID into dst.
func pieceArg(dst *cid.Cid) func(string) error {
	return func(s string) error {
		c, err := cid.Decode(s)
		if err != nil {
			return usageErrorf("bad piece CID %q: %v", s, err)
		}
		if p := c.Prefix(); p.Codec != cid.FilCommitmentUnsealed || p.MhType != multihash.SHA2_256_TRUNC254_PADDED {
			return usageErrorf("%s is not a piece CID (a CommP CID, baga...)", s)
		}
		*dst = c
		return nil
	}
}

// blockArg parses a block CID into dst.
func blockArg(dst *cid.Cid) func(string) error {
	return func(s string) error {
		c, err := cid.Decode(s)
		if err != nil {
			return usageErrorf("bad block CID %q: %v", s, err)
		}
		*dst = c
		return nil
	}
}

func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (a *app) table() *tabwriter.Writer {
	return tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
}

func cidStrings(cs []cid.Cid) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.String())
	}
	return out
}

// pieceError is one piece's failure in JSON output.
type pieceError struct {
	PieceCID string `json:"piece_cid"`
	Error    string `json:"error"`
}

func pieceErrors(m map[cid.Cid]error) []pieceError {
	out := make([]pieceError, 0, len(m))
	for pc, err := range m {
		out = append(out, pieceError{PieceCID: pc.String(), Error: err.Error()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PieceCID < out[j].PieceCID })
	return out
}
