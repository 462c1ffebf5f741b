package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"evx/crypto"
)

// entryTime is the time of the test entries.
var entryTime = time.Date(2026, 12, 3, 12, 25, 20, 454_000_000, time.UTC)

const testBundleID = "09038080fe5f290bffa3b504aaa4c609"

func digest(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// testReceiptKey is FR's gateway signing key in the test entries: the
// Ed25519 key whose seed is 32 bytes of 7.
func testReceiptKey() ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
}

// testReceipt returns FR's receipt for the test bundle from DE, signed as
// a gateway signs it.
func testReceipt(t testing.TB) *crypto.Signed {
	t.Helper()
	p, e, l := digest("payload"), digest("envelope"), digest("\x00leaf")
	body := `{"bundle_id":"` + testBundleID + `","envelope_sha256":"` + hex.EncodeToString(e[:]) +
		`","format":"evx-receipt/2","log":{"leaf_hash":"` + hex.EncodeToString(l[:]) + `","leaf_index":1836,"tree_size":1835},` +
		`"payload_sha256":"` + hex.EncodeToString(p[:]) + `","received_at":"2026-12-03T12:25:20.454798095Z","receiver":"FR","sender":"DE"}`
	s := &crypto.Signed{Body: []byte(body),
		Signature: ed25519.Sign(testReceiptKey(), append([]byte("evx-receipt-signature/v1\n"), body...))}
	if _, err := crypto.VerifyReceipt(s, crypto.FormatSigningKey(testReceiptKey().Public().(ed25519.PublicKey))); err != nil {
		t.Fatalf("the test receipt does not verify: %v", err)
	}
	return s
}

// withBundle sets the test bundle's members on e.
func withBundle(e Entry) Entry {
	e.BundleID = testBundleID
	e.EnvelopeSHA256 = digest("envelope")
	e.Purpose = "mutual-legal-assistance"
	e.Handling = "H1"
	e.LegalBasis = `Art. 18 "Budapest" Convention \ § <&>`
	e.PayloadSHA256 = digest("payload")
	e.PayloadSize = 65536
	return e
}

// namedEntry is a test entry and its name.
type namedEntry struct {
	name  string
	entry Entry
}

