package audit

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// retainUntil is the end of the retention in the test entries of
// retention's events.
var retainUntil = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

// retentionEntries returns a valid entry of every event of retention,
// built on base as testEntries builds its own.
func retentionEntries(base func(Event, string) Entry) []namedEntry {
	bundle := func(ev Event, actor string, f func(e *Entry)) Entry {
		e := withBundle(base(ev, actor))
		f(&e)
		return e
	}
	return []namedEntry{
		{"bundle expired", bundle(EventBundleExpired, GatewayActor, func(e *Entry) { e.Peer, e.RetainUntil = "FR", retainUntil })},
		{"key shredded", bundle(EventKeyShredded, GatewayActor, func(e *Entry) { e.Peer = "FR" })},
		{"bundle purged", bundle(EventBundlePurged, GatewayActor, func(e *Entry) { e.Peer = "FR" })},
		{"outbox payload deleted", bundle(EventOutboxPayloadDeleted, GatewayActor, func(e *Entry) { e.Peer = "FR" })},
		{"outbox purged", bundle(EventOutboxPurged, GatewayActor, func(e *Entry) { e.Peer = "FR" })},
		{"hold placed", bundle(EventHoldPlaced, UnitActor("DE/operator"), func(e *Entry) {
			e.Reason, e.Reference = `appeal lodged in case "4711"`, "LG Berlin 2026/0815"
		})},
		{"hold released", bundle(EventHoldReleased, UnitActor("DE/operator"), func(e *Entry) {
			e.Reason, e.Reference = "appeal decided", "LG Berlin 2026/0815"
		})},
		{"recall requested", bundle(EventRecallRequested, UnitActor("DE/forensics"), func(e *Entry) {
			e.Peer, e.RetainUntil = "FR", retainUntil.Add(time.Hour+454*time.Millisecond)
		})},
		{"recall applied", bundle(EventRecallApplied, PeerActor("FR"), func(e *Entry) { e.Peer, e.RetainUntil = "FR", retainUntil })},
		{"recall refused", bundle(EventRecallRefused, PeerActor("FR"), func(e *Entry) {
			e.Peer, e.Code, e.Reason = "FR", "held", "the bundle is under a legal hold"
		})},
		{"recall acknowledged", bundle(EventRecallAcknowledged, PeerActor("FR"), func(e *Entry) { e.Peer, e.RetainUntil = "FR", retainUntil })},
		{"recall declined", bundle(EventRecallDeclined, PeerActor("FR"), func(e *Entry) {
			e.Peer, e.Code, e.Reason = "FR", "held", "FR declined the recall: held"
		})},
	}
}

