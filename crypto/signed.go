package crypto

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
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

// Receipt formats. A gateway issues version 2; it still verifies version
// 1, which older gateways issued and senders keep.
const (
	ReceiptFormat   = ReceiptFormatV2
	ReceiptFormatV1 = "evx-receipt/1"
	ReceiptFormatV2 = "evx-receipt/2"
)

// MaxReceiptBodySize bounds a receipt's body: a version 2 body is under
// 600 bytes.
const MaxReceiptBodySize = 4 << 10

// Receipt is what a receiving gateway signs when it has durably stored a
// bundle: the sender keeps it as proof of delivery. Version 2 adds
// EnvelopeSHA256 and Log, which version 1 lacks.
type Receipt struct {
	Format        string `json:"format"`
	BundleID      string `json:"bundle_id"`
	PayloadSHA256 string `json:"payload_sha256"`
	Sender        string `json:"sender"`
	Receiver      string `json:"receiver"`
	ReceivedAt    string `json:"received_at"`
	// EnvelopeSHA256 is the SHA-256 of the exact canonical envelope bytes,
	// 64 lowercase hex digits: it binds the receipt to the bundle's legal
	// metadata, not only to its id and payload, so that a re-offer of the
	// same id and payload under another purpose or legal basis cannot pass
	// under this receipt.
	EnvelopeSHA256 string `json:"envelope_sha256,omitempty"`
	// Log is the receiving gateway's promise to include its entry about
	// this delivery in its transfer log (docs/audit.md).
	Log *ReceiptLog `json:"log,omitempty"`
}

// ReceiptLog points a version 2 receipt into the receiving gateway's
// transfer log, as a certificate transparency SCT points into a CT log:
// the entry is at LeafIndex, so every checkpoint of a size over LeafIndex
// includes it, and the sender asks for an inclusion proof once the
// maximum merge delay has passed.
type ReceiptLog struct {
	// LeafHash is the RFC 6962 leaf hash of the entry, SHA-256(0x00 ‖
	// entry bytes), in 64 lowercase hex digits like the receipt's other
	// digests, so that sha256sum checks it.
	LeafHash  string `json:"leaf_hash"`
	LeafIndex int64  `json:"leaf_index"`
	// TreeSize is the size of the latest checkpoint when the receipt was
	// issued.
	TreeSize int64 `json:"tree_size"`
}

// maxLogSize bounds the log positions a receipt may name: 2^53, so that
// JSON readers that hold numbers in float64 read them exactly.
const maxLogSize = 1 << 53

// Version returns the receipt's format version, 1 or 2 (0 if unknown).
func (r *Receipt) Version() int {
	switch r.Format {
	case ReceiptFormatV1:
		return 1
	case ReceiptFormatV2:
		return 2
	}
	return 0
}

// NewReceipt returns the version 2 receipt for env received by gateway
// receiver from gateway sender at time t, whose transfer log entry log
// points to. It fails if env or log is not valid.
func NewReceipt(env *Envelope, sender, receiver string, t time.Time, log ReceiptLog) (Receipt, error) {
	envHash, err := env.SHA256()
	if err != nil {
		return Receipt{}, fmt.Errorf("receipt: %w", err)
	}
	r := Receipt{
		Format:         ReceiptFormatV2,
		BundleID:       env.BundleID,
		PayloadSHA256:  hex.EncodeToString(env.PayloadSHA256[:]),
		Sender:         sender,
		Receiver:       receiver,
		ReceivedAt:     t.UTC().Format(time.RFC3339Nano),
		EnvelopeSHA256: hex.EncodeToString(envHash[:]),
		Log:            &log,
	}
	if err := r.check(); err != nil {
		return Receipt{}, fmt.Errorf("receipt: %w", err)
	}
	return r, nil
}

// SHA256 returns the SHA-256 of e's canonical JSON form, the exact bytes
// of envelope.json, which receipts and transfer log entries name it by.
func (e *Envelope) SHA256() ([32]byte, error) {
	b, err := e.MarshalCanonical()
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(b), nil
}

