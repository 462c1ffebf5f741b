package audit

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"evx/crypto"
)

// EntryFormat is the value of an entry's "format" member in this version
// of the entry format.
const EntryFormat = "evx-log-entry/1"

// EntryFormat2 is format 1 with the events of the cooperation agreements
// (agreement-decision, config-reloaded, agreement-changed,
// agreement-suspended, agreement-resumed) and their members
// agreement_version, agreement_ref, old_agreement_version,
// old_config_sha256 and changes, which only format 2 has. Only entries of
// these events are written in format 2, so that a reader of format 1
// reports them as of an unknown format and reads every other entry.
const EntryFormat2 = "evx-log-entry/2"

// EntryFormat3 is format 2 with the events of retention (bundle-expired,
// key-shredded, bundle-purged, outbox-payload-deleted, outbox-purged,
// hold-placed, hold-released and the recall-* events) and their members
// retain_until and reference, which only format 3 has. Only entries of
// these events are written in format 3, so that a reader of format 1 or 2
// reports them as of an unknown format and reads every other entry.
const EntryFormat3 = "evx-log-entry/3"

// Limits on entries' members. With them, the longest entry is under
// maxEntryJSON bytes, well within what the log stores ([MaxEntrySize]).
const (
	// MaxReasonLength bounds reason, in bytes.
	MaxReasonLength = 200
	// maxTextLength bounds legal_basis, as the envelope does.
	maxTextLength = 256
	// maxCheckpointLength bounds checkpoint, a signed note with a few
	// cosignatures.
	maxCheckpointLength = 4 << 10
	// MaxAgreementRefLength bounds agreement_ref, in bytes;
	// maxAgreementVersion bounds agreement_version.
	MaxAgreementRefLength = 64
	maxAgreementVersion   = 1<<31 - 1
	// MaxReferenceLength bounds reference, a legal hold's, in bytes.
	MaxReferenceLength = 64
	// MaxChanges bounds the lines of changes, each of which is bounded
	// as a reason is (MaxReasonLength). A longer diff is summed up by
	// whoever writes the entry.
	MaxChanges = 24
	// maxCount bounds count.
	maxCount = 1 << 40
	// maxWindow bounds the window of a requests-refused entry.
	maxWindow = time.Hour
	// maxEntryJSON bounds an entry's bytes: the sum of its members'
	// bounds, escaped, is under it.
	maxEntryJSON = 16 << 10
)

// Errors a reader of entries can tell apart: an entry that a newer evx
// wrote is not a corrupt one.
var (
	// ErrUnsupportedFormat matches the error for an entry of a format
	// version this evx does not read.
	ErrUnsupportedFormat = errors.New("unsupported entry format")
	// ErrUnknownEvent matches the error for an entry whose event this evx
	// does not know.
	ErrUnknownEvent = errors.New("unknown event")
)

