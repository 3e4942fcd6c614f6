//go:build ignore

// gen writes the fuzz seed corpora in this folder. Run from the repository
// root:
//
//	go run testdata/fuzz/gen.go
//
// The output is deterministic, so re-running it changes nothing.
package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	carv2 "github.com/ipld/go-car/v2"

	"github.com/spstack/dagwrap/internal/cargen"
)

func main() {
	sample, err := os.ReadFile("testdata/sample.car")
	check(err)
	corrupt, err := os.ReadFile("testdata/corrupt.car")
	check(err)

	v2 := filepath.Join(os.TempDir(), "dagwrap-seed-v2.car")
	check(carv2.WrapV1File("testdata/sample.car", v2))
	wrapped, err := os.ReadFile(v2)
	check(err)
	check(os.Remove(v2))

	wrongVersion := bytes.Clone(sample)
	wrongVersion[bytes.Index(wrongVersion, []byte("version\x01"))+len("version")] = 3

	pieces := map[string][]byte{
		"sample":           sample,
		"padded":           append(bytes.Clone(sample), make([]byte, 2048)...),
		"corrupt-cid":      corrupt,
		"carv2":            wrapped,
		"wrong-version":    wrongVersion,
		"truncated-header": sample[:30],
		"truncated-block":  sample[:len(sample)-10],
		"zeros":            make([]byte, 256),
		"not-a-car":        bytes.Repeat([]byte("not a car "), 20),
		"aggregate":        aggregate(),
	}
	for name, b := range pieces {
		write("FuzzIndexPiece", name, fmt.Sprintf("[]byte(%q)", b))
	}

	urls := map[string]string{
		"valid":        "lotus://baga6ea4seaqd7exthe4fo7ek3bp62grmw5eu555vgzm42plhbuycczq3pjptwcq",
		"cidv0":        "lotus://QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
		"no-host":      "lotus://",
		"not-a-cid":    "lotus://not-a-cid",
		"other-scheme": "file:///var/lib/piece.car",
		"bad-escape":   "lotus://%zz",
		"path-and-q":   "lotus://baga6ea4seaqd7exthe4fo7ek3bp62grmw5eu555vgzm42plhbuycczq3pjptwcq/x?y=z#f",
		"user-port":    "lotus://u:p@baga6ea4seaqd7exthe4fo7ek3bp62grmw5eu555vgzm42plhbuycczq3pjptwcq:99",
		"empty":        "",
	}
	for name, u := range urls {
		write("FuzzMountURL", name, fmt.Sprintf("string(%q)", u))
	}
}

// aggregate is a 2 KiB aggregated piece (FRC-0058) built by go-data-segment:
// a small CAR and a segment that is not one.
func aggregate() []byte {
	dir, err := os.MkdirTemp("", "dagwrap-seed-")
	check(err)
	defer os.RemoveAll(dir)
	car := filepath.Join(dir, "small.car")
	check(cargen.WriteSmall(car, 1, 3))
	b, err := os.ReadFile(car)
	check(err)
	path := filepath.Join(dir, "aggregate")
	_, err = cargen.WriteAggregate(path, 0, b, bytes.Repeat([]byte("not a car, a segment of text. "), 4))
	check(err)
	out, err := os.ReadFile(path)
	check(err)
	return out
}

func write(target, name, value string) {
	dir := filepath.Join("testdata", "fuzz", target)
	check(os.MkdirAll(dir, 0o755))
	check(os.WriteFile(filepath.Join(dir, name), []byte("go test fuzz v1\n"+value+"\n"), 0o644))
}

func check(err error) {
	if err != nil {
		panic(err)
	}
}
