package audit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Source is a transfer log as a verifier reads it, by path:
//   - "checkpoint": the latest signed checkpoint, with the cosignatures the
//     log holds for it appended as further signature lines;
//   - "checkpoints/<size>": an earlier checkpoint, likewise (optional);
//   - "tile/<L>/<N>[.p/<W>]" and "tile/entries/<N>[.p/<W>]": hash tiles
//     and entry bundles, as c2sp.org/tlog-tiles lays them out.
//
// A [Log] is a Source, and so is an export directory ([Dir]). A Source
// bounds what it reads; Verify trusts none of it.
type Source interface {
	ReadFile(ctx context.Context, path string) ([]byte, error)
}

// A HistorySource is a Source that can list the sizes of the earlier
// checkpoints it holds. Verify checks each of them against the tree.
type HistorySource interface {
	Source
	CheckpointSizes(ctx context.Context) ([]int64, error)
}

// Errors of [Verify] and [VerifyProof], wrapped with the details: each
// names one way a log can fail verification.
var (
	// ErrLogSignature: the checkpoint is not signed by the pinned log key.
	ErrLogSignature = errors.New("checkpoint not signed by the log key")
	// ErrMissingCosignature: a pinned witness did not cosign the checkpoint.
	ErrMissingCosignature = errors.New("missing cosignature")
	// ErrInvalidCosignature: a cosignature under a pinned witness's key
	// does not verify: forged, or made for another checkpoint.
	ErrInvalidCosignature = errors.New("invalid cosignature")
	// ErrRollback: the checkpoint is older than one seen before, replayed
	// or rolled back.
	ErrRollback = errors.New("old checkpoint")
	// ErrFork: the log's tree does not extend a checkpoint seen before:
	// its history was rewritten.
	ErrFork = errors.New("fork")
	// ErrTiles: the hash tiles do not match the checkpoint's root.
	ErrTiles = errors.New("hash tiles do not match the checkpoint")
	// ErrEntryChanged: an entry is not the one the tree holds.
	ErrEntryChanged = errors.New("entry changed")
	// ErrEntryMissing: an entry the tree holds is missing.
	ErrEntryMissing = errors.New("entry missing")
	// ErrEntriesReordered: entries are in another order than in the tree.
	ErrEntriesReordered = errors.New("entries reordered")
)

// VerifyOptions are the keys and state a verifier pins.
type VerifyOptions struct {
	// Log verifies the log's checkpoints; its name is the log's origin.
	Log note.Verifier
	// Witnesses verify the pinned witnesses' cosignatures
	// (c2sp.org/tlog-cosignature; see crypto.ParseWitnessVerifierKey).
	Witnesses []note.Verifier
	// MinCosignatures is how many of Witnesses must have cosigned the
	// checkpoint; 0 means all of them.
	MinCosignatures int
	// Saved is the checkpoint that the last verification returned
	// (Report.Checkpoint), or nil on the first one.
	Saved []byte
}

// Report says what Verify checked.
type Report struct {
	// Checkpoint is the checkpoint verified, as read, with its
	// cosignatures: save it and pass it as VerifyOptions.Saved next time.
	Checkpoint []byte
	Origin     string
	tlog.Tree
	// Cosigners are the names of the witnesses whose cosignatures verified.
	Cosigners []string
	// SavedSize is the size of the saved checkpoint the tree was checked to
	// extend, or -1 if there was none.
	SavedSize int64
	// History is how many earlier checkpoints were checked against the
	// tree.
	History int
}

