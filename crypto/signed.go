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
	"strings"
	"time"
	"unicode"
)

// SigningKey is a gateway's Ed25519 key: it signs receipts and the unit
// directory that a gateway serves to its peers. Units sign envelopes with
// the signing half of their [UnitKey] instead.
type SigningKey struct{ key ed25519.PrivateKey }

const signingKeyFileLine = "evx-signing-secret-key: "

// GenerateSigningKey returns a new random gateway signing key.
func GenerateSigningKey() (*SigningKey, error) {
	_, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return &SigningKey{sk}, nil
}

// Signer returns the signing half of a unit key as a [SigningKey]: a
// gateway's key file may be a unit key file written by evx keygen.
func (k *UnitKey) Signer() *SigningKey { return &SigningKey{k.signing} }

// Public returns the text form of the public key (see [FormatSigningKey]).
func (k *SigningKey) Public() string { return FormatSigningKey(k.key.Public().(ed25519.PublicKey)) }

// MarshalText returns the key file form: comment lines and one secret line.
func (k *SigningKey) MarshalText() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# evx gateway signing key, format 1. Keep it secret.\n")
	fmt.Fprintf(&b, "# public key: %s\n", k.Public())
	b.WriteString(signingKeyFileLine + signingPublicPrefix + base64.RawURLEncoding.EncodeToString(k.key.Seed()) + "\n")
	return b.Bytes(), nil
}

// ParseSigningKeyFile parses a gateway signing key file, or a unit key file
// written by evx keygen, whose signing key it takes.
func ParseSigningKeyFile(data []byte) (*SigningKey, error) {
	if len(data) > maxKeyFileSize {
		return nil, errors.New("signing key file too large")
	}
	if bytes.Contains(data, []byte("AGE-SECRET-KEY-")) {
		uk, err := ParseUnitKey(bytes.NewReader(data))
		if err != nil {
			return nil, err
		}
		return uk.Signer(), nil
	}
	var k *SigningKey
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, signingKeyFileLine):
			if k != nil {
				return nil, fmt.Errorf("line %d: more than one signing secret key", n)
			}
			seed, err := decodeKey(strings.TrimPrefix(line, signingKeyFileLine), ed25519.SeedSize)
			if err != nil {
				return nil, fmt.Errorf("line %d: malformed signing secret key: %v", n, err)
			}
			k = &SigningKey{ed25519.NewKeyFromSeed(seed)}
		default:
			return nil, fmt.Errorf("line %d: unexpected content in signing key file", n)
		}
	}
	if k == nil {
		return nil, errors.New("no signing secret key in file")
	}
	return k, nil
}

// ReadSigningKeyFile reads and parses the signing key file at path.
func ReadSigningKeyFile(path string) (*SigningKey, error) {
	data, err := ReadFileLimit(path, maxKeyFileSize)
	if err != nil {
		return nil, err
	}
	k, err := ParseSigningKeyFile(data)
	if err != nil {
		return nil, fmt.Errorf("signing key file %q: %w", path, err)
	}
	return k, nil
}

// Signed is a canonical JSON document and an Ed25519 signature over it,
// made under a context string that says what kind of document it is.
type Signed struct {
	Body      []byte `json:"body"`
	Signature []byte `json:"signature"`
}

// Signature contexts, one per kind of signed document, so that a signature
// over one kind can never be passed off as another.
const (
	receiptContext   = "evx-receipt-signature/v1\n"
	directoryContext = "evx-directory-signature/v1\n"
)

func (k *SigningKey) signDoc(context string, v any) (*Signed, error) {
	body, err := canonicalJSON(v)
	if err != nil {
		return nil, err
	}
	sig := ed25519.Sign(k.key, append([]byte(context), body...))
	return &Signed{Body: body, Signature: sig}, nil
}

// verifyDoc checks s, the kind of document named by what ("receipt",
// "unit directory of FR"), against signer, and decodes its body into v.
// Errors start with what, so that a log line says which document failed.
func verifyDoc(context, what string, s *Signed, signer string, v any) error {
	if s == nil {
		return fmt.Errorf("%s: missing", what)
	}
	pk, err := ParseSigningKey(signer)
	if err != nil {
		return fmt.Errorf("%s: %v", what, err)
	}
	if len(s.Signature) != ed25519.SignatureSize || !ed25519.Verify(pk, append([]byte(context), s.Body...), s.Signature) {
		return &docSignatureError{what: what, signer: signer, size: len(s.Signature)}
	}
	// The signer vouched for these bytes: no reader may take them to mean
	// something else, as a repeated member would.
	if err := CheckUniqueMembers(s.Body); err != nil {
		return fmt.Errorf("%s: malformed body: %v", what, err)
	}
	dec := json.NewDecoder(bytes.NewReader(s.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s: malformed body: %v", what, err)
	}
	if dec.More() {
		return fmt.Errorf("%s: malformed body: data after the JSON object", what)
	}
	return nil
}

// docSignatureError is a signed document whose signature does not verify.
// It matches [ErrBadSignature] for errors.Is.
type docSignatureError struct {
	what, signer string
	size         int
}

func (e *docSignatureError) Error() string {
	if e.size != ed25519.SignatureSize {
		return fmt.Sprintf("%s: signature of %d bytes, want %d, cannot verify under %s", e.what, e.size, ed25519.SignatureSize, e.signer)
	}
	return fmt.Sprintf("%s: signature does not verify under %s", e.what, e.signer)
}

func (e *docSignatureError) Is(target error) bool { return target == ErrBadSignature }

// CheckUniqueMembers returns an error if an object anywhere in the JSON
// text data repeats a member name. encoding/json keeps the last of
// repeated members where other readers keep the first, and it matches
// names to struct fields regardless of case, so names are compared as it
// compares them: {"code":"a","Code":"b"} repeats "code". It walks the
// tokens without decoding values, in memory proportional to len(data),
// which callers bound. Syntax errors are returned as they are found.
func CheckUniqueMembers(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	// Numbers stay text: their range is for the decoding proper to judge.
	dec.UseNumber()
	// One entry per open object or array; names is nil for an array.
	type level struct{ names map[string]bool }
	var stack []level
	inObject := func() bool { return len(stack) > 0 && stack[len(stack)-1].names != nil }
	wantName := false
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			if len(stack) > 0 {
				return io.ErrUnexpectedEOF
			}
			return nil
		}
		if err != nil {
			return err
		}
		if wantName {
			if name, ok := tok.(string); ok {
				folded := foldName(name)
				names := stack[len(stack)-1].names
				if names[folded] {
					return fmt.Errorf("member %q appears more than once in an object", name)
				}
				names[folded] = true
				wantName = false
				continue
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, level{names: map[string]bool{}})
			wantName = true
			continue
		case json.Delim('['):
			stack = append(stack, level{})
			wantName = false
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		// A value ended: in an object, a name or the end comes next.
		wantName = inObject()
	}
}

