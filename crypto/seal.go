package crypto

import (
	"archive/zip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"time"

	"filippo.io/age"
)

// Entry names in the outer container.
const (
	payloadName   = "payload.age"
	envelopeName  = "envelope.json"
	signatureName = "envelope.sig"
)

// Buffers between the stages of the sealing pipeline.
const (
	pipeBufSize = 256 << 10
	pipeDepth   = 4
)

// SealOptions are the sender's choices for one bundle.
type SealOptions struct {
	Sender     *UnitKey
	Recipients []PublicKey
	Purpose    string
	Handling   string
	TLP        string
	LegalBasis string
	Case       string
	// Retain is how long recipients must keep the bundle, from its creation.
	Retain time.Duration
	// Now is the creation time; the zero value means time.Now.
	Now time.Time
	// Progress, if set, is called with the number of file bytes sealed so far.
	Progress func(done int64)
}

// Seal writes a bundle of files to dst and returns its envelope. dst receives
// the container as it is produced; on error its content is unusable and the
// caller must discard it.
func Seal(ctx context.Context, dst io.Writer, files []SourceFile, opts SealOptions) (*Envelope, error) {
	if opts.Sender == nil {
		return nil, errors.New("no sender key")
	}
	if len(files) == 0 {
		return nil, errors.New("no files to seal")
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	now = now.UTC().Truncate(time.Second)
	env := &Envelope{
		Format:      EnvelopeFormat,
		BundleID:    NewBundleID(),
		Created:     now,
		RetainUntil: now.Add(opts.Retain),
		Sender:      Party{Unit: opts.Sender.Unit, Key: FormatSigningKey(opts.Sender.SigningPublicKey())},
		Purpose:     opts.Purpose,
		Handling:    opts.Handling,
		TLP:         opts.TLP,
		LegalBasis:  opts.LegalBasis,
		Case:        opts.Case,
		// Checked for real below, once the payload is written.
		PayloadSize: 1,
	}
	var recipients []age.Recipient
	for _, p := range opts.Recipients {
		r, err := ParseRecipient(p.AgeRecipient)
		if err != nil {
			return nil, err
		}
		recipients = append(recipients, r)
		env.Recipients = append(env.Recipients, Party{Unit: p.Unit, Key: p.AgeRecipient})
	}
	// Refuse bad options before writing anything.
	if err := env.Validate(); err != nil {
		return nil, err
	}
	if opts.Retain <= 0 {
		return nil, fmt.Errorf("retention period %v must be positive", opts.Retain)
	}

	outer := zip.NewWriter(dst)
	payloadW, err := outer.CreateHeader(&zip.FileHeader{Name: payloadName, Method: zip.Store, Modified: now})
	if err != nil {
		return nil, err
	}
	payloadHash := sha256.New()
	payloadCount := &countingWriter{}
	// Stage 3: hash, count and store the ciphertext. The stages cost about
	// the same (SHA-256 is the largest part of stages 1 and 3), so the two
	// cores stay busy.
	stored := newAsyncWriter(io.MultiWriter(payloadHash, payloadCount, payloadW), pipeBufSize, pipeDepth)
	ageW, err := age.Encrypt(stored, recipients...)
	if err != nil {
		stored.Close()
		return nil, err
	}
	// Stage 2: encrypt.
	encrypting := newAsyncWriter(ageW, pipeBufSize, pipeDepth)
	// Stage 1 (this goroutine): read, hash and archive the files.
	manifestDigest, err := writeInner(ctx, encrypting, files, env.BundleID, now, opts.Progress)
	errEnc := encrypting.Close()
	if err == nil {
		err = errEnc
	}
	if err == nil {
		err = ageW.Close()
	}
	if errStored := stored.Close(); err == nil {
		err = errStored
	}
	if err != nil {
		return nil, err
	}
	env.PayloadSize = payloadCount.n
	copy(env.PayloadSHA256[:], payloadHash.Sum(nil))
	env.ManifestSHA256 = manifestDigest

	envJSON, err := env.MarshalCanonical()
	if err != nil {
		return nil, err
	}
	sig := opts.Sender.sign(SignedMessage(envJSON))
	if err := writeStored(outer, envelopeName, envJSON, now); err != nil {
		return nil, err
	}
	sigText := []byte(base64.StdEncoding.EncodeToString(sig) + "\n")
	if err := writeStored(outer, signatureName, sigText, now); err != nil {
		return nil, err
	}
	if err := outer.Close(); err != nil {
		return nil, err
	}
	return env, nil
}

// writeInner writes the inner archive: every file under files/, then the
// manifest. It returns the SHA-256 of the manifest's bytes.
func writeInner(ctx context.Context, w io.Writer, files []SourceFile, bundleID string, now time.Time, progress func(int64)) ([32]byte, error) {
	m := &Manifest{Format: ManifestFormat, BundleID: bundleID, Salt: newSalt(), Files: []ManifestFile{}}
	inner := zip.NewWriter(w)
	buf := make([]byte, pipeBufSize)
	var done int64
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return [32]byte{}, err
		}
		hdr := &zip.FileHeader{Name: filesPrefix + f.Path, Method: zip.Store, Modified: f.ModTime}
		hdr.SetMode(f.Mode.Perm())
		entry, err := inner.CreateHeader(hdr)
		if err != nil {
			return [32]byte{}, err
		}
		sum, n, err := copyFile(ctx, entry, f.OSPath, buf, func(n int64) {
			if progress != nil {
				progress(done + n)
			}
		})
		if err != nil {
			return [32]byte{}, err
		}
		if n != f.Size {
			return [32]byte{}, fmt.Errorf("%q changed while it was being sealed (%d bytes, was %d)", f.OSPath, n, f.Size)
		}
		done += n
		m.Files = append(m.Files, ManifestFile{
			Path:     f.Path,
			Size:     n,
			SHA256:   fmt.Sprintf("%x", sum),
			Mode:     fmt.Sprintf("%04o", f.Mode.Perm()),
			Modified: f.ModTime.UTC().Format(time.RFC3339Nano),
		})
		m.TotalSize += n
	}
	m.TotalFiles = len(m.Files)
	mjson, err := canonicalJSON(m)
	if err != nil {
		return [32]byte{}, err
	}
	if len(mjson) > MaxManifestSize {
		return [32]byte{}, fmt.Errorf("manifest is %d bytes, over the limit of %d", len(mjson), MaxManifestSize)
	}
	if err := writeStored(inner, manifestName, mjson, now); err != nil {
		return [32]byte{}, err
	}
	if err := inner.Close(); err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(mjson), nil
}

// copyFile copies the file at path to w and returns its SHA-256 and length.
func copyFile(ctx context.Context, w io.Writer, path string, buf []byte, progress func(int64)) ([]byte, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	h := sha256.New()
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return nil, n, err
		}
		r, err := f.Read(buf)
		if r > 0 {
			h.Write(buf[:r])
			if _, err := w.Write(buf[:r]); err != nil {
				return nil, n, err
			}
			n += int64(r)
			progress(n)
		}
		if err == io.EOF {
			return h.Sum(nil), n, nil
		}
		if err != nil {
			return nil, n, err
		}
	}
}

// writeStored adds a small entry whose content is known, with its sizes and
// CRC in the local header (no data descriptor).
func writeStored(zw *zip.Writer, name string, data []byte, mod time.Time) error {
	hdr := &zip.FileHeader{
		Name:               name,
		Method:             zip.Store,
		Modified:           mod,
		CRC32:              crc32.ChecksumIEEE(data),
		CompressedSize64:   uint64(len(data)),
		UncompressedSize64: uint64(len(data)),
	}
	w, err := zw.CreateRaw(hdr)
	if err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}
