package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"github.com/spf13/cobra"

	"github.com/spstack/dagwrap"
)

// The keys of a deal in the migrate command's input, matched exactly.
const (
	keyDealID    = "deal_id"    // required: a non-negative integer
	keyPieceCID  = "piece_cid"  // required: a piece CID (baga...)
	keyHandedOff = "handed_off" // optional, default true: listed deals are usually sealed
)

// readDeals reads the deals file: exactly one JSON array of deal objects
// with the keys above. Every problem names the file, where in it (line and
// column) and, where there is one, the deal.
func readDeals(path string) ([]dagwrap.Deal, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("deals file: %w", err)
	}
	p := &dealsParser{path: path, src: b, dec: json.NewDecoder(bytes.NewReader(b))}
	p.dec.UseNumber()
	return p.parse()
}

type dealsParser struct {
	path string
	src  []byte
	dec  *json.Decoder
}

// at is where the next token starts: past the whitespace and the
// separators the decoder has not consumed yet.
func (p *dealsParser) at() int64 {
	off := p.dec.InputOffset()
	for off < int64(len(p.src)) && strings.IndexByte(" \t\r\n,:", p.src[off]) >= 0 {
		off++
	}
	return off
}

// errorf names the file and the position off as line, column and byte
// offset.
func (p *dealsParser) errorf(off int64, format string, args ...any) error {
	off = min(max(off, 0), int64(len(p.src)))
	line := 1 + bytes.Count(p.src[:off], []byte("\n"))
	col := off - int64(bytes.LastIndexByte(p.src[:off], '\n'))
	return fmt.Errorf("deals file %s: line %d, column %d (byte %d): %s", p.path, line, col, off, fmt.Sprintf(format, args...))
}

// syntax reports a decoder error at its own offset when it has one.
func (p *dealsParser) syntax(off int64, err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		off = se.Offset
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return p.errorf(int64(len(p.src)), "unexpected end of the file: want a JSON array of deals")
	}
	return p.errorf(off, "%v", err)
}

const dealsShape = `want one JSON array of {"deal_id": N, "piece_cid": "baga...", "handed_off": true|false}`

