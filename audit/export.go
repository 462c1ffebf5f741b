package audit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"evx/crypto"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
	"golang.org/x/sync/errgroup"
)

// An export directory holds a transfer log as a [Source] reads it:
// "checkpoint", "checkpoints/<size>", "tile/..." and "keys", the verifier
// keys of the log and its witnesses (see [Keys]).
const keysFile = "keys"

// exportReaders is how many files Export copies at once: a remote source
// answers each after a round trip.
const exportReaders = 16

// maxKeysSize bounds the keys file.
const maxKeysSize = 64 << 10

// Dir is an export directory as a [HistorySource].
type Dir string

// ReadFile reads the file at path in the directory, refusing paths that
// are not of the export layout, anything that leads out of the
// directory, and files larger than a file at that path may be.
func (d Dir) ReadFile(ctx context.Context, path string) ([]byte, error) {
	limit, err := fileLimit(path)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenInRoot(string(d), filepath.FromSlash(path))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &fs.PathError{Op: "read", Path: f.Name(), Err: errors.New("not a regular file")}
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, &fs.PathError{Op: "read", Path: f.Name(), Err: fmt.Errorf("larger than %d bytes", limit)}
	}
	return data, nil
}

// fileLimit returns the largest a file at path of the export layout may
// be, or an error if path is not of the layout.
func fileLimit(path string) (int64, error) {
	switch {
	case path == "checkpoint":
		return maxCheckpointSize, nil
	case path == keysFile:
		return maxKeysSize, nil
	case strings.HasPrefix(path, "checkpoints/"):
		if _, ok := parseSize(strings.TrimPrefix(path, "checkpoints/")); ok {
			return maxCheckpointSize, nil
		}
	case strings.HasPrefix(path, "tile/"):
		if t, err := parseTilePath(path); err == nil {
			return maxTileSize(t), nil
		}
	}
	return 0, fmt.Errorf("invalid path %q in a transfer log export", path)
}

// CheckpointSizes lists the earlier checkpoints in the directory, smallest
// first.
func (d Dir) CheckpointSizes(ctx context.Context) ([]int64, error) {
	entries, err := os.ReadDir(filepath.Join(string(d), "checkpoints"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var sizes []int64
	for _, e := range entries {
		n, ok := parseSize(e.Name())
		if !ok {
			return nil, fmt.Errorf("unexpected file %q in %s", e.Name(), filepath.Join(string(d), "checkpoints"))
		}
		sizes = append(sizes, n)
	}
	slices.Sort(sizes)
	return sizes, nil
}

// ExportOptions say what Export writes besides the log.
type ExportOptions struct {
	// LogKey and WitnessKeys are the verifier keys written to the keys
	// file, as crypto's CheckpointVerifierKey and WitnessVerifierKey give
	// them.
	LogKey      string
	WitnessKeys []string
	// Since leaves out the earlier checkpoints smaller than Since, such as
	// those an auditor checked before.
	Since int64
}

// Export copies the transfer log read from src into dir, which must not
// exist or be empty: the latest checkpoint with its cosignatures, every
// tile and entry bundle of its tree, the earlier checkpoints from Since on
// if src is a [HistorySource], and a keys file. [Verify] reads the
// result through [Dir], on any machine. Export does not verify what it
// copies; it returns the size of the exported tree.
func Export(ctx context.Context, src Source, dir string, opts ExportOptions) (int64, error) {
	keys := Keys{Log: opts.LogKey, Witnesses: opts.WitnessKeys}
	keysText, err := keys.Marshal()
	if err != nil {
		return 0, err
	}
	if err := crypto.CheckOutputDir(dir); err != nil {
		return 0, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	signed, err := src.ReadFile(ctx, "checkpoint")
	if err != nil {
		return 0, fmt.Errorf("reading the checkpoint: %w", err)
	}
	text, _, _ := strings.Cut(string(signed), "\n\n")
	c, err := torchwood.ParseCheckpoint(text + "\n")
	if err != nil {
		return 0, fmt.Errorf("malformed checkpoint: %w", err)
	}

	var paths []string
	for _, t := range tlog.NewTiles(tileHeight, 0, c.N) {
		paths = append(paths, torchwood.TilePath(t))
		if t.L == 0 {
			t.L = -1
			paths = append(paths, torchwood.TilePath(t))
		}
	}
	if hs, ok := src.(HistorySource); ok {
		sizes, err := hs.CheckpointSizes(ctx)
		if err != nil {
			return 0, fmt.Errorf("listing earlier checkpoints: %w", err)
		}
		for _, n := range sizes {
			if n >= opts.Since && n < c.N {
				paths = append(paths, fmt.Sprintf("checkpoints/%d", n))
			}
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(exportReaders)
	for _, p := range paths {
		g.Go(func() error {
			data, err := src.ReadFile(gctx, p)
			if err != nil {
				return fmt.Errorf("reading %s: %w", p, err)
			}
			return writeExportFile(dir, p, data)
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	if err := writeExportFile(dir, keysFile, keysText); err != nil {
		return 0, err
	}
	// The checkpoint last: a directory with one is complete.
	if err := writeExportFile(dir, "checkpoint", signed); err != nil {
		return 0, err
	}
	return c.N, nil
}

func writeExportFile(dir, path string, data []byte) error {
	name := filepath.Join(dir, filepath.FromSlash(path))
	if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Keys are the verifier keys of a log and its witnesses, as an export's
// keys file holds them: one "log <key>" line, then one "witness <key>"
// line per witness. An auditor compares them with the keys pinned in the
// profile: a keys file proves nothing by itself.
type Keys struct {
	Log       string
	Witnesses []string
}

// Marshal returns the keys file, after checking the keys.
func (k Keys) Marshal() ([]byte, error) {
	if _, err := k.VerifyOptions(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "log %s\n", k.Log)
	for _, w := range k.Witnesses {
		fmt.Fprintf(&b, "witness %s\n", w)
	}
	return b.Bytes(), nil
}

// ParseKeys parses a keys file.
func ParseKeys(data []byte) (Keys, error) {
	var k Keys
	s := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; s.Scan(); line++ {
		kind, key, ok := strings.Cut(s.Text(), " ")
		switch {
		case ok && kind == "log" && k.Log == "":
			k.Log = key
		case ok && kind == "witness":
			k.Witnesses = append(k.Witnesses, key)
		default:
			return Keys{}, fmt.Errorf("keys file, line %d: unexpected %q", line, s.Text())
		}
	}
	if err := s.Err(); err != nil {
		return Keys{}, err
	}
	if _, err := k.VerifyOptions(); err != nil {
		return Keys{}, err
	}
	return k, nil
}

// VerifyOptions returns the verifiers of the keys, to verify with.
func (k Keys) VerifyOptions() (VerifyOptions, error) {
	v, err := note.NewVerifier(k.Log)
	if err != nil {
		return VerifyOptions{}, fmt.Errorf("log key %q: %v", k.Log, err)
	}
	opts := VerifyOptions{Log: v}
	for _, w := range k.Witnesses {
		wv, err := crypto.ParseWitnessVerifierKey(w)
		if err != nil {
			return VerifyOptions{}, err
		}
		opts.Witnesses = append(opts.Witnesses, wv)
	}
	return opts, nil
}
