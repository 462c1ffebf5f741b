package crypto

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// A recall asks the gateway that received a bundle to shorten its
// retention, to now (a recall proper) or to a later date before the one in
// force (docs/retention.md, "Recall and shortening"). The unit that sealed
// the bundle signs the request with the key that signed the envelope, so
// that no one else, its own gateway included, can make one; the receiving
// gateway answers with an acknowledgement signed by its gateway key, as it
// signs receipts, saying whether it applied the request and what is now in
// force. Both are signed documents under contexts of their own
// (docs/protocol.md section 7).

// Formats of the recall documents.
const (
	RecallFormat    = "evx-recall/1"
	RecallAckFormat = "evx-recall-ack/1"
)

// Signature contexts of the recall documents.
const (
	recallContext    = "evx-recall-signature/v1\n"
	recallAckContext = "evx-recall-ack-signature/v1\n"
)

// Bounds of the recall documents: the largest request, with a reason of
// maxTextField bytes, is under 1 KiB, and so is the largest ack.
const (
	MaxRecallBodySize    = 4 << 10
	MaxRecallAckBodySize = 4 << 10
	// MaxRecallCodeLength bounds an ack's code.
	MaxRecallCodeLength = 64
)

// recallCodePattern is the form of an ack's code: lower-case words joined
// by hyphens, as the codes of the protocol and the API are.
var recallCodePattern = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)

// RecallRequest is a unit's request to shorten the retention of a bundle it
// sealed, at the gateway that received it. A recall proper asks for the
// bundle to expire at once: RetainUntil equals Requested. The request can
// only shorten: the receiver refuses a RetainUntil after the one in force,
// which it alone knows; a RetainUntil before Requested is malformed.
type RecallRequest struct {
	Format   string
	BundleID string
	// Unit is the unit that sealed the bundle, the envelope's sender, whose
	// signing key signs the request.
	Unit string
	// EnvelopeSHA256 is the SHA-256 of the bundle's canonical envelope, in
	// 64 lowercase hex digits, as receipts give it: it binds the request to
	// that bundle, not only to its id.
	EnvelopeSHA256 string
	// RetainUntil is the new retain-until asked for, in whole seconds.
	RetainUntil time.Time
	// Requested is when the unit made the request, in whole seconds.
	Requested time.Time
	// Reason says why, for the receiver's log and operators: printable
	// text of at most 256 bytes, or empty.
	Reason string
}

type wireRecall struct {
	Format         string `json:"format"`
	BundleID       string `json:"bundle_id"`
	Unit           string `json:"unit"`
	EnvelopeSHA256 string `json:"envelope_sha256"`
	RetainUntil    string `json:"retain_until"`
	Requested      string `json:"requested"`
	Reason         string `json:"reason,omitempty"`
}

// NewRecallRequest returns the request to shorten the retention of the
// bundle env describes to retainUntil, made at requested, for the unit
// that sealed it. Both times are cut to whole seconds; a recall proper
// passes the same time twice. It fails if the request would not be valid.
func NewRecallRequest(env *Envelope, retainUntil, requested time.Time, reason string) (RecallRequest, error) {
	h, err := env.SHA256()
	if err != nil {
		return RecallRequest{}, fmt.Errorf("recall: %w", err)
	}
	r := RecallRequest{
		Format:         RecallFormat,
		BundleID:       env.BundleID,
		Unit:           env.Sender.Unit,
		EnvelopeSHA256: hex.EncodeToString(h[:]),
		RetainUntil:    retainUntil.UTC().Truncate(time.Second),
		Requested:      requested.UTC().Truncate(time.Second),
		Reason:         reason,
	}
	if err := r.check(); err != nil {
		return RecallRequest{}, fmt.Errorf("recall: %w", err)
	}
	return r, nil
}

