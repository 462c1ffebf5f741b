package crypto

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// testRecall returns a sender's key, an envelope it signed and a request
// to shorten its retention to 30 days after fixedNow, made at fixedNow.
func testRecall(t testing.TB) (*UnitKey, *Envelope, RecallRequest) {
	t.Helper()
	k := newTestKey(t, "DE/forensics")
	env := testEnvelope(t)
	env.Sender = Party{Unit: k.Unit, Key: FormatSigningKey(k.SigningPublicKey())}
	r, err := NewRecallRequest(env, fixedNow().Add(30*24*time.Hour), fixedNow(), "case closed")
	if err != nil {
		t.Fatal(err)
	}
	return k, env, r
}

func TestRecallSignVerify(t *testing.T) {
	k, env, r := testRecall(t)
	if r.IsRecall() {
		t.Error("a shortening to a later date is taken for a recall")
	}
	s, err := k.SignRecall(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"bundle_id":"0123456789abcdef0123456789abcdef","envelope_sha256":"` + r.EnvelopeSHA256 +
		`","format":"evx-recall/1","reason":"case closed","requested":"2026-03-14T15:09:26Z","retain_until":"2026-04-13T15:09:26Z","unit":"DE/forensics"}`
	if string(s.Body) != want {
		t.Errorf("request body\n%s\nwant\n%s", s.Body, want)
	}
	got, err := VerifyRecall(s, env.Sender.Key)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*got, r) {
		t.Errorf("verified request %+v, want %+v", got, r)
	}
	if err := got.CheckBundle(env); err != nil {
		t.Errorf("CheckBundle of its own bundle: %v", err)
	}
	if p, err := ParseRecallBody(s.Body); err != nil || !reflect.DeepEqual(p, got) {
		t.Errorf("ParseRecallBody = %+v, %v", p, err)
	}

	// Another unit's key, even of the same unit name, does not verify.
	other := newTestKey(t, "DE/forensics")
	forged, err := other.SignRecall(r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyRecall(forged, env.Sender.Key); !errors.Is(err, ErrBadSignature) || !strings.HasPrefix(err.Error(), "recall: ") {
		t.Errorf("request signed by another key: %v", err)
	}
	tampered := &Signed{Body: bytes.Replace(s.Body, []byte("2026-04-13"), []byte("2026-04-12"), 1), Signature: s.Signature}
	if _, err := VerifyRecall(tampered, env.Sender.Key); !errors.Is(err, ErrBadSignature) {
		t.Errorf("tampered request: %v", err)
	}
	// The envelope signature's context differs: a recall signature is
	// never an envelope's, nor the reverse.
	envSig := k.sign(SignedMessage(s.Body))
	if _, err := VerifyRecall(&Signed{Body: s.Body, Signature: envSig}, env.Sender.Key); !errors.Is(err, ErrBadSignature) {
		t.Errorf("an envelope-context signature accepted as a recall: %v", err)
	}
	if err := VerifySignature(env, s.Body, s.Signature); !errors.Is(err, ErrBadSignature) {
		t.Errorf("a recall signature accepted as an envelope's: %v", err)
	}
	// A key that names another unit refuses to sign.
	if _, err := newTestKey(t, "DE/lab").SignRecall(r); err == nil || !strings.Contains(err.Error(), "the key of unit DE/lab cannot sign a request of unit DE/forensics") {
		t.Errorf("SignRecall with another unit's key: %v", err)
	}
	if _, err := VerifyRecall(nil, env.Sender.Key); err == nil {
		t.Error("a missing request verified")
	}
}

func TestRecallProper(t *testing.T) {
	_, env, _ := testRecall(t)
	at := fixedNow().Add(time.Hour + 500*time.Millisecond)
	r, err := NewRecallRequest(env, at, at, "")
	if err != nil {
		t.Fatal(err)
	}
	if !r.IsRecall() || !r.RetainUntil.Equal(fixedNow().Add(time.Hour)) {
		t.Errorf("recall %+v: IsRecall %v; want whole seconds and a recall", r, r.IsRecall())
	}
}

func TestRecallCheckBundle(t *testing.T) {
	_, env, r := testRecall(t)
	otherEnv := *env
	otherEnv.LegalBasis = "another legal basis"
	otherID := *env
	otherID.BundleID = NewBundleID()
	otherSender := *env
	otherSender.Sender.Unit = "DE/lab"
	longer := r
	longer.RetainUntil = env.RetainUntil.Add(time.Second)
	same := r
	same.RetainUntil = env.RetainUntil
	if err := same.CheckBundle(env); err != nil {
		t.Errorf("a request for the envelope's own retain-until: %v", err)
	}
	for name, tt := range map[string]struct {
		r    RecallRequest
		env  *Envelope
		want string
	}{
		"other envelope": {r, &otherEnv, "is for envelope SHA-256"},
		"other bundle":   {r, &otherID, "recall is for bundle 0123456789abcdef0123456789abcdef, not"},
		"other sender":   {r, &otherSender, `is made by "DE/forensics", not by its sender "DE/lab"`},
		"longer":         {longer, env, "after the envelope's 2026-06-12T15:09:26Z: a recall only shortens"},
	} {
		if err := tt.r.CheckBundle(tt.env); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, tt.want)
		}
	}
}

