package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"evx/api"
	"evx/audit"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/tlog"
)

// Limits on what a LogSource reads: a hostile gateway must not make an
// auditor's machine read without end.
const (
	// maxCheckpointSize bounds a checkpoint with its cosignatures, as the
	// log does (docs/audit.md 4.1).
	maxCheckpointSize = 64 << 10
	// maxHistory bounds the sizes of earlier checkpoints listed: 32 MiB
	// of sizes. Verify from a saved checkpoint on (LogSource.Since) to
	// list fewer.
	maxHistory = 1 << 22
)

// LogSource reads the gateway's transfer log through the auditor's API
// (GET /v1/log/..., docs/api.md 3.11) as an [audit.HistorySource], so that
// [audit.Verify] and [audit.Export] run against a live gateway. It trusts
// nothing it reads, which Verify checks, but bounds it: each file to the
// most a file at its path may hold, the history to maxHistory sizes.
//
// The history it lists ends before the checkpoint it read last: a gateway
// publishes new checkpoints while a verifier reads, and one newer than the
// checkpoint being verified would look like a rollback.
type LogSource struct {
	c     *Client
	since int64

	mu   sync.Mutex
	size int64 // of the checkpoint read last; -1 before
}

// Log returns the gateway's transfer log as a source to verify or export.
func (c *Client) Log() *LogSource { return &LogSource{c: c, size: -1} }

// Since returns a source like s whose history lists only the checkpoints
// of size n or more, such as those published since the checkpoint an
// auditor saved: the earlier ones are prefixes of that one, checked then.
func (s *LogSource) Since(n int64) *LogSource { return &LogSource{c: s.c, since: n, size: -1} }

// ReadFile reads a file of the log: "checkpoint", "checkpoints/<size>" or a
// tile path ("tile/0/000", "tile/entries/000.p/7"). Other paths are refused
// before anything is sent.
func (s *LogSource) ReadFile(ctx context.Context, path string) ([]byte, error) {
	limit, err := logFileLimit(path)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, "GET", s.c.base+"/v1/log/"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.c.send(req)
	if err != nil {
		return nil, s.c.unreachable(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, decodeAnswer(resp, nil)
	}
	if resp.ContentLength > limit {
		return nil, fmt.Errorf("%w: the gateway announces %d bytes for %s of the transfer log, more than the %d it may hold", ErrBadAnswer, resp.ContentLength, path, limit)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s of the transfer log: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: the gateway sends more than %d bytes for %s of the transfer log", ErrBadAnswer, limit, path)
	}
	if path == "checkpoint" {
		text, _, _ := strings.Cut(string(data), "\n\n")
		if c, err := torchwood.ParseCheckpoint(text + "\n"); err == nil {
			s.mu.Lock()
			s.size = c.N
			s.mu.Unlock()
		}
	}
	return data, nil
}

// logFileLimit returns the most a file at path may hold, or an error if
// path is not a file of the log in its canonical form.
func logFileLimit(path string) (int64, error) {
	switch {
	case path == "checkpoint":
		return maxCheckpointSize, nil
	case strings.HasPrefix(path, "checkpoints/"):
		s := strings.TrimPrefix(path, "checkpoints/")
		if n, err := strconv.ParseInt(s, 10, 64); err == nil && n >= 0 && strconv.FormatInt(n, 10) == s {
			return maxCheckpointSize, nil
		}
	case strings.HasPrefix(path, "tile/"):
		t, err := torchwood.ParseTilePath(path)
		if err == nil && t.H == torchwood.TileHeight && t.L <= 63/torchwood.TileHeight && t.W >= 1 && t.W <= torchwood.TileWidth && torchwood.TilePath(t) == path {
			if t.L < 0 {
				return int64(t.W) * (2 + audit.MaxEntrySize), nil
			}
			return int64(t.W) * tlog.HashSize, nil
		}
	}
	return 0, fmt.Errorf("%q is not a file of the transfer log", path)
}

// CheckpointSizes lists the sizes of the earlier checkpoints the gateway
// published, ascending, from the size Since gave on and below the size of
// the checkpoint read last, asking GET /v1/log/checkpoints page by page.
func (s *LogSource) CheckpointSizes(ctx context.Context) ([]int64, error) {
	s.mu.Lock()
	below := s.size
	s.mu.Unlock()
	var sizes []int64
	for from := s.since; ; {
		var page api.LogCheckpoints
		if err := s.c.get(ctx, "/v1/log/checkpoints?from="+strconv.FormatInt(from, 10), &page); err != nil {
			return nil, err
		}
		if len(page.Sizes) > api.MaxLogCheckpoints || page.Truncated && len(page.Sizes) == 0 {
			return nil, fmt.Errorf("%w: a page of %d checkpoint sizes (truncated: %v)", ErrBadAnswer, len(page.Sizes), page.Truncated)
		}
		for _, n := range page.Sizes {
			if n < from {
				return nil, fmt.Errorf("%w: checkpoint sizes listed out of order, or below the %d asked for: %d", ErrBadAnswer, from, n)
			}
			if below >= 0 && n >= below {
				return sizes, nil
			}
			if len(sizes) == maxHistory {
				return nil, fmt.Errorf("the gateway lists more than %d earlier checkpoints: verify from a saved checkpoint on", maxHistory)
			}
			sizes = append(sizes, n)
			from = n + 1
		}
		if !page.Truncated {
			return sizes, nil
		}
	}
}

// LogStatus returns the state of the gateway's transfer log: the latest
// checkpoint's size and age, and which peers cosigned it. It is what the
// gateway says, unverified.
func (c *Client) LogStatus(ctx context.Context) (*api.LogStatus, error) {
	var st api.LogStatus
	return &st, c.get(ctx, "/v1/log/status", &st)
}
