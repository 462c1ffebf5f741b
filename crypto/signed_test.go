package crypto

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestReceiptSignVerify(t *testing.T) {
	k, err := GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := GenerateSigningKey()
	env := &Envelope{BundleID: NewBundleID(), PayloadSHA256: [32]byte{1, 2, 3}}
	r := NewReceipt(env, "DE", "FR", time.Date(2026, 11, 27, 12, 0, 0, 5, time.UTC))
	s, err := k.SignReceipt(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifyReceipt(s, k.Public())
	if err != nil {
		t.Fatal(err)
	}
	if *got != r {
		t.Errorf("verified receipt %+v, want %+v", got, r)
	}
	if _, err := VerifyReceipt(s, other.Public()); !errors.Is(err, ErrBadSignature) {
		t.Errorf("receipt verified with another gateway's key: %v", err)
	}
	tampered := &Signed{Body: bytes.Replace(s.Body, []byte(`"FR"`), []byte(`"XX"`), 1), Signature: s.Signature}
	if _, err := VerifyReceipt(tampered, k.Public()); !errors.Is(err, ErrBadSignature) {
		t.Errorf("tampered receipt: %v", err)
	}
	// A directory signature must never pass as a receipt, even over the
	// same bytes: the contexts differ.
	d, err := k.SignDirectory(Directory{Format: DirectoryFormat, Gateway: "FR"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyReceipt(&Signed{Body: d.Body, Signature: d.Signature}, k.Public()); !errors.Is(err, ErrBadSignature) {
		t.Errorf("directory signature accepted as a receipt: %v", err)
	}
}

func TestDirectorySignVerify(t *testing.T) {
	k, _ := GenerateSigningKey()
	d := Directory{Format: DirectoryFormat, Gateway: "FR", Issued: "2026-11-27T12:00:00Z",
		Units: []DirectoryEntry{{Unit: "FR/prosecutor", Role: "recipient", AgeRecipient: "age1pq1x"}}}
	s, err := k.SignDirectory(d)
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifyDirectory(s, k.Public(), "FR")
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := got.Lookup("FR/prosecutor"); !ok || e.AgeRecipient != "age1pq1x" {
		t.Errorf("lookup after verify: %+v %v", e, ok)
	}
	if _, ok := got.Lookup("FR/judge"); ok {
		t.Error("lookup of an absent unit succeeded")
	}
	if _, err := VerifyDirectory(s, k.Public(), "DE"); err == nil || !strings.Contains(err.Error(), `issued by "FR"`) {
		t.Errorf("directory of FR accepted as DE's: %v", err)
	}
}

func TestSigningKeyFile(t *testing.T) {
	k, _ := GenerateSigningKey()
	text, _ := k.MarshalText()
	back, err := ParseSigningKeyFile(text)
	if err != nil {
		t.Fatal(err)
	}
	if back.Public() != k.Public() {
		t.Error("signing key changed in a round trip")
	}
	// A unit key file (evx keygen) serves as a gateway signing key too.
	uk, _ := GenerateUnitKey("")
	ukText, _ := uk.MarshalText()
	fromUnit, err := ParseSigningKeyFile(ukText)
	if err != nil {
		t.Fatal(err)
	}
	if fromUnit.Public() != FormatSigningKey(uk.SigningPublicKey()) {
		t.Error("signing key taken from a unit key file differs")
	}
	for name, bad := range map[string]string{
		"empty":     "",
		"two keys":  string(text) + string(text),
		"garbage":   "hello\n",
		"bad value": "evx-signing-secret-key: ed25519:AAAA\n",
	} {
		if _, err := ParseSigningKeyFile([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestPKIIdentities(t *testing.T) {
	ca, err := NewCA("DE", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.Issue(CertRequest{CommonName: "DE/forensics", URIs: []string{UnitURI("DE/forensics")}, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	if u, err := UnitFromCert(c.Leaf); err != nil || u != "DE/forensics" {
		t.Errorf("UnitFromCert = %q, %v", u, err)
	}
	g, err := ca.Issue(CertRequest{URIs: []string{"evx://gateway/DE"}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := UnitFromCert(g.Leaf); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("gateway certificate as a unit: %v", err)
	}
	bad, err := ca.Issue(CertRequest{URIs: []string{UnitURI("../etc")}, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := UnitFromCert(bad.Leaf); err == nil {
		t.Error("malformed unit id accepted")
	}
	if _, err := c.Leaf.Verify(x509VerifyOptions(ca)); err != nil {
		t.Errorf("issued certificate does not chain to its CA: %v", err)
	}
}

func x509VerifyOptions(ca *CA) x509.VerifyOptions {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return x509.VerifyOptions{Roots: p, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
}

// signRaw signs body as it is, as a hostile or broken gateway could.
func signRaw(k *SigningKey, context string, body string) *Signed {
	return &Signed{Body: []byte(body), Signature: ed25519.Sign(k.key, append([]byte(context), body...))}
}

func TestSignedDocumentErrorsNameTheDocument(t *testing.T) {
	k, _ := GenerateSigningKey()
	other, _ := GenerateSigningKey()
	r, err := k.SignReceipt(NewReceipt(&Envelope{BundleID: NewBundleID()}, "DE", "FR", time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	d, err := k.SignDirectory(Directory{Format: DirectoryFormat, Gateway: "FR"})
	if err != nil {
		t.Fatal(err)
	}
	short := &Signed{Body: r.Body, Signature: r.Signature[:10]}
	tests := []struct {
		name   string
		verify func() error
		want   string
		bad    bool // errors.Is(err, ErrBadSignature)
	}{
		{"receipt under another key", func() error { _, err := VerifyReceipt(r, other.Public()); return err },
			"receipt: signature does not verify under " + other.Public(), true},
		{"truncated receipt signature", func() error { _, err := VerifyReceipt(short, k.Public()); return err },
			"receipt: signature of 10 bytes, want 64, cannot verify under " + k.Public(), true},
		{"directory under another key", func() error { _, err := VerifyDirectory(d, other.Public(), "FR"); return err },
			"unit directory of FR: signature does not verify under " + other.Public(), true},
		{"directory signature as a receipt", func() error { _, err := VerifyReceipt(d, k.Public()); return err },
			"receipt: signature does not verify under " + k.Public(), true},
		{"missing receipt", func() error { _, err := VerifyReceipt(nil, k.Public()); return err },
			"receipt: missing", false},
		{"missing directory", func() error { _, err := VerifyDirectory(nil, k.Public(), "DE"); return err },
			"unit directory of DE: missing", false},
		{"malformed signer key", func() error { _, err := VerifyDirectory(d, "ed25519:AAAA", "FR"); return err },
			`unit directory of FR: malformed signing key "ed25519:AAAA"`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.verify()
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to start with %q", err, tt.want)
			}
			if errors.Is(err, ErrBadSignature) != tt.bad {
				t.Errorf("errors.Is(%v, ErrBadSignature) = %v, want %v", err, !tt.bad, tt.bad)
			}
		})
	}
}

func TestSignedDocumentsWithRepeatedMembers(t *testing.T) {
	k, _ := GenerateSigningKey()
	id := NewBundleID()
	receipt := `"format":"evx-receipt/1","payload_sha256":"00","received_at":"2026-11-27T12:00:00Z","receiver":"FR","sender":"DE"`
	for name, body := range map[string]string{
		"repeated bundle id":    `{"bundle_id":"` + id + `",` + receipt + `,"bundle_id":"` + NewBundleID() + `"}`,
		"name in another case":  `{"bundle_id":"` + id + `",` + receipt + `,"Receiver":"XX"}`,
		"escaped repeated name": `{"bundle_id":"` + id + `",` + receipt + `,"\u0072eceiver":"XX"}`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := VerifyReceipt(signRaw(k, receiptContext, body), k.Public())
			if err == nil || !strings.Contains(err.Error(), "receipt: malformed body: member") {
				t.Fatalf("err = %v, want a refusal of the repeated member", err)
			}
		})
	}
	good := `{"bundle_id":"` + id + `",` + receipt + `}`
	if _, err := VerifyReceipt(signRaw(k, receiptContext, good), k.Public()); err != nil {
		t.Fatalf("receipt without repeated members: %v", err)
	}
	dir := `{"format":"evx-directory/1","gateway":"FR","issued":"2026-11-27T12:00:00Z","units":[` +
		`{"unit":"FR/prosecutor","role":"recipient","age_recipient":"age1pq1a","age_recipient":"age1pq1b"}]}`
	if _, err := VerifyDirectory(signRaw(k, directoryContext, dir), k.Public(), "FR"); err == nil || !strings.Contains(err.Error(), `unit directory of FR: malformed body: member "age_recipient"`) {
		t.Fatalf("directory with an entry repeating a member: %v", err)
	}
}

func TestCheckUniqueMembers(t *testing.T) {
	for _, ok := range []string{
		`{}`, `[]`, `"x"`, `1e999`, `{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]}`,
		`{"a":{"b":1},"b":{"b":1}}`, `[{"a":1},{"a":1}]`, `{"a":"a","b":"a"}`, `{"":1,"x":{"":2}}`,
	} {
		if err := CheckUniqueMembers([]byte(ok)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{
		`{"a":1,"a":1}`, `{"a":1,"b":2,"a":3}`, `{"x":{"a":1,"a":2}}`, `[1,{"a":[{"b":1,"b":2}]}]`,
		`{"a":1,"A":2}`, `{"k":1,"\u212a":2}`, `{"s":1,"\u017f":2}`, `{"a":1,"\u0061":2}`, `{"":1,"":2}`,
		`{"a":{},"a":[]}`,
		// Invalid JSON is refused too.
		`{"a":1`, `{"a" 1}`, `{1:2}`, `[1,]`,
	} {
		if err := CheckUniqueMembers([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}