// Entry is one event in a gateway's transfer log. Which members an entry
// carries depends on its event (see [Events]); a member the event does
// not carry is left at its zero value. No member holds a file name, any
// plaintext, a key or a credential: an entry describes a bundle by its
// envelope, which gateways see anyway.
type Entry struct {
	// Format is the entry format; "" means, when marshalling, the format
	// that holds the event: [EntryFormat2] for the events of the
	// cooperation agreements, [EntryFormat3] for those of retention,
	// [EntryFormat] for any other.
	Format string
	// Time is when the event happened, by the gateway's clock. It is
	// recorded in UTC to the millisecond (truncated).
	Time time.Time
	// Gateway is the id of the gateway whose log holds the entry.
	Gateway string
	// Actor is who made the event happen: [UnitActor], [PeerActor] or
	// [GatewayActor].
	Actor string
	Event Event

	// The bundle, as its envelope describes it.
	BundleID       string
	EnvelopeSHA256 [32]byte // of the exact canonical envelope bytes
	Purpose        string
	Handling       string
	LegalBasis     string
	PayloadSHA256  [32]byte
	PayloadSize    int64

	// Peer is the other gateway of a transfer.
	Peer string
	// Code is an error code (api.md section 4 for units, protocol.md
	// section 6 for peers) or, for requests-refused, the category.
	Code string
	// Reason is a short text in the gateway's own words, never a peer's
	// or a user's: at most MaxReasonLength bytes of printable text that
	// looks like no file path and no key (see [CleanReason]).
	Reason string
	// Receipt is a peer's signed receipt (protocol.md 7.2).
	Receipt *crypto.Signed

	// Count refusals from Source (an IPv4 address as a /32 prefix, an
	// IPv6 /64, or "other" for the sum over sources not counted one by
	// one) between WindowStart and WindowEnd.
	Count       int64
	Source      string
	WindowStart time.Time
	WindowEnd   time.Time

	// ConfigSHA256 is the SHA-256 of the gateway's effective
	// configuration; OldConfigSHA256 that of the configuration a reload
	// replaced.
	ConfigSHA256    [32]byte
	OldConfigSHA256 [32]byte

	// Kind is what a security event is about; Checkpoint the signed
	// checkpoint note a peer presented, as it presented it.
	Kind       SecurityKind
	Checkpoint []byte

	// AgreementVersion and AgreementRef identify the agreement that
	// decided an agreement-decision, or the one in force after a change,
	// suspension or resumption: its version (from 1) and reference.
	// OldAgreementVersion is the version a change replaced.
	AgreementVersion    int64
	AgreementRef        string
	OldAgreementVersion int64

	// Changes says what a reload or an agreement's change changed, one
	// line each: 1 to MaxChanges lines, each a text of the gateway's own
	// words checked as a reason is.
	Changes []string

	// RetainUntil is the end of a bundle's retention that an expiry or a
	// recall is about: the envelope's retain_until or a shortened one.
	// It is recorded as Time is.
	RetainUntil time.Time
	// Reference identifies what a legal hold rests on, such as a court
	// order's or a case's number: printable text checked as AgreementRef
	// is ([CheckReference]).
	Reference string
}

// wireEntry is the JSON form of an Entry. Its fields are in the bytewise
// order of their names, so that encoding/json writes members sorted, as
// the canonical form requires (a test checks the order).
type wireEntry struct {
	Actor               string      `json:"actor"`
	AgreementRef        string      `json:"agreement_ref,omitempty"`
	AgreementVersion    int64       `json:"agreement_version,omitempty"`
	BundleID            string      `json:"bundle_id,omitempty"`
	Changes             []string    `json:"changes,omitempty"`
	Checkpoint          []byte      `json:"checkpoint,omitempty"`
	Code                string      `json:"code,omitempty"`
	ConfigSHA256        string      `json:"config_sha256,omitempty"`
	Count               int64       `json:"count,omitempty"`
	Direction           Direction   `json:"direction,omitempty"`
	EnvelopeSHA256      string      `json:"envelope_sha256,omitempty"`
	Event               Event       `json:"event"`
	Format              string      `json:"format"`
	Gateway             string      `json:"gateway"`
	Handling            string      `json:"handling,omitempty"`
	Kind                string      `json:"kind,omitempty"`
	LegalBasis          string      `json:"legal_basis,omitempty"`
	OldAgreementVersion int64       `json:"old_agreement_version,omitempty"`
	OldConfigSHA256     string      `json:"old_config_sha256,omitempty"`
	Outcome             Outcome     `json:"outcome"`
	PayloadSHA256       string      `json:"payload_sha256,omitempty"`
	PayloadSize         int64       `json:"payload_size,omitempty"`
	Peer                string      `json:"peer,omitempty"`
	Purpose             string      `json:"purpose,omitempty"`
	Reason              string      `json:"reason,omitempty"`
	Receipt             *wireSigned `json:"receipt,omitempty"`
	Reference           string      `json:"reference,omitempty"`
	RetainUntil         string      `json:"retain_until,omitempty"`
	Source              string      `json:"source,omitempty"`
	Time                string      `json:"time"`
	WindowEnd           string      `json:"window_end,omitempty"`
	WindowStart         string      `json:"window_start,omitempty"`
}

