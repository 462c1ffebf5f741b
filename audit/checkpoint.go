package audit

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"evx/storage"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Limits on what the log reads back, so that a corrupted or hostile object
// cannot make it allocate without bound.
const (
	// maxCheckpointSize bounds a checkpoint note with its cosignatures.
	maxCheckpointSize = 64 << 10
	// maxCosignatures is the most cosignatures kept beside one checkpoint
	// and served with it; note.Open refuses notes with more than 100
	// signatures.
	maxCosignatures = 32
	// maxCosignatureSize bounds one cosignature line.
	maxCosignatureSize = 1 << 10
	// cosignatureLength is the length of a decoded c2sp.org/tlog-cosignature
	// signature: key hash, timestamp, Ed25519 signature.
	cosignatureLength = 4 + 8 + 64
)

const (
	latestKey         = "log/checkpoint"
	historyPrefix     = "log/checkpoints/"
	cosignaturePrefix = "log/cosignatures/"
)

// historyKey is the key of the checkpoint of size n in the history.
func historyKey(n int64) string { return fmt.Sprintf("%s%020d", historyPrefix, n) }

// cosignatureDir is the prefix of the keys of the cosignatures of the
// checkpoint of size n.
func cosignatureDir(n int64) string { return fmt.Sprintf("%s%020d/", cosignaturePrefix, n) }

// signCheckpoint returns the signed checkpoint note of tree. Ed25519
// signatures are deterministic and the note has no timestamp, so equal
// trees give equal bytes.
func signCheckpoint(origin string, tree tlog.Tree, s note.Signer) ([]byte, error) {
	text := torchwood.Checkpoint{Origin: origin, Tree: tree}.String()
	signed, err := note.Sign(&note.Note{Text: text}, s)
	if err != nil {
		return nil, fmt.Errorf("signing checkpoint of size %d: %w", tree.N, err)
	}
	return signed, nil
}

// openCheckpoint checks that signed is a checkpoint of origin signed by
// v, and parses it. Signatures by other keys (cosignatures) are ignored.
func openCheckpoint(signed []byte, origin string, v note.Verifier) (torchwood.Checkpoint, error) {
	if len(signed) > maxCheckpointSize {
		return torchwood.Checkpoint{}, fmt.Errorf("checkpoint of %d bytes is larger than %d", len(signed), maxCheckpointSize)
	}
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		return torchwood.Checkpoint{}, fmt.Errorf("checkpoint not signed by %s: %w", keyName(v), err)
	}
	c, err := torchwood.ParseCheckpoint(n.Text)
	if err != nil {
		return torchwood.Checkpoint{}, fmt.Errorf("checkpoint %q: %w", n.Text, err)
	}
	if c.Origin != origin {
		return torchwood.Checkpoint{}, fmt.Errorf("checkpoint of origin %q, want %q", c.Origin, origin)
	}
	return c, nil
}

// keyName names a verifier key in messages: name+hash, as in a vkey.
func keyName(v note.Verifier) string { return fmt.Sprintf("%s+%08x", v.Name(), v.KeyHash()) }

// validKeyName reports whether name is a valid signed-note key name.
func validKeyName(name string) bool {
	return name != "" && utf8.ValidString(name) && strings.IndexFunc(name, unicode.IsSpace) < 0 && !strings.Contains(name, "+")
}

// parseCosignature checks that cosig is one c2sp.org/tlog-cosignature
// signature line, "— <name> <base64>\n", and returns the witness name.
func parseCosignature(cosig []byte) (string, error) {
	if len(cosig) > maxCosignatureSize {
		return "", fmt.Errorf("cosignature of %d bytes is longer than %d", len(cosig), maxCosignatureSize)
	}
	line, ok := bytes.CutPrefix(cosig, []byte("— "))
	if !ok || bytes.IndexByte(line, '\n') != len(line)-1 {
		return "", fmt.Errorf("cosignature %q is not one signature line", cosig)
	}
	name, b64, _ := strings.Cut(string(line[:len(line)-1]), " ")
	sig, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil || !validKeyName(name) || len(sig) != cosignatureLength {
		return "", fmt.Errorf("malformed cosignature %q", cosig)
	}
	return name, nil
}