// testEntries returns a valid entry of every event and security kind.
func testEntries(t testing.TB) []namedEntry {
	base := func(ev Event, actor string) Entry {
		return Entry{Time: entryTime, Gateway: "DE", Actor: actor, Event: ev}
	}
	unit := UnitActor("DE/forensics")
	es := []namedEntry{
		{"upload accepted", func() Entry {
			e := withBundle(base(EventUploadAccepted, unit))
			e.Peer = "FR"
			return e
		}()},
		{"upload refused", func() Entry {
			e := base(EventUploadRefused, unit)
			e.Code = "unknown-recipient"
			e.Reason = "recipient FR/judge is not in FR's directory"
			return e
		}()},
		{"offer sent", func() Entry {
			e := base(EventOfferSent, GatewayActor)
			e.BundleID, e.Peer, e.EnvelopeSHA256 = testBundleID, "FR", digest("envelope")
			return e
		}()},
		{"delivered", func() Entry {
			e := withBundle(base(EventDelivered, PeerActor("FR")))
			e.Peer, e.Receipt = "FR", testReceipt(t)
			return e
		}()},
		{"delivery refused", func() Entry {
			e := base(EventDeliveryRefused, PeerActor("FR"))
			e.BundleID, e.Peer, e.Code = testBundleID, "FR", "not-accepted"
			return e
		}()},
		{"offer accepted", func() Entry {
			e := withBundle(base(EventOfferAccepted, PeerActor("FR")))
			e.Gateway, e.Actor, e.Peer = "NL", PeerActor("DE"), "DE"
			return e
		}()},
		{"offer refused", func() Entry {
			e := base(EventOfferRefused, PeerActor("FR"))
			e.Peer, e.Code, e.BundleID = "FR", "unknown-sender", testBundleID
			e.Reason = "the sender's signing key is not in its gateway's directory"
			return e
		}()},
		{"receipt issued", func() Entry {
			e := withBundle(base(EventReceiptIssued, PeerActor("DE")))
			e.Gateway, e.Peer = "FR", "DE"
			return e
		}()},
		{"payload downloaded", func() Entry {
			e := base(EventPayloadDownloaded, UnitActor("DE/prosecutor"))
			e.BundleID, e.Peer = testBundleID, "FR"
			e.PayloadSHA256, e.PayloadSize = digest("payload"), 65536
			return e
		}()},
		{"retrieval acknowledged", func() Entry {
			e := base(EventRetrievalAcknowledged, UnitActor("DE/prosecutor"))
			e.BundleID = testBundleID
			return e
		}()},
		{"gateway started", func() Entry {
			e := base(EventGatewayStarted, GatewayActor)
			e.ConfigSHA256 = digest("config")
			return e
		}()},
		{"requests refused", func() Entry {
			e := base(EventRequestsRefused, GatewayActor)
			e.Code, e.Count, e.Source = "api-handshake", 1234, "2001:db8::/64"
			e.WindowStart, e.WindowEnd = entryTime.Truncate(time.Minute).Add(-time.Minute), entryTime.Truncate(time.Minute)
			e.Reason = "no-certificate"
			return e
		}()},
		{"requests refused from other sources", func() Entry {
			e := base(EventRequestsRefused, GatewayActor)
			e.Code, e.Count, e.Source = "peer-connections", 1, "other"
			e.WindowStart, e.WindowEnd = entryTime.Add(-time.Minute), entryTime
			return e
		}()},
		{"security receipt not included", func() Entry {
			e := base(EventSecurity, GatewayActor)
			e.Kind, e.Peer, e.BundleID, e.Receipt = KindReceiptNotIncluded, "FR", testBundleID, testReceipt(t)
			e.Reason = "no inclusion proof of leaf 1836 in FR's log after 1m0s"
			return e
		}()},
		{"security inconsistent checkpoint", func() Entry {
			e := base(EventSecurity, GatewayActor)
			e.Kind, e.Peer = KindInconsistentCheckpoint, "FR"
			e.Checkpoint = []byte("evx.transfer-log/FR\n12\nq3L7NvQYh/c6zr1vE9tz/fUqD3mMvh9EbRzSxZrvVJw=\n\n— evx.transfer-log/FR AAAAAA==\n")
			e.Reason = "checkpoint of size 12 is not consistent with size 15 seen before"
			return e
		}()},
		{"agreement decision allowed", func() Entry {
			e := withBundle(base(EventAgreementDecision, unit))
			e.Peer, e.Code, e.AgreementVersion, e.AgreementRef = "FR", "allowed", 3, "2026/114"
			return e
		}()},
		{"agreement decision refused inbound", func() Entry {
			e := withBundle(base(EventAgreementDecision, PeerActor("FR")))
			e.Peer, e.Code, e.AgreementVersion, e.AgreementRef = "FR", "purpose-not-accepted", 3, "2026/114"
			e.Reason = `agreement DE→FR v3 (ref 2026/114) does not allow purpose "mutual-legal-assistance" inbound; allowed: prosecution`
			return e
		}()},
		{"agreement decision without agreement", func() Entry {
			e := withBundle(base(EventAgreementDecision, GatewayActor))
			e.Peer, e.Code = "FR", "no-agreement"
			e.Reason = "gateway DE has no agreement with FR: nothing flows with it"
			return e
		}()},
		{"config reloaded", func() Entry {
			e := base(EventConfigReloaded, UnitActor("DE/operator"))
			e.ConfigSHA256, e.OldConfigSHA256 = digest("config 2"), digest("config")
			e.Changes = []string{
				"agreement FR: version 3 → 4 (ref 2026/114 → 2026/120)",
				"agreement FR: outbound + incident-response",
				"user FR/analyst removed",
				`peer IT added`,
			}
			return e
		}()},
		{"config reloaded by SIGHUP without changes listed", func() Entry {
			e := base(EventConfigReloaded, GatewayActor)
			e.ConfigSHA256, e.OldConfigSHA256 = digest("config 3"), digest("config 2")
			return e
		}()},
		{"agreement changed", func() Entry {
			e := base(EventAgreementChanged, UnitActor("DE/operator"))
			e.Peer, e.AgreementVersion, e.AgreementRef, e.OldAgreementVersion = "FR", 4, "2026/120", 3
			e.Changes = []string{"version 3 → 4 (ref 2026/114 → 2026/120)", "outbound + incident-response", `max retention of "prosecution" 365 → 730 days`}
			return e
		}()},
		{"agreement added", func() Entry {
			e := base(EventAgreementChanged, GatewayActor)
			e.Peer, e.AgreementVersion, e.AgreementRef = "IT", 1, "2026/121"
			e.Changes = []string{"agreement added"}
			return e
		}()},
		{"agreement removed", func() Entry {
			e := base(EventAgreementChanged, GatewayActor)
			e.Peer, e.OldAgreementVersion = "NL", 7
			e.Changes = []string{"agreement removed: nothing flows with NL"}
			return e
		}()},
		{"agreement suspended", func() Entry {
			e := base(EventAgreementSuspended, UnitActor("DE/operator"))
			e.Peer, e.AgreementVersion, e.AgreementRef = "FR", 4, "2026/120"
			e.Reason = `incident 2026-12-03: "FR" gateway key under review`
			return e
		}()},
		{"agreement suspended by the peer", func() Entry {
			e := base(EventAgreementSuspended, PeerActor("FR"))
			e.Peer, e.Reason = "FR", "FR suspended cooperation: maintenance of its storage"
			return e
		}()},
		{"agreement resumed", func() Entry {
			e := base(EventAgreementResumed, UnitActor("DE/operator"))
			e.Peer, e.AgreementVersion, e.AgreementRef = "FR", 4, "2026/120"
			return e
		}()},
		{"agreement resumed by the peer", func() Entry {
			e := base(EventAgreementResumed, PeerActor("FR"))
			e.Peer = "FR"
			return e
		}()},
	}
	es = append(es, retentionEntries(base)...)
	// Every event and kind has an entry here.
	for _, info := range Events() {
		if !slices.ContainsFunc(es, func(n namedEntry) bool { return n.entry.Event == info.Event }) {
			t.Fatalf("no test entry of event %s", info.Event)
		}
	}
	for _, k := range SecurityKinds() {
		if !slices.ContainsFunc(es, func(n namedEntry) bool { return n.entry.Kind == k.Kind }) {
			t.Fatalf("no test entry of security kind %s", k.Kind)
		}
	}
	return es
}