// wireSigned is crypto.Signed with its members in order.
type wireSigned struct {
	Body      []byte `json:"body"`
	Signature []byte `json:"signature"`
}

// timeLayout is the one form of an entry's times: UTC, milliseconds, Z.
const timeLayout = "2006-01-02T15:04:05.000Z"

var (
	bundleIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)
	codePattern     = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)
)

const maxCodeLength = 64

// Outcome returns the outcome of e's event, "" if the event is unknown.
func (e *Entry) Outcome() Outcome {
	if e.Event == EventAgreementDecision {
		return decisionOutcome(e.Code)
	}
	if s, ok := lookupEvent(e.Event); ok {
		return s.outcome
	}
	return ""
}

// Direction returns the direction of e's event, "" if it has none.
func (e *Entry) Direction() Direction {
	if e.Event == EventAgreementDecision {
		return decisionDirection(e.Actor)
	}
	if s, ok := lookupEvent(e.Event); ok {
		return s.direction
	}
	return ""
}

// SetEnvelope sets the members that describe a bundle from its envelope,
// those of them that e.Event carries (Events), or all for an event this
// package does not know: bundle id, envelope digest, purpose, handling
// code, legal basis and the payload's digest and size.
func (e *Entry) SetEnvelope(env *crypto.Envelope) error {
	h, err := env.SHA256()
	if err != nil {
		return err
	}
	carried := mBundle
	if s, ok := lookupEvent(e.Event); ok {
		carried = s.required | s.optional
	}
	for _, m := range []struct {
		member member
		set    func()
	}{
		{mBundleID, func() { e.BundleID = env.BundleID }},
		{mEnvelopeSHA256, func() { e.EnvelopeSHA256 = h }},
		{mPurpose, func() { e.Purpose = env.Purpose }},
		{mHandling, func() { e.Handling = env.Handling }},
		{mLegalBasis, func() { e.LegalBasis = env.LegalBasis }},
		{mPayloadSHA256, func() { e.PayloadSHA256 = env.PayloadSHA256 }},
		{mPayloadSize, func() { e.PayloadSize = env.PayloadSize }},
	} {
		if carried&m.member != 0 {
			m.set()
		}
	}
	return nil
}