// invalidRetentionEntries are entries of retention's events that
// MarshalCanonical refuses, made by changing the named test entries.
func invalidRetentionEntries(change func(string, func(*Entry)) Entry) []invalidEntry {
	return []invalidEntry{
		{"expiry without retain_until", change("bundle expired", func(e *Entry) { e.RetainUntil = time.Time{} }), "bundle-expired entry needs retain_until"},
		{"expiry without the bundle", change("bundle expired", func(e *Entry) { e.LegalBasis = "" }), "bundle-expired entry needs legal_basis"},
		{"expiry with a reference", change("bundle expired", func(e *Entry) { e.Reference = "x" }), "bundle-expired entry has no reference"},
		{"expiry by a unit", change("bundle expired", func(e *Entry) { e.Actor = UnitActor("DE/operator") }), `actor "unit:DE/operator" of bundle-expired entry is not gateway`},
		{"expiry in the year 10000", change("bundle expired", func(e *Entry) { e.RetainUntil = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }), "retain_until 10000-01-01T00:00:00Z is not between the years 2000 and 9999"},
		{"expiry in 1999", change("bundle expired", func(e *Entry) { e.RetainUntil = time.Date(1999, 12, 31, 0, 0, 0, 0, time.UTC) }), "retain_until 1999-12-31T00:00:00Z is not between the years 2000 and 9999"},
		{"shredding with retain_until", change("key shredded", func(e *Entry) { e.RetainUntil = retainUntil }), "key-shredded entry has no retain_until"},
		{"shredding without a peer", change("key shredded", func(e *Entry) { e.Peer = "" }), "key-shredded entry needs peer"},
		{"purge with a reason", change("bundle purged", func(e *Entry) { e.Reason = "expired" }), "bundle-purged entry has no reason"},
		{"purge by the peer", change("bundle purged", func(e *Entry) { e.Actor = PeerActor("FR") }), `actor "peer:FR" of bundle-purged entry is not gateway`},
		{"outbox payload deleted with a code", change("outbox payload deleted", func(e *Entry) { e.Code = "expired" }), "outbox-payload-deleted entry has no code"},
		{"outbox purged of the gateway itself", change("outbox purged", func(e *Entry) { e.Peer = "DE" }), `peer "DE" is the gateway itself`},
		{"hold without a reference", change("hold placed", func(e *Entry) { e.Reference = "" }), "hold-placed entry needs reference"},
		{"hold without a reason", change("hold placed", func(e *Entry) { e.Reason = "" }), "hold-placed entry needs reason"},
		{"hold with a peer", change("hold placed", func(e *Entry) { e.Peer = "FR" }), "hold-placed entry has no peer"},
		{"hold with retain_until", change("hold placed", func(e *Entry) { e.RetainUntil = retainUntil }), "hold-placed entry has no retain_until"},
		{"hold by the gateway", change("hold placed", func(e *Entry) { e.Actor = GatewayActor }), `actor "gateway" of hold-placed entry is not unit:<unit id>`},
		{"hold released by a peer", change("hold released", func(e *Entry) { e.Actor = PeerActor("FR") }), `actor "peer:FR" of hold-released entry is not unit:<unit id>`},
		{"reference too long", change("hold placed", func(e *Entry) { e.Reference = strings.Repeat("é", 33) }), "reference is 66 bytes long, over the limit of 64"},
		{"reference with a path", change("hold placed", func(e *Entry) { e.Reference = "see /srv/orders/4711.pdf" }), `reference "see /srv/orders/4711.pdf" looks like it contains a file path`},
		{"reference with a key", change("hold released", func(e *Entry) { e.Reference = "AGE-SECRET-KEY-1ABC" }), "looks like it contains a secret key"},
		{"reference with a line feed", change("hold placed", func(e *Entry) { e.Reference = "4711\n4712" }), "non-printable character U+000A"},
		{"reference with spaces around", change("hold placed", func(e *Entry) { e.Reference = "4711 " }), "leading or trailing spaces"},
		{"recall requested by the gateway", change("recall requested", func(e *Entry) { e.Actor = GatewayActor }), `actor "gateway" of recall-requested entry is not unit:<unit id>`},
		{"recall requested without retain_until", change("recall requested", func(e *Entry) { e.RetainUntil = time.Time{} }), "recall-requested entry needs retain_until"},
		{"recall applied by a unit", change("recall applied", func(e *Entry) { e.Actor = UnitActor("DE/operator") }), `actor "unit:DE/operator" of recall-applied entry is not peer:<peer>`},
		{"recall applied by another peer", change("recall applied", func(e *Entry) { e.Actor = PeerActor("NL") }), `actor "peer:NL" is not the entry's peer "FR"`},
		{"recall refused without a code", change("recall refused", func(e *Entry) { e.Code = "" }), "recall-refused entry needs code"},
		{"recall refused without a reason", change("recall refused", func(e *Entry) { e.Reason = "" }), "recall-refused entry needs reason"},
		{"recall refused with retain_until", change("recall refused", func(e *Entry) { e.RetainUntil = retainUntil }), "recall-refused entry has no retain_until"},
		{"recall acknowledged by the gateway", change("recall acknowledged", func(e *Entry) { e.Actor = GatewayActor }), `actor "gateway" of recall-acknowledged entry is not peer:<peer>`},
		{"recall declined with a bad code", change("recall declined", func(e *Entry) { e.Code = "Held" }), `malformed code "Held"`},
		{"path in a recall's reason", change("recall declined", func(e *Entry) { e.Reason = "see ./held.txt" }), "looks like it contains a file path"},
		{"upload with retain_until", change("upload accepted", func(e *Entry) { e.RetainUntil = retainUntil }), "upload-accepted entry has no retain_until"},
		{"suspension with a reference", change("agreement suspended", func(e *Entry) { e.Reference = "4711" }), "agreement-suspended entry has no reference"},
		// The formats: retention's events are of format 3 only, and
		// format 3 holds nothing else.
		{"format-1 expiry", change("bundle expired", func(e *Entry) { e.Format = EntryFormat }), `unknown event "bundle-expired" in format "evx-log-entry/1"`},
		{"format-2 hold", change("hold placed", func(e *Entry) { e.Format = EntryFormat2 }), `unknown event "hold-placed" in format "evx-log-entry/2"`},
		{"format-3 upload", change("upload accepted", func(e *Entry) { e.Format = EntryFormat3 }), `unsupported entry format "evx-log-entry/3" for event "upload-accepted" (it holds the events of retention only)`},
		{"format-3 reload", change("config reloaded", func(e *Entry) { e.Format = EntryFormat3 }), `unsupported entry format "evx-log-entry/3" for event "config-reloaded" (it holds the events of retention only)`},
	}
}

