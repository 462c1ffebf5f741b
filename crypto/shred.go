package crypto

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"

	"filippo.io/age"
)

// The outer layer (docs/retention.md, "The outer layer"): a receiving
// gateway stores each payload encrypted once more, to a key of its own per
// bundle, and keeps that key only wrapped by its master key, in storage
// that is not locked. Destroying the wrapped key makes every copy of the
// payload unreadable, including copies that storage locks keep, replicas
// and backups. The layer is a plain age file to one X25519 recipient, so
// that streaming and random access come from age and the stock age CLI
// can read it given the key.

// ShredKey is a per-bundle key of the outer layer: an age X25519 identity.
// Its only persistent form is the one [MasterKey.Wrap] returns. The zero
// ShredKey is not a key: make one with NewShredKey or MasterKey.Unwrap.
type ShredKey struct{ id *age.X25519Identity }

// NewShredKey returns a new random ShredKey.
func NewShredKey() (*ShredKey, error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, err
	}
	return &ShredKey{id}, nil
}

// String does not print the key, so that a ShredKey formatted by mistake
// (%v, %+v, %s, %x) cannot reach a log.
func (ShredKey) String() string { return "crypto.ShredKey(secret)" }

// GoString is String for %#v.
func (k ShredKey) GoString() string { return k.String() }

// Encrypt returns a writer that encrypts what is written to it to k and
// writes the outer layer to w, in 64 KiB chunks as it goes. Close writes
// the last chunk; it does not close w. The layer's size is known in
// advance: n bytes written give n + ShredOverhead(n) bytes.
func (k *ShredKey) Encrypt(w io.Writer) (io.WriteCloser, error) {
	return age.Encrypt(w, k.id.Recipient())
}

// Decrypt returns the plaintext of the outer layer read from r. The
// header is checked here; each 64 KiB chunk is authenticated when it is
// read, and a truncated or altered layer fails when the reader reaches the
// damage: only a read to io.EOF proves the whole plaintext authentic.
// (age allocates a new 64 KiB buffer for each chunk it decrypts: garbage
// as large as the plaintext, though never more than a chunk at a time is
// live.)
func (k *ShredKey) Decrypt(r io.Reader) (io.Reader, error) {
	br := bufio.NewReaderSize(r, shredHeaderSize)
	// A layer shorter than a header ends in io.EOF: the header check
	// then says what is wrong with what there is.
	hdr, err := br.Peek(shredHeaderSize)
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("reading the outer layer's header: %w", err)
	}
	if err := checkShredHeader(hdr); err != nil {
		return nil, err
	}
	pr, err := age.Decrypt(br, k.id)
	if err != nil {
		return nil, shredDecryptError(err)
	}
	return pr, nil
}

// DecryptAt gives random access to the plaintext of the outer layer in
// the size bytes of r: it returns a ReaderAt of the plaintext and the
// plaintext's size. It reads and authenticates the header and the last
// chunk before it returns, so the size is authentic; every other chunk is
// authenticated when it is read. The ReaderAt may be used concurrently.
// age allocates a 64 KiB chunk for each ReadAt call: read in large blocks
// (a 1 MiB buffer to io.CopyBuffer, with a destination that is not an
// io.ReaderFrom, which would read in its own small blocks).
func (k *ShredKey) DecryptAt(r io.ReaderAt, size int64) (io.ReaderAt, int64, error) {
	if size < ShredOverhead(0) {
		return nil, 0, fmt.Errorf("outer layer of %d bytes is shorter than the smallest, %d bytes", size, ShredOverhead(0))
	}
	hdr := make([]byte, shredHeaderSize)
	if n, err := r.ReadAt(hdr, 0); n < len(hdr) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, 0, fmt.Errorf("reading the outer layer's header: %w", err)
	}
	if err := checkShredHeader(hdr); err != nil {
		return nil, 0, err
	}
	pr, n, err := age.DecryptReaderAt(r, size, k.id)
	if err != nil {
		return nil, 0, shredDecryptError(err)
	}
	return pr, n, nil
}