// MarshalCanonical returns the canonical JSON form of e, the bytes the log
// stores and hashes: members sorted by name bytewise, no white space, no
// escaping but of '"' and '\', members an event does not carry omitted
// (docs/audit.md, "Entries"). It fails if e is not valid.
func (e *Entry) MarshalCanonical() ([]byte, error) {
	w, err := e.wire()
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(w); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// wire checks e and returns its JSON form.
func (e *Entry) wire() (*wireEntry, error) {
	spec, ok := lookupEvent(e.Event)
	format := e.Format
	if format == "" {
		format = EntryFormat
		if ok {
			format = spec.format()
		}
	}
	if !knownFormat(format) {
		return nil, fmt.Errorf("%w %q (this evx reads %q, %q and %q)", ErrUnsupportedFormat, format, EntryFormat, EntryFormat2, EntryFormat3)
	}
	switch {
	// Format 1 has none of the agreements' events, and so none of their
	// members; formats 1 and 2 have none of retention's.
	case !ok || format == EntryFormat && spec.format() != EntryFormat ||
		format == EntryFormat2 && spec.format() == EntryFormat3:
		return nil, fmt.Errorf("%w %q in format %q", ErrUnknownEvent, e.Event, format)
	// Format 2 holds the agreements' events only, and format 3
	// retention's: every other event stays readable to a reader of
	// format 1, and the agreements' to a reader of format 2.
	case format == EntryFormat2 && spec.format() != EntryFormat2:
		return nil, fmt.Errorf("%w %q for event %q (it holds the events of the cooperation agreements only)", ErrUnsupportedFormat, format, e.Event)
	case format == EntryFormat3 && spec.format() != EntryFormat3:
		return nil, fmt.Errorf("%w %q for event %q (it holds the events of retention only)", ErrUnsupportedFormat, format, e.Event)
	}
	if err := checkMembers(spec, e.Kind, e.present()); err != nil {
		return nil, err
	}
	if err := checkTime("time", e.Time); err != nil {
		return nil, err
	}
	if !crypto.ValidGatewayID(e.Gateway) {
		return nil, fmt.Errorf("malformed gateway id %q", e.Gateway)
	}
	if err := e.checkActor(spec.actor); err != nil {
		return nil, err
	}
	if err := e.checkMembers(); err != nil {
		return nil, err
	}
	w := &wireEntry{
		Actor:            e.Actor,
		AgreementRef:     e.AgreementRef,
		AgreementVersion: e.AgreementVersion,
		BundleID:         e.BundleID,
		Changes:          e.Changes,
		Checkpoint:       e.Checkpoint,
		Code:             e.Code,
		Count:            e.Count,
		Direction:        spec.direction,
		Event:            e.Event,
		Format:           format,
		Gateway:          e.Gateway,
		Handling:         e.Handling,
		Kind:             string(e.Kind),
		LegalBasis:       e.LegalBasis,
		Outcome:          spec.outcome,

		OldAgreementVersion: e.OldAgreementVersion,
		Peer:                e.Peer,
		Purpose:             e.Purpose,
		Reason:              e.Reason,
		Reference:           e.Reference,
		Source:              e.Source,
		Time:                formatTime(e.Time),
	}
	if e.Event == EventAgreementDecision {
		w.Outcome, w.Direction = decisionOutcome(e.Code), decisionDirection(e.Actor)
	}
	w.ConfigSHA256 = digestText(e.ConfigSHA256)
	w.OldConfigSHA256 = digestText(e.OldConfigSHA256)
	w.EnvelopeSHA256 = digestText(e.EnvelopeSHA256)
	w.PayloadSHA256 = digestText(e.PayloadSHA256)
	w.PayloadSize = e.PayloadSize
	if e.Receipt != nil {
		w.Receipt = &wireSigned{Body: e.Receipt.Body, Signature: e.Receipt.Signature}
	}
	if !e.WindowStart.IsZero() {
		w.WindowStart = formatTime(e.WindowStart)
	}
	if !e.WindowEnd.IsZero() {
		w.WindowEnd = formatTime(e.WindowEnd)
	}
	if !e.RetainUntil.IsZero() {
		w.RetainUntil = formatTime(e.RetainUntil)
	}
	return w, nil
}

// present returns the optional members e carries: those not at their
// zero value.
func (e *Entry) present() member {
	var m member
	set := func(b member, ok bool) {
		if ok {
			m |= b
		}
	}
	var zero [32]byte
	set(mBundleID, e.BundleID != "")
	set(mEnvelopeSHA256, e.EnvelopeSHA256 != zero)
	set(mPurpose, e.Purpose != "")
	set(mHandling, e.Handling != "")
	set(mLegalBasis, e.LegalBasis != "")
	set(mPayloadSHA256, e.PayloadSHA256 != zero)
	set(mPayloadSize, e.PayloadSize != 0)
	set(mPeer, e.Peer != "")
	set(mCode, e.Code != "")
	set(mReason, e.Reason != "")
	set(mReceipt, e.Receipt != nil)
	set(mCount, e.Count != 0)
	set(mSource, e.Source != "")
	set(mWindowStart, !e.WindowStart.IsZero())
	set(mWindowEnd, !e.WindowEnd.IsZero())
	set(mConfigSHA256, e.ConfigSHA256 != zero)
	set(mKind, e.Kind != "")
	set(mCheckpoint, len(e.Checkpoint) > 0)
	set(mAgreementVersion, e.AgreementVersion != 0)
	set(mAgreementRef, e.AgreementRef != "")
	set(mOldConfigSHA256, e.OldConfigSHA256 != zero)
	set(mOldAgreementVersion, e.OldAgreementVersion != 0)
	set(mChanges, len(e.Changes) > 0)
	set(mRetainUntil, !e.RetainUntil.IsZero())
	set(mReference, e.Reference != "")
	return m
}

func (e *Entry) checkActor(kinds actorKind) error {
	switch {
	case e.Actor == GatewayActor && kinds&byGateway != 0:
		return nil
	case strings.HasPrefix(e.Actor, unitActor) && kinds&byUnit != 0:
		if !crypto.ValidUnitID(strings.TrimPrefix(e.Actor, unitActor)) {
			return fmt.Errorf("malformed unit id in actor %q", e.Actor)
		}
		return nil
	case strings.HasPrefix(e.Actor, peerActor) && kinds&byPeer != 0:
		// The peer acting is the peer of the transfer.
		if e.Actor != PeerActor(e.Peer) {
			return fmt.Errorf("actor %q is not the entry's peer %q", e.Actor, e.Peer)
		}
		return nil
	}
	return fmt.Errorf("actor %q of %s entry is not %s", e.Actor, e.Event, kinds)
}

// checkMembers checks the values of the optional members e carries.
func (e *Entry) checkMembers() error {
	if e.BundleID != "" && !bundleIDPattern.MatchString(e.BundleID) {
		return fmt.Errorf("malformed bundle id %q", e.BundleID)
	}
	if e.Purpose != "" {
		if err := crypto.CheckPurpose(e.Purpose); err != nil {
			return err
		}
	}
	if e.Handling != "" {
		if err := crypto.CheckHandling(e.Handling); err != nil {
			return err
		}
	}
	if err := checkText("legal basis", e.LegalBasis, maxTextLength); err != nil {
		return err
	}
	if e.PayloadSize < 0 || e.PayloadSize > crypto.MaxPayloadSize {
		return fmt.Errorf("payload size %d out of range (1 to %d bytes)", e.PayloadSize, int64(crypto.MaxPayloadSize))
	}
	if e.Peer != "" {
		if !crypto.ValidGatewayID(e.Peer) {
			return fmt.Errorf("malformed peer gateway id %q", e.Peer)
		}
		if e.Peer == e.Gateway {
			return fmt.Errorf("peer %q is the gateway itself", e.Peer)
		}
	}
	if e.Code != "" && (len(e.Code) > maxCodeLength || !codePattern.MatchString(e.Code)) {
		return fmt.Errorf("malformed code %q (want lowercase words joined by '-', up to %d bytes)", e.Code, maxCodeLength)
	}
	if err := checkReason(e.Reason); err != nil {
		return err
	}
	if e.Receipt != nil {
		if err := e.checkReceipt(); err != nil {
			return err
		}
	}
	if e.Count < 0 || e.Count > maxCount {
		return fmt.Errorf("count %d out of range (1 to %d)", e.Count, int64(maxCount))
	}
	if e.Source != "" && e.Source != "other" {
		p, err := netip.ParsePrefix(e.Source)
		if err != nil || p != p.Masked() || p.String() != e.Source {
			return fmt.Errorf("malformed source %q (want an address prefix such as 192.0.2.1/32 or 2001:db8::/64, or \"other\")", e.Source)
		}
	}
	if !e.WindowStart.IsZero() || !e.WindowEnd.IsZero() {
		if err := checkTime("window_start", e.WindowStart); err != nil {
			return err
		}
		if err := checkTime("window_end", e.WindowEnd); err != nil {
			return err
		}
		start, end := e.WindowStart.Truncate(time.Millisecond), e.WindowEnd.Truncate(time.Millisecond)
		if !end.After(start) || end.Sub(start) > maxWindow {
			return fmt.Errorf("window from %s to %s is not 1 ms to %v long", formatTime(start), formatTime(end), maxWindow)
		}
		// Refusals are summed up once their window has ended.
		if end.After(e.Time.Truncate(time.Millisecond)) {
			return fmt.Errorf("window ends at %s, after the entry's time %s", formatTime(end), formatTime(e.Time))
		}
	}
	if len(e.Checkpoint) > maxCheckpointLength {
		return fmt.Errorf("checkpoint of %d bytes, over the limit of %d", len(e.Checkpoint), maxCheckpointLength)
	}
	if e.AgreementVersion < 0 || e.AgreementVersion > maxAgreementVersion {
		return fmt.Errorf("agreement version %d out of range (1 to %d)", e.AgreementVersion, int64(maxAgreementVersion))
	}
	if e.AgreementRef != "" {
		if err := CheckAgreementRef(e.AgreementRef); err != nil {
			return err
		}
	}
	if e.OldAgreementVersion < 0 || e.OldAgreementVersion > maxAgreementVersion {
		return fmt.Errorf("old agreement version %d out of range (1 to %d)", e.OldAgreementVersion, int64(maxAgreementVersion))
	}
	if !e.RetainUntil.IsZero() {
		if err := checkTime("retain_until", e.RetainUntil); err != nil {
			return err
		}
	}
	if e.Reference != "" {
		if err := CheckReference(e.Reference); err != nil {
			return err
		}
	}
	return checkChanges(e.Changes)
}

// checkChanges checks the lines of changes: at most MaxChanges, each a
// non-empty text that passes the checks of a reason.
func checkChanges(lines []string) error {
	if len(lines) > MaxChanges {
		return fmt.Errorf("%d lines of changes, over the limit of %d", len(lines), MaxChanges)
	}
	for i, l := range lines {
		if l == "" {
			return fmt.Errorf("line %d of changes is empty", i+1)
		}
		if err := checkText(fmt.Sprintf("line %d of changes", i+1), l, MaxReasonLength); err != nil {
			return err
		}
		if what := sensitive(l); what != "" {
			return fmt.Errorf("line %d of changes %q looks like it contains %s", i+1, l, what)
		}
	}
	return nil
}

// CheckAgreementRef checks an agreement's reference as an entry holds it:
// printable text of at most MaxAgreementRefLength bytes that looks like
// no file path and no key. Gateways check their agreements' references
// with it when they start, so that each decision can be recorded.
func CheckAgreementRef(ref string) error {
	if err := checkText("agreement ref", ref, MaxAgreementRefLength); err != nil {
		return err
	}
	if what := sensitive(ref); what != "" {
		return fmt.Errorf("agreement ref %q looks like it contains %s", ref, what)
	}
	return nil
}

// CheckReference checks a legal hold's reference as an entry holds it,
// by the rules of an agreement's reference: printable text of at most
// MaxReferenceLength bytes that looks like no file path and no key. The
// gateway checks a hold's reference with it before it places the hold,
// so that the hold can be recorded.
func CheckReference(ref string) error {
	if err := checkText("reference", ref, MaxReferenceLength); err != nil {
		return err
	}
	if what := sensitive(ref); what != "" {
		return fmt.Errorf("reference %q looks like it contains %s", ref, what)
	}
	return nil
}

// knownFormat reports whether this evx reads entries of format f.
func knownFormat(f string) bool {
	return f == EntryFormat || f == EntryFormat2 || f == EntryFormat3
}

// checkReceipt checks that e's receipt is a well-formed receipt of the
// entry's bundle, issued by its peer for this gateway. Its signature is
// for a verifier holding the peer's key to check.
func (e *Entry) checkReceipt() error {
	if len(e.Receipt.Signature) != 64 {
		return fmt.Errorf("receipt signature of %d bytes, want 64", len(e.Receipt.Signature))
	}
	r, err := crypto.ParseReceiptBody(e.Receipt.Body)
	if err != nil {
		return err
	}
	if r.BundleID != e.BundleID || r.Sender != e.Gateway || r.Receiver != e.Peer {
		return fmt.Errorf("receipt of bundle %q from %q to %q is not for bundle %q from %q to %q",
			r.BundleID, r.Sender, r.Receiver, e.BundleID, e.Gateway, e.Peer)
	}
	return nil
}

func checkTime(what string, t time.Time) error {
	if y := t.UTC().Year(); y < 2000 || y > 9999 {
		return fmt.Errorf("%s %s is not between the years 2000 and 9999", what, t.UTC().Format(time.RFC3339))
	}
	return nil
}

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

func digestText(d [32]byte) string {
	if d == [32]byte{} {
		return ""
	}
	return hex.EncodeToString(d[:])
}

// checkText admits a free-text member: at most limit bytes of valid UTF-8,
// printable, without control characters or U+2028/U+2029, and without
// leading or trailing spaces, so that the canonical form needs no escaping
// beyond '"' and '\'. The envelope's text fields follow the same rules.
func checkText(what, s string, limit int) error {
	switch {
	case len(s) > limit:
		return fmt.Errorf("%s is %d bytes long, over the limit of %d", what, len(s), limit)
	case !utf8.ValidString(s):
		return fmt.Errorf("%s is not valid UTF-8", what)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) && r != ' ' {
			return fmt.Errorf("%s %q contains a non-printable character %U", what, s, r)
		}
	}
	if strings.TrimSpace(s) != s {
		return fmt.Errorf("%s %q has leading or trailing spaces", what, s)
	}
	return nil
}