// Verify checks the transfer log read from src: that its checkpoint is
// signed by the log key and cosigned by the witnesses, that it is not older
// than the saved checkpoint, that the entries in the entry bundles are
// exactly the leaves of the checkpoint's tree, in order, and that the tree
// extends the saved checkpoint and every earlier checkpoint src holds. It
// reads each bundle once and holds one at a time. The error names the
// first check that failed, wrapping one of the Err variables of this
// package.
func Verify(ctx context.Context, src Source, opts VerifyOptions) (*Report, error) {
	if opts.Log == nil {
		return nil, errors.New("verifying a transfer log needs its pinned key")
	}
	signed, err := src.ReadFile(ctx, "checkpoint")
	if err != nil {
		return nil, fmt.Errorf("reading the checkpoint: %w", err)
	}
	c, err := openPinned(signed, opts.Log)
	if err != nil {
		return nil, err
	}
	r := &Report{Checkpoint: signed, Origin: c.Origin, Tree: c.Tree, SavedSize: -1}

	var saved *torchwood.Checkpoint
	if opts.Saved != nil {
		s, err := openPinned(opts.Saved, opts.Log)
		if err != nil {
			return nil, fmt.Errorf("saved checkpoint: %w", err)
		}
		if s.N > c.N {
			return nil, fmt.Errorf("%w: the log's checkpoint is of size %d, older than the saved checkpoint of size %d (replayed or rolled back)", ErrRollback, c.N, s.N)
		}
		saved = &s
	}

	tiles := newTileCacheFunc(func(ctx context.Context, path string, limit int64) ([]byte, error) {
		return src.ReadFile(ctx, path)
	})
	hr := torchwood.TileHashReaderWithContext(ctx, c.Tree, tiles)
	for k := int64(0); k*tileWidth < c.N; k++ {
		if err := verifyBundle(ctx, src, hr, c.Tree, k); err != nil {
			return nil, err
		}
	}

	if saved != nil {
		if err := checkPrefix(hr, c.Tree, saved.Tree, "the saved checkpoint"); err != nil {
			return nil, err
		}
		r.SavedSize = saved.N
	}

	if hs, ok := src.(HistorySource); ok {
		sizes, err := hs.CheckpointSizes(ctx)
		if err != nil {
			return nil, fmt.Errorf("listing earlier checkpoints: %w", err)
		}
		for _, n := range sizes {
			path := fmt.Sprintf("checkpoints/%d", n)
			data, err := src.ReadFile(ctx, path)
			if err != nil {
				return nil, fmt.Errorf("reading %s: %w", path, err)
			}
			old, err := openPinned(data, opts.Log)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			if old.N != n {
				return nil, fmt.Errorf("%s holds a checkpoint of size %d", path, old.N)
			}
			if old.N > c.N {
				return nil, fmt.Errorf("%w: the log's checkpoint is of size %d, older than %s (replayed or rolled back)", ErrRollback, c.N, path)
			}
			if err := checkPrefix(hr, c.Tree, old.Tree, path); err != nil {
				return nil, err
			}
			r.History++
		}
	}

	r.Cosigners, err = checkCosignatures(signed, c, opts)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// openPinned checks that signed is a checkpoint signed by the pinned log
// key, and parses it.
func openPinned(signed []byte, v note.Verifier) (torchwood.Checkpoint, error) {
	if len(signed) > maxCheckpointSize {
		return torchwood.Checkpoint{}, fmt.Errorf("checkpoint of %d bytes is larger than %d", len(signed), maxCheckpointSize)
	}
	n, err := note.Open(signed, note.VerifierList(v))
	var unverified *note.UnverifiedNoteError
	var invalid *note.InvalidSignatureError
	switch {
	case errors.As(err, &unverified):
		var by []string
		for _, s := range unverified.Note.UnverifiedSigs {
			by = append(by, fmt.Sprintf("%s+%08x", s.Name, s.Hash))
		}
		return torchwood.Checkpoint{}, fmt.Errorf("%w %s: it is signed by %s only", ErrLogSignature, keyName(v), strings.Join(by, ", "))
	case errors.As(err, &invalid):
		return torchwood.Checkpoint{}, fmt.Errorf("%w %s: its signature does not verify", ErrLogSignature, keyName(v))
	case err != nil:
		return torchwood.Checkpoint{}, fmt.Errorf("malformed checkpoint: %w", err)
	}
	c, err := torchwood.ParseCheckpoint(n.Text)
	if err != nil {
		return torchwood.Checkpoint{}, fmt.Errorf("malformed checkpoint %q: %w", n.Text, err)
	}
	if c.Origin != v.Name() {
		return torchwood.Checkpoint{}, fmt.Errorf("%w: checkpoint of origin %q, the key is %s", ErrLogSignature, c.Origin, keyName(v))
	}
	return c, nil
}

// checkCosignatures checks the cosignatures of the pinned witnesses on
// signed and returns the names of those that verified.
func checkCosignatures(signed []byte, c torchwood.Checkpoint, opts VerifyOptions) ([]string, error) {
	var ok, missing []string
	for _, w := range opts.Witnesses {
		n, err := note.Open(signed, note.VerifierList(opts.Log, w))
		var invalid *note.InvalidSignatureError
		switch {
		case errors.As(err, &invalid):
			return nil, fmt.Errorf("%w: the cosignature by witness %s of checkpoint %d does not verify (forged, or made for another checkpoint)", ErrInvalidCosignature, keyName(w), c.N)
		case err != nil:
			return nil, fmt.Errorf("checking cosignatures: %w", err)
		}
		if slices.ContainsFunc(n.Sigs, func(s note.Signature) bool { return s.Name == w.Name() && s.Hash == w.KeyHash() }) {
			ok = append(ok, w.Name())
		} else {
			missing = append(missing, keyName(w))
		}
	}
	want := opts.MinCosignatures
	if want <= 0 {
		want = len(opts.Witnesses)
	}
	if len(ok) < want {
		return nil, fmt.Errorf("%w: checkpoint %d is cosigned by %d of the %d witnesses required; none from %s", ErrMissingCosignature, c.N, len(ok), want, strings.Join(missing, ", "))
	}
	return ok, nil
}

// checkPrefix checks that the tree of size old.N within tree, computed from
// tree's authenticated tiles, has old's root.
func checkPrefix(hr tlog.HashReader, tree, old tlog.Tree, what string) error {
	h, err := tlog.TreeHash(old.N, hr)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrTiles, err)
	}
	if h != old.Hash {
		return fmt.Errorf("%w: the log's tree of size %d does not contain %s of size %d: its first %d entries hash to %s, not %s", ErrFork, tree.N, what, old.N, old.N, h, old.Hash)
	}
	return nil
}

