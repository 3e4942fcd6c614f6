package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/filecoin-project/dagstore"
	"github.com/ipfs/go-cid"
	"github.com/spstack/dagwrap"
)

// timeReps runs fn once to warm caches up, then n times, and returns every
// timed duration.
func timeReps(n int, fn func() error) ([]time.Duration, error) {
	if err := fn(); err != nil {
		return nil, err
	}
	out := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		start := time.Now()
		if err := fn(); err != nil {
			return nil, err
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}

// timeOnce times one run of fn.
func timeOnce(fn func() error) (time.Duration, error) {
	start := time.Now()
	err := fn()
	return time.Since(start), err
}

// percentile returns the p-th percentile (0..100) of ds, nearest rank.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := int(p/100*float64(len(s))+0.5) - 1
	rank = max(0, min(rank, len(s)-1))
	return s[rank]
}

func median(ds []time.Duration) time.Duration { return percentile(ds, 50) }

// dirBytes sums the sizes of the regular files in dir.
func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// waitEmpty polls until dir holds no file: the dagstore's GC has no event
// to wait on from outside.
func waitEmpty(dir string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		if len(ents) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still holds %d files after %s", dir, len(ents), timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitAvailable polls until the piece's shard is available again: the
// release of a closed accessor goes through the dagstore's event loop.
func waitAvailable(w *dagwrap.Wrapper, pc cid.Cid, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		info, err := w.ShardInfo(pc)
		if err != nil {
			return err
		}
		if info.State == dagstore.ShardStateAvailable {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("piece %s still %s after %s", pc, info.State, timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// procStatusBytes reads a "kB" field of /proc/self/status (VmRSS, VmHWM).
func procStatusBytes(field string) (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/self/status", field)
}

// resetPeakRSS frees what the Go heap can give back and resets the
// kernel's resident-set high-water mark (VmHWM) to the current RSS.
func resetPeakRSS() error {
	runtime.GC()
	debug.FreeOSMemory()
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// heapSampler records the peak of the Go heap in use (runtime.MemStats
// HeapInuse), sampled every interval until stopped.
type heapSampler struct {
	stop chan struct{}
	wg   sync.WaitGroup
	peak uint64
}

func startHeapSampler(every time.Duration) *heapSampler {
	s := &heapSampler{stop: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			s.peak = max(s.peak, ms.HeapInuse)
			select {
			case <-t.C:
			case <-s.stop:
				return
			}
		}
	}()
	return s
}

// Stop ends sampling and returns the peak.
func (s *heapSampler) Stop() uint64 {
	close(s.stop)
	s.wg.Wait()
	return s.peak
}

// heapAlloc returns the live heap after a full collection.
func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