// check checks a receipt of either version. A version 1 receipt is checked
// only for its format and the absence of the version 2 members, as it was
// before version 2: receipts kept from then stay valid.
func (r *Receipt) check() error {
	switch r.Format {
	case ReceiptFormatV1:
		if r.EnvelopeSHA256 != "" || r.Log != nil {
			return fmt.Errorf("format %q has no envelope_sha256 or log", r.Format)
		}
		return nil
	case ReceiptFormatV2:
	default:
		return fmt.Errorf("unsupported format %q", r.Format)
	}
	if !bundleIDPattern.MatchString(r.BundleID) {
		return fmt.Errorf("malformed bundle id %q", r.BundleID)
	}
	if !ValidGatewayID(r.Sender) {
		return fmt.Errorf("malformed sender gateway id %q", r.Sender)
	}
	if !ValidGatewayID(r.Receiver) {
		return fmt.Errorf("malformed receiver gateway id %q", r.Receiver)
	}
	if t, err := time.Parse(time.RFC3339Nano, r.ReceivedAt); err != nil || t.UTC().Format(time.RFC3339Nano) != r.ReceivedAt {
		return fmt.Errorf("malformed received_at %q (want RFC 3339 in UTC with Z)", r.ReceivedAt)
	}
	var d [32]byte
	if err := decodeDigest(&d, r.PayloadSHA256); err != nil {
		return fmt.Errorf("payload_sha256: %w", err)
	}
	if err := decodeDigest(&d, r.EnvelopeSHA256); err != nil {
		return fmt.Errorf("envelope_sha256: %w", err)
	}
	if r.Log == nil {
		return errors.New("log is missing")
	}
	if err := decodeDigest(&d, r.Log.LeafHash); err != nil {
		return fmt.Errorf("log leaf_hash: %w", err)
	}
	if r.Log.LeafIndex < 0 || r.Log.LeafIndex >= maxLogSize {
		return fmt.Errorf("log leaf_index %d out of range", r.Log.LeafIndex)
	}
	if r.Log.TreeSize < 0 || r.Log.TreeSize > maxLogSize {
		return fmt.Errorf("log tree_size %d out of range", r.Log.TreeSize)
	}
	return nil
}

// SignReceipt signs r, which must be a valid version 2 receipt, as
// [NewReceipt] returns: a gateway issues no other.
func (k *SigningKey) SignReceipt(r Receipt) (*Signed, error) {
	if r.Format != ReceiptFormatV2 {
		return nil, fmt.Errorf("receipt: this gateway issues only %q, not %q", ReceiptFormatV2, r.Format)
	}
	if err := r.check(); err != nil {
		return nil, fmt.Errorf("receipt: %w", err)
	}
	return k.signDoc(receiptContext, r)
}

// VerifyReceipt checks s against the receiving gateway's signing key and
// returns the receipt it carries, of version 1 or 2 ([Receipt.Version]
// says which). Its fields still need comparing with the delivery
// ([Receipt.CheckDelivery]).
func VerifyReceipt(s *Signed, signer string) (*Receipt, error) {
	var r Receipt
	if s != nil && len(s.Body) > MaxReceiptBodySize {
		return nil, fmt.Errorf("receipt: body of %d bytes, over the limit of %d", len(s.Body), MaxReceiptBodySize)
	}
	if err := verifyDoc(receiptContext, "receipt", s, signer, &r); err != nil {
		return nil, err
	}
	if err := r.checkBody(s.Body); err != nil {
		return nil, fmt.Errorf("receipt: %w", err)
	}
	return &r, nil
}

// ParseReceiptBody decodes and checks a receipt's body as VerifyReceipt
// does, but without a signature: for showing a receipt that the sending
// gateway verified before storing it, and for checking that a kept one is
// well-formed. It proves nothing about who issued it.
func ParseReceiptBody(body []byte) (*Receipt, error) {
	if len(body) > MaxReceiptBodySize {
		return nil, fmt.Errorf("receipt: body of %d bytes, over the limit of %d", len(body), MaxReceiptBodySize)
	}
	if err := CheckUniqueMembers(body); err != nil {
		return nil, fmt.Errorf("receipt: malformed body: %v", err)
	}
	var r Receipt
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("receipt: malformed body: %v", err)
	}
	if dec.More() {
		return nil, errors.New("receipt: malformed body: data after the JSON object")
	}
	if err := r.checkBody(body); err != nil {
		return nil, fmt.Errorf("receipt: %w", err)
	}
	return &r, nil
}

// checkBody checks r, decoded from body. A version 2 body must be in the
// canonical form its issuer writes, so that each receipt has one
// encoding, which transfer log entries quote.
func (r *Receipt) checkBody(body []byte) error {
	if err := r.check(); err != nil {
		return err
	}
	if r.Format == ReceiptFormatV1 {
		return nil
	}
	canonical, err := canonicalJSON(r)
	if err != nil {
		return err
	}
	if !bytes.Equal(canonical, body) {
		return errors.New("body is not in canonical form")
	}
	return nil
}