// ErrWrongShredKey is returned when an outer layer is not encrypted to
// the ShredKey that tries to decrypt it.
var ErrWrongShredKey = errors.New("outer layer is not encrypted to this shred key")

func shredDecryptError(err error) error {
	var nomatch *age.NoIdentityMatchError
	if errors.As(err, &nomatch) {
		return ErrWrongShredKey
	}
	return fmt.Errorf("decrypting the outer layer: %w", err)
}

// The sizes of the outer layer. Its header always has the same size: the
// intro line, one X25519 stanza (a 32-byte share and a 32-byte wrapped
// file key, both unpadded base64) and the MAC line. The payload is a
// 16-byte nonce and chunks of up to 64 KiB of plaintext, each with a
// 16-byte tag; there is at least one chunk, which may be empty.
const (
	shredHeaderSize = len(ageIntro) + len("-> X25519 \n") + 43 + 44 + len("--- \n") + 43
	ageIntro        = "age-encryption.org/v1\n"
	ageChunkSize    = 64 << 10
	ageTagSize      = 16
	ageNonceSize    = 16
)

// ShredOverhead returns how many bytes the outer layer adds to n bytes of
// plaintext: the outer layer of a payload of n bytes is exactly
// n + ShredOverhead(n) bytes long. n must not be negative.
func ShredOverhead(n int64) int64 {
	if n < 0 {
		panic(fmt.Sprintf("crypto: ShredOverhead of a negative size %d", n))
	}
	chunks := n / ageChunkSize
	if n%ageChunkSize != 0 || n == 0 {
		chunks++ // a last, partial or empty chunk
	}
	return int64(shredHeaderSize) + ageNonceSize + chunks*ageTagSize
}

// checkShredHeader accepts hdr only if it begins with the header of an
// outer layer as Encrypt writes it: one X25519 stanza and nothing else.
// age alone would try every stanza of a hostile header, of any size and
// count; this bounds the work before age sees the file.
func checkShredHeader(hdr []byte) error {
	rest, ok := bytes.CutPrefix(hdr, []byte(ageIntro))
	if !ok {
		return errors.New("not an outer layer: it lacks the age-encryption.org/v1 intro")
	}
	line, rest, _ := bytes.Cut(rest, []byte("\n"))
	typ, arg, _ := bytes.Cut(bytes.TrimPrefix(line, []byte("-> ")), []byte(" "))
	if !bytes.HasPrefix(line, []byte("-> ")) || string(typ) != "X25519" || len(arg) != 43 {
		return errors.New("not an outer layer: its header does not begin with one X25519 recipient stanza")
	}
	body, rest, _ := bytes.Cut(rest, []byte("\n"))
	if len(body) != 43 {
		return errors.New("not an outer layer: its X25519 stanza's body is not one 32-byte line")
	}
	if !bytes.HasPrefix(rest, []byte("--- ")) || len(rest) < len("--- ")+43+1 || rest[len("--- ")+43] != '\n' {
		return errors.New("not an outer layer: its header has more than one recipient stanza or no MAC")
	}
	return nil
}

// MasterKey is a gateway's key that wraps the ShredKeys of the bundles it
// stores: a post-quantum hybrid age identity, kept in a secret file named
// in the gateway's configuration. The zero MasterKey is not a key: read
// one with ReadMasterKeyFile or ParseMasterKey.
type MasterKey struct{ id *age.HybridIdentity }

const masterKeyFileHeader = "# evx gateway master key, format 1. Keep it secret: it unwraps the keys of stored payloads.\n"

// String does not print the key, for the same reason as ShredKey's.
func (MasterKey) String() string { return "crypto.MasterKey(secret)" }

// GoString is String for %#v.
func (m MasterKey) GoString() string { return m.String() }

