package main

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// startServe runs `dagwrap serve` on root and returns its base URL and the
// process; the server stops at cleanup if the test has not stopped it.
func startServe(t *testing.T, root string) (string, *exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(bin, "--root", root, "serve", "--http", "127.0.0.1:0")
	cmd.Env = append(withoutRootEnv(), "GORACE=atexit_sleep_ms=0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	// The first line names the address; the rest is kept for the test.
	sc := bufio.NewReader(stderr)
	line, err := sc.ReadString('\n')
	if err != nil {
		t.Fatalf("serve printed %q: %v", line, err)
	}
	url, ok := strings.CutPrefix(strings.TrimSpace(line), "serving ")
	if !ok {
		t.Fatalf("serve's first line: %q", line)
	}
	rest := &bytes.Buffer{}
	go func() { _, _ = io.Copy(rest, sc) }()
	return url, cmd, rest
}

func get(t *testing.T, url string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func TestServeHTTP(t *testing.T) {
	root := t.TempDir()
	ok(t, root, "import", sampleCAR, paddedCAR)
	url, cmd, _ := startServe(t, root)

	// Every block of both pieces, by CID alone.
	for _, car := range []string{sampleCAR, paddedCAR} {
		_, blks := readCAR(t, car)
		for _, b := range blks {
			resp, body := get(t, url+"/ipfs/"+b.Cid().String()+"?format=raw")
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, b.RawData()) {
				t.Fatalf("%s: block %s: %s, %d bytes", car, b.Cid(), resp.Status, len(body))
			}
		}
	}
	// A piece with a range, through Go's client and curl.
	pc := pieceCID(t, paddedCAR)
	want, err := os.ReadFile(paddedCAR)
	if err != nil {
		t.Fatal(err)
	}
	resp, body := get(t, url+"/piece/"+pc.String(), "Range", "bytes=100-199")
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, want[100:200]) {
		t.Fatalf("piece range: %s, %d bytes", resp.Status, len(body))
	}
	if _, err := exec.LookPath("curl"); err == nil {
		out, err := exec.Command("curl", "-sSf", url+"/piece/"+pc.String()).Output()
		if err != nil {
			t.Fatalf("curl: %v", err)
		}
		// The piece folder holds the CAR zero-padded to its unpadded piece size.
		if !bytes.Equal(out[:len(want)], want) || len(bytes.Trim(out[len(want):], "\x00")) != 0 {
			t.Fatalf("curl got %d bytes, not the CAR and zeros", len(out))
		}
	}
	unknown := makeCAR(t, t.TempDir(), 5, 1)
	_, blks := readCAR(t, unknown)
	if resp, _ := get(t, url+"/ipfs/"+blks[0].Cid().String()+"?format=raw"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown block: %s", resp.Status)
	}

	// SIGINT stops it cleanly and releases the root.
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve after SIGINT: %v", err)
	}
	ok(t, root, "list")
}

func TestServeNeedsAnAddress(t *testing.T) {
	fails(t, t.TempDir(), exitUsage, []string{"--http ADDR is required"}, "serve")
	fails(t, t.TempDir(), exitFail, []string{"--http 256.0.0.1:1"}, "serve", "--http", "256.0.0.1:1")
}
