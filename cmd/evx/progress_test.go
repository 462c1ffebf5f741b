package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestShowRate(t *testing.T) {
	for _, tc := range []struct {
		done, total int64
		elapsed     time.Duration
		want        bool
	}{
		{done: 500 << 10, total: 500 << 10, elapsed: 10 * time.Second, want: false}, // tiny
		{done: 1<<20 - 1, total: 1<<20 - 1, elapsed: 10 * time.Second, want: false},
		{done: 1 << 30, total: 1 << 30, elapsed: 200 * time.Millisecond, want: false}, // short
		{done: 1 << 20, total: 8 << 30, elapsed: 999 * time.Millisecond, want: false},
		{done: 0, total: 8 << 30, elapsed: 5 * time.Second, want: false}, // nothing moved yet
		{done: 1 << 20, total: 1 << 20, elapsed: time.Second, want: true},
		{done: 300 << 20, total: 8 << 30, elapsed: 3 * time.Second, want: true},
	} {
		if got := showRate(tc.done, tc.total, tc.elapsed); got != tc.want {
			t.Errorf("showRate(%d, %d, %v) = %v, want %v", tc.done, tc.total, tc.elapsed, got, tc.want)
		}
		line := barLine("sealing", tc.done, tc.total, tc.elapsed)
		if strings.Contains(line, "/s") != tc.want {
			t.Errorf("barLine(%d, %d, %v) = %q: rate shown %v, want %v", tc.done, tc.total, tc.elapsed, line, !tc.want, tc.want)
		}
	}
}

func TestBarLine(t *testing.T) {
	for _, tc := range []struct {
		done, total int64
		elapsed     time.Duration
		want        string
	}{
		{0, 100, 0, "sealing  [>                       ]   0%  0 B / 100 B"},
		{50, 100, 10 * time.Second, "sealing  [============>           ]  50%  50 B / 100 B"},
		{300 << 20, 600 << 20, 2 * time.Second, "sealing  [============>           ]  50%  300.0 MiB / 600.0 MiB  150.0 MiB/s"},
		{3 << 30, 3 << 30, 4 * time.Second, "sealing  [========================] 100%  3.0 GiB / 3.0 GiB  768.0 MiB/s"},
		{200, 100, time.Second, "sealing  [========================] 100%  100 B / 100 B"},
		{1536, 4096, time.Second, "sealing  [=========>              ]  37%  1.5 KiB / 4.0 KiB"},
	} {
		if got := barLine("sealing", tc.done, tc.total, tc.elapsed); got != tc.want {
			t.Errorf("barLine(%d, %d, %v):\n got %q\nwant %q", tc.done, tc.total, tc.elapsed, got, tc.want)
		}
	}
}

// TestProgressRedraws checks that the bar is redrawn at most every
// progressThrottle, always at the end, and removed by finish.
func TestProgressRedraws(t *testing.T) {
	var out bytes.Buffer
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	p := newBar(&out, 4<<20, "uploading", func() time.Time { return now })
	p.set(0)
	now = now.Add(10 * time.Millisecond)
	p.set(1 << 20) // too soon: not drawn
	now = now.Add(progressThrottle)
	p.set(2 << 20)
	now = now.Add(time.Millisecond)
	p.set(4 << 20) // complete: drawn however soon
	p.finish()
	draws := strings.Split(out.String(), "\r")[1:]
	want := []string{
		"uploading  [>                       ]   0%  0 B / 4.0 MiB\x1b[K",
		"uploading  [============>           ]  50%  2.0 MiB / 4.0 MiB\x1b[K",
		"uploading  [========================] 100%  4.0 MiB / 4.0 MiB\x1b[K",
		"\x1b[K",
	}
	if strings.Join(draws, "|") != strings.Join(want, "|") {
		t.Errorf("draws:\n%q\nwant:\n%q", draws, want)
	}

	// Not a terminal: nothing at all.
	var none bytes.Buffer
	q := newProgress(&none, 100, "sealing")
	q.set(50)
	q.finish()
	if none.Len() != 0 {
		t.Errorf("progress on a buffer wrote %q", none.String())
	}
}