func checkReason(s string) error {
	if err := checkText("reason", s, MaxReasonLength); err != nil {
		return err
	}
	if what := sensitive(s); what != "" {
		return fmt.Errorf("reason %q looks like it contains %s", s, what)
	}
	return nil
}

// pathPattern matches what looks like a file path in a reason: a word
// starting with '/', "./", "../" or "~/" and going on, or a Windows drive.
// Unit ids ("DE/forensics") and fractions ("1/2") do not match.
var pathPattern = regexp.MustCompile(`(^|[\s"'(\[=:,;])(~|\.\.?)?/[^\s/]|\b[A-Za-z]:\\`)

// secretMarkers start the text forms of secret keys and credentials.
var secretMarkers = []string{"AGE-SECRET-KEY-", "PRIVATE+KEY", "evx-signing-secret-key", "-----BEGIN"}

// sensitive returns what s looks like it contains that no entry may hold,
// or "".
func sensitive(s string) string {
	for _, m := range secretMarkers {
		if strings.Contains(strings.ToUpper(s), strings.ToUpper(m)) {
			return "a secret key"
		}
	}
	if pathPattern.MatchString(s) {
		return "a file path"
	}
	return ""
}

// CleanReason turns any text, such as an error message, into a valid
// reason: control and other non-printable characters become spaces, runs
// of spaces one, and the text is cut to MaxReasonLength bytes. Text that
// looks like it contains a file path or a key is dropped whole: the
// result is "", an entry without a reason.
func CleanReason(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > MaxReasonLength {
		cut := MaxReasonLength
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = strings.TrimSpace(s[:cut])
	}
	if sensitive(s) != "" {
		return ""
	}
	return s
}