// AddCosignature stores a witness's cosignature of the checkpoint of size
// size beside it, to be served with it. cosig is one signature line as a
// c2sp.org/tlog-witness witness returns it ("— <name> <base64>\n"). The
// log does not know the witnesses' keys: the caller checks cosig against
// the witness's pinned key first. One cosignature per witness name is
// kept; if one is already stored, AddCosignature returns nil if it is
// cosig and otherwise an error wrapping [storage.ErrExist].
func (l *Log) AddCosignature(ctx context.Context, size int64, cosig []byte) error {
	name, err := parseCosignature(cosig)
	if err != nil {
		return err
	}
	key := cosignatureDir(size) + name
	if err := storage.ValidKey(key); err != nil {
		return fmt.Errorf("cosignature by witness %q cannot be stored: %w", name, err)
	}
	if _, err := l.historyCheckpoint(ctx, size); err != nil {
		return err
	}
	return l.createOnce(ctx, key, cosig)
}

// cosign appends to signed the cosignatures stored for size, in key order.
func (l *Log) cosign(ctx context.Context, signed []byte, size int64) ([]byte, error) {
	infos, err := l.st.List(ctx, cosignatureDir(size))
	if err != nil {
		return nil, fmt.Errorf("listing cosignatures of checkpoint %d: %w", size, err)
	}
	out := bytes.Clone(signed)
	for i, info := range infos {
		if i == maxCosignatures {
			l.log.Warn("too many cosignatures: serving the first ones only", logSize(size))
			break
		}
		c, err := l.readObject(ctx, info.Key, maxCosignatureSize)
		if err != nil {
			return nil, err
		}
		if _, err := parseCosignature(c); err != nil {
			return nil, fmt.Errorf("%s: %w", info.Key, err)
		}
		out = append(out, c...)
	}
	return out, nil
}

// historyCheckpoint returns the signed checkpoint of size n from the
// history, checked against the log's key.
func (l *Log) historyCheckpoint(ctx context.Context, n int64) ([]byte, error) {
	if cur := l.latest(); cur.N == n {
		return cur.signed, nil
	}
	signed, err := l.readObject(ctx, historyKey(n), maxCheckpointSize)
	if errors.Is(err, storage.ErrNotExist) {
		return nil, fmt.Errorf("no checkpoint of size %d: %w", n, err)
	}
	if err != nil {
		return nil, err
	}
	c, err := openCheckpoint(signed, l.cfg.Origin, l.cfg.Verifier)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", historyKey(n), err)
	}
	if c.N != n {
		return nil, fmt.Errorf("%s holds a checkpoint of size %d", historyKey(n), c.N)
	}
	return signed, nil
}

// parseSize parses a tree size in its canonical decimal form.
func parseSize(s string) (int64, bool) {
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n >= 0 && s == strconv.FormatInt(n, 10)
}

// CheckpointSizes lists the sizes of the checkpoints in the log's history,
// smallest first, up to the latest one this Log knows. It lists the
// history a range of 100,000 sizes at a time, so that no listing grows
// with the log.
func (l *Log) CheckpointSizes(ctx context.Context) ([]int64, error) {
	const digits = 15 // of the 20 of a key: ranges of 10^5 sizes
	cur := l.latest()
	var sizes []int64
	for p := int64(0); p <= cur.N/100000; p++ {
		infos, err := l.st.List(ctx, fmt.Sprintf("%s%0*d", historyPrefix, digits, p))
		if err != nil {
			return nil, fmt.Errorf("listing the checkpoint history: %w", err)
		}
		for _, info := range infos {
			n, err := strconv.ParseInt(strings.TrimPrefix(info.Key, historyPrefix), 10, 64)
			if err != nil || n < 0 || info.Key != historyKey(n) {
				return nil, fmt.Errorf("unexpected object %q in the checkpoint history", info.Key)
			}
			if n < cur.N {
				sizes = append(sizes, n)
			}
		}
	}
	return sizes, nil
}
