package crypto

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"filippo.io/age"
)

// Text prefixes of key material. The signing keys are ours; the age keys
// keep age's own encodings so that the stock age CLI reads the key file.
const (
	signingPublicPrefix = "ed25519:"
	signingSecretLine   = "# evx-signing-secret-key: "
	unitLine            = "# evx-unit: "
	keyFileHeader       = "# evx unit key file, format 1. Keep it secret.\n"
)

// UnitKey is a unit's secret key: a post-quantum hybrid age identity to open
// bundles and an Ed25519 key to sign the envelopes of bundles it seals.
type UnitKey struct {
	// Unit is an optional unit id, such as "DE/forensics", recorded in the
	// envelopes this key signs.
	Unit     string
	identity *age.HybridIdentity
	signing  ed25519.PrivateKey
}

// PublicKey is the public half of a [UnitKey], as printed by evx keygen -y.
type PublicKey struct {
	Unit         string `json:"unit,omitempty"`
	AgeRecipient string `json:"age_recipient"`
	SigningKey   string `json:"signing_key"`
}

// GenerateUnitKey returns a new random unit key for unit (which may be empty).
func GenerateUnitKey(unit string) (*UnitKey, error) {
	if unit != "" {
		if err := checkUnitID(unit); err != nil {
			return nil, err
		}
	}
	id, err := age.GenerateHybridIdentity()
	if err != nil {
		return nil, err
	}
	_, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return &UnitKey{Unit: unit, identity: id, signing: sk}, nil
}

// Identity returns the age identity that decrypts payloads sealed to this unit.
func (k *UnitKey) Identity() age.Identity { return k.identity }

// Recipient returns the age recipient (an age1pq1… string) of this unit.
func (k *UnitKey) Recipient() *age.HybridRecipient { return k.identity.Recipient() }

// SigningPublicKey returns the Ed25519 public key that verifies this unit's
// envelopes.
func (k *UnitKey) SigningPublicKey() ed25519.PublicKey {
	return k.signing.Public().(ed25519.PublicKey)
}

// Public returns the public half of k.
func (k *UnitKey) Public() PublicKey {
	return PublicKey{
		Unit:         k.Unit,
		AgeRecipient: k.Recipient().String(),
		SigningKey:   FormatSigningKey(k.SigningPublicKey()),
	}
}

// sign returns the Ed25519 signature of msg.
func (k *UnitKey) sign(msg []byte) []byte { return ed25519.Sign(k.signing, msg) }

// MarshalText returns the key file form of k. Every line but the age identity
// starts with '#', so age -d -i accepts the file as it is.
func (k *UnitKey) MarshalText() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(keyFileHeader)
	fmt.Fprintf(&b, "# created: %s\n", time.Now().UTC().Format(time.RFC3339))
	if k.Unit != "" {
		b.WriteString(unitLine + k.Unit + "\n")
	}
	fmt.Fprintf(&b, "# public key: %s\n", k.Recipient())
	fmt.Fprintf(&b, "# signing public key: %s\n", FormatSigningKey(k.SigningPublicKey()))
	b.WriteString(signingSecretLine + signingPublicPrefix +
		base64.RawURLEncoding.EncodeToString(k.signing.Seed()) + "\n")
	b.WriteString(k.identity.String() + "\n")
	return b.Bytes(), nil
}

// maxKeyFileSize bounds what ParseUnitKey reads: a key file is under 4 KiB.
const maxKeyFileSize = 64 << 10

