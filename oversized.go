package dagwrap

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/filecoin-project/dagstore/shard"
	"github.com/ipfs/go-cid"

	"github.com/spstack/dagwrap/internal/fsutil"
)

// oversizedDir lists, per piece, the blocks left out of its index because
// the blockstore could not serve them, for IndexStats and `dagwrap info`.
const oversizedDir = "oversized"

// OversizedBlock is a block left out of its piece's index: larger than
// the 8 MiB section go-car's blockstore serves.
type OversizedBlock struct {
	CID    cid.Cid
	Offset int64  // of its section in the piece
	Size   uint64 // bytes of block data
}

// writeOversized records the blocks left out of k's index (none: removes
// the record).
func writeOversized(dir string, k shard.Key, blocks []skippedBlock) error {
	if dir == "" {
		return nil
	}
	if len(blocks) == 0 {
		return removeOversized(dir, k)
	}
	out := make([]OversizedBlock, len(blocks))
	for i, b := range blocks {
		out[i] = OversizedBlock{CID: b.CID, Offset: b.Offset, Size: b.Size}
	}
	data, err := json.Marshal(out)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("record oversized blocks: %w", err)
	}
	if err := fsutil.WriteFileAtomic(dir, k.String()+".json", data); err != nil {
		return fmt.Errorf("record oversized blocks: %w", err)
	}
	return nil
}

func readOversized(dir string, k shard.Key) ([]OversizedBlock, error) {
	data, err := os.ReadFile(filepath.Join(dir, k.String()+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read oversized blocks: %w", err)
	}
	var out []OversizedBlock
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("read oversized blocks of %s: %w", k, err)
	}
	return out, nil
}

func removeOversized(dir string, k shard.Key) error {
	if err := os.Remove(filepath.Join(dir, k.String()+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove oversized blocks record: %w", err)
	}
	return nil
}
