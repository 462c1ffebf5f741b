package crypto

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// testEnvelope returns a valid envelope with every optional field set.
func testEnvelope(t testing.TB) *Envelope {
	t.Helper()
	sender := newTestKey(t, "DE/forensics")
	recipient := newTestKey(t, "FR/prosecutor")
	return &Envelope{
		Format:         EnvelopeFormat,
		BundleID:       "0123456789abcdef0123456789abcdef",
		Created:        fixedNow(),
		RetainUntil:    fixedNow().Add(90 * 24 * time.Hour),
		Sender:         Party{Unit: sender.Unit, Key: FormatSigningKey(sender.SigningPublicKey())},
		Recipients:     []Party{{Unit: recipient.Unit, Key: recipient.Recipient().String()}},
		Purpose:        "mutual-legal-assistance",
		Handling:       "H1",
		TLP:            "TLP:AMBER+STRICT",
		LegalBasis:     `Art. 18 "Budapest" Convention \ § <&>`,
		Case:           "Aktenzeichen 4711/26 – Müller",
		PayloadSize:    123456,
		PayloadSHA256:  sha256.Sum256([]byte("payload")),
		ManifestSHA256: sha256.Sum256([]byte("manifest")),
	}
}

func mustMarshal(t testing.TB, e *Envelope) []byte {
	t.Helper()
	data, err := e.MarshalCanonical()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestEnvelopeRoundTrip(t *testing.T) {
	e := testEnvelope(t)
	data := mustMarshal(t, e)
	got, err := ParseEnvelope(data)
	if err != nil {
		t.Fatalf("ParseEnvelope: %v\n%s", err, data)
	}
	if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", e) {
		t.Errorf("round trip changed the envelope:\n got %+v\nwant %+v", got, e)
	}
	if again := mustMarshal(t, got); !bytes.Equal(again, data) {
		t.Errorf("re-marshalled envelope differs:\n%s\n%s", again, data)
	}

	// The canonical form: keys sorted at every level, no white space, no
	// HTML escaping, no trailing newline.
	var generic map[string]any
	if err := json.Unmarshal(data, &generic); err != nil {
		t.Fatal(err)
	}
	wantPrefix := `{"bundle_id":"0123456789abcdef0123456789abcdef","case":"Aktenzeichen 4711/26 – Müller","created":"2026-03-14T15:09:26Z","format":"evx-envelope/1","handling":"H1","legal_basis":"Art. 18 \"Budapest\" Convention \\ § <&>","manifest_sha256":"`
	if !bytes.HasPrefix(data, []byte(wantPrefix)) {
		t.Errorf("canonical form changed:\n got %s\nwant prefix %s", data, wantPrefix)
	}
	if !bytes.Contains(data, []byte(`"payload":{"sha256":"`)) || !bytes.Contains(data, []byte(`,"size":123456},"purpose":"mutual-legal-assistance","recipients":[{"age_recipient":"age1pq1`)) {
		t.Errorf("canonical form of nested objects changed:\n%s", data)
	}
	if !bytes.HasSuffix(data, []byte(`"tlp":"TLP:AMBER+STRICT"}`)) {
		t.Errorf("canonical form does not end with the tlp field:\n%s", data)
	}

	// Optional fields are omitted when empty.
	e.Case, e.Sender.Unit, e.Recipients[0].Unit = "", "", ""
	data = mustMarshal(t, e)
	for _, field := range []string{`"case"`, `"unit"`} {
		if bytes.Contains(data, []byte(field)) {
			t.Errorf("empty optional field %s is present: %s", field, data)
		}
	}
	if _, err := ParseEnvelope(data); err != nil {
		t.Errorf("envelope without optional fields: %v", err)
	}
}

// reorder returns data with its top-level keys in reverse order.
func reorder(t *testing.T, data []byte) []byte {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	keys := sortedKeys(m)
	var b bytes.Buffer
	b.WriteString("{")
	for i := len(keys) - 1; i >= 0; i-- {
		fmt.Fprintf(&b, "%q:%s", keys[i], m[keys[i]])
		if i > 0 {
			b.WriteString(",")
		}
	}
	b.WriteString("}")
	return b.Bytes()
}

