package dagwrap

import (
	"fmt"

	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"
	logging "github.com/ipfs/go-log/v2"
)

// migrationPlan is what MigrateDeals registers: each handed-off deal's
// piece once, in the deals' order. It keeps no map from piece to deals: for
// 100k deals its keys and slices were about 15 MB of the migration's live
// heap, so about 30 MB of its peak (the GC lets the heap grow to twice what
// is live), and pushed the peak RSS over 256 MiB. The deals of a failed
// piece are found by one pass over the deals at the end instead.
type migrationPlan struct {
	deals     []Deal
	order     []cid.Cid
	handedOff int
	invalid   []error             // handed-off deals without a piece CID
	failed    map[shard.Key]error // pieces whose registration failed
}

func planMigration(deals []Deal) *migrationPlan {
	p := &migrationPlan{deals: deals}
	seen := make(map[cid.Cid]struct{})
	for _, d := range deals {
		if !d.HandedOff {
			continue
		}
		p.handedOff++
		if !d.PieceCID.Defined() {
			p.invalid = append(p.invalid, fmt.Errorf("deal %d: piece CID: %w", d.DealID, ErrUndefinedCID))
			continue
		}
		if _, ok := seen[d.PieceCID]; !ok {
			seen[d.PieceCID] = struct{}{}
			p.order = append(p.order, d.PieceCID)
		}
	}
	return p
}

// fail records that the registration of the piece key failed.
func (p *migrationPlan) fail(key shard.Key, err error) {
	if p.failed == nil {
		p.failed = make(map[shard.Key]error)
	}
	p.failed[key] = err
}

// failures logs and returns one error per failed deal, in the deals' order.
func (p *migrationPlan) failures(log *logging.ZapEventLogger) []error {
	out := p.invalid
	if len(p.failed) == 0 {
		return out
	}
	for _, d := range p.deals {
		if !d.HandedOff || !d.PieceCID.Defined() {
			continue
		}
		if err, ok := p.failed[shard.KeyFromCID(d.PieceCID)]; ok {
			log.Errorw("deal migration failed", "deal", d.DealID, "piece", d.PieceCID, "error", err)
			out = append(out, fmt.Errorf("deal %d piece %s: %w", d.DealID, d.PieceCID, err))
		}
	}
	return out
}