// ParseUnitKey parses a key file written by [UnitKey.MarshalText].
func ParseUnitKey(r io.Reader) (*UnitKey, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxKeyFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxKeyFileSize {
		return nil, errors.New("key file too large")
	}
	k := &UnitKey{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		switch {
		case strings.HasPrefix(line, signingSecretLine):
			if k.signing != nil {
				return nil, fmt.Errorf("line %d: more than one signing secret key", n)
			}
			seed, err := decodeKey(strings.TrimPrefix(line, signingSecretLine), ed25519.SeedSize)
			if err != nil {
				return nil, fmt.Errorf("line %d: malformed signing secret key: %v", n, err)
			}
			k.signing = ed25519.NewKeyFromSeed(seed)
		case strings.HasPrefix(line, unitLine):
			k.Unit = strings.TrimPrefix(line, unitLine)
			if err := checkUnitID(k.Unit); err != nil {
				return nil, fmt.Errorf("line %d: %v", n, err)
			}
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "AGE-SECRET-KEY-PQ-1"):
			if k.identity != nil {
				return nil, fmt.Errorf("line %d: more than one age identity", n)
			}
			id, err := age.ParseHybridIdentity(line)
			if err != nil {
				return nil, fmt.Errorf("line %d: %v", n, err)
			}
			k.identity = id
		case strings.HasPrefix(line, "AGE-SECRET-KEY-1"):
			return nil, fmt.Errorf("line %d: classic X25519 age identity; evx needs a post-quantum hybrid identity (AGE-SECRET-KEY-PQ-1…), made by evx keygen", n)
		default:
			return nil, fmt.Errorf("line %d: unexpected content in key file", n)
		}
	}
	if k.identity == nil {
		return nil, errors.New("no age identity (AGE-SECRET-KEY-PQ-1…) in key file")
	}
	if k.signing == nil {
		return nil, errors.New("no evx signing secret key in key file")
	}
	return k, nil
}

// ReadUnitKeyFile reads and parses the key file at path.
func ReadUnitKeyFile(path string) (*UnitKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	k, err := ParseUnitKey(f)
	if err != nil {
		return nil, fmt.Errorf("key file %q: %w", path, err)
	}
	return k, nil
}

// FormatSigningKey returns the text form of an Ed25519 signing public key:
// "ed25519:" followed by the unpadded base64url encoding of its 32 bytes.
func FormatSigningKey(pk ed25519.PublicKey) string {
	return signingPublicPrefix + base64.RawURLEncoding.EncodeToString(pk)
}

// ParseSigningKey parses the text form written by [FormatSigningKey].
func ParseSigningKey(s string) (ed25519.PublicKey, error) {
	b, err := decodeKey(s, ed25519.PublicKeySize)
	if err != nil {
		return nil, fmt.Errorf("malformed signing key %q: %v", s, err)
	}
	return ed25519.PublicKey(b), nil
}