func TestParseEnvelopeRejectsNonCanonical(t *testing.T) {
	data := mustMarshal(t, testEnvelope(t))
	s := string(data)
	for _, tc := range []struct {
		name string
		in   string
	}{
		{"trailing newline", s + "\n"},
		{"leading space", " " + s},
		{"space after colon", strings.Replace(s, `"format":"`, `"format": "`, 1)},
		{"space after comma", strings.Replace(s, `,"handling"`, `, "handling"`, 1)},
		{"indented", func() string {
			var b bytes.Buffer
			json.Indent(&b, data, "", "  ")
			return b.String()
		}()},
		{"reordered keys", string(reorder(t, data))},
		{"duplicate key, same value", strings.Replace(s, `"handling":"H1"`, `"handling":"H1","handling":"H1"`, 1)},
		{"duplicate key, other value first", strings.Replace(s, `{"bundle_id"`, `{"purpose":"prosecution","bundle_id"`, 1)},
		{"escaped letter", strings.Replace(s, `"H1"`, `"\u00481"`, 1)},
		{"escaped slash", strings.Replace(s, `4711/26`, `4711\/26`, 1)},
		{"html escaped", strings.Replace(s, `<&>`, `\u003c\u0026\u003e`, 1)},
		{"number with exponent", strings.Replace(s, `"size":123456`, `"size":1.23456e5`, 1)},
		{"number with leading zero", strings.Replace(s, `"size":123456`, `"size":0123456`, 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.in == s {
				t.Fatal("test case did not change the envelope")
			}
			_, err := ParseEnvelope([]byte(tc.in))
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.in)
			}
			// Inputs that are valid JSON for the same envelope must be
			// refused for their form, not for some other reason.
			if json.Valid([]byte(tc.in)) && !strings.Contains(tc.name, "exponent") && err.Error() != "envelope is not in canonical form" {
				t.Errorf("got %q, want \"envelope is not in canonical form\"", err)
			}
		})
	}
}

func TestParseEnvelopeRejectsUnknownFields(t *testing.T) {
	s := string(mustMarshal(t, testEnvelope(t)))
	for _, tc := range []struct{ name, in, field string }{
		{"top level", strings.Replace(s, `{"bundle_id"`, `{"a_new_field":1,"bundle_id"`, 1), "a_new_field"},
		{"in sender", strings.Replace(s, `"sender":{`, `"sender":{"email":"x@example.org",`, 1), "email"},
		{"in payload", strings.Replace(s, `"payload":{`, `"payload":{"name":"x",`, 1), "name"},
		{"in recipient", strings.Replace(s, `"recipients":[{`, `"recipients":[{"extra":true,`, 1), "extra"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.in == s {
				t.Fatal("test case did not change the envelope")
			}
			_, err := ParseEnvelope([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), "malformed envelope") || !strings.Contains(err.Error(), `unknown field "`+tc.field+`"`) {
				t.Errorf("got %v", err)
			}
		})
	}
}

