package dagwrap

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"testing"
)

// lockHolderEnv names the root that the helper process TestLockHolder holds.
const lockHolderEnv = "DAGWRAP_LOCK_HOLDER_ROOT"

// TestRootLockedByAnotherProcess pins the root lock across processes (issue
// 10 item 2 keeps it through gofrs/flock): New on a root another process
// holds fails at once with ErrRootLocked, and succeeds once that process
// has closed its Wrapper.
func TestRootLockedByAnotherProcess(t *testing.T) {
	root := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHolder$", "-test.count=1")
	cmd.Env = append(os.Environ(), lockHolderEnv+"="+root, "GOLOG_LOG_LEVEL=error")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "held\n" {
		t.Fatalf("helper process: %q, %v", line, err)
	}
	if _, err := New(Config{RootDir: root}, newFakeAPI(true)); !errors.Is(err, ErrRootLocked) {
		t.Fatalf("New on a root another process holds: %v, want ErrRootLocked", err)
	}
	_ = stdin.Close() // the helper closes its Wrapper and exits
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper process: %v", err)
	}
	w, err := New(Config{RootDir: root}, newFakeAPI(true))
	if err != nil {
		t.Fatalf("New after the other process closed its Wrapper: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestLockHolder is the helper process of TestRootLockedByAnotherProcess: it
// holds the root until its stdin closes. It does nothing in a normal run.
func TestLockHolder(t *testing.T) {
	root := os.Getenv(lockHolderEnv)
	if root == "" {
		t.Skip("helper process of TestRootLockedByAnotherProcess")
	}
	w, err := New(Config{RootDir: root}, newFakeAPI(true))
	if err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("held\n")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until EOF
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}