func (r *RecallRequest) check() error {
	if r.Format != RecallFormat {
		return fmt.Errorf("unsupported format %q", truncate(r.Format))
	}
	if !bundleIDPattern.MatchString(r.BundleID) {
		return fmt.Errorf("malformed bundle id %q", truncate(r.BundleID))
	}
	if !ValidUnitID(r.Unit) {
		return fmt.Errorf("malformed unit id %q (want COUNTRY/unit, such as DE/forensics)", truncate(r.Unit))
	}
	var d [32]byte
	if err := decodeDigest(&d, r.EnvelopeSHA256); err != nil {
		return fmt.Errorf("envelope_sha256: %w", err)
	}
	if err := checkWholeSeconds("requested", r.Requested); err != nil {
		return err
	}
	if err := checkWholeSeconds("retain_until", r.RetainUntil); err != nil {
		return err
	}
	if r.RetainUntil.Before(r.Requested) {
		return fmt.Errorf("retain_until %s is before requested %s", r.RetainUntil.UTC().Format(timeLayout), r.Requested.UTC().Format(timeLayout))
	}
	return checkText("reason", r.Reason, false)
}

// checkWholeSeconds checks a document's time: set, in whole seconds, and
// within the years of RFC 3339.
func checkWholeSeconds(name string, t time.Time) error {
	if t.IsZero() || t.Nanosecond() != 0 || t.Year() < 1 || t.Year() > 9999 {
		return fmt.Errorf("%s must be set, in whole seconds", name)
	}
	return nil
}

func (r *RecallRequest) wire() *wireRecall {
	return &wireRecall{
		Format:         r.Format,
		BundleID:       r.BundleID,
		Unit:           r.Unit,
		EnvelopeSHA256: r.EnvelopeSHA256,
		RetainUntil:    r.RetainUntil.UTC().Format(timeLayout),
		Requested:      r.Requested.UTC().Format(timeLayout),
		Reason:         r.Reason,
	}
}

// IsRecall reports whether r asks for the bundle to expire at once rather
// than at a later date.
func (r *RecallRequest) IsRecall() bool { return r.RetainUntil.Equal(r.Requested) }

// CheckBundle checks that r is about the bundle env describes: its id, its
// sender unit and its envelope's SHA-256, and that it asks for no later
// retain-until than the envelope's. The receiver checks the signature
// ([VerifyRecall]) under env's sender key, and RetainUntil against a
// shortening it applied before, which env does not know.
func (r *RecallRequest) CheckBundle(env *Envelope) error {
	h, err := env.SHA256()
	if err != nil {
		return fmt.Errorf("recall: %w", err)
	}
	switch {
	case r.BundleID != env.BundleID:
		return fmt.Errorf("recall is for bundle %s, not %s", r.BundleID, env.BundleID)
	case r.Unit != env.Sender.Unit:
		return fmt.Errorf("recall of bundle %s is made by %q, not by its sender %q", r.BundleID, r.Unit, env.Sender.Unit)
	case r.EnvelopeSHA256 != hex.EncodeToString(h[:]):
		return fmt.Errorf("recall of bundle %s is for envelope SHA-256 %s, not %x", r.BundleID, r.EnvelopeSHA256, h)
	case r.RetainUntil.After(env.RetainUntil):
		return fmt.Errorf("recall of bundle %s asks for retain-until %s, after the envelope's %s: a recall only shortens",
			r.BundleID, r.RetainUntil.UTC().Format(timeLayout), env.RetainUntil.UTC().Format(timeLayout))
	}
	return nil
}

// SignRecall signs r, which must be valid, with the unit key that signs
// its envelopes. A key that names a unit signs only that unit's requests.
func (k *UnitKey) SignRecall(r RecallRequest) (*Signed, error) {
	if err := r.check(); err != nil {
		return nil, fmt.Errorf("recall: %w", err)
	}
	if k.Unit != "" && k.Unit != r.Unit {
		return nil, fmt.Errorf("recall: the key of unit %s cannot sign a request of unit %s", k.Unit, r.Unit)
	}
	body, err := canonicalJSON(r.wire())
	if err != nil {
		return nil, err
	}
	return &Signed{Body: body, Signature: k.sign(append([]byte(recallContext), body...))}, nil
}