func TestRecallInvalid(t *testing.T) {
	k, env, good := testRecall(t)
	for name, tt := range map[string]struct {
		change func(r *RecallRequest)
		want   string
	}{
		"unknown format":           {func(r *RecallRequest) { r.Format = "evx-recall/2" }, `unsupported format "evx-recall/2"`},
		"bad bundle id":            {func(r *RecallRequest) { r.BundleID = "../x" }, `malformed bundle id "../x"`},
		"no unit":                  {func(r *RecallRequest) { r.Unit = "" }, `malformed unit id ""`},
		"gateway as unit":          {func(r *RecallRequest) { r.Unit = "DE" }, `malformed unit id "DE"`},
		"upper-case digest":        {func(r *RecallRequest) { r.EnvelopeSHA256 = strings.ToUpper(r.EnvelopeSHA256) }, "envelope_sha256: malformed digest"},
		"retain-until before":      {func(r *RecallRequest) { r.RetainUntil = r.Requested.Add(-time.Second) }, "retain_until 2026-03-14T15:09:25Z is before requested 2026-03-14T15:09:26Z"},
		"fractional retain-until":  {func(r *RecallRequest) { r.RetainUntil = r.RetainUntil.Add(time.Millisecond) }, "retain_until must be set, in whole seconds"},
		"no requested":             {func(r *RecallRequest) { r.Requested = time.Time{} }, "requested must be set"},
		"reason too long":          {func(r *RecallRequest) { r.Reason = strings.Repeat("x", 257) }, "reason is 257 bytes long, over the limit of 256"},
		"reason with a line break": {func(r *RecallRequest) { r.Reason = "a\nb" }, "non-printable character"},
		"reason with spaces":       {func(r *RecallRequest) { r.Reason = " a" }, "leading or trailing spaces"},
		"year 10000":               {func(r *RecallRequest) { r.RetainUntil = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, "retain_until must be set"},
	} {
		t.Run(name, func(t *testing.T) {
			r := good
			tt.change(&r)
			if _, err := k.SignRecall(r); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("SignRecall: %v, want an error containing %q", err, tt.want)
			}
			if name == "fractional retain-until" {
				return // the wire form has whole seconds only
			}
			// Signed anyway, by a broken or hostile unit: refused.
			body, err := canonicalJSON(r.wire())
			if err != nil {
				t.Fatal(err)
			}
			s := &Signed{Body: body, Signature: k.sign(append([]byte(recallContext), body...))}
			if _, err := VerifyRecall(s, env.Sender.Key); err == nil || !strings.HasPrefix(err.Error(), "recall: ") {
				t.Fatalf("VerifyRecall: %v, want a refusal", err)
			}
		})
	}
	if _, err := NewRecallRequest(&Envelope{BundleID: NewBundleID()}, fixedNow(), fixedNow(), ""); err == nil {
		t.Error("NewRecallRequest of an invalid envelope succeeded")
	}
}