// foldName maps s to a key equal for exactly the names that
// strings.EqualFold, and so encoding/json's field matching, deem equal:
// each rune becomes the smallest rune of its simple case folding orbit.
func foldName(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		m := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			m = min(m, f)
		}
		b.WriteRune(m)
	}
	return b.String()
}

// ReceiptFormat is the value of a receipt's "format" field.
const ReceiptFormat = "evx-receipt/1"

// Receipt is what a receiving gateway signs when it has durably stored a
// bundle: the sender keeps it as proof of delivery.
type Receipt struct {
	Format        string `json:"format"`
	BundleID      string `json:"bundle_id"`
	PayloadSHA256 string `json:"payload_sha256"`
	Sender        string `json:"sender"`
	Receiver      string `json:"receiver"`
	ReceivedAt    string `json:"received_at"`
}

// NewReceipt returns the receipt for env received by gateway receiver from
// gateway sender at time t.
func NewReceipt(env *Envelope, sender, receiver string, t time.Time) Receipt {
	return Receipt{
		Format:        ReceiptFormat,
		BundleID:      env.BundleID,
		PayloadSHA256: fmt.Sprintf("%x", env.PayloadSHA256),
		Sender:        sender,
		Receiver:      receiver,
		ReceivedAt:    t.UTC().Format(time.RFC3339Nano),
	}
}

// SignReceipt signs r.
func (k *SigningKey) SignReceipt(r Receipt) (*Signed, error) { return k.signDoc(receiptContext, r) }

// VerifyReceipt checks s against the receiving gateway's signing key and
// returns the receipt it carries.
func VerifyReceipt(s *Signed, signer string) (*Receipt, error) {
	var r Receipt
	if err := verifyDoc(receiptContext, "receipt", s, signer, &r); err != nil {
		return nil, err
	}
	if r.Format != ReceiptFormat {
		return nil, fmt.Errorf("receipt: unsupported format %q", r.Format)
	}
	return &r, nil
}

// DirectoryFormat is the value of a unit directory's "format" field.
const DirectoryFormat = "evx-directory/1"

// Directory lists a gateway's local units and their public keys, signed by
// the gateway for its peers: recipients' age keys, so that senders abroad
// can seal to them, and submitters' signing keys, so that peers can check
// who sealed a bundle.
type Directory struct {
	Format  string           `json:"format"`
	Gateway string           `json:"gateway"`
	Issued  string           `json:"issued"`
	Units   []DirectoryEntry `json:"units"`
}

// DirectoryEntry is one unit in a [Directory].
type DirectoryEntry struct {
	Unit         string `json:"unit"`
	Role         string `json:"role"`
	AgeRecipient string `json:"age_recipient,omitempty"`
	SigningKey   string `json:"signing_key,omitempty"`
}

// Lookup returns the entry for unit, or false.
func (d Directory) Lookup(unit string) (DirectoryEntry, bool) {
	for _, e := range d.Units {
		if e.Unit == unit {
			return e, true
		}
	}
	return DirectoryEntry{}, false
}

// SignDirectory signs d.
func (k *SigningKey) SignDirectory(d Directory) (*Signed, error) {
	return k.signDoc(directoryContext, d)
}

// VerifyDirectory checks s against the issuing gateway's signing key and
// that it was issued by gateway, and returns the directory.
func VerifyDirectory(s *Signed, signer, gateway string) (*Directory, error) {
	var d Directory
	what := "unit directory of " + gateway
	if err := verifyDoc(directoryContext, what, s, signer, &d); err != nil {
		return nil, err
	}
	if d.Format != DirectoryFormat {
		return nil, fmt.Errorf("%s: unsupported format %q", what, d.Format)
	}
	if d.Gateway != gateway {
		return nil, fmt.Errorf("%s was issued by %q", what, d.Gateway)
	}
	return &d, nil
}