// GenerateMasterKey writes a new master key file to w: comment lines and
// one age identity line, which the stock age CLI also reads (age -d -i).
// The caller makes the file private (mode 0600) and never overwrites one:
// replacing a master key makes every payload stored under it unreadable.
func GenerateMasterKey(w io.Writer) error {
	id, err := age.GenerateHybridIdentity()
	if err != nil {
		return err
	}
	var b bytes.Buffer
	b.WriteString(masterKeyFileHeader)
	b.WriteString(id.String() + "\n")
	_, err = w.Write(b.Bytes())
	return err
}

// ParseMasterKey parses a master key file written by GenerateMasterKey:
// empty and comment lines and exactly one post-quantum hybrid age identity.
// Its errors name lines by number and never quote the file's content.
func ParseMasterKey(data []byte) (*MasterKey, error) {
	if len(data) > maxKeyFileSize {
		return nil, errors.New("master key file too large")
	}
	var id *age.HybridIdentity
	for n, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, strings.TrimSpace(signingSecretLine)):
			// A key with two uses is exposed by either: a unit key
			// file opens bundles and signs.
			return nil, fmt.Errorf("line %d: this is a unit key file; a master key has a file of its own", n+1)
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "AGE-SECRET-KEY-PQ-1"):
			if id != nil {
				return nil, fmt.Errorf("line %d: more than one age identity", n+1)
			}
			var err error
			// age's error would quote part of the key.
			if id, err = age.ParseHybridIdentity(line); err != nil {
				return nil, fmt.Errorf("line %d: malformed age identity", n+1)
			}
		case strings.HasPrefix(line, "AGE-SECRET-KEY-1"):
			return nil, fmt.Errorf("line %d: classic X25519 age identity; a master key is a post-quantum hybrid identity (AGE-SECRET-KEY-PQ-1…)", n+1)
		default:
			return nil, fmt.Errorf("line %d: unexpected content in master key file", n+1)
		}
	}
	if id == nil {
		return nil, errors.New("no age identity (AGE-SECRET-KEY-PQ-1…) in master key file")
	}
	return &MasterKey{id}, nil
}

// ReadMasterKeyFile reads and parses the master key file at path. Like
// crypto's other key readers it does not check the file's mode: the
// configuration's file checks do (internal/keyfile), as for the gateway's
// other key files.
func ReadMasterKeyFile(path string) (*MasterKey, error) {
	data, err := ReadFileLimit(path, maxKeyFileSize)
	if err != nil {
		return nil, err
	}
	m, err := ParseMasterKey(data)
	if err != nil {
		return nil, fmt.Errorf("master key file %q: %w", path, err)
	}
	return m, nil
}

// The wrapped form of a ShredKey (docs/retention.md): the line
// "evx-wrapped-shred-key/v1", then an age file encrypted to the master
// key's hybrid recipient whose plaintext is the ShredKey's identity
// string (AGE-SECRET-KEY-1…, 74 bytes). Every part has a fixed size, so a
// wrapped key is exactly wrappedShredKeySize bytes long.
const (
	wrappedShredKeyMagic = "evx-wrapped-shred-key/v1\n"
	shredIdentitySize    = 74
	// The hybrid stanza's argument is the ML-KEM-768 ciphertext and the
	// X25519 share (1,088 + 32 bytes); its body the wrapped file key.
	wrappedHeaderSize   = len(ageIntro) + len("-> mlkem768x25519 \n") + 1494 + 44 + len("--- \n") + 43
	wrappedShredKeySize = len(wrappedShredKeyMagic) + wrappedHeaderSize + ageNonceSize + shredIdentitySize + ageTagSize
)

// Wrap returns k encrypted to m, in the wrapped form that Unwrap reads.
func (m *MasterKey) Wrap(k *ShredKey) ([]byte, error) {
	secret := k.id.String()
	if len(secret) != shredIdentitySize {
		return nil, fmt.Errorf("shred key encodes to %d bytes, want %d", len(secret), shredIdentitySize)
	}
	b := bytes.NewBuffer(make([]byte, 0, wrappedShredKeySize))
	b.WriteString(wrappedShredKeyMagic)
	w, err := age.Encrypt(b, m.id.Recipient())
	if err != nil {
		return nil, err
	}
	if _, err := io.WriteString(w, secret); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	if b.Len() != wrappedShredKeySize {
		return nil, fmt.Errorf("wrapped shred key of %d bytes, want %d", b.Len(), wrappedShredKeySize)
	}
	return b.Bytes(), nil
}