func TestEnvelopeValidation(t *testing.T) {
	many := make([]Party, MaxRecipients+1)
	for i := range many {
		many[i] = Party{Key: newTestKey(t, "").Recipient().String()}
	}
	for _, tc := range []struct {
		name   string
		mutate func(*Envelope)
		want   string
	}{
		{"unknown purpose", func(e *Envelope) { e.Purpose = "research" },
			`unknown purpose "research" (accepted: criminal-investigation, prosecution, mutual-legal-assistance, expedited-preservation, incident-response, victim-identification)`},
		{"unknown handling", func(e *Envelope) { e.Handling = "H4" },
			`unknown handling code "H4" (accepted: H0, H1, H2, H3)`},
		{"unknown TLP", func(e *Envelope) { e.TLP = "TLP:WHITE" },
			`unknown TLP label "TLP:WHITE" (accepted: TLP:RED, TLP:AMBER+STRICT, TLP:AMBER, TLP:GREEN, TLP:CLEAR)`},
		{"lower-case TLP", func(e *Envelope) { e.TLP = "tlp:red" }, `unknown TLP label "tlp:red"`},
		{"no legal basis", func(e *Envelope) { e.LegalBasis = "" }, "legal basis is required"},
		{"control character in legal basis", func(e *Envelope) { e.LegalBasis = "StPO\x07" }, "legal basis \"StPO\\a\" contains a non-printable character U+0007"},
		{"newline in case", func(e *Envelope) { e.Case = "a\nb" }, "non-printable character U+000A"},
		{"tab in case", func(e *Envelope) { e.Case = "a\tb" }, "non-printable character U+0009"},
		{"line separator in case", func(e *Envelope) { e.Case = "a\u2028b" }, "non-printable character U+2028"},
		{"invalid UTF-8", func(e *Envelope) { e.LegalBasis = "a\xffb" }, "legal basis is not valid UTF-8"},
		{"trailing space", func(e *Envelope) { e.LegalBasis = "StPO " }, "leading or trailing spaces"},
		{"long legal basis", func(e *Envelope) { e.LegalBasis = strings.Repeat("x", maxTextField+1) }, "legal basis is 257 bytes long, over the limit of 256"},
		{"too many recipients", func(e *Envelope) { e.Recipients = many }, fmt.Sprintf("%d recipients, over the limit of %d", MaxRecipients+1, MaxRecipients)},
		{"no recipients", func(e *Envelope) { e.Recipients = nil }, "no recipients"},
		{"duplicate recipient", func(e *Envelope) { e.Recipients = append(e.Recipients, e.Recipients[0]) }, "recipient 2: duplicate age recipient"},
		{"classic recipient", func(e *Envelope) {
			e.Recipients[0].Key = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
		}, "recipient 1: age recipient \"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\" is not post-quantum"},
		{"bad recipient unit", func(e *Envelope) { e.Recipients[0].Unit = "FR" }, "recipient 1: malformed unit id \"FR\""},
		{"bad sender unit", func(e *Envelope) { e.Sender.Unit = "DE/" }, "sender: malformed unit id \"DE/\""},
		{"bad sender key", func(e *Envelope) { e.Sender.Key = "ed25519:AAAA" }, "sender: malformed signing key"},
		{"format", func(e *Envelope) { e.Format = "evx-envelope/2" }, `unsupported envelope format "evx-envelope/2"`},
		{"bundle id", func(e *Envelope) { e.BundleID = strings.ToUpper(e.BundleID) }, "malformed bundle id"},
		{"fractional created", func(e *Envelope) { e.Created = e.Created.Add(time.Millisecond) }, "whole seconds"},
		{"retain before created", func(e *Envelope) { e.RetainUntil = e.Created }, "retain_until must be after created"},
		{"retain too long", func(e *Envelope) { e.RetainUntil = e.Created.Add(MaxRetention + time.Second) }, "retain_until is more than 3650 days after created"},
		{"zero payload", func(e *Envelope) { e.PayloadSize = 0 }, "payload size 0 out of range"},
		{"huge payload", func(e *Envelope) { e.PayloadSize = MaxPayloadSize + 1 }, "out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := testEnvelope(t)
			tc.mutate(e)
			_, err := e.MarshalCanonical()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("MarshalCanonical: got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestParseEnvelopeValidates checks that ParseEnvelope applies the rules of
// Validate to untrusted bytes, which MarshalCanonical would never produce.
func TestParseEnvelopeValidates(t *testing.T) {
	e := testEnvelope(t)
	s := string(mustMarshal(t, e))
	var recips []string
	for range MaxRecipients + 1 {
		recips = append(recips, `{"age_recipient":"`+newTestKey(t, "").Recipient().String()+`"}`)
	}
	manyRecipients := strings.Replace(s, `[{"age_recipient":"`+e.Recipients[0].Key+`","unit":"FR/prosecutor"}]`, "["+strings.Join(recips, ",")+"]", 1)
	for _, tc := range []struct{ name, in, want string }{
		{"unknown purpose", strings.Replace(s, `"mutual-legal-assistance"`, `"curiosity"`, 1), `invalid envelope: unknown purpose "curiosity" (accepted: criminal-investigation, prosecution,`},
		{"unknown handling", strings.Replace(s, `"H1"`, `"H9"`, 1), `unknown handling code "H9" (accepted: H0, H1, H2, H3)`},
		{"unknown TLP", strings.Replace(s, `"TLP:AMBER+STRICT"`, `"TLP:BLUE"`, 1), `unknown TLP label "TLP:BLUE" (accepted: TLP:RED,`},
		{"empty legal basis", strings.Replace(s, `"legal_basis":"Art. 18 \"Budapest\" Convention \\ § <&>"`, `"legal_basis":""`, 1), "legal basis is required"},
		{"missing legal basis", strings.Replace(s, `"legal_basis":"Art. 18 \"Budapest\" Convention \\ § <&>",`, ``, 1), "legal basis is required"},
		{"escaped control character", strings.Replace(s, `Müller"`, `Müller\u0000"`, 1), "non-printable character U+0000"},
		{"escaped newline", strings.Replace(s, `Müller"`, `Müller\n"`, 1), "non-printable character U+000A"},
		{"too many recipients", manyRecipients, fmt.Sprintf("%d recipients, over the limit of %d", MaxRecipients+1, MaxRecipients)},
		{"created not UTC", strings.Replace(s, `"2026-03-14T15:09:26Z"`, `"2026-03-14T16:09:26+01:00"`, 1), "malformed created time"},
		{"created with fraction", strings.Replace(s, `"2026-03-14T15:09:26Z"`, `"2026-03-14T15:09:26.5Z"`, 1), "whole seconds"},
		{"upper-case digest", strings.Replace(s, `"manifest_sha256":"`+fmt.Sprintf("%x", e.ManifestSHA256), `"manifest_sha256":"`+strings.ToUpper(fmt.Sprintf("%x", e.ManifestSHA256)), 1), "manifest_sha256: malformed digest"},
		{"short digest", strings.Replace(s, fmt.Sprintf("%x", e.PayloadSHA256), "abcd", 1), "payload sha256: malformed digest \"abcd\""},
		{"negative size", strings.Replace(s, `"size":123456`, `"size":-1`, 1), "payload size -1 out of range"},
		{"string size", strings.Replace(s, `"size":123456`, `"size":"123456"`, 1), "malformed envelope"},
		{"newer format", strings.Replace(strings.Replace(s, EnvelopeFormat, "evx-envelope/2", 1), `{"bundle_id"`, `{"a_new_field":1,"bundle_id"`, 1), `unsupported envelope format "evx-envelope/2" (this evx reads "evx-envelope/1")`},
		{"no format", strings.Replace(s, `"format":"evx-envelope/1",`, ``, 1), `unsupported envelope format ""`},
		{"retain too long", strings.Replace(s, `"retain_until":"2026-06-12T15:09:26Z"`, `"retain_until":"2036-06-12T15:09:26Z"`, 1), "retain_until is more than 3650 days after created"},
		{"not an object", `[]`, "malformed envelope"},
		{"empty", ``, "malformed envelope"},
		{"trailing data", s + `{}`, "data after the JSON object"},
		{"truncated", s[:len(s)/2], "malformed envelope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.in == s {
				t.Fatal("test case did not change the envelope")
			}
			_, err := ParseEnvelope([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestParseEnvelopeSizeLimit(t *testing.T) {
	data := mustMarshal(t, testEnvelope(t))
	big := append(bytes.Repeat([]byte(" "), MaxEnvelopeSize+1-len(data)), data...)
	_, err := ParseEnvelope(big)
	want := fmt.Sprintf("envelope is %d bytes, over the limit of %d", MaxEnvelopeSize+1, MaxEnvelopeSize)
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
	// An envelope with the most and longest fields stays under the limit,
	// so that the limit never refuses a valid envelope.
	e := testEnvelope(t)
	e.LegalBasis = strings.Repeat("x", maxTextField)
	e.Case = strings.Repeat("y", maxTextField)
	e.Recipients = nil
	for range MaxRecipients {
		e.Recipients = append(e.Recipients, Party{Unit: "FR/" + strings.Repeat("p", 63), Key: newTestKey(t, "").Recipient().String()})
	}
	data = mustMarshal(t, e)
	if len(data) > MaxEnvelopeSize*3/4 {
		t.Errorf("largest valid envelope is %d bytes, too close to the limit of %d", len(data), MaxEnvelopeSize)
	}
	if _, err := ParseEnvelope(data); err != nil {
		t.Errorf("largest valid envelope: %v", err)
	}
}

func TestVerifySignature(t *testing.T) {
	sender := newTestKey(t, "DE/forensics")
	e := testEnvelope(t)
	e.Sender = Party{Unit: sender.Unit, Key: FormatSigningKey(sender.SigningPublicKey())}
	data := mustMarshal(t, e)
	sig := sender.sign(SignedMessage(data))
	if err := VerifySignature(e, data, sig); err != nil {
		t.Fatalf("valid signature: %v", err)
	}
	if !bytes.HasPrefix(SignedMessage(data), []byte("evx-envelope-signature/v1\n{")) {
		t.Errorf("signed message starts %q", SignedMessage(data)[:30])
	}
	other := newTestKey(t, "DE/forensics")
	for name, tc := range map[string]struct{ env, sig []byte }{
		"changed envelope":          {bytes.Replace(data, []byte(`"H1"`), []byte(`"H0"`), 1), sig},
		"flipped signature bit":     {data, append(append([]byte{}, sig[:10]...), append([]byte{sig[10] ^ 1}, sig[11:]...)...)},
		"short signature":           {data, sig[:63]},
		"no signature":              {data, nil},
		"other key":                 {data, other.sign(SignedMessage(data))},
		"signature without context": {data, sender.sign(data)},
	} {
		if err := VerifySignature(e, tc.env, tc.sig); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: got %v, want ErrBadSignature", name, err)
		}
	}
}

func TestVocabulary(t *testing.T) {
	for _, p := range Purposes {
		if CheckPurpose(p) != nil {
			t.Errorf("purpose %q refused", p)
		}
	}
	for _, h := range HandlingCodes {
		if CheckHandling(h) != nil {
			t.Errorf("handling code %q refused", h)
		}
	}
	for _, l := range TLPLabels {
		if CheckTLP(l) != nil {
			t.Errorf("TLP label %q refused", l)
		}
	}
	if CheckHandling(DefaultHandling) != nil || CheckTLP(DefaultTLP) != nil {
		t.Error("a default is not in its vocabulary")
	}
	for in, want := range map[string]string{
		"red": "TLP:RED", "TLP:red": "TLP:RED", " amber+strict ": "TLP:AMBER+STRICT", "Clear": "TLP:CLEAR",
		"white": "white", "TLP:WHITE": "TLP:WHITE", "": "",
	} {
		if got := NormalizeTLP(in); got != want {
			t.Errorf("NormalizeTLP(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseRetention(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"90d": 90 * 24 * time.Hour, "12w": 12 * 7 * 24 * time.Hour, "36h": 36 * time.Hour,
		"1h": time.Hour, "3650d": MaxRetention, "10m": 10 * time.Minute, "30s": 30 * time.Second, "1s": time.Second,
		"315360000s": MaxRetention, "5256000m": MaxRetention, "521w": 521 * 7 * 24 * time.Hour,
	} {
		got, err := ParseRetention(in)
		if err != nil || got != want {
			t.Errorf("ParseRetention(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "90", "0d", "-1d", "1.5d", "90D", "1y", "d90", "3651d", "522w", "87601h", "99999999999999999999d",
		"0s", "315360001s", "5256001m", "090d", "+9d", "10M", "1mo", "1ms", "10 m"} {
		if _, err := ParseRetention(in); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", in)) {
			t.Errorf("ParseRetention(%q): %v", in, err)
		}
	}
}