func (p *dealsParser) parse() ([]dagwrap.Deal, error) {
	off := p.at()
	tok, err := p.dec.Token()
	if err != nil {
		return nil, p.syntax(off, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return nil, p.errorf(off, "%s, not %s", dealsShape, describe(tok))
	}
	var deals []dagwrap.Deal
	for i := 0; p.dec.More(); i++ {
		d, err := p.deal(i)
		if err != nil {
			return nil, err
		}
		deals = append(deals, d)
	}
	off = p.at()
	if _, err := p.dec.Token(); err != nil { // the closing ']'
		return nil, p.syntax(off, err)
	}
	off = p.at()
	if off < int64(len(p.src)) {
		return nil, p.errorf(off, "data after the array: %s", dealsShape)
	}
	return deals, nil
}

// deal reads entry i of the array.
func (p *dealsParser) deal(i int) (dagwrap.Deal, error) {
	start := p.at()
	tok, err := p.dec.Token()
	if err != nil {
		return dagwrap.Deal{}, p.syntax(start, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return dagwrap.Deal{}, p.errorf(start, "entry %d: want a deal object, not %s", i, describe(tok))
	}
	d := dagwrap.Deal{HandedOff: true}
	seen := make(map[string]bool)
	haveID := false
	// entry names the entry in errors, and its deal once that is known.
	entry := func() string {
		if haveID {
			return fmt.Sprintf("entry %d (deal %d)", i, d.DealID)
		}
		return fmt.Sprintf("entry %d", i)
	}
	for p.dec.More() {
		off := p.at()
		tok, err := p.dec.Token()
		if err != nil {
			return dagwrap.Deal{}, p.syntax(off, err)
		}
		key, ok := tok.(string)
		if !ok { // the decoder reports a non-string key itself; never panic
			return dagwrap.Deal{}, p.errorf(off, "%s: want a key, not %s", entry(), describe(tok))
		}
		if seen[key] {
			return dagwrap.Deal{}, p.errorf(off, "%s: key %q twice", entry(), key)
		}
		seen[key] = true
		var raw json.RawMessage
		if err := p.dec.Decode(&raw); err != nil {
			return dagwrap.Deal{}, p.syntax(off, err)
		}
		if string(raw) == "null" {
			return dagwrap.Deal{}, p.errorf(off, "%s: key %q is null", entry(), key)
		}
		switch key {
		case keyDealID:
			err = json.Unmarshal(raw, &d.DealID)
			haveID = err == nil
		case keyPieceCID:
			var s string
			if err = json.Unmarshal(raw, &s); err == nil {
				d.PieceCID, err = parsePieceCID(s)
			}
		case keyHandedOff:
			err = json.Unmarshal(raw, &d.HandedOff)
		default:
			return dagwrap.Deal{}, p.errorf(off, "%s: unknown key %q (keys are %q, %q and %q, in lower case)", entry(), key, keyDealID, keyPieceCID, keyHandedOff)
		}
		if err != nil {
			return dagwrap.Deal{}, p.errorf(off, "%s: %q: %v", entry(), key, err)
		}
	}
	end := p.at()
	if _, err := p.dec.Token(); err != nil { // the closing '}'
		return dagwrap.Deal{}, p.syntax(end, err)
	}
	switch {
	case !seen[keyDealID]:
		return dagwrap.Deal{}, p.errorf(start, "entry %d: key %q is missing", i, keyDealID)
	case !seen[keyPieceCID]:
		return dagwrap.Deal{}, p.errorf(start, "%s: key %q is missing", entry(), keyPieceCID)
	}
	return d, nil
}

// parsePieceCID accepts piece CIDs (CommP) only.
func parsePieceCID(s string) (cid.Cid, error) {
	pc, err := cid.Decode(s)
	if err != nil {
		return cid.Undef, fmt.Errorf("piece CID %q: %w", s, err)
	}
	if p := pc.Prefix(); p.Codec != cid.FilCommitmentUnsealed || p.MhType != multihash.SHA2_256_TRUNC254_PADDED {
		return cid.Undef, fmt.Errorf("%s is not a piece CID (a CommP CID, baga...)", pc)
	}
	return pc, nil
}

// describe names a JSON token for an error.
func describe(tok json.Token) string {
	switch v := tok.(type) {
	case nil:
		return "null"
	case json.Delim:
		if v == '{' {
			return "an object"
		}
		return fmt.Sprintf("%q", string(v))
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	}
	return fmt.Sprint(tok)
}

func (a *app) migrateCmd() *cobra.Command {
	var dealsFile string
	var deals []dagwrap.Deal
	cmd := &cobra.Command{
		Use:   "migrate --deals FILE.json",
		Short: "Register the pieces of existing deals once (the one-time migration)",
		Long: `migrate registers the piece of every handed-off deal in FILE.json as a lazily
initialised shard, then writes the migration marker, so that it runs once per
root. FILE.json is exactly one JSON array of {"deal_id": N, "piece_cid":
"baga...", "handed_off": true}: deal_id and piece_cid are required, handed_off
defaults to true, keys are matched exactly (lower case) and nothing may follow
the array. A file that is not so is refused, saying where, and nothing is
registered. If any registration fails, no marker is written and the next run
migrates again.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := positional(0)(cmd, args); err != nil {
				return err
			}
			if dealsFile == "" {
				return usageErrorf("%s: --deals FILE.json is required (usage: %s)", cmd.CommandPath(), cmd.UseLine())
			}
			return nil
		},
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
			handedOff, pieces := countHandedOff(deals)
			if a.json {
				return a.printJSON(map[string]any{"migrated": migrated, "deals": len(deals), "handed_off": handedOff, "pieces": pieces})
			}
			if migrated {
				fmt.Fprintf(a.stdout, "migrated %s (%s); skipped %s; their shards are initialised on first read, or by init-all\n",
					plural(handedOff, "handed-off deal", "handed-off deals"), plural(pieces, "piece", "pieces"),
					plural(len(deals)-handedOff, "deal not handed off", "deals not handed off"))
			} else {
				fmt.Fprintln(a.stdout, "already migrated: the root has the migration marker; nothing done")
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&dealsFile, "deals", "", "JSON file listing the deals (required)")
	a.metricsFlag(cmd)
	return cmd
}

// countHandedOff counts the handed-off deals and their distinct pieces:
// what the migration registers.
func countHandedOff(deals []dagwrap.Deal) (handedOff, pieces int) {
	seen := make(map[cid.Cid]bool)
	for _, d := range deals {
		if d.HandedOff {
			handedOff++
			if !seen[d.PieceCID] {
				seen[d.PieceCID] = true
				pieces++
			}
		}
	}
	return handedOff, pieces
}

// plural is "1 thing" or "n things".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
