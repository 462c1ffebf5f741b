package crypto

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// EnvelopeFormat is the value of the envelope's "format" field for this
// version of the bundle format.
const EnvelopeFormat = "evx-envelope/1"

// Limits on envelopes, enforced when sealing and when parsing untrusted input.
const (
	MaxEnvelopeSize = 64 << 10
	MaxRecipients   = 20
	// MaxPayloadSize bounds payload.age: 1 TiB.
	MaxPayloadSize = 1 << 40
)

// signatureContext is prepended to the envelope bytes before signing, so
// that an envelope signature can never be mistaken for a signature over
// anything else made with the same key.
const signatureContext = "evx-envelope-signature/v1\n"

// Envelope is the signed, unencrypted part of a bundle: everything a gateway
// needs to route, check and retain it, and nothing about its files.
type Envelope struct {
	Format      string
	BundleID    string
	Created     time.Time
	RetainUntil time.Time
	Sender      Party
	Recipients  []Party
	Purpose     string
	Handling    string
	TLP         string
	LegalBasis  string
	Case        string
	// PayloadSize and PayloadSHA256 describe payload.age, the ciphertext.
	PayloadSize   int64
	PayloadSHA256 [32]byte
	// ManifestSHA256 is the SHA-256 of manifest.json inside the encrypted
	// payload. It binds the signature to the plaintext, so that a file read
	// with random access (without hashing the whole payload) is still
	// covered by the sender's signature. The manifest carries a random salt,
	// so this digest reveals nothing about the files.
	ManifestSHA256 [32]byte
}

// Party is a sender or recipient: a unit id, when known, and its key. For a
// sender Key is the Ed25519 signing key; for a recipient it is the age1pq1…
// recipient.
type Party struct {
	Unit string
	Key  string
}

// wireEnvelope is the JSON form of an Envelope.
type wireEnvelope struct {
	Format         string      `json:"format"`
	BundleID       string      `json:"bundle_id"`
	Created        string      `json:"created"`
	RetainUntil    string      `json:"retain_until"`
	Sender         wireSender  `json:"sender"`
	Recipients     []wireRecip `json:"recipients"`
	Purpose        string      `json:"purpose"`
	Handling       string      `json:"handling"`
	TLP            string      `json:"tlp"`
	LegalBasis     string      `json:"legal_basis"`
	Case           string      `json:"case,omitempty"`
	Payload        wirePayload `json:"payload"`
	ManifestSHA256 string      `json:"manifest_sha256"`
}

type wireSender struct {
	Unit       string `json:"unit,omitempty"`
	SigningKey string `json:"signing_key"`
}

type wireRecip struct {
	Unit         string `json:"unit,omitempty"`
	AgeRecipient string `json:"age_recipient"`
}

type wirePayload struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

const timeLayout = "2006-01-02T15:04:05Z"

var bundleIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

// ValidBundleID reports whether id has the form of a bundle id: 32
// lowercase hex digits.
func ValidBundleID(id string) bool { return bundleIDPattern.MatchString(id) }

// NewBundleID returns a random bundle id: 16 random bytes in lowercase hex.
func NewBundleID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// MarshalCanonical returns the canonical JSON form of e: object keys sorted
// bytewise, no insignificant white space, and the field rules of
// docs/bundle-format.md. It fails if e is not valid.
func (e *Envelope) MarshalCanonical() ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return canonicalJSON(e.wire())
}

func (e *Envelope) wire() *wireEnvelope {
	w := &wireEnvelope{
		Format:         e.Format,
		BundleID:       e.BundleID,
		Created:        e.Created.UTC().Format(timeLayout),
		RetainUntil:    e.RetainUntil.UTC().Format(timeLayout),
		Sender:         wireSender{Unit: e.Sender.Unit, SigningKey: e.Sender.Key},
		Purpose:        e.Purpose,
		Handling:       e.Handling,
		TLP:            e.TLP,
		LegalBasis:     e.LegalBasis,
		Case:           e.Case,
		Payload:        wirePayload{Size: e.PayloadSize, SHA256: hex.EncodeToString(e.PayloadSHA256[:])},
		ManifestSHA256: hex.EncodeToString(e.ManifestSHA256[:]),
	}
	for _, r := range e.Recipients {
		w.Recipients = append(w.Recipients, wireRecip{Unit: r.Unit, AgeRecipient: r.Key})
	}
	return w
}

// canonicalJSON encodes v with sorted keys and no HTML escaping. Going through
// a generic map sorts the keys at every level, whatever the struct order.
func canonicalJSON(v any) ([]byte, error) {
	first, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(first))
	dec.UseNumber()
	var generic any
	if err := dec.Decode(&generic); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(generic); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// Validate checks every field of e against the format's rules.