// VerifyRecall checks s against signer, the signing key of the unit that
// sealed the bundle (the envelope's sender key), and returns the request.
// Its fields still need comparing with the bundle ([RecallRequest.CheckBundle]).
func VerifyRecall(s *Signed, signer string) (*RecallRequest, error) {
	if s != nil && len(s.Body) > MaxRecallBodySize {
		return nil, fmt.Errorf("recall: body of %d bytes, over the limit of %d", len(s.Body), MaxRecallBodySize)
	}
	var w wireRecall
	if err := verifyDoc(recallContext, "recall", s, signer, &w); err != nil {
		return nil, err
	}
	return parseRecallWire(&w, s.Body)
}

// ParseRecallBody decodes and checks a recall request's body as
// VerifyRecall does, but without a signature: for reading a request's
// bundle before knowing whose key to verify it with. It proves nothing
// about who made it.
func ParseRecallBody(body []byte) (*RecallRequest, error) {
	var w wireRecall
	if err := decodeBody("recall", body, MaxRecallBodySize, &w); err != nil {
		return nil, err
	}
	return parseRecallWire(&w, body)
}

func parseRecallWire(w *wireRecall, body []byte) (*RecallRequest, error) {
	// The format is checked before the members it defines.
	if w.Format != RecallFormat {
		return nil, fmt.Errorf("recall: unsupported format %q", truncate(w.Format))
	}
	r := &RecallRequest{Format: w.Format, BundleID: w.BundleID, Unit: w.Unit, EnvelopeSHA256: w.EnvelopeSHA256, Reason: w.Reason}
	var err error
	if r.RetainUntil, err = time.Parse(timeLayout, w.RetainUntil); err != nil {
		return nil, fmt.Errorf("recall: malformed retain_until %q (want RFC 3339 in UTC, whole seconds)", truncate(w.RetainUntil))
	}
	if r.Requested, err = time.Parse(timeLayout, w.Requested); err != nil {
		return nil, fmt.Errorf("recall: malformed requested %q (want RFC 3339 in UTC, whole seconds)", truncate(w.Requested))
	}
	if err := r.check(); err != nil {
		return nil, fmt.Errorf("recall: %w", err)
	}
	if err := checkCanonical(r.wire(), body); err != nil {
		return nil, fmt.Errorf("recall: %w", err)
	}
	return r, nil
}

// RequestSHA256 returns the SHA-256 of a signed request's body, by which
// an ack names the request it answers.
func RequestSHA256(s *Signed) string {
	h := sha256.Sum256(s.Body)
	return hex.EncodeToString(h[:])
}

// RecallAck is the receiving gateway's answer to a recall request: whether
// it applied it and, either way, the retain-until now in force. A request
// it refuses, for a legal hold or because it would lengthen the retention,
// has Applied false, a Code and a Reason.
type RecallAck struct {
	Format   string
	BundleID string
	// Gateway is the receiving gateway, which signs the ack.
	Gateway string
	// Unit is the unit that made the request.
	Unit string
	// RequestSHA256 is [RequestSHA256] of the signed request answered.
	RequestSHA256 string
	Applied       bool
	// Code says why a request was not applied: lower-case words joined by
	// hyphens, such as "legal-hold"; empty when it was applied.
	Code string
	// Reason explains a refusal to people, printable text of at most 256
	// bytes; empty when the request was applied.
	Reason string
	// RetainUntil is the retain-until in force after the answer, in whole
	// seconds.
	RetainUntil time.Time
	// At is when the gateway answered.
	At time.Time
}

type wireRecallAck struct {
	Format        string `json:"format"`
	BundleID      string `json:"bundle_id"`
	Gateway       string `json:"gateway"`
	Unit          string `json:"unit"`
	RequestSHA256 string `json:"request_sha256"`
	Applied       bool   `json:"applied"`
	Code          string `json:"code,omitempty"`
	Reason        string `json:"reason,omitempty"`
	RetainUntil   string `json:"retain_until"`
	At            string `json:"at"`
}

