package audit

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/tlog"
)

var updateEntryVectors = flag.Bool("update-entries", false, "regenerate testdata/entries.json from the test entries")

const entryVectorsFile = "testdata/entries.json"

// entryVectors is testdata/entries.json: entries another implementation
// of the entry format (docs/audit.md) must accept, with their leaf
// hashes, and byte strings it must refuse. The errors are evx's; another
// implementation need only refuse.
type entryVectors struct {
	Description string               `json:"description"`
	Valid       []validEntryVector   `json:"valid"`
	Invalid     []invalidEntryVector `json:"invalid"`
}

type validEntryVector struct {
	Name  string `json:"name"`
	Entry string `json:"entry"` // the exact bytes
	// LeafHash is the RFC 6962 leaf hash, SHA-256(0x00 ‖ entry), in hex.
	LeafHash string `json:"leaf_hash"`
}

type invalidEntryVector struct {
	Name  string `json:"name"`
	Entry string `json:"entry"`
	Error string `json:"error"` // part of evx's error
}

// makeEntryVectors builds the vectors from the test entries.
func makeEntryVectors(t *testing.T) entryVectors {
	v := entryVectors{Description: "evx transfer log entries, formats " + EntryFormat + ", " + EntryFormat2 + " and " + EntryFormat3 +
		" (docs/audit.md): each valid entry is accepted exactly as it is and has the leaf hash given; " +
		"each invalid one is refused"}
	var upload, delivered, reload, changed, expired, hold string
	for _, n := range testEntries(t) {
		data := mustMarshal(t, &n.entry)
		h := tlog.RecordHash(data)
		v.Valid = append(v.Valid, validEntryVector{Name: n.name, Entry: string(data), LeafHash: hex.EncodeToString(h[:])})
		switch n.entry.Event {
		case EventUploadAccepted:
			upload = string(data)
		case EventDelivered:
			delivered = string(data)
		case EventConfigReloaded:
			if reload == "" {
				reload = string(data)
			}
		case EventAgreementChanged:
			if changed == "" {
				changed = string(data)
			}
		case EventBundleExpired:
			expired = string(data)
		case EventHoldPlaced:
			hold = string(data)
		}
	}
	for _, b := range nonCanonicalEntries(upload) {
		if !utf8.ValidString(b.data) {
			continue // a JSON string cannot carry it
		}
		v.Invalid = append(v.Invalid, invalidEntryVector{Name: b.name, Entry: b.data, Error: b.want})
	}
	r := func(s, old, new string) string { return strings.Replace(s, old, new, 1) }
	for _, b := range []badBytes{
		{"required member missing", r(upload, `"peer":"FR",`, ``), "upload-accepted entry needs peer"},
		{"member the event lacks", r(upload, `"peer":"FR",`, `"peer":"FR","reason":"x",`), "upload-accepted entry has no reason"},
		{"actor of the wrong kind", r(upload, `"unit:DE/forensics"`, `"gateway"`), `actor "gateway" of upload-accepted entry`},
		{"receipt of another peer", r(r(delivered, `"peer":"FR"`, `"peer":"NL"`), `"peer:FR"`, `"peer:NL"`), `is not for bundle`},
		{"receipt body changed", r(delivered, `"body":"eyJ`, `"body":"eyK`), `receipt: malformed body`},
		{"purpose outside the vocabulary", r(upload, `mutual-legal-assistance`, `curiosity`), `unknown purpose "curiosity"`},
		{"agreement event in format 1", r(reload, EntryFormat2, EntryFormat), `unknown event "config-reloaded" in format "evx-log-entry/1"`},
		{"format-1 event in format 2", r(upload, EntryFormat, EntryFormat2), `unsupported entry format "evx-log-entry/2" for event "upload-accepted"`},
		{"no lines of changes", r(reload, `"changes":[`+jsonArrayBody(reload, "changes")+`]`, `"changes":[]`), "not in canonical form"},
		{"changes null", r(changed, `"changes":[`+jsonArrayBody(changed, "changes")+`]`, `"changes":null`), "agreement-changed entry needs changes"},
		{"too many lines of changes", r(reload, `"changes":[`, `"changes":[`+strings.Repeat(`"peer IT added",`, MaxChanges)), "28 lines of changes, over the limit of 24"},
		{"empty line of changes", r(reload, `"changes":[`, `"changes":["",`), "line 1 of changes is empty"},
		{"line of changes with a path", r(reload, `"peer IT added"`, `"tls.cert_file → /etc/evx/gateway.pem"`), "looks like it contains a file path"},
		{"line of changes as a number", r(reload, `"peer IT added"`, `42`), "malformed entry"},
		{"old agreement version out of range", r(changed, `"old_agreement_version":3`, `"old_agreement_version":2147483648`), "old agreement version 2147483648 out of range"},
		{"old agreement version zero", r(changed, `"old_agreement_version":3`, `"old_agreement_version":0`), "not in canonical form"},
		{"old config digest all zeros", r(reload, `"old_config_sha256":"`+jsonMemberString(reload, "old_config_sha256"), `"old_config_sha256":"`+strings.Repeat("0", 64)), "malformed old_config_sha256"},
		{"retention event in format 1", r(expired, EntryFormat3, EntryFormat), `unknown event "bundle-expired" in format "evx-log-entry/1"`},
		{"retention event in format 2", r(hold, EntryFormat3, EntryFormat2), `unknown event "hold-placed" in format "evx-log-entry/2"`},
		{"format-1 event in format 3", r(upload, EntryFormat, EntryFormat3), `unsupported entry format "evx-log-entry/3" for event "upload-accepted"`},
		{"format-2 event in format 3", r(reload, EntryFormat2, EntryFormat3), `unsupported entry format "evx-log-entry/3" for event "config-reloaded"`},
		{"expiry without retain_until", r(expired, `"retain_until":"`+jsonMemberString(expired, "retain_until")+`",`, ``), "bundle-expired entry needs retain_until"},
		{"expiry with a reference", r(expired, `"retain_until"`, `"reference":"4711","retain_until"`), "bundle-expired entry has no reference"},
		{"expiry by a unit", r(expired, `"actor":"gateway"`, `"actor":"unit:DE/operator"`), `actor "unit:DE/operator" of bundle-expired entry is not gateway`},
		{"expiry outbound", r(expired, `"direction":"inbound"`, `"direction":"outbound"`), "not in canonical form"},
		{"retain_until without milliseconds", r(expired, `"retain_until":"2026-12-03T12:00:00.000Z"`, `"retain_until":"2026-12-03T12:00:00Z"`), "malformed retain_until"},
		{"retain_until in 1999", r(expired, `"retain_until":"2026-12-03T12:00:00.000Z"`, `"retain_until":"1999-12-03T12:00:00.000Z"`), "retain_until 1999-12-03T12:00:00Z is not between the years 2000 and 9999"},
		{"retain_until empty", r(expired, `"retain_until":"2026-12-03T12:00:00.000Z"`, `"retain_until":""`), "bundle-expired entry needs retain_until"},
		{"hold without a reference", r(hold, `"reference":"`+jsonMemberString(hold, "reference")+`",`, ``), "hold-placed entry needs reference"},
		{"hold with a peer", r(hold, `"purpose"`, `"peer":"FR","purpose"`), "hold-placed entry has no peer"},
		{"hold with a direction", r(hold, `"envelope_sha256"`, `"direction":"inbound","envelope_sha256"`), "not in canonical form"},
		{"hold by the gateway", r(hold, `"actor":"unit:DE/operator"`, `"actor":"gateway"`), `actor "gateway" of hold-placed entry is not unit:<unit id>`},
		{"reference too long", r(hold, `"reference":"`, `"reference":"`+strings.Repeat("x", MaxReferenceLength)), "over the limit of 64"},
		{"reference with a path", r(hold, `"reference":"`, `"reference":"~/`), "looks like it contains a file path"},
	} {
		v.Invalid = append(v.Invalid, invalidEntryVector{Name: b.name, Entry: b.data, Error: b.want})
	}
	return v
}