func (e *Envelope) Validate() error {
	if e.Format != EnvelopeFormat {
		return fmt.Errorf("unsupported envelope format %q (this evx reads %q)", e.Format, EnvelopeFormat)
	}
	if !bundleIDPattern.MatchString(e.BundleID) {
		return fmt.Errorf("malformed bundle id %q", e.BundleID)
	}
	if e.Created.IsZero() || e.Created.Nanosecond() != 0 {
		return errors.New("created time must be set, in whole seconds")
	}
	if e.RetainUntil.Nanosecond() != 0 || !e.RetainUntil.After(e.Created) {
		return errors.New("retain_until must be after created, in whole seconds")
	}
	if e.RetainUntil.Sub(e.Created) > MaxRetention {
		return fmt.Errorf("retain_until is more than %d days after created", int(MaxRetention/(24*time.Hour)))
	}
	if e.Sender.Unit != "" {
		if err := checkUnitID(e.Sender.Unit); err != nil {
			return fmt.Errorf("sender: %w", err)
		}
	}
	if _, err := ParseSigningKey(e.Sender.Key); err != nil {
		return fmt.Errorf("sender: %w", err)
	}
	if len(e.Recipients) == 0 {
		return errors.New("no recipients")
	}
	if len(e.Recipients) > MaxRecipients {
		return fmt.Errorf("%d recipients, over the limit of %d", len(e.Recipients), MaxRecipients)
	}
	seen := map[string]bool{}
	for i, r := range e.Recipients {
		if r.Unit != "" {
			if err := checkUnitID(r.Unit); err != nil {
				return fmt.Errorf("recipient %d: %w", i+1, err)
			}
		}
		if _, err := ParseRecipient(r.Key); err != nil {
			return fmt.Errorf("recipient %d: %w", i+1, err)
		}
		if seen[r.Key] {
			return fmt.Errorf("recipient %d: duplicate age recipient %q", i+1, r.Key)
		}
		seen[r.Key] = true
	}
	if err := CheckPurpose(e.Purpose); err != nil {
		return err
	}
	if err := CheckHandling(e.Handling); err != nil {
		return err
	}
	if err := CheckTLP(e.TLP); err != nil {
		return err
	}
	if err := checkText("legal basis", e.LegalBasis, true); err != nil {
		return err
	}
	if err := checkText("case reference", e.Case, false); err != nil {
		return err
	}
	if e.PayloadSize <= 0 || e.PayloadSize > MaxPayloadSize {
		return fmt.Errorf("payload size %d out of range (1 to %d bytes)", e.PayloadSize, int64(MaxPayloadSize))
	}
	return nil
}

// ParseEnvelope parses and validates envelope.json. It accepts only the
// canonical form: any other byte string, even one that decodes to the same
// values, is rejected, so that each envelope has exactly one encoding.
func ParseEnvelope(data []byte) (*Envelope, error) {
	if len(data) > MaxEnvelopeSize {
		return nil, fmt.Errorf("envelope is %d bytes, over the limit of %d", len(data), MaxEnvelopeSize)
	}
	// The version decides which fields are known, so it is checked first:
	// a newer envelope gets a clear error rather than "unknown field".
	var version struct {
		Format string `json:"format"`
	}
	if err := json.NewDecoder(bytes.NewReader(data)).Decode(&version); err != nil {
		return nil, fmt.Errorf("malformed envelope: %v", err)
	}
	if version.Format != EnvelopeFormat {
		return nil, fmt.Errorf("unsupported envelope format %q (this evx reads %q)", version.Format, EnvelopeFormat)
	}
	var w wireEnvelope
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return nil, fmt.Errorf("malformed envelope: %v", err)
	}
	if dec.More() {
		return nil, errors.New("malformed envelope: data after the JSON object")
	}
	e := &Envelope{
		Format:     w.Format,
		BundleID:   w.BundleID,
		Sender:     Party{Unit: w.Sender.Unit, Key: w.Sender.SigningKey},
		Purpose:    w.Purpose,
		Handling:   w.Handling,
		TLP:        w.TLP,
		LegalBasis: w.LegalBasis,
		Case:       w.Case,
	}
	if e.Format != EnvelopeFormat {
		return nil, fmt.Errorf("unsupported envelope format %q (this evx reads %q)", e.Format, EnvelopeFormat)
	}
	var err error
	if e.Created, err = time.Parse(timeLayout, w.Created); err != nil {
		return nil, fmt.Errorf("malformed created time %q", w.Created)
	}
	if e.RetainUntil, err = time.Parse(timeLayout, w.RetainUntil); err != nil {
		return nil, fmt.Errorf("malformed retain_until time %q", w.RetainUntil)
	}
	for _, r := range w.Recipients {
		e.Recipients = append(e.Recipients, Party{Unit: r.Unit, Key: r.AgeRecipient})
	}
	e.PayloadSize = w.Payload.Size
	if err := decodeDigest(&e.PayloadSHA256, w.Payload.SHA256); err != nil {
		return nil, fmt.Errorf("payload sha256: %w", err)
	}
	if err := decodeDigest(&e.ManifestSHA256, w.ManifestSHA256); err != nil {
		return nil, fmt.Errorf("manifest_sha256: %w", err)
	}
	canonical, err := e.MarshalCanonical()
	if err != nil {
		return nil, fmt.Errorf("invalid envelope: %w", err)
	}
	if !bytes.Equal(canonical, data) {
		return nil, errors.New("envelope is not in canonical form")
	}
	return e, nil
}

func decodeDigest(dst *[32]byte, s string) error {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 || hex.EncodeToString(b) != s {
		return fmt.Errorf("malformed digest %q (want 64 lowercase hex digits)", s)
	}
	copy(dst[:], b)
	return nil
}

// SignedMessage returns the exact bytes the sender's Ed25519 key signs for
// the canonical envelope bytes env.
func SignedMessage(env []byte) []byte {
	return append([]byte(signatureContext), env...)
}

// ErrBadSignature is returned when an envelope signature does not verify.
var ErrBadSignature = errors.New("envelope signature is not valid for the sender's signing key")

// VerifySignature checks sig over the canonical envelope bytes env against
// the sender signing key named inside e.
func VerifySignature(e *Envelope, env, sig []byte) error {
	pk, err := ParseSigningKey(e.Sender.Key)
	if err != nil {
		return err
	}
	if len(sig) != ed25519.SignatureSize || !ed25519.Verify(pk, SignedMessage(env), sig) {
		return ErrBadSignature
	}
	return nil
}

// Recipient returns the index of the recipient whose age key is key, or -1.
func (e *Envelope) recipientIndex(key string) int {
	for i, r := range e.Recipients {
		if r.Key == key {
			return i
		}
	}
	return -1
}