func decodeKey(s string, size int) ([]byte, error) {
	rest, ok := strings.CutPrefix(s, signingPublicPrefix)
	if !ok {
		return nil, fmt.Errorf("missing %q prefix", signingPublicPrefix)
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(rest)
	// The decoder skips CR and LF; re-encoding keeps one text per key.
	if err != nil || base64.RawURLEncoding.EncodeToString(b) != rest {
		return nil, errors.New("invalid base64url")
	}
	if len(b) != size {
		return nil, fmt.Errorf("%d bytes, want %d", len(b), size)
	}
	return b, nil
}

// MarshalJSON returns the JSON form of a public key, an object with the
// fields' json names; without it, encoding/json would use MarshalText.
func (p PublicKey) MarshalJSON() ([]byte, error) {
	type plain PublicKey
	return json.Marshal(plain(p))
}

// MarshalText returns the documented text form of a public key: one
// "name: value" line per field.
func (p PublicKey) MarshalText() ([]byte, error) {
	var b bytes.Buffer
	if p.Unit != "" {
		fmt.Fprintf(&b, "unit: %s\n", p.Unit)
	}
	fmt.Fprintf(&b, "age-recipient: %s\n", p.AgeRecipient)
	fmt.Fprintf(&b, "signing-key: %s\n", p.SigningKey)
	return b.Bytes(), nil
}

// ParsePublicKey parses a public key in any of the forms evx writes or
// accepts: the text form of [PublicKey.MarshalText], its JSON form, a unit
// key file (whose public half is taken), or a bare age1pq1… recipient (which
// leaves Unit and SigningKey empty).
func ParsePublicKey(data []byte) (PublicKey, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > maxKeyFileSize {
		return PublicKey{}, errors.New("public key too large")
	}
	if bytes.HasPrefix(trimmed, []byte("{")) {
		var p PublicKey
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&p); err != nil {
			return PublicKey{}, fmt.Errorf("malformed JSON public key: %v", err)
		}
		return p, p.check()
	}
	if bytes.HasPrefix(trimmed, []byte("age1")) && !bytes.ContainsAny(trimmed, " \n") {
		p := PublicKey{AgeRecipient: string(trimmed)}
		return p, p.check()
	}
	if bytes.Contains(trimmed, []byte("AGE-SECRET-KEY-")) {
		k, err := ParseUnitKey(bytes.NewReader(trimmed))
		if err != nil {
			return PublicKey{}, err
		}
		return k.Public(), nil
	}
	var p PublicKey
	for n, line := range strings.Split(string(trimmed), "\n") {
		name, value, ok := strings.Cut(strings.TrimSpace(line), ":")
		value = strings.TrimSpace(value)
		switch {
		case !ok:
			return PublicKey{}, fmt.Errorf("line %d: expected \"name: value\"", n+1)
		case name == "unit":
			p.Unit = value
		case name == "age-recipient":
			p.AgeRecipient = value
		case name == "signing-key":
			p.SigningKey = value
		default:
			return PublicKey{}, fmt.Errorf("line %d: unknown field %q", n+1, name)
		}
	}
	return p, p.check()
}

func (p PublicKey) check() error {
	if p.Unit != "" {
		if err := checkUnitID(p.Unit); err != nil {
			return err
		}
	}
	if _, err := ParseRecipient(p.AgeRecipient); err != nil {
		return err
	}
	if p.SigningKey != "" {
		if _, err := ParseSigningKey(p.SigningKey); err != nil {
			return err
		}
	}
	return nil
}

// ParseRecipient parses a post-quantum hybrid age recipient (age1pq1…).
func ParseRecipient(s string) (*age.HybridRecipient, error) {
	if s == "" {
		return nil, errors.New("missing age recipient")
	}
	if strings.HasPrefix(s, "age1") && !strings.HasPrefix(s, "age1pq1") {
		return nil, fmt.Errorf("age recipient %q is not post-quantum: evx needs an age1pq1… recipient", s)
	}
	r, err := age.ParseHybridRecipient(s)
	if err != nil {
		return nil, fmt.Errorf("malformed age recipient %q: %v", s, err)
	}
	return r, nil
}

// ReadPublicKeyFile reads a public key file, as ParsePublicKey parses it,
// reading at most what a key file may hold. Its parse errors do not name
// the file.
func ReadPublicKeyFile(path string) (PublicKey, error) {
	data, err := ReadFileLimit(path, maxKeyFileSize)
	if err != nil {
		return PublicKey{}, err
	}
	// The caller names the file, as it knows what the file is for.
	return ParsePublicKey(data)
}

// ReadFileLimit reads the regular file at path, of at most limit bytes:
// key, certificate and configuration files are small, and a wrong path (a
// device, a pipe, a huge file) must neither block nor exhaust memory.
// Errors are *fs.PathError.
func ReadFileLimit(path string, limit int64) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		msg := "not a regular file"
		if fi.IsDir() {
			msg = "is a directory"
		}
		return nil, &fs.PathError{Op: "read", Path: path, Err: errors.New(msg)}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, &fs.PathError{Op: "read", Path: path, Err: fmt.Errorf("larger than %s", binarySize(limit))}
	}
	return data, nil
}

// binarySize writes n in the largest binary unit that divides it.
func binarySize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
