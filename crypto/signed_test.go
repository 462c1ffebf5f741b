package crypto

import (
	"bytes"
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