// signedRecall signs body with k's signing key as it is, as a hostile
// unit could.
func signedRecall(k *UnitKey, body string) *Signed {
	return &Signed{Body: []byte(body), Signature: ed25519.Sign(k.signing, append([]byte(recallContext), body...))}
}

func TestVerifyRecallOneEncoding(t *testing.T) {
	k, env, r := testRecall(t)
	s, err := k.SignRecall(r)
	if err != nil {
		t.Fatal(err)
	}
	body := string(s.Body)
	for name, bad := range map[string]string{
		"white space":       strings.Replace(body, `,"format"`, `, "format"`, 1),
		"members reordered": `{"format":"evx-recall/1",` + strings.Replace(body[1:], `"format":"evx-recall/1",`, "", 1),
		"escaped character": strings.Replace(body, `"DE/forensics"`, `"DE\/forensics"`, 1),
		"unknown member":    strings.Replace(body, `"unit"`, `"extra":1,"unit"`, 1),
		"repeated member":   strings.Replace(body, `"reason":"case closed"`, `"reason":"case closed","reason":"x"`, 1),
		"member in caps":    strings.Replace(body, `"reason":"case closed"`, `"reason":"case closed","Reason":"x"`, 1),
		"empty reason":      strings.Replace(body, `"reason":"case closed"`, `"reason":""`, 1),
		"local time":        strings.Replace(body, `"2026-03-14T15:09:26Z"`, `"2026-03-14T16:09:26+01:00"`, 1),
		"fractional time":   strings.Replace(body, `"2026-03-14T15:09:26Z"`, `"2026-03-14T15:09:26.5Z"`, 1),
		"too large":         strings.Replace(body, `"format"`, `"`+strings.Repeat("x", MaxRecallBodySize)+`":1,"format"`, 1),
		"data after":        body + `{}`,
		"null":              `null`,
		"an array":          `[]`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := VerifyRecall(signedRecall(k, bad), env.Sender.Key); err == nil || !strings.HasPrefix(err.Error(), "recall: ") {
				t.Errorf("VerifyRecall: %v, want a refusal", err)
			}
			if _, err := ParseRecallBody([]byte(bad)); err == nil {
				t.Error("ParseRecallBody accepted it")
			}
		})
	}
}

