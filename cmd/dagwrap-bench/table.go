package main

import (
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
)

type unit int

const (
	seconds unit = iota
	bytesU
	mbPerSec
	perSec
	plain // a number, one decimal
)

func (u unit) format(v float64) string {
	if math.IsNaN(v) {
		return "—"
	}
	switch u {
	case seconds:
		d := time.Duration(v * float64(time.Second))
		switch {
		case d >= time.Second:
			return fmt.Sprintf("%.2f s", d.Seconds())
		case d >= time.Millisecond:
			return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
		default:
			return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond))
		}
	case bytesU:
		if v == 0 {
			return "0 B"
		}
		return humanize.IBytes(uint64(v))
	case mbPerSec:
		return fmt.Sprintf("%.0f MB/s", v)
	case perSec:
		return humanize.CommafWithDigits(v, 0) + "/s"
	case plain:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprint(v)
}

// row is one line of the result table. Ratio is always dagwrap ÷ baseline;
// the target says which way is better.
type row struct {
	Case     string
	What     string
	Unit     unit
	Dagwrap  float64
	Baseline float64 // NaN when the row has none
	Target   string  // "" when the issue sets none
	met      func(dagwrap, ratio float64) bool
}

func (r row) ratio() float64 {
	if math.IsNaN(r.Baseline) || r.Baseline == 0 {
		return math.NaN()
	}
	return r.Dagwrap / r.Baseline
}

func (r row) metString() string {
	if r.met == nil {
		return ""
	}
	if r.met(r.Dagwrap, r.ratio()) {
		return "yes"
	}
	return "**no**"
}

// Targets on the ratio or on dagwrap's own figure.
func ratioAtMost(x float64) func(float64, float64) bool {
	return func(_, r float64) bool { return !math.IsNaN(r) && r <= x }
}
func ratioAtLeast(x float64) func(float64, float64) bool {
	return func(_, r float64) bool { return !math.IsNaN(r) && r >= x }
}
func valueAtMost(x float64) func(float64, float64) bool {
	return func(v, _ float64) bool { return v <= x }
}
func valueAtLeast(x float64) func(float64, float64) bool {
	return func(v, _ float64) bool { return v >= x }
}

func writeTable(w io.Writer, rows []row) {
	fmt.Fprintln(w, "| # | measurement (dagwrap vs baseline) | dagwrap | baseline | ratio | target | met |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---|---|")
	for _, r := range rows {
		ratio := "—"
		if v := r.ratio(); !math.IsNaN(v) {
			ratio = fmt.Sprintf("%.3gx", v)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", r.Case, strings.ReplaceAll(r.What, "|", "/"),
			r.Unit.format(r.Dagwrap), r.Unit.format(r.Baseline), ratio, r.Target, r.metString())
	}
}