// ParseEntry parses and checks the bytes of an entry. It accepts only the
// canonical form: any other byte string, even one that decodes to the same
// values, is refused, so that each entry has exactly one encoding and one
// leaf hash. An entry of a newer format, or of an event this evx does not
// know, is refused with an error matching [ErrUnsupportedFormat] or
// [ErrUnknownEvent]: it is not necessarily corrupt.
func ParseEntry(data []byte) (*Entry, error) {
	if len(data) > maxEntryJSON {
		return nil, fmt.Errorf("entry of %d bytes, over the limit of %d", len(data), maxEntryJSON)
	}
	// The format decides which members are known, so it is read first: a
	// newer entry gets its own error rather than "unknown field".
	var version struct {
		Format string `json:"format"`
	}
	if err := json.Unmarshal(data, &version); err != nil {
		return nil, fmt.Errorf("malformed entry: %v", err)
	}
	if !knownFormat(version.Format) {
		return nil, fmt.Errorf("%w %q (this evx reads %q, %q and %q)", ErrUnsupportedFormat, version.Format, EntryFormat, EntryFormat2, EntryFormat3)
	}
	var w wireEntry
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return nil, fmt.Errorf("malformed entry: %v", err)
	}
	if dec.More() {
		return nil, errors.New("malformed entry: data after the JSON object")
	}
	e := &Entry{
		Format:      w.Format,
		Gateway:     w.Gateway,
		Actor:       w.Actor,
		Event:       w.Event,
		BundleID:    w.BundleID,
		Purpose:     w.Purpose,
		Handling:    w.Handling,
		LegalBasis:  w.LegalBasis,
		PayloadSize: w.PayloadSize,
		Peer:        w.Peer,
		Code:        w.Code,
		Reason:      w.Reason,
		Count:       w.Count,
		Source:      w.Source,
		Kind:        SecurityKind(w.Kind),
		Checkpoint:  w.Checkpoint,

		AgreementVersion:    w.AgreementVersion,
		AgreementRef:        w.AgreementRef,
		OldAgreementVersion: w.OldAgreementVersion,
		Changes:             w.Changes,
		Reference:           w.Reference,
	}
	if w.Receipt != nil {
		e.Receipt = &crypto.Signed{Body: w.Receipt.Body, Signature: w.Receipt.Signature}
	}
	var err error
	if e.Time, err = parseTime("time", w.Time); err != nil {
		return nil, err
	}
	if w.WindowStart != "" {
		if e.WindowStart, err = parseTime("window_start", w.WindowStart); err != nil {
			return nil, err
		}
	}
	if w.WindowEnd != "" {
		if e.WindowEnd, err = parseTime("window_end", w.WindowEnd); err != nil {
			return nil, err
		}
	}
	if w.RetainUntil != "" {
		if e.RetainUntil, err = parseTime("retain_until", w.RetainUntil); err != nil {
			return nil, err
		}
	}
	for _, d := range []struct {
		dst  *[32]byte
		text string
		name string
	}{
		{&e.EnvelopeSHA256, w.EnvelopeSHA256, "envelope_sha256"},
		{&e.PayloadSHA256, w.PayloadSHA256, "payload_sha256"},
		{&e.ConfigSHA256, w.ConfigSHA256, "config_sha256"},
		{&e.OldConfigSHA256, w.OldConfigSHA256, "old_config_sha256"},
	} {
		if err := parseDigest(d.dst, d.name, d.text); err != nil {
			return nil, err
		}
	}
	canonical, err := e.MarshalCanonical()
	if err != nil {
		return nil, fmt.Errorf("invalid entry: %w", err)
	}
	if !bytes.Equal(canonical, data) {
		// Duplicate members are checked only here, for the error: the
		// canonical form has none, so an entry equal to it has none
		// either, and the check is most of the cost of parsing.
		if err := crypto.CheckUniqueMembers(data); err != nil {
			return nil, fmt.Errorf("malformed entry: %v", err)
		}
		return nil, errors.New("entry is not in canonical form")
	}
	return e, nil
}

func parseTime(what, s string) (time.Time, error) {
	t, err := time.Parse(timeLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("malformed %s %q (want %s)", what, s, strings.ReplaceAll(timeLayout, "2006-01-02T15:04:05.000", "YYYY-MM-DDThh:mm:ss.sss"))
	}
	return t, nil
}

// parseDigest decodes a digest member, "" being absent. An all-zero
// digest is refused: it would read as absent.
func parseDigest(dst *[32]byte, what, s string) error {
	if s == "" {
		return nil
	}
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 || hex.EncodeToString(b) != s || [32]byte(b) == [32]byte{} {
		return fmt.Errorf("malformed %s %q (want 64 lowercase hex digits)", what, s)
	}
	copy(dst[:], b)
	return nil
}