// Only the entries of retention's events are of format 3, which alone has
// these events and their members: a reader of format 1 or 2 reports them
// as of a format it does not know, and reads every other entry as before.
// Format 3 holds no other event.
func TestEntryFormat3Events(t *testing.T) {
	var format3 []Event
	for _, n := range retentionEntries(func(ev Event, _ string) Entry { return Entry{Event: ev} }) {
		format3 = append(format3, n.entry.Event)
	}
	if len(format3) != 12 {
		t.Fatalf("%d events of retention, want 12", len(format3))
	}
	for _, n := range testEntries(t) {
		data := string(mustMarshal(t, &n.entry))
		format := jsonMember(t, []byte(data), "format")
		is3 := slices.Contains(format3, n.entry.Event)
		if is3 != (format == EntryFormat3) || is3 != (formatOf(n.entry.Event) == EntryFormat3) {
			t.Errorf("%s: format %s", n.name, format)
			continue
		}
		e := n.entry
		if !is3 {
			// Format 3 does not hold the events of formats 1 and 2.
			e.Format = EntryFormat3
			if _, err := e.MarshalCanonical(); !errors.Is(err, ErrUnsupportedFormat) {
				t.Errorf("%s in format 3: %v, want an unsupported format", n.name, err)
			}
			if _, err := ParseEntry([]byte(strings.Replace(data, format, EntryFormat3, 1))); !errors.Is(err, ErrUnsupportedFormat) {
				t.Errorf("%s read as format 3: %v, want an unsupported format", n.name, err)
			}
			continue
		}
		for _, old := range []string{EntryFormat, EntryFormat2} {
			e.Format = old
			if _, err := e.MarshalCanonical(); !errors.Is(err, ErrUnknownEvent) {
				t.Errorf("%s in format %s: %v, want an unknown event", n.name, old, err)
			}
			if _, err := ParseEntry([]byte(strings.Replace(data, EntryFormat3, old, 1))); !errors.Is(err, ErrUnknownEvent) {
				t.Errorf("%s read as format %s: %v, want an unknown event", n.name, old, err)
			}
		}
	}
}

// A reader of formats 1 and 2 only, as evx was before format 3, reports
// every entry of retention as of an unsupported format, not as corrupt.
func TestEntryFormat3UnknownToOlderReaders(t *testing.T) {
	for _, n := range testEntries(t) {
		if formatOf(n.entry.Event) != EntryFormat3 {
			continue
		}
		data := mustMarshal(t, &n.entry)
		if err := olderReader(data); !errors.Is(err, ErrUnsupportedFormat) {
			t.Errorf("%s: %v, want an unsupported format", n.name, err)
		}
	}
}

// olderReader is the first step of reading an entry (docs/audit.md 3.2)
// as a reader of formats 1 and 2 takes it.
func olderReader(data []byte) error {
	f := jsonMemberString(string(data), "format")
	if f != EntryFormat && f != EntryFormat2 {
		return ErrUnsupportedFormat
	}
	_, err := ParseEntry(data)
	return err
}

// The largest entries of retention's events stay under the bound.
func TestEntrySizeBoundRetention(t *testing.T) {
	quotes := func(n int) string { return "x" + strings.Repeat(`"`, n-1) }
	operator := UnitActor("ABCDEFGHIJKLMNOP/" + strings.Repeat("o", 63))
	for _, ev := range []Event{EventHoldPlaced, EventRecallDeclined, EventRecallApplied} {
		e := Entry{Time: entryTime, Gateway: "ABCDEFGHIJKLMNOP", Event: ev, Peer: "QRSTUVWXYZABCDEF",
			BundleID: testBundleID, EnvelopeSHA256: digest("e"), Purpose: "mutual-legal-assistance", Handling: "H1",
			LegalBasis: quotes(maxTextLength), PayloadSHA256: digest("p"), PayloadSize: 1 << 40}
		switch ev {
		case EventHoldPlaced:
			e.Actor, e.Peer, e.Reason, e.Reference = operator, "", quotes(MaxReasonLength), quotes(MaxReferenceLength)
		case EventRecallDeclined:
			e.Actor, e.Code, e.Reason = PeerActor(e.Peer), strings.Repeat("a", maxCodeLength), quotes(MaxReasonLength)
		case EventRecallApplied:
			e.Actor, e.RetainUntil = PeerActor(e.Peer), entryTime
		}
		data := mustMarshal(t, &e)
		if len(data) > maxEntryJSON {
			t.Errorf("the largest %s entry has %d bytes; the limit is %d", e.Event, len(data), maxEntryJSON)
		}
		t.Logf("largest %s entry: %d bytes", e.Event, len(data))
	}
}