// NewRecallAck returns the ack of gateway to the signed request req, whose
// verified form is r, made at t: applied, or refused with code and reason,
// leaving retainUntil in force. It fails if the ack would not be valid.
func NewRecallAck(gateway string, req *Signed, r *RecallRequest, applied bool, code, reason string, retainUntil, t time.Time) (RecallAck, error) {
	a := RecallAck{
		Format:        RecallAckFormat,
		BundleID:      r.BundleID,
		Gateway:       gateway,
		Unit:          r.Unit,
		RequestSHA256: RequestSHA256(req),
		Applied:       applied,
		Code:          code,
		Reason:        reason,
		RetainUntil:   retainUntil.UTC(),
		At:            t.UTC(),
	}
	if err := a.check(); err != nil {
		return RecallAck{}, fmt.Errorf("recall ack: %w", err)
	}
	return a, nil
}

func (a *RecallAck) check() error {
	if a.Format != RecallAckFormat {
		return fmt.Errorf("unsupported format %q", truncate(a.Format))
	}
	if !bundleIDPattern.MatchString(a.BundleID) {
		return fmt.Errorf("malformed bundle id %q", truncate(a.BundleID))
	}
	if !ValidGatewayID(a.Gateway) {
		return fmt.Errorf("malformed gateway id %q", truncate(a.Gateway))
	}
	if !ValidUnitID(a.Unit) {
		return fmt.Errorf("malformed unit id %q", truncate(a.Unit))
	}
	var d [32]byte
	if err := decodeDigest(&d, a.RequestSHA256); err != nil {
		return fmt.Errorf("request_sha256: %w", err)
	}
	switch {
	case a.Applied && (a.Code != "" || a.Reason != ""):
		return errors.New("an applied recall has no code or reason")
	case !a.Applied && a.Code == "":
		return errors.New("a recall not applied needs a code")
	case len(a.Code) > MaxRecallCodeLength || (a.Code != "" && !recallCodePattern.MatchString(a.Code)):
		return fmt.Errorf("malformed code %q (want lower-case words joined by '-', up to %d bytes)", truncate(a.Code), MaxRecallCodeLength)
	}
	if err := checkText("reason", a.Reason, false); err != nil {
		return err
	}
	if err := checkWholeSeconds("retain_until", a.RetainUntil); err != nil {
		return err
	}
	if a.At.IsZero() || a.At.Year() < 1 || a.At.Year() > 9999 {
		return errors.New("at must be set")
	}
	return nil
}

func (a *RecallAck) wire() *wireRecallAck {
	return &wireRecallAck{
		Format:        a.Format,
		BundleID:      a.BundleID,
		Gateway:       a.Gateway,
		Unit:          a.Unit,
		RequestSHA256: a.RequestSHA256,
		Applied:       a.Applied,
		Code:          a.Code,
		Reason:        a.Reason,
		RetainUntil:   a.RetainUntil.UTC().Format(timeLayout),
		At:            a.At.UTC().Format(time.RFC3339Nano),
	}
}

// CheckRequest checks that a answers the signed request req, verified as
// r, and was made by gateway: the sending gateway runs it on every ack it
// verified before taking it as the answer.
func (a *RecallAck) CheckRequest(req *Signed, r *RecallRequest, gateway string) error {
	mismatch := func(what, got, want string) error {
		return fmt.Errorf("recall ack from %s is for %s %q, not %q", gateway, what, got, want)
	}
	switch {
	case a.Gateway != gateway:
		return mismatch("gateway", a.Gateway, gateway)
	case a.BundleID != r.BundleID:
		return mismatch("bundle", a.BundleID, r.BundleID)
	case a.Unit != r.Unit:
		return mismatch("unit", a.Unit, r.Unit)
	case a.RequestSHA256 != RequestSHA256(req):
		return mismatch("request SHA-256", a.RequestSHA256, RequestSHA256(req))
	case a.Applied && a.RetainUntil.After(latestApplied(r, a)):
		return fmt.Errorf("recall ack from %s says the request was applied, but leaves retain-until %s in force, after the %s asked for",
			gateway, a.RetainUntil.UTC().Format(timeLayout), r.RetainUntil.UTC().Format(timeLayout))
	}
	return nil
}

