package audit

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"strings"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/tlog"
)

// proofHeader is the first line of a c2sp.org/tlog-proof proof.
const proofHeader = "c2sp.org/tlog-proof@v1"

// maxProofHashes bounds the hashes of an inclusion proof: one per level
// of a tree of at most 2^63 entries.
const maxProofHashes = 63

// Proof is an offline-verifiable proof that an entry is in the log, in the
// c2sp.org/tlog-proof format: the checkpoint (with its cosignatures), the
// entry's index and its inclusion proof in the checkpoint's tree.
type Proof struct {
	Index      int64
	Hashes     tlog.RecordProof
	Checkpoint []byte
	// Extra is opaque data the proof carries, not authenticated.
	Extra []byte
}

// FormatProof encodes p in the c2sp.org/tlog-proof format.
func FormatProof(p Proof) []byte {
	var b bytes.Buffer
	b.WriteString(proofHeader + "\n")
	if len(p.Extra) > 0 {
		b.WriteString("extra " + base64.StdEncoding.EncodeToString(p.Extra) + "\n")
	}
	fmt.Fprintf(&b, "index %d\n", p.Index)
	for _, h := range p.Hashes {
		b.WriteString(base64.StdEncoding.EncodeToString(h[:]) + "\n")
	}
	b.WriteString("\n")
	b.Write(p.Checkpoint)
	return b.Bytes()
}

// ParseProof decodes a proof in the c2sp.org/tlog-proof format. It checks
// the syntax only: VerifyProof checks the proof.
func ParseProof(data []byte) (Proof, error) {
	if len(data) > maxCheckpointSize+(maxProofHashes+3)*100 {
		return Proof{}, fmt.Errorf("proof of %d bytes is too long", len(data))
	}
	head, checkpoint, ok := strings.Cut(string(data), "\n\n")
	if !ok || checkpoint == "" {
		return Proof{}, fmt.Errorf("malformed proof: no checkpoint")
	}
	lines := strings.Split(head, "\n")
	if lines[0] != proofHeader {
		return Proof{}, fmt.Errorf("malformed proof: first line %q, want %q", lines[0], proofHeader)
	}
	lines = lines[1:]
	var p Proof
	if len(lines) > 0 && strings.HasPrefix(lines[0], "extra ") {
		extra, err := base64.StdEncoding.Strict().DecodeString(strings.TrimPrefix(lines[0], "extra "))
		if err != nil || len(extra) == 0 {
			return Proof{}, fmt.Errorf("malformed proof: extra line %q", lines[0])
		}
		p.Extra = extra
		lines = lines[1:]
	}
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "index ") {
		return Proof{}, fmt.Errorf("malformed proof: no index line")
	}
	index, ok := parseSize(strings.TrimPrefix(lines[0], "index "))
	if !ok {
		return Proof{}, fmt.Errorf("malformed proof: index line %q", lines[0])
	}
	p.Index = index
	lines = lines[1:]
	if len(lines) > maxProofHashes {
		return Proof{}, fmt.Errorf("malformed proof: %d hashes", len(lines))
	}
	for _, line := range lines {
		h, err := base64.StdEncoding.Strict().DecodeString(line)
		if err != nil || len(h) != tlog.HashSize {
			return Proof{}, fmt.Errorf("malformed proof: hash line %q", line)
		}
		p.Hashes = append(p.Hashes, tlog.Hash(h))
	}
	p.Checkpoint = []byte(checkpoint)
	return p, nil
}

// Prove returns the proof that entry index is in the tree of src's latest
// checkpoint. It checks the tiles it reads against that checkpoint, but
// not the checkpoint: VerifyProof does.
func Prove(ctx context.Context, src Source, index int64) (Proof, error) {
	signed, err := src.ReadFile(ctx, "checkpoint")
	if err != nil {
		return Proof{}, fmt.Errorf("reading the checkpoint: %w", err)
	}
	text, _, _ := strings.Cut(string(signed), "\n\n")
	c, err := torchwood.ParseCheckpoint(text + "\n")
	if err != nil {
		return Proof{}, fmt.Errorf("malformed checkpoint: %w", err)
	}
	if index < 0 || index >= c.N {
		return Proof{}, fmt.Errorf("entry %d is not in the tree of size %d", index, c.N)
	}
	tiles := newTileCacheFunc(func(ctx context.Context, path string, limit int64) ([]byte, error) {
		return src.ReadFile(ctx, path)
	})
	hashes, err := tlog.ProveRecord(c.N, index, torchwood.TileHashReaderWithContext(ctx, c.Tree, tiles))
	if err != nil {
		return Proof{}, fmt.Errorf("proving entry %d in the tree of size %d: %w", index, c.N, err)
	}
	return Proof{Index: index, Hashes: hashes, Checkpoint: signed}, nil
}

// VerifyProof checks that p proves entry to be in the log: its checkpoint
// is signed by opts.Log and cosigned as opts requires (opts.Saved is not
// used), and its inclusion proof leads from the entry's leaf hash to the
// checkpoint's root. It returns the checkpoint's tree.
func VerifyProof(p Proof, entry []byte, opts VerifyOptions) (tlog.Tree, error) {
	c, err := openPinned(p.Checkpoint, opts.Log)
	if err != nil {
		return tlog.Tree{}, err
	}
	if _, err := checkCosignatures(p.Checkpoint, c, opts); err != nil {
		return tlog.Tree{}, err
	}
	if p.Index < 0 || p.Index >= c.N {
		return tlog.Tree{}, fmt.Errorf("%w: entry %d is not in a tree of size %d", ErrEntryMissing, p.Index, c.N)
	}
	if err := tlog.CheckRecord(p.Hashes, c.N, c.Hash, p.Index, tlog.RecordHash(entry)); err != nil {
		return tlog.Tree{}, fmt.Errorf("%w: the proof does not lead from entry %d to the root of the tree of size %d", ErrEntryChanged, p.Index, c.N)
	}
	return c.Tree, nil
}
