package fsutil

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	for _, content := range []string{"first", "second"} {
		if err := WriteFileAtomic(dir, "f", []byte(content)); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || string(b) != content {
			t.Fatalf("read %q, %v; want %q", b, err, content)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("temporary files left: %v", ents)
	}
	if err := WriteFileAtomic(filepath.Join(dir, "missing"), "f", nil); err == nil {
		t.Fatal("write into a missing folder succeeded")
	}
}

func TestFileCommitAndAbort(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Aborted: the target is untouched and nothing is left.
	f, err := Create(dir, ".target-*")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("half"); err != nil {
		t.Fatal(err)
	}
	f.Abort()
	if b, _ := os.ReadFile(target); string(b) != "old" {
		t.Fatalf("target after an abort: %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("left after an abort: %v", ents)
	}
	// Committed: the target has the new bytes; a deferred Abort after it
	// changes nothing, and a second Commit is refused.
	f, err = Create(dir, ".target-*")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("new"); err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(target); err != nil {
		t.Fatal(err)
	}
	f.Abort()
	if b, _ := os.ReadFile(target); string(b) != "new" {
		t.Fatalf("target after a commit: %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("left after a commit: %v", ents)
	}
	if err := f.Commit(target); err == nil {
		t.Fatal("a second Commit succeeded")
	}
	// A commit into a missing folder fails and leaves no temporary file.
	f, err = Create(dir, ".target-*")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(filepath.Join(dir, "missing", "x")); err == nil {
		t.Fatal("a commit into a missing folder succeeded")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("left after a failed commit: %v", ents)
	}
}