// ErrWrongMasterKey is returned by Unwrap for a well-formed wrapped key
// that another master key wrapped. A damaged recipient stanza fails the
// same way: its ML-KEM ciphertext decapsulates to a wrong secret, which
// age cannot tell from a wrong key.
var ErrWrongMasterKey = errors.New("shred key was wrapped by another master key, or its wrapped form is damaged")

// Unwrap returns the ShredKey that b, as Wrap returns it, holds. It checks
// b's size, version and shape before age reads it, and accepts only the
// canonical encoding of the key.
func (m *MasterKey) Unwrap(b []byte) (*ShredKey, error) {
	rest, ok := bytes.CutPrefix(b, []byte(wrappedShredKeyMagic))
	if !ok {
		if v, _, ok := bytes.Cut(b[:min(len(b), 64)], []byte("\n")); ok && bytes.HasPrefix(v, []byte("evx-wrapped-shred-key/")) {
			return nil, fmt.Errorf("wrapped shred key of unknown version %q", v)
		}
		return nil, errors.New("not a wrapped shred key: it lacks the evx-wrapped-shred-key/v1 line")
	}
	if len(b) != wrappedShredKeySize {
		return nil, fmt.Errorf("wrapped shred key of %d bytes, want %d", len(b), wrappedShredKeySize)
	}
	if err := checkWrappedHeader(rest[:wrappedHeaderSize]); err != nil {
		return nil, err
	}
	r, err := age.Decrypt(bytes.NewReader(rest), m.id)
	if err != nil {
		var nomatch *age.NoIdentityMatchError
		if errors.As(err, &nomatch) {
			return nil, ErrWrongMasterKey
		}
		return nil, fmt.Errorf("unwrapping shred key: %w", err)
	}
	// The size check above bounds the plaintext to shredIdentitySize.
	secret, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("unwrapping shred key: %w", err)
	}
	// age's parser also accepts lower case; only Wrap's encoding is
	// canonical. The error does not quote the secret.
	id, err := age.ParseX25519Identity(string(secret))
	if err != nil || id.String() != string(secret) {
		return nil, errors.New("wrapped shred key holds a malformed X25519 identity")
	}
	return &ShredKey{id}, nil
}

// checkWrappedHeader accepts only the header Wrap writes: the intro, one
// mlkem768x25519 stanza and the MAC line, which hdr must fill exactly,
// each field canonical unpadded base64 of its fixed size. age would
// check the same, but its errors quote the whole 1.5 KB stanza.
func checkWrappedHeader(hdr []byte) error {
	bad := errors.New("wrapped shred key has a malformed header: want one mlkem768x25519 stanza")
	lines := bytes.Split(hdr, []byte("\n"))
	if len(lines) != 5 || len(lines[4]) != 0 || string(lines[0])+"\n" != ageIntro {
		return bad
	}
	arg, ok1 := bytes.CutPrefix(lines[1], []byte("-> mlkem768x25519 "))
	mac, ok2 := bytes.CutPrefix(lines[3], []byte("--- "))
	if !ok1 || !ok2 || !isBase64Of(arg, 1120) || !isBase64Of(lines[2], 32) || !isBase64Of(mac, 32) {
		return bad
	}
	return nil
}

// isBase64Of reports whether s is the canonical unpadded standard base64
// encoding of n bytes.
func isBase64Of(s []byte, n int) bool {
	if len(s) != base64.RawStdEncoding.EncodedLen(n) {
		return false
	}
	b, err := base64.RawStdEncoding.Strict().DecodeString(string(s))
	return err == nil && len(b) == n
}
