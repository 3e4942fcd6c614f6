// Command dagwrap-example opens a dagwrap root, registers the CAR files it is
// given (default: the fixtures in testdata/) and reads every block back.
//
//	go run ./cmd/dagwrap-example [-root DIR] [FILE.car ...]
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/filecoin-project/dagstore/mount"
	commp "github.com/filecoin-project/go-fil-commp-hashhash"
	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	"github.com/multiformats/go-multihash"
	"github.com/spstack/dagwrap"
)

func main() {
	root := flag.String("root", envOr("DAGWRAP_ROOT", "dagwrap-data"), "dagwrap root folder")
	flag.Parse()
	files := flag.Args()
	if len(files) == 0 {
		files = []string{"testdata/sample.car", "testdata/padded.car"}
	}
	if err := run(*root, files); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(root string, files []string) error {
	api := filesAPI{}
	for _, f := range files {
		pc, err := pieceCID(f)
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		api[pc] = f
	}
	w, err := dagwrap.New(dagwrap.Config{RootDir: root}, api)
	if err != nil {
		return err
	}
	defer w.Close()
	ctx := context.Background()
	if err := w.Start(ctx); err != nil {
		return err
	}
	for pc, f := range api {
		err := w.RegisterShardSync(ctx, pc, "", true)
		if err != nil && !errors.Is(err, dagwrap.ErrShardExists) {
			return err
		}
		n, err := readBack(ctx, w, pc, f)
		if err != nil {
			return err
		}
		fmt.Printf("%s  %s  %d blocks read back, bytes equal\n", pc, f, n)
	}
	fmt.Println("root:", root)
	return nil
}

// readBack loads the piece and checks every block of the file against it.
func readBack(ctx context.Context, w *dagwrap.Wrapper, pc cid.Cid, file string) (int, error) {
	bs, err := w.LoadShard(ctx, pc)
	if err != nil {
		return 0, err
	}
	defer bs.Close()
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	br, err := carv2.NewBlockReader(f, carv2.ZeroLengthSectionAsEOF(true))
	if err != nil {
		return 0, err
	}
	n := 0
	for {
		want, err := br.Next()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		got, err := bs.Get(ctx, want.Cid())
		if err != nil {
			return n, err
		}
		if !bytes.Equal(got.RawData(), want.RawData()) {
			return n, fmt.Errorf("piece %s: block %s differs", pc, want.Cid())
		}
		n++
	}
}

// filesAPI serves pieces straight from local CAR files.
type filesAPI map[cid.Cid]string

func (a filesAPI) FetchUnsealedPiece(_ context.Context, pc cid.Cid) (mount.Reader, error) {
	p, ok := a[pc]
	if !ok {
		return nil, fmt.Errorf("unknown piece %s", pc)
	}
	return os.Open(p)
}

func (a filesAPI) GetUnpaddedCARSize(_ context.Context, pc cid.Cid) (uint64, error) {
	st, err := os.Stat(a[pc])
	if err != nil {
		return 0, err
	}
	return uint64(st.Size()), nil
}

func (a filesAPI) IsUnsealed(context.Context, cid.Cid) (bool, error) { return true, nil }
func (a filesAPI) Start(context.Context) error                       { return nil }
func (a filesAPI) RandomAccess() bool                                { return true }

// pieceCID computes the file's piece commitment (CommP).
func pieceCID(path string) (cid.Cid, error) {
	f, err := os.Open(filepath.Clean(path))
	if err != nil {
		return cid.Undef, err
	}
	defer f.Close()
	var cp commp.Calc
	if _, err := io.Copy(&cp, f); err != nil {
		return cid.Undef, err
	}
	digest, _, err := cp.Digest()
	if err != nil {
		return cid.Undef, err
	}
	mh, err := multihash.Encode(digest, multihash.SHA2_256_TRUNC254_PADDED)
	if err != nil {
		return cid.Undef, err
	}
	return cid.NewCidV1(cid.FilCommitmentUnsealed, mh), nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