func mustMarshal(t testing.TB, e *Entry) []byte {
	t.Helper()
	b, err := e.MarshalCanonical()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// genericCanonical re-encodes data as the canonical form is defined,
// independently of wireEntry's field order: through a generic value,
// whose object members encoding/json sorts.
func genericCanonical(t testing.TB, data []byte) []byte {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

func TestEntryRoundTrip(t *testing.T) {
	for _, n := range testEntries(t) {
		t.Run(n.name, func(t *testing.T) {
			data := mustMarshal(t, &n.entry)
			if !bytes.Equal(genericCanonical(t, data), data) {
				t.Errorf("not canonical:\n%s", data)
			}
			got, err := ParseEntry(data)
			if err != nil {
				t.Fatalf("%v\n%s", err, data)
			}
			want := n.entry
			want.Format = formatOf(want.Event)
			if !reflect.DeepEqual(*got, want) {
				t.Errorf("parsed\n%+v\nwant\n%+v", *got, want)
			}
			if got.Outcome() == "" || got.Outcome() != Outcome(jsonMember(t, data, "outcome")) {
				t.Errorf("outcome %q, entry says %q", got.Outcome(), jsonMember(t, data, "outcome"))
			}
			if string(got.Direction()) != jsonMember(t, data, "direction") {
				t.Errorf("direction %q, entry says %q", got.Direction(), jsonMember(t, data, "direction"))
			}
		})
	}
}

// formatOf returns the entry format that holds ev.
func formatOf(ev Event) string {
	s, ok := lookupEvent(ev)
	if !ok {
		return ""
	}
	return s.format()
}

func jsonMember(t testing.TB, data []byte, name string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	s, _ := m[name].(string)
	return s
}

// TestWireEntryOrder checks that wireEntry's fields are in the bytewise
// order of their JSON names, which makes encoding/json write the
// canonical form.
func TestWireEntryOrder(t *testing.T) {
	for _, typ := range []reflect.Type{reflect.TypeFor[wireEntry](), reflect.TypeFor[wireSigned]()} {
		var names []string
		for f := range typ.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			names = append(names, name)
		}
		if !slices.IsSorted(names) {
			t.Errorf("%s fields are not in the order of their JSON names: %v", typ, names)
		}
	}
	// Every member of the tables is a field of wireEntry.
	if len(memberNames) != bitsOf(endMembers) {
		t.Errorf("%d member names for %d members", len(memberNames), bitsOf(endMembers))
	}
	for _, name := range memberNames {
		if _, ok := reflect.TypeFor[wireEntry]().FieldByNameFunc(func(f string) bool {
			sf, _ := reflect.TypeFor[wireEntry]().FieldByName(f)
			return strings.HasPrefix(sf.Tag.Get("json"), name+",")
		}); !ok {
			t.Errorf("member %q is not a field of wireEntry", name)
		}
	}
}

func bitsOf(m member) int {
	n := 0
	for m > 1 {
		m >>= 1
		n++
	}
	return n
}

func TestEntryExample(t *testing.T) {
	// The entry docs/audit.md shows.
	e := testEntries(t)[0].entry
	want := `{"actor":"unit:DE/forensics","bundle_id":"09038080fe5f290bffa3b504aaa4c609",` +
		`"direction":"outbound","envelope_sha256":"` + hex.EncodeToString(e.EnvelopeSHA256[:]) +
		`","event":"upload-accepted","format":"evx-log-entry/1","gateway":"DE","handling":"H1",` +
		`"legal_basis":"Art. 18 \"Budapest\" Convention \\ § <&>","outcome":"accepted",` +
		`"payload_sha256":"` + hex.EncodeToString(e.PayloadSHA256[:]) + `","payload_size":65536,"peer":"FR",` +
		`"purpose":"mutual-legal-assistance","time":"2026-12-03T12:25:20.454Z"}`
	if got := mustMarshal(t, &e); string(got) != want {
		t.Errorf("entry\n%s\nwant\n%s", got, want)
	}
}

func TestEntryInvalid(t *testing.T) {
	entries := testEntries(t)
	get := func(name string) Entry {
		for _, n := range entries {
			if n.name == name {
				return n.entry
			}
		}
		t.Fatalf("no test entry %q", name)
		return Entry{}
	}
	for _, tt := range invalidEntries(t, get) {
		t.Run(tt.name, func(t *testing.T) {
			e := tt.entry
			_, err := e.MarshalCanonical()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("MarshalCanonical: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// invalidEntry is an entry that MarshalCanonical refuses, and a part of
// its error.
type invalidEntry struct {
	name  string
	entry Entry
	want  string
}

func invalidEntries(t testing.TB, get func(string) Entry) []invalidEntry {
	change := func(name string, f func(e *Entry)) Entry {
		e := get(name)
		e.Changes = slices.Clone(e.Changes) // not the test entry's lines
		f(&e)
		return e
	}
	return append([]invalidEntry{
		{"unknown event", change("upload refused", func(e *Entry) { e.Event = "upload-deleted" }), `unknown event "upload-deleted"`},
		{"newer format", change("upload refused", func(e *Entry) { e.Format = "evx-log-entry/9" }), `unsupported entry format "evx-log-entry/9"`},
		{"missing required members", change("upload accepted", func(e *Entry) { e.LegalBasis, e.Peer = "", "" }), "upload-accepted entry needs legal_basis, peer"},
		{"member the event lacks", change("gateway started", func(e *Entry) { e.BundleID = testBundleID }), "gateway-started entry has no bundle_id"},
		{"no time", change("gateway started", func(e *Entry) { e.Time = time.Time{} }), "time 0001-01-01T00:00:00Z is not between the years 2000 and 9999"},
		{"bad gateway", change("gateway started", func(e *Entry) { e.Gateway = "de" }), `malformed gateway id "de"`},
		{"unit as a peer's actor", change("offer refused", func(e *Entry) { e.Actor = UnitActor("FR/x") }), `actor "unit:FR/x" of offer-refused entry is not peer:<peer>`},
		{"another peer acting", change("offer refused", func(e *Entry) { e.Actor = PeerActor("NL") }), `actor "peer:NL" is not the entry's peer "FR"`},
		{"gateway as a unit", change("upload refused", func(e *Entry) { e.Actor = GatewayActor }), `actor "gateway" of upload-refused entry is not unit:<unit id>`},
		{"malformed unit", change("upload refused", func(e *Entry) { e.Actor = "unit:../etc" }), `malformed unit id in actor "unit:../etc"`},
		{"peer is self", change("offer sent", func(e *Entry) { e.Peer = "DE" }), `peer "DE" is the gateway itself`},
		{"bad bundle id", change("offer sent", func(e *Entry) { e.BundleID = "case-4711.evx" }), `malformed bundle id "case-4711.evx"`},
		{"unknown purpose", change("upload accepted", func(e *Entry) { e.Purpose = "curiosity" }), `unknown purpose "curiosity"`},
		{"legal basis too long", change("upload accepted", func(e *Entry) { e.LegalBasis = strings.Repeat("x", 257) }), "legal basis is 257 bytes long"},
		{"line feed in legal basis", change("upload accepted", func(e *Entry) { e.LegalBasis = "a\nb" }), "non-printable character U+000A"},
		{"negative size", change("upload accepted", func(e *Entry) { e.PayloadSize = -1 }), "payload size -1 out of range"},
		{"code with spaces", change("upload refused", func(e *Entry) { e.Code = "not found" }), `malformed code "not found"`},
		{"reason too long", change("upload refused", func(e *Entry) { e.Reason = strings.Repeat("é", 101) }), "reason is 202 bytes long, over the limit of 200"},
		{"path in reason", change("upload refused", func(e *Entry) { e.Reason = "open /srv/evx/outbox/x: permission denied" }), "looks like it contains a file path"},
		{"relative path in reason", change("upload refused", func(e *Entry) { e.Reason = "reading ../case/photo.jpg failed" }), "looks like it contains a file path"},
		{"key in reason", change("upload refused", func(e *Entry) { e.Reason = "got AGE-SECRET-KEY-PQ-1ABC" }), "looks like it contains a secret key"},
		{"reason with spaces around", change("upload refused", func(e *Entry) { e.Reason = " why" }), "leading or trailing spaces"},
		{"unmasked source", change("requests refused", func(e *Entry) { e.Source = "2001:db8::1/64" }), `malformed source "2001:db8::1/64"`},
		{"bare address source", change("requests refused", func(e *Entry) { e.Source = "192.0.2.1" }), `malformed source "192.0.2.1"`},
		{"no count", change("requests refused", func(e *Entry) { e.Count = 0 }), "needs count"},
		{"window backwards", change("requests refused", func(e *Entry) { e.WindowStart, e.WindowEnd = e.WindowEnd, e.WindowStart }), "is not 1 ms to 1h0m0s long"},
		{"window of a day", change("requests refused", func(e *Entry) { e.WindowStart = e.WindowEnd.Add(-24 * time.Hour) }), "is not 1 ms to 1h0m0s long"},
		{"window ending later", change("requests refused", func(e *Entry) { e.WindowEnd = e.Time.Add(time.Millisecond) }), "window ends at 2026-12-03T12:25:20.455Z, after the entry's time 2026-12-03T12:25:20.454Z"},
		{"delivered without receipt", change("delivered", func(e *Entry) { e.Receipt = nil }), "delivered entry needs receipt"},
		{"receipt of another bundle", change("delivered", func(e *Entry) { e.BundleID = strings.Repeat("ab", 16) }), `receipt of bundle "` + testBundleID + `" from "DE" to "FR" is not for bundle "abab`},
		{"receipt from another peer", change("delivered", func(e *Entry) { e.Peer, e.Actor = "NL", PeerActor("NL") }), `is not for bundle "` + testBundleID + `" from "DE" to "NL"`},
		{"receipt with a short signature", change("delivered", func(e *Entry) { e.Receipt = &crypto.Signed{Body: e.Receipt.Body, Signature: []byte{1}} }), "receipt signature of 1 bytes, want 64"},
		{"receipt not a receipt", change("delivered", func(e *Entry) { e.Receipt = &crypto.Signed{Body: []byte(`{}`), Signature: e.Receipt.Signature} }), `receipt: unsupported format ""`},
		{"unknown security kind", change("security inconsistent checkpoint", func(e *Entry) { e.Kind = "bored" }), `unknown security kind "bored"`},
		{"security kind lacking its members", change("security receipt not included", func(e *Entry) { e.Receipt = nil }), "security receipt-not-included entry needs receipt"},
		{"huge checkpoint", change("security inconsistent checkpoint", func(e *Entry) { e.Checkpoint = make([]byte, 5000) }), "checkpoint of 5000 bytes, over the limit of 4096"},
		{"reload without the old digest", change("config reloaded", func(e *Entry) { e.OldConfigSHA256 = [32]byte{} }), "config-reloaded entry needs old_config_sha256"},
		{"reload by a peer", change("config reloaded", func(e *Entry) { e.Actor = PeerActor("FR") }), `actor "peer:FR" of config-reloaded entry is not unit:<unit id> or gateway`},
		{"reload with a peer", change("config reloaded", func(e *Entry) { e.Peer = "FR" }), "config-reloaded entry has no peer"},
		{"too many changes", change("config reloaded", func(e *Entry) { e.Changes = slices.Repeat([]string{"user FR/analyst removed"}, MaxChanges+1) }), "25 lines of changes, over the limit of 24"},
		{"empty line of changes", change("config reloaded", func(e *Entry) { e.Changes = []string{"peer IT added", ""} }), "line 2 of changes is empty"},
		{"line of changes too long", change("config reloaded", func(e *Entry) { e.Changes[0] = strings.Repeat("é", 101) }), "line 1 of changes is 202 bytes long, over the limit of 200"},
		{"line feed in changes", change("config reloaded", func(e *Entry) { e.Changes[0] = "peer IT added\npeer NL added" }), "line 1 of changes \"peer IT added\\npeer NL added\" contains a non-printable character U+000A"},
		{"line of changes with spaces around", change("config reloaded", func(e *Entry) { e.Changes[0] = "peer IT added " }), "has leading or trailing spaces"},
		{"path in changes", change("config reloaded", func(e *Entry) { e.Changes[2] = "tls.cert_file → /etc/evx/gateway.pem" }), `line 3 of changes "tls.cert_file → /etc/evx/gateway.pem" looks like it contains a file path`},
		{"key in changes", change("agreement changed", func(e *Entry) { e.Changes[0] = "signing key AGE-SECRET-KEY-PQ-1ABC" }), "looks like it contains a secret key"},
		{"agreement changed without changes", change("agreement changed", func(e *Entry) { e.Changes = nil }), "agreement-changed entry needs changes"},
		{"agreement changed without a peer", change("agreement changed", func(e *Entry) { e.Peer = "" }), "agreement-changed entry needs peer"},
		{"agreement changed without versions", change("agreement changed", func(e *Entry) { e.AgreementVersion, e.OldAgreementVersion = 0, 0 }), "agreement-changed entry needs agreement_version, old_agreement_version or both"},
		{"agreement changed by a peer", change("agreement changed", func(e *Entry) { e.Actor = PeerActor("FR") }), `actor "peer:FR" of agreement-changed entry is not unit:<unit id> or gateway`},
		{"old agreement version negative", change("agreement changed", func(e *Entry) { e.OldAgreementVersion = -1 }), "old agreement version -1 out of range (1 to 2147483647)"},
		{"old agreement version too large", change("agreement changed", func(e *Entry) { e.OldAgreementVersion = 1 << 31 }), "old agreement version 2147483648 out of range (1 to 2147483647)"},
		{"agreement version too large", change("agreement changed", func(e *Entry) { e.AgreementVersion = 1 << 31 }), "agreement version 2147483648 out of range"},
		{"suspension without a reason", change("agreement suspended", func(e *Entry) { e.Reason = "" }), "agreement-suspended entry needs reason"},
		{"suspension with changes", change("agreement suspended", func(e *Entry) { e.Changes = []string{"suspended"} }), "agreement-suspended entry has no changes"},
		{"suspension by another peer", change("agreement suspended by the peer", func(e *Entry) { e.Actor = PeerActor("NL") }), `actor "peer:NL" is not the entry's peer "FR"`},
		{"path in a suspension's reason", change("agreement suspended", func(e *Entry) { e.Reason = "see ~/incident.txt" }), "reason \"see ~/incident.txt\" looks like it contains a file path"},
		{"resumption with a reason", change("agreement resumed", func(e *Entry) { e.Reason = "over" }), "agreement-resumed entry has no reason"},
		{"resumption with an old version", change("agreement resumed", func(e *Entry) { e.OldAgreementVersion = 3 }), "agreement-resumed entry has no old_agreement_version"},
		{"resumption without a peer", change("agreement resumed", func(e *Entry) { e.Peer = "" }), "agreement-resumed entry needs peer"},
		{"gateway started with an old digest", change("gateway started", func(e *Entry) { e.OldConfigSHA256 = digest("old") }), "gateway-started entry has no old_config_sha256"},
		{"upload with changes", change("upload refused", func(e *Entry) { e.Changes = []string{"x"} }), "upload-refused entry has no changes"},
		{"format-1 reload", change("config reloaded", func(e *Entry) { e.Format = EntryFormat }), `unknown event "config-reloaded" in format "evx-log-entry/1"`},
		{"format-1 agreement change", change("agreement changed", func(e *Entry) { e.Format = EntryFormat }), `unknown event "agreement-changed" in format "evx-log-entry/1"`},
		{"format-1 suspension", change("agreement suspended", func(e *Entry) { e.Format = EntryFormat }), `unknown event "agreement-suspended" in format "evx-log-entry/1"`},
		{"format-1 resumption", change("agreement resumed", func(e *Entry) { e.Format = EntryFormat }), `unknown event "agreement-resumed" in format "evx-log-entry/1"`},
	}, invalidRetentionEntries(change)...)
}

func TestParseEntryOneEncoding(t *testing.T) {
	e := testEntries(t)[0].entry
	good := string(mustMarshal(t, &e))
	for _, tt := range nonCanonicalEntries(good) {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseEntry([]byte(tt.data)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseEntry: %v, want an error containing %q\n%s", err, tt.want, tt.data)
			}
		})
	}
	if _, err := ParseEntry([]byte(good)); err != nil {
		t.Fatal(err)
	}
}

type badBytes struct{ name, data, want string }

// nonCanonicalEntries returns byte strings close to the valid entry good
// that ParseEntry refuses, and a part of each error.
func nonCanonicalEntries(good string) []badBytes {
	r := func(old, new string) string { return strings.Replace(good, old, new, 1) }
	return []badBytes{
		{"white space", r(`,"event"`, `, "event"`), "not in canonical form"},
		{"trailing line feed", good + "\n", "not in canonical form"},
		{"data after the object", good + "{}", "malformed entry"},
		{"members out of order", `{"format":"evx-log-entry/1",` + strings.Replace(good[1:], `"format":"evx-log-entry/1",`, "", 1), "not in canonical form"},
		{"escaped letter", r(`"DE"`, `"\u0044E"`), "not in canonical form"},
		{"HTML escape", r(`<&>`, `\u003c&>`), "not in canonical form"},
		{"upper-case digest", r(`"payload_sha256":"`+jsonMemberString(good, "payload_sha256"), `"payload_sha256":"`+strings.ToUpper(jsonMemberString(good, "payload_sha256"))), "malformed payload_sha256"},
		{"time without milliseconds", r(`12:25:20.454Z`, `12:25:20Z`), "malformed time"},
		{"time with microseconds", r(`12:25:20.454Z`, `12:25:20.454000Z`), "malformed time"},
		{"time with offset", r(`12:25:20.454Z`, `13:25:20.454+01:00`), "malformed time"},
		{"size as float", r(`65536`, `65536.0`), "malformed entry"},
		{"size with exponent", r(`65536`, `6.5536e4`), "malformed entry"},
		{"unknown member", r(`"peer"`, `"file_name":"photo.jpg","peer"`), `unknown field "file_name"`},
		{"repeated member", r(`"peer":"FR"`, `"peer":"FR","peer":"NL"`), `member "peer" appears more than once`},
		{"member in another case", r(`"peer":"FR"`, `"peer":"FR","Peer":"NL"`), `member "Peer" appears more than once`},
		{"wrong outcome", r(`"outcome":"accepted"`, `"outcome":"refused"`), "not in canonical form"},
		{"wrong direction", r(`"direction":"outbound"`, `"direction":"inbound"`), "not in canonical form"},
		{"no direction", r(`"direction":"outbound",`, ``), "not in canonical form"},
		{"empty optional member", r(`"peer":"FR"`, `"peer":"FR","reason":""`), "not in canonical form"},
		{"null member", r(`"peer":"FR"`, `"peer":"FR","reason":null`), "not in canonical form"},
		{"newer format", r(`evx-log-entry/1`, `evx-log-entry/9`), "unsupported entry format"},
		{"no format", r(`"format":"evx-log-entry/1",`, ``), `unsupported entry format ""`},
		{"unknown event", r(`upload-accepted`, `upload-deleted`), "unknown event"},
		{"not an object", `[]`, "malformed entry"},
		{"empty", ``, "malformed entry"},
		{"invalid UTF-8", r(`Budapest`, "Buda\xffpest"), "not in canonical form"},
		{"too large", r(`"peer"`, `"`+strings.Repeat("x", maxEntryJSON)+`":1,"peer"`), "over the limit of 16384"},
	}
}

func jsonMemberString(data, name string) string {
	var m map[string]any
	json.Unmarshal([]byte(data), &m)
	s, _ := m[name].(string)
	return s
}

func TestParseEntryErrorsForNewerWriters(t *testing.T) {
	e := testEntries(t)[1].entry
	good := string(mustMarshal(t, &e))
	_, err := ParseEntry([]byte(strings.Replace(good, `evx-log-entry/1`, `evx-log-entry/9`, 1)))
	if !errors.Is(err, ErrUnsupportedFormat) {
		t.Errorf("newer format: %v, want ErrUnsupportedFormat", err)
	}
	_, err = ParseEntry([]byte(strings.Replace(good, `upload-refused`, `bundle-forwarded`, 1)))
	if !errors.Is(err, ErrUnknownEvent) || !strings.Contains(err.Error(), `unknown event "bundle-forwarded"`) {
		t.Errorf("unknown event: %v, want ErrUnknownEvent", err)
	}
	_, err = ParseEntry([]byte(strings.Replace(good, `"reason"`, `"x":1,"reason"`, 1)))
	if err == nil || errors.Is(err, ErrUnknownEvent) || errors.Is(err, ErrUnsupportedFormat) {
		t.Errorf("corrupt entry: %v, want neither ErrUnknownEvent nor ErrUnsupportedFormat", err)
	}
}

func TestEntryTimeTruncated(t *testing.T) {
	e := testEntries(t)[1].entry
	e.Time = time.Date(2026, 12, 3, 13, 25, 20, 454_999_999, time.FixedZone("CET", 3600))
	got, err := ParseEntry(mustMarshal(t, &e))
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 12, 3, 12, 25, 20, 454_000_000, time.UTC); !got.Time.Equal(want) || got.Time.Location() != time.UTC {
		t.Errorf("time %v, want %v", got.Time, want)
	}
}

func TestEntrySetEnvelope(t *testing.T) {
	sender, err := crypto.GenerateUnitKey("DE/forensics")
	if err != nil {
		t.Fatal(err)
	}
	recipient, err := crypto.GenerateUnitKey("FR/prosecutor")
	if err != nil {
		t.Fatal(err)
	}
	env := &crypto.Envelope{
		Format: crypto.EnvelopeFormat, BundleID: testBundleID,
		Created: entryTime.Truncate(time.Second), RetainUntil: entryTime.Truncate(time.Second).Add(24 * time.Hour),
		Sender:     crypto.Party{Unit: "DE/forensics", Key: sender.Public().SigningKey},
		Recipients: []crypto.Party{{Unit: "FR/prosecutor", Key: recipient.Public().AgeRecipient}},
		Purpose:    "prosecution", Handling: "H0", TLP: "TLP:RED", LegalBasis: "EIO 2026/17", Case: "secret case name",
		PayloadSize: 42, PayloadSHA256: digest("p"), ManifestSHA256: digest("m"),
	}
	canonical, err := env.MarshalCanonical()
	if err != nil {
		t.Fatal(err)
	}
	e := Entry{Time: entryTime, Gateway: "DE", Actor: UnitActor("DE/forensics"), Event: EventUploadAccepted, Peer: "FR"}
	if err := e.SetEnvelope(env); err != nil {
		t.Fatal(err)
	}
	if e.EnvelopeSHA256 != sha256.Sum256(canonical) || e.BundleID != testBundleID || e.Purpose != "prosecution" ||
		e.Handling != "H0" || e.LegalBasis != "EIO 2026/17" || e.PayloadSize != 42 || e.PayloadSHA256 != digest("p") {
		t.Errorf("SetEnvelope set %+v", e)
	}
	data := mustMarshal(t, &e)
	// Neither the case reference, nor the sender's and recipients' keys,
	// nor the manifest digest are logged.
	for _, secret := range []string{"secret case name", sender.Public().SigningKey, recipient.Public().AgeRecipient, "TLP:RED", hex.EncodeToString(env.ManifestSHA256[:])} {
		if bytes.Contains(data, []byte(secret)) {
			t.Errorf("entry contains %q:\n%s", secret, data)
		}
	}
	if err := e.SetEnvelope(&crypto.Envelope{}); err == nil {
		t.Error("SetEnvelope of an invalid envelope succeeded")
	}
	// Only the members the event carries: offer-sent names the bundle
	// and its envelope, not the legal metadata.
	o := Entry{Time: entryTime, Gateway: "DE", Actor: GatewayActor, Event: EventOfferSent, Peer: "FR"}
	if err := o.SetEnvelope(env); err != nil {
		t.Fatal(err)
	}
	if o.BundleID != testBundleID || o.EnvelopeSHA256 != sha256.Sum256(canonical) || o.Purpose != "" || o.LegalBasis != "" || o.PayloadSize != 0 {
		t.Errorf("SetEnvelope of offer-sent set %+v", o)
	}
	mustMarshal(t, &o)
}

func TestCleanReason(t *testing.T) {
	for in, want := range map[string]string{
		"":                                   "",
		"  peer refused:\n\tnot-accepted  ":  "peer refused: not-accepted",
		"bad\x00byte\xff":                    "bad byte\uFFFD",
		"line\u2028separator":                "line separator",
		strings.Repeat("é", 150):             strings.Repeat("é", 100),
		strings.Repeat("a", 199) + " é":      strings.Repeat("a", 199),
		"open /var/lib/evx/x: no such file":  "",
		`reading "./photos/1.jpg"`:           "",
		`C:\Users\x`:                         "",
		"-----BEGIN PRIVATE KEY-----":        "",
		"unit DE/forensics is unknown (1/2)": "unit DE/forensics is unknown (1/2)",
	} {
		got := CleanReason(in)
		if got != want {
			t.Errorf("CleanReason(%q) = %q, want %q", in, got, want)
		}
		if err := checkReason(got); err != nil {
			t.Errorf("CleanReason(%q) = %q, which is not a valid reason: %v", in, got, err)
		}
	}
}

// TestEntrySizeBound checks that the largest entry the limits allow is
// under maxEntryJSON, which is under what the log stores.
func TestEntrySizeBound(t *testing.T) {
	e := Entry{Time: entryTime, Gateway: "ABCDEFGHIJKLMNOP", Actor: GatewayActor, Event: EventSecurity,
		Kind: KindReceiptNotIncluded, Peer: "QRSTUVWXYZABCDEF", BundleID: testBundleID, EnvelopeSHA256: digest("e"),
		Reason: strings.Repeat(`"`, MaxReasonLength), Checkpoint: make([]byte, maxCheckpointLength)}
	body := `{"bundle_id":"` + testBundleID + `","format":"evx-receipt/1","payload_sha256":"` + strings.Repeat("0", 64) +
		`","received_at":"2026-12-03T12:25:20.454798095Z","receiver":"QRSTUVWXYZABCDEF","sender":"ABCDEFGHIJKLMNOP"}`
	body += strings.Repeat(" ", crypto.MaxReceiptBodySize-len(body))
	e.Receipt = &crypto.Signed{Body: []byte(body), Signature: make([]byte, 64)}
	// The longest entries of the agreements' events: every line of
	// changes, the reason and the reference as long as allowed, of
	// characters that escape to two bytes each.
	operator := UnitActor("ABCDEFGHIJKLMNOP/" + strings.Repeat("o", 63))
	changes := slices.Repeat([]string{strings.Repeat(`"`, MaxReasonLength)}, MaxChanges)
	largest := []Entry{e,
		{Time: entryTime, Gateway: "ABCDEFGHIJKLMNOP", Actor: operator, Event: EventConfigReloaded,
			ConfigSHA256: digest("new"), OldConfigSHA256: digest("old"), Changes: changes},
		{Time: entryTime, Gateway: "ABCDEFGHIJKLMNOP", Actor: operator, Event: EventAgreementChanged, Peer: "QRSTUVWXYZABCDEF",
			AgreementVersion: maxAgreementVersion, OldAgreementVersion: maxAgreementVersion, AgreementRef: "x" + strings.Repeat(`"`, MaxAgreementRefLength-1),
			Changes: changes},
		{Time: entryTime, Gateway: "ABCDEFGHIJKLMNOP", Actor: operator, Event: EventAgreementSuspended, Peer: "QRSTUVWXYZABCDEF",
			AgreementVersion: maxAgreementVersion, AgreementRef: "x" + strings.Repeat(`"`, MaxAgreementRefLength-1),
			Reason: strings.Repeat(`"`, MaxReasonLength)},
	}
	for _, e := range largest {
		data := mustMarshal(t, &e)
		if len(data) > maxEntryJSON || maxEntryJSON > MaxEntrySize {
			t.Errorf("the largest %s entry has %d bytes; the limit is %d, the log's %d", e.Event, len(data), maxEntryJSON, MaxEntrySize)
		}
		t.Logf("largest %s entry: %d bytes", e.Event, len(data))
	}
}

func TestEventTable(t *testing.T) {
	seen := map[Event]bool{}
	for _, s := range events {
		if seen[s.event] {
			t.Errorf("event %s is listed twice", s.event)
		}
		seen[s.event] = true
		// An agreement-decision's outcome follows from its code.
		if s.doc == "" || s.outcome == "" && s.event != EventAgreementDecision || s.actor == 0 || s.required&s.optional != 0 {
			t.Errorf("event %s: incomplete or contradictory row %+v", s.event, s)
		}
		if !codePattern.MatchString(string(s.event)) {
			t.Errorf("event name %q is not lowercase words joined by '-'", s.event)
		}
		for _, k := range securityKinds {
			if s.event == EventSecurity && k.required&^(s.required|s.optional) != 0 {
				t.Errorf("security kind %s requires members the security event does not allow", k.kind)
			}
		}
	}
	if ValidEvent("upload-deleted") || !ValidEvent(EventDelivered) {
		t.Error("ValidEvent is wrong")
	}
}

// Only the entries of the cooperation agreements' events are of format
// 2, which alone has these events and their members: a reader of format 1
// reports them as of a format it does not know, and reads every other
// entry as before.
func TestEntryFormat2Events(t *testing.T) {
	format2 := []Event{EventAgreementDecision, EventConfigReloaded, EventAgreementChanged, EventAgreementSuspended, EventAgreementResumed}
	for _, n := range testEntries(t) {
		if formatOf(n.entry.Event) == EntryFormat3 {
			continue // TestEntryFormat3Events
		}
		data := mustMarshal(t, &n.entry)
		want := `"format":"` + EntryFormat + `"`
		if slices.Contains(format2, n.entry.Event) {
			want = `"format":"` + EntryFormat2 + `"`
		}
		if !strings.Contains(string(data), want) {
			t.Errorf("%s: %s, want %s", n.name, data, want)
		}
		e := n.entry
		if !slices.Contains(format2, n.entry.Event) {
			// Format 2 does not hold the events of format 1.
			e.Format = EntryFormat2
			if _, err := e.MarshalCanonical(); !errors.Is(err, ErrUnsupportedFormat) {
				t.Errorf("%s in format 2: %v, want an unsupported format", n.name, err)
			}
			if _, err := ParseEntry([]byte(strings.Replace(string(data), EntryFormat, EntryFormat2, 1))); !errors.Is(err, ErrUnsupportedFormat) {
				t.Errorf("%s read as format 2: %v, want an unsupported format", n.name, err)
			}
			continue
		}
		e.Format = EntryFormat
		if _, err := e.MarshalCanonical(); !errors.Is(err, ErrUnknownEvent) {
			t.Errorf("%s in format 1: %v, want an unknown event", n.name, err)
		}
		if _, err := ParseEntry([]byte(strings.Replace(string(data), EntryFormat2, EntryFormat, 1))); !errors.Is(err, ErrUnknownEvent) {
			t.Errorf("%s read as format 1: %v, want an unknown event", n.name, err)
		}
	}
}
