package main

import (
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress shows a progress bar on stderr when it is a terminal, and nothing
// otherwise, so that scripts and logs stay clean.
type progress struct{ bar *progressbar.ProgressBar }

func newProgress(stderr io.Writer, total int64, what string) *progress {
	f, ok := stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) || total == 0 {
		return &progress{}
	}
	return &progress{bar: progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(stderr),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)}
}

func (p *progress) set(n int64) {
	if p.bar != nil {
		p.bar.Set64(n)
	}
}

func (p *progress) finish() {
	if p.bar != nil {
		p.bar.Finish()
	}
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