// jsonArrayBody returns what is between the brackets of the array member
// name of the JSON object data.
func jsonArrayBody(data, name string) string {
	var m map[string]json.RawMessage
	json.Unmarshal([]byte(data), &m)
	return strings.TrimSuffix(strings.TrimPrefix(string(m[name]), "["), "]")
}

func TestEntryVectors(t *testing.T) {
	want := makeEntryVectors(t)
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(want); err != nil {
		t.Fatal(err)
	}
	if *updateEntryVectors {
		if err := os.WriteFile(entryVectorsFile, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(entryVectorsFile)
	if err != nil {
		t.Fatalf("%v (go test ./audit -run TestEntryVectors -update-entries writes it)", err)
	}
	var got entryVectors
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	// The committed vectors are checked as they are, whatever the code
	// makes today: an entry once valid stays valid, with its leaf hash.
	for _, v := range got.Valid {
		e, err := ParseEntry([]byte(v.Entry))
		if err != nil {
			t.Errorf("valid vector %q: %v", v.Name, err)
			continue
		}
		if again := mustMarshal(t, e); string(again) != v.Entry {
			t.Errorf("valid vector %q re-encodes to other bytes:\n%s", v.Name, again)
		}
		if h := tlog.RecordHash([]byte(v.Entry)); hex.EncodeToString(h[:]) != v.LeafHash {
			t.Errorf("valid vector %q: leaf hash %x, the vector says %s", v.Name, h, v.LeafHash)
		}
	}
	for _, v := range got.Invalid {
		if _, err := ParseEntry([]byte(v.Entry)); err == nil || !strings.Contains(err.Error(), v.Error) {
			t.Errorf("invalid vector %q: %v, want an error containing %q", v.Name, err, v.Error)
		}
	}
	if !bytes.Equal(data, b.Bytes()) {
		t.Errorf("%s differs from what the test entries make: if the change is intended, run go test ./audit -run TestEntryVectors -update-entries", entryVectorsFile)
	}
}