// latestApplied is the latest retain-until an ack that applied r may
// leave in force: the one asked for, or, for a request that arrived after
// it (a recall is made for the moment it is made), the second the ack was
// made in, as a receiver cannot end a retention in the past.
func latestApplied(r *RecallRequest, a *RecallAck) time.Time {
	at := a.At.UTC()
	if t := at.Truncate(time.Second); !t.Equal(at) {
		at = t.Add(time.Second)
	}
	if at.After(r.RetainUntil) {
		return at
	}
	return r.RetainUntil
}

// SignRecallAck signs a, which must be valid, with the gateway's key.
func (k *SigningKey) SignRecallAck(a RecallAck) (*Signed, error) {
	if err := a.check(); err != nil {
		return nil, fmt.Errorf("recall ack: %w", err)
	}
	return k.signDoc(recallAckContext, a.wire())
}

// VerifyRecallAck checks s against the receiving gateway's signing key
// and returns the ack. Its fields still need comparing with the request
// ([RecallAck.CheckRequest]).
func VerifyRecallAck(s *Signed, signer string) (*RecallAck, error) {
	if s != nil && len(s.Body) > MaxRecallAckBodySize {
		return nil, fmt.Errorf("recall ack: body of %d bytes, over the limit of %d", len(s.Body), MaxRecallAckBodySize)
	}
	var w wireRecallAck
	if err := verifyDoc(recallAckContext, "recall ack", s, signer, &w); err != nil {
		return nil, err
	}
	return parseRecallAckWire(&w, s.Body)
}

// ParseRecallAckBody decodes and checks an ack's body as VerifyRecallAck
// does, but without a signature: for showing an ack that the sending
// gateway verified before storing it. It proves nothing about who made it.
func ParseRecallAckBody(body []byte) (*RecallAck, error) {
	var w wireRecallAck
	if err := decodeBody("recall ack", body, MaxRecallAckBodySize, &w); err != nil {
		return nil, err
	}
	return parseRecallAckWire(&w, body)
}

func parseRecallAckWire(w *wireRecallAck, body []byte) (*RecallAck, error) {
	if w.Format != RecallAckFormat {
		return nil, fmt.Errorf("recall ack: unsupported format %q", truncate(w.Format))
	}
	a := &RecallAck{Format: w.Format, BundleID: w.BundleID, Gateway: w.Gateway, Unit: w.Unit,
		RequestSHA256: w.RequestSHA256, Applied: w.Applied, Code: w.Code, Reason: w.Reason}
	var err error
	if a.RetainUntil, err = time.Parse(timeLayout, w.RetainUntil); err != nil {
		return nil, fmt.Errorf("recall ack: malformed retain_until %q (want RFC 3339 in UTC, whole seconds)", truncate(w.RetainUntil))
	}
	if a.At, err = time.Parse(time.RFC3339Nano, w.At); err != nil {
		return nil, fmt.Errorf("recall ack: malformed at %q (want RFC 3339 in UTC with Z)", truncate(w.At))
	}
	if err := a.check(); err != nil {
		return nil, fmt.Errorf("recall ack: %w", err)
	}
	if err := checkCanonical(a.wire(), body); err != nil {
		return nil, fmt.Errorf("recall ack: %w", err)
	}
	return a, nil
}

// decodeBody decodes a signed document's body, of at most limit bytes,
// strictly into v: one JSON object, no member unknown or repeated.
func decodeBody(what string, body []byte, limit int, v any) error {
	if len(body) > limit {
		return fmt.Errorf("%s: body of %d bytes, over the limit of %d", what, len(body), limit)
	}
	if err := CheckUniqueMembers(body); err != nil {
		return fmt.Errorf("%s: malformed body: %v", what, err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s: malformed body: %v", what, err)
	}
	if dec.More() {
		return fmt.Errorf("%s: malformed body: data after the JSON object", what)
	}
	return nil
}

// checkCanonical checks that body is the canonical form of v, so that each
// document has one encoding: its SHA-256, which an ack quotes, names it.
func checkCanonical(v any, body []byte) error {
	canonical, err := canonicalJSON(v)
	if err != nil {
		return err
	}
	if !bytes.Equal(canonical, body) {
		return errors.New("body is not in canonical form")
	}
	return nil
}