// verifyBundle checks entry bundle k against the leaf hashes of tree,
// which hr authenticates, and names what differs.
func verifyBundle(ctx context.Context, src Source, hr tlog.HashReader, tree tlog.Tree, k int64) error {
	t := tlog.Tile{H: tileHeight, L: -1, N: k, W: int(min(tileWidth, tree.N-k*tileWidth))}
	first := k * tileWidth
	indexes := make([]int64, t.W)
	for i := range indexes {
		indexes[i] = tlog.StoredHashIndex(0, first+int64(i))
	}
	want, err := hr.ReadHashes(indexes)
	if err != nil {
		return fmt.Errorf("%w: leaves %d to %d: %v", ErrTiles, first, first+int64(t.W)-1, err)
	}
	path := torchwood.TilePath(t)
	data, err := src.ReadFile(ctx, path)
	if err != nil {
		return fmt.Errorf("%w: entries %d to %d: reading %s: %v", ErrEntryMissing, first, first+int64(t.W)-1, path, err)
	}
	var got []tlog.Hash
	// One entry more than the tree has is enough to tell that there are
	// too many.
	for rest := data; len(rest) > 0 && len(got) <= len(want); {
		e, r, err := torchwood.ReadTileEntry(rest)
		if err != nil {
			return fmt.Errorf("%w: %s is malformed after %d entries: %v", ErrEntryChanged, path, len(got), err)
		}
		got = append(got, tlog.RecordHash(e))
		rest = r
	}
	// The first entry that differs, and whether it is one of the others.
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	at := func(h tlog.Hash) int { return slices.Index(want, h) }
	switch {
	case len(got) == len(want) && i == len(got):
		return nil
	case len(got) < len(want):
		return fmt.Errorf("%w: entry %d is missing: %s holds %d entries, the tree %d", ErrEntryMissing, first+int64(i), path, len(got), len(want))
	case len(got) > len(want) && i == len(want):
		return fmt.Errorf("%w: %s holds %d entries, the tree %d: entries were added", ErrEntryChanged, path, len(got), len(want))
	}
	if j := at(got[i]); j > i && j < len(got) && at(got[j]) == i {
		return fmt.Errorf("%w: entries %d and %d are swapped", ErrEntriesReordered, first+int64(i), first+int64(j))
	} else if j >= 0 {
		return fmt.Errorf("%w: entry %d is the tree's entry %d", ErrEntriesReordered, first+int64(i), first+int64(j))
	}
	return fmt.Errorf("%w: entry %d does not hash to the tree's leaf %d (%s)", ErrEntryChanged, first+int64(i), first+int64(i), path)
}