func TestRecallAckSignVerify(t *testing.T) {
	k, _, r := testRecall(t)
	req, err := k.SignRecall(r)
	if err != nil {
		t.Fatal(err)
	}
	gw := testSigningKey()
	at := time.Date(2026, 3, 14, 15, 9, 27, 5, time.UTC)
	a, err := NewRecallAck("FR", req, &r, true, "", "", r.RetainUntil, at)
	if err != nil {
		t.Fatal(err)
	}
	s, err := gw.SignRecallAck(a)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"applied":true,"at":"2026-03-14T15:09:27.000000005Z","bundle_id":"0123456789abcdef0123456789abcdef","format":"evx-recall-ack/1","gateway":"FR",` +
		`"request_sha256":"` + RequestSHA256(req) + `","retain_until":"2026-04-13T15:09:26Z","unit":"DE/forensics"}`
	if string(s.Body) != want {
		t.Errorf("ack body\n%s\nwant\n%s", s.Body, want)
	}
	got, err := VerifyRecallAck(s, gw.Public())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*got, a) {
		t.Errorf("verified ack %+v, want %+v", got, a)
	}
	if err := got.CheckRequest(req, &r, "FR"); err != nil {
		t.Errorf("CheckRequest of the request answered: %v", err)
	}
	if p, err := ParseRecallAckBody(s.Body); err != nil || !reflect.DeepEqual(p, got) {
		t.Errorf("ParseRecallAckBody = %+v, %v", p, err)
	}

	other, _ := GenerateSigningKey()
	if _, err := VerifyRecallAck(s, other.Public()); !errors.Is(err, ErrBadSignature) || !strings.HasPrefix(err.Error(), "recall ack: ") {
		t.Errorf("ack verified with another gateway's key: %v", err)
	}
	tampered := &Signed{Body: bytes.Replace(s.Body, []byte(`"applied":true`), []byte(`"applied":fals`), 1), Signature: s.Signature}
	if _, err := VerifyRecallAck(tampered, gw.Public()); !errors.Is(err, ErrBadSignature) {
		t.Errorf("tampered ack: %v", err)
	}
	// A receipt's signature over the same bytes is not an ack's.
	if _, err := VerifyRecallAck(signRaw(gw, receiptContext, string(s.Body)), gw.Public()); !errors.Is(err, ErrBadSignature) {
		t.Errorf("a receipt-context signature accepted as an ack: %v", err)
	}
	// Nor is a unit's recall signature a gateway's ack, or the reverse.
	if _, err := VerifyRecall(&Signed{Body: s.Body, Signature: ed25519.Sign(gw.key, append([]byte(recallContext), s.Body...))}, gw.Public()); err == nil {
		t.Error("an ack body accepted as a recall")
	}

	// A refusal: not applied, with a code and a reason.
	held, err := NewRecallAck("FR", req, &r, false, "legal-hold", "held for case FR-2026-17", fixedNow().Add(90*24*time.Hour), at)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := gw.SignRecallAck(held)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(hs.Body, []byte(`"applied":false,"at"`)) || !bytes.Contains(hs.Body, []byte(`"code":"legal-hold"`)) {
		t.Errorf("refusal body %s", hs.Body)
	}
	if got, err := VerifyRecallAck(hs, gw.Public()); err != nil || got.Applied || got.Code != "legal-hold" || got.Reason != "held for case FR-2026-17" {
		t.Errorf("refusal verified as %+v, %v", got, err)
	} else if err := got.CheckRequest(req, &r, "FR"); err != nil {
		t.Errorf("CheckRequest of a refusal that keeps a later retain-until: %v", err)
	}
}

func TestRecallAckCheckRequest(t *testing.T) {
	k, env, r := testRecall(t)
	req, _ := k.SignRecall(r)
	a, err := NewRecallAck("FR", req, &r, true, "", "", r.RetainUntil, fixedNow())
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := NewRecallRequest(env, r.RetainUntil, r.Requested.Add(time.Second), r.Reason)
	req2, _ := k.SignRecall(r2)
	otherUnit := r
	otherUnit.Unit = "DE/lab"
	otherBundle := r
	otherBundle.BundleID = NewBundleID()
	longer := a
	longer.RetainUntil = r.RetainUntil.Add(time.Second)
	// A recall that arrives after the moment it asks for ends the
	// retention when it is applied, in the second of the ack.
	late := a
	late.At = r.RetainUntil.Add(2*time.Second + time.Millisecond)
	late.RetainUntil = r.RetainUntil.Add(3 * time.Second)
	if err := late.CheckRequest(req, &r, "FR"); err != nil {
		t.Errorf("an ack applied on arrival, after the request's retain-until: %v", err)
	}
	tooLate := late
	tooLate.RetainUntil = r.RetainUntil.Add(4 * time.Second)
	for name, tt := range map[string]struct {
		a       RecallAck
		req     *Signed
		r       *RecallRequest
		gateway string
		want    string
	}{
		"another request": {a, req2, &r2, "FR", "is for request SHA-256"},
		"another gateway": {a, req, &r, "NL", `recall ack from NL is for gateway "FR", not "NL"`},
		"another unit":    {a, req, &otherUnit, "FR", `is for unit "DE/forensics", not "DE/lab"`},
		"another bundle":  {a, req, &otherBundle, "FR", "is for bundle"},
		"applied, longer": {longer, req, &r, "FR", "says the request was applied, but leaves retain-until 2026-04-13T15:09:27Z in force"},
		"applied, later":  {tooLate, req, &r, "FR", "leaves retain-until 2026-04-13T15:09:30Z in force"},
	} {
		if err := tt.a.CheckRequest(tt.req, tt.r, tt.gateway); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, tt.want)
		}
	}
}

func TestRecallAckInvalid(t *testing.T) {
	k, _, r := testRecall(t)
	req, _ := k.SignRecall(r)
	gw := testSigningKey()
	good, err := NewRecallAck("FR", req, &r, false, "legal-hold", "held", r.RetainUntil, fixedNow())
	if err != nil {
		t.Fatal(err)
	}
	for name, tt := range map[string]struct {
		change func(a *RecallAck)
		want   string
	}{
		"unknown format":       {func(a *RecallAck) { a.Format = "evx-recall-ack/2" }, "unsupported format"},
		"bad gateway":          {func(a *RecallAck) { a.Gateway = "fr" }, `malformed gateway id "fr"`},
		"bad unit":             {func(a *RecallAck) { a.Unit = "FR" }, `malformed unit id "FR"`},
		"bad digest":           {func(a *RecallAck) { a.RequestSHA256 = "00" }, "request_sha256: malformed digest"},
		"applied with a code":  {func(a *RecallAck) { a.Applied = true }, "an applied recall has no code or reason"},
		"refused without code": {func(a *RecallAck) { a.Code = "" }, "a recall not applied needs a code"},
		"code in caps":         {func(a *RecallAck) { a.Code = "Legal-Hold" }, `malformed code "Legal-Hold"`},
		"code too long":        {func(a *RecallAck) { a.Code = strings.Repeat("a", 65) }, "malformed code"},
		"reason too long":      {func(a *RecallAck) { a.Reason = strings.Repeat("x", 257) }, "over the limit of 256"},
		"reason with a tab":    {func(a *RecallAck) { a.Reason = "a\tb" }, "non-printable character"},
		"fractional until":     {func(a *RecallAck) { a.RetainUntil = a.RetainUntil.Add(time.Nanosecond) }, "retain_until must be set, in whole seconds"},
		"no time":              {func(a *RecallAck) { a.At = time.Time{} }, "at must be set"},
	} {
		t.Run(name, func(t *testing.T) {
			a := good
			tt.change(&a)
			if _, err := gw.SignRecallAck(a); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("SignRecallAck: %v, want an error containing %q", err, tt.want)
			}
			if name == "fractional until" {
				return // the wire form has whole seconds only
			}
			body, err := canonicalJSON(a.wire())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := VerifyRecallAck(signRaw(gw, recallAckContext, string(body)), gw.Public()); err == nil || !strings.HasPrefix(err.Error(), "recall ack: ") {
				t.Fatalf("VerifyRecallAck: %v, want a refusal", err)
			}
		})
	}
	s, _ := gw.SignRecallAck(good)
	body := string(s.Body)
	for name, bad := range map[string]string{
		"white space":     strings.Replace(body, `,"format"`, `, "format"`, 1),
		"unknown member":  strings.Replace(body, `"unit"`, `"extra":1,"unit"`, 1),
		"repeated member": strings.Replace(body, `"applied":false`, `"applied":false,"applied":true`, 1),
		"applied as text": strings.Replace(body, `"applied":false`, `"applied":"false"`, 1),
		"local time":      strings.Replace(body, `"at":"2026-03-14T15:09:26Z"`, `"at":"2026-03-14T16:09:26+01:00"`, 1),
		"too large":       strings.Replace(body, `"format"`, `"`+strings.Repeat("x", MaxRecallAckBodySize)+`":1,"format"`, 1),
	} {
		if bad == body {
			t.Fatalf("%s: the replacement changed nothing in %s", name, body)
		}
		if _, err := VerifyRecallAck(signRaw(gw, recallAckContext, bad), gw.Public()); err == nil {
			t.Errorf("%s: VerifyRecallAck accepted it", name)
		}
		if _, err := ParseRecallAckBody([]byte(bad)); err == nil {
			t.Errorf("%s: ParseRecallAckBody accepted it", name)
		}
	}
}
