//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package main

import (
	"os"
	"syscall"
)

// canLockTemps says whether tryLock tells a live export's temporary file
// from a dead one's.
const canLockTemps = true

// tryLock takes an exclusive, non-blocking flock on f; it is released when
// f is closed or its process dies.
func tryLock(f *os.File) bool {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil
}
