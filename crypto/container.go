package crypto

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
)

// ErrNotBundle is wrapped by the errors of [ReadBundle] for input that is not
// an evx bundle at all (as opposed to a damaged or forged one).
var ErrNotBundle = errors.New("not an evx bundle")

// Bundle is a parsed bundle container. Its envelope has been parsed and
// validated but its signature not yet checked: see [Bundle.VerifySignature].
type Bundle struct {
	Envelope *Envelope
	// EnvelopeJSON is the exact canonical envelope as stored.
	EnvelopeJSON []byte
	// Signature is the sender's Ed25519 signature over SignedMessage(EnvelopeJSON).
	Signature []byte
	payload   *io.SectionReader
}

// bundleEntryCount is the number of entries of a bundle container.
const bundleEntryCount = 3

// ReadBundle parses the container in ra (of the given size): the three
// stored entries, the envelope and the signature's encoding. It reads only
// the zip directory and the small entries, never the payload, and refuses a
// directory of more than three entries before parsing it.
func ReadBundle(ra io.ReaderAt, size int64) (*Bundle, error) {
	if size == 0 {
		return nil, fmt.Errorf("%w: the file is empty", ErrNotBundle)
	}
	zr, err := newZipReader(ra, size, bundleEntryCount)
	if err != nil {
		var limit *zipLimitError
		if errors.As(err, &limit) {
			return nil, fmt.Errorf("%w: container: %v", ErrNotBundle, err)
		}
		return nil, fmt.Errorf("%w: not a zip container (%v)", ErrNotBundle, err)
	}
	entries := map[string]*zip.File{}
	for _, f := range zr.File {
		switch f.Name {
		case payloadName, envelopeName, signatureName:
		default:
			return nil, fmt.Errorf("%w: unexpected entry %q in the container", ErrNotBundle, f.Name)
		}
		if entries[f.Name] != nil {
			return nil, fmt.Errorf("malformed bundle: duplicate entry %q", f.Name)
		}
		if f.Method != zip.Store || f.CompressedSize64 != f.UncompressedSize64 {
			return nil, fmt.Errorf("malformed bundle: entry %q is not stored uncompressed", f.Name)
		}
		entries[f.Name] = f
	}
	for _, name := range []string{payloadName, envelopeName, signatureName} {
		if entries[name] == nil {
			return nil, fmt.Errorf("%w: the container has no %s", ErrNotBundle, name)
		}
	}
	envJSON, err := readSmallEntry(entries[envelopeName], MaxEnvelopeSize)
	if err != nil {
		return nil, err
	}
	env, err := ParseEnvelope(envJSON)
	if err != nil {
		return nil, err
	}
	sigText, err := readSmallEntry(entries[signatureName], 128)
	if err != nil {
		return nil, err
	}
	sigB64 := string(bytes.TrimSuffix(sigText, []byte("\n")))
	sig, err := base64.StdEncoding.Strict().DecodeString(sigB64)
	// The decoder skips CR and LF; re-encoding keeps one text per signature.
	if err != nil || len(sig) != ed25519.SignatureSize || base64.StdEncoding.EncodeToString(sig) != sigB64 {
		return nil, errors.New("malformed bundle: envelope.sig is not a base64 Ed25519 signature")
	}
	pf := entries[payloadName]
	off, err := pf.DataOffset()
	if err != nil {
		return nil, fmt.Errorf("malformed bundle: %v", err)
	}
	psize := int64(pf.UncompressedSize64)
	if psize != env.PayloadSize {
		return nil, fmt.Errorf("payload.age is %d bytes, the envelope says %d", psize, env.PayloadSize)
	}
	if off < 0 || off > size || psize > size-off {
		return nil, errors.New("malformed bundle: payload.age extends past the end of the file")
	}
	return &Bundle{
		Envelope:     env,
		EnvelopeJSON: envJSON,
		Signature:    sig,
		payload:      io.NewSectionReader(ra, off, psize),
	}, nil
}

func readSmallEntry(f *zip.File, limit int64) ([]byte, error) {
	if f.UncompressedSize64 > uint64(limit) {
		return nil, fmt.Errorf("malformed bundle: %s is %d bytes, over the limit of %d", f.Name, f.UncompressedSize64, limit)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("malformed bundle: %s: %v", f.Name, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, fmt.Errorf("malformed bundle: %s: %v", f.Name, err)
	}
	return data, nil
}

// VerifySignature checks the sender's signature over the envelope.
func (b *Bundle) VerifySignature() error {
	return VerifySignature(b.Envelope, b.EnvelopeJSON, b.Signature)
}

// Payload returns a reader of payload.age, the age ciphertext, as stored.
func (b *Bundle) Payload() *io.SectionReader {
	return io.NewSectionReader(b.payload, 0, b.payload.Size())
}

// ErrPayloadHash is returned when payload.age does not match the SHA-256 in
// the signed envelope.
var ErrPayloadHash = errors.New("payload.age does not match the SHA-256 in the signed envelope")

// VerifyPayloadHash reads the whole payload and checks it against the
// envelope. Gateways use it to check a bundle without any secret key.
func (b *Bundle) VerifyPayloadHash() error {
	return b.verifyPayloadHash(context.Background())
}

// verifyPayloadHash is VerifyPayloadHash, stopping early when ctx is done:
// Open hashes the payload beside extracting it, and must not keep reading
// a large payload once cancelled.
func (b *Bundle) verifyPayloadHash(ctx context.Context) error {
	h := sha256.New()
	if _, err := io.Copy(h, ctxReader{ctx, b.Payload()}); err != nil {
		return fmt.Errorf("reading payload.age: %w", err)
	}
	if !bytes.Equal(h.Sum(nil), b.Envelope.PayloadSHA256[:]) {
		return ErrPayloadHash
	}
	return nil
}

// ctxReader is a reader that fails once its context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// OpenBundleFile opens and parses the bundle at path. The caller closes the
// returned file when done with the bundle.
func OpenBundleFile(path string) (*Bundle, *os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !info.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%q is not a regular file", path)
	}
	b, err := ReadBundle(f, info.Size())
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, f, nil
}
