package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// Bounds below which a transfer rate is not shown: over a few bytes or a
// few milliseconds, a rate is noise ("0 B/s", or gigabytes a second for a
// file read from the page cache).
const (
	minRateBytes = 1 << 20
	minRateTime  = time.Second
)

// progressThrottle is the least time between two redraws of a bar.
const progressThrottle = 100 * time.Millisecond

// progress shows a progress bar on stderr when it is a terminal, and nothing
// otherwise, so that scripts and logs stay clean. Its methods may be called
// from any goroutine.
type progress struct {
	mu    sync.Mutex
	w     io.Writer // nil: show nothing
	what  string
	total int64
	now   func() time.Time
	start time.Time
	last  time.Time // of the last redraw
	drawn bool
}

func newProgress(stderr io.Writer, total int64, what string) *progress {
	f, ok := stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) || total <= 0 {
		return &progress{}
	}
	return newBar(stderr, total, what, time.Now)
}

// newBar returns a bar that draws on w, whatever w is, timed by now.
func newBar(w io.Writer, total int64, what string, now func() time.Time) *progress {
	return &progress{w: w, what: what, total: total, now: now, start: now()}
}

func (p *progress) set(n int64) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.now()
	if p.drawn && t.Sub(p.last) < progressThrottle && n < p.total {
		return
	}
	p.last, p.drawn = t, true
	// \r and "erase to the end of the line": the line is redrawn in place.
	fmt.Fprintf(p.w, "\r%s\x1b[K", barLine(p.what, n, p.total, t.Sub(p.start)))
}

// finish removes the bar, so that what is printed next starts on a clean
// line.
func (p *progress) finish() {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.drawn = false
	}
}

// barLine renders one state of a bar, such as
// "sealing  [=========>          ]  45%  12.0 MiB / 26.7 MiB  8.1 MiB/s".
func barLine(what string, done, total int64, elapsed time.Duration) string {
	const width = 24
	done = min(max(done, 0), total)
	filled := int(done * width / total)
	bar := strings.Repeat("=", filled)
	if filled < width {
		bar += ">" + strings.Repeat(" ", width-filled-1)
	}
	line := fmt.Sprintf("%s  [%s] %3d%%  %s / %s", what, bar, done*100/total, iecBytes(done), iecBytes(total))
	if showRate(done, total, elapsed) {
		line += fmt.Sprintf("  %s/s", iecBytes(int64(float64(done)/elapsed.Seconds())))
	}
	return line
}

// showRate reports whether a transfer's rate means something yet: the
// transfer is at least minRateBytes, has run at least minRateTime, and has
// moved some bytes.
func showRate(done, total int64, elapsed time.Duration) bool {
	return total >= minRateBytes && elapsed >= minRateTime && done > 0
}

// iecBytes formats n bytes with a binary unit: 512 B, 1.5 KiB, 12.0 MiB.
func iecBytes(n int64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/1024, 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, units[i])
}

// stagedProgress shows one bar per stage of a longer job, such as sealing
// and then uploading.
type stagedProgress struct {
	stderr io.Writer
	stage  string
	bar    *progress
}

func (s *stagedProgress) set(stage string, done, total int64) {
	if stage != s.stage || s.bar == nil {
		s.finish()
		s.stage, s.bar = stage, newProgress(s.stderr, total, stage)
	}
	s.bar.set(done)
}

func (s *stagedProgress) finish() {
	if s.bar != nil {
		s.bar.finish()
	}
}