// CheckDelivery checks that r receipts the delivery of env by gateway
// sender to gateway receiver: the bundle id, payload digest and gateways,
// and for version 2 the envelope digest too. A sender runs it on every
// receipt it verified before taking it as proof of delivery.
func (r *Receipt) CheckDelivery(env *Envelope, sender, receiver string) error {
	mismatch := func(what, got, want string) error {
		return fmt.Errorf("receipt from %s is for %s %q, not %q", receiver, what, got, want)
	}
	switch {
	case r.BundleID != env.BundleID:
		return mismatch("bundle", r.BundleID, env.BundleID)
	case r.PayloadSHA256 != hex.EncodeToString(env.PayloadSHA256[:]):
		return mismatch("payload SHA-256", r.PayloadSHA256, hex.EncodeToString(env.PayloadSHA256[:]))
	case r.Sender != sender:
		return mismatch("sender", r.Sender, sender)
	case r.Receiver != receiver:
		return mismatch("receiver", r.Receiver, receiver)
	}
	switch r.Version() {
	case 1:
		return nil
	case 2:
		h, err := env.SHA256()
		if err != nil {
			return fmt.Errorf("receipt from %s: %w", receiver, err)
		}
		if want := hex.EncodeToString(h[:]); r.EnvelopeSHA256 != want {
			return mismatch("envelope SHA-256", r.EnvelopeSHA256, want)
		}
		return nil
	}
	return fmt.Errorf("receipt from %s: unsupported format %q", receiver, r.Format)
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
	// Purposes are those a recipient is authorised for, so that a sender
	// learns before sealing that a bundle would be refused. Only
	// recipients have them. An entry without them says nothing: its
	// gateway predates them, or the recipient is authorised for none;
	// either way the receiving gateway decides. Being optional, the
	// member is left out when empty (canonical form), so a directory
	// without purposes is signed as before them.
	Purposes []string `json:"purposes,omitempty"`
}

// Bounds of a directory entry's purposes: the vocabulary ([Purposes]) has
// six, and may grow, so a peer's entry may name purposes unknown here,
// which authorise nothing; but a hostile peer cannot make a directory
// entry arbitrarily large with them.
const (
	MaxDirectoryPurposes = 32
	MaxPurposeLength     = 64
)

// purposePattern is the form of a purpose in a directory entry: that of
// the vocabulary's, lower-case words joined by hyphens.
var purposePattern = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)

// Refuses reports whether the entry lists the purposes its unit is
// authorised for and purpose is not among them. An entry that lists none
// refuses nothing: the sender does not know them (see Purposes).
func (e DirectoryEntry) Refuses(purpose string) bool {
	return len(e.Purposes) > 0 && !slices.Contains(e.Purposes, purpose)
}

// checkPurposes checks the entry's purposes: on a recipient only, at most
// MaxDirectoryPurposes of them, each of the purposes' form and at most
// MaxPurposeLength bytes, none twice.
func (e *DirectoryEntry) checkPurposes() error {
	if len(e.Purposes) == 0 {
		return nil
	}
	if e.Role != "recipient" {
		return fmt.Errorf("purposes on a unit with role %q: only recipients have them", truncate(e.Role))
	}
	if len(e.Purposes) > MaxDirectoryPurposes {
		return fmt.Errorf("%d purposes, over the limit of %d", len(e.Purposes), MaxDirectoryPurposes)
	}
	for i, p := range e.Purposes {
		if len(p) > MaxPurposeLength {
			return fmt.Errorf("purpose of %d bytes, over the limit of %d", len(p), MaxPurposeLength)
		}
		if !purposePattern.MatchString(p) {
			return fmt.Errorf("malformed purpose %q", p)
		}
		if slices.Contains(e.Purposes[:i], p) {
			return fmt.Errorf("purpose %q listed twice", p)
		}
	}
	return nil
}

// truncate shortens s, which a peer chose, for an error message.
func truncate(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

// checkEntries checks the members of d's entries that readers act on
// without the gateway's configuration to check them against. Errors name
// the entry.
func (d *Directory) checkEntries() error {
	for i := range d.Units {
		e := &d.Units[i]
		if err := e.checkPurposes(); err != nil {
			name := "unit " + e.Unit
			if !ValidUnitID(e.Unit) {
				name = fmt.Sprintf("entry %d", i)
			}
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
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

// SignDirectory signs d, whose entries' purposes must be within the
// bounds that [VerifyDirectory] checks.
func (k *SigningKey) SignDirectory(d Directory) (*Signed, error) {
	if err := d.checkEntries(); err != nil {
		return nil, fmt.Errorf("unit directory: %w", err)
	}
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
	if err := d.checkEntries(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return &d, nil
}
