//go:build race

package main

// raceEnabled makes the end-to-end tests build the binary with the race
// detector when they run with it.
const raceEnabled = true
