package crypto

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"strings"
	"testing"
	"time"
)

// issueRawURIs returns a certificate issued by ca whose subject alternative
// names are exactly the given URI texts, which crypto/x509 would otherwise
// normalise on the way in. It returns nil if crypto/x509 itself refuses
// such a certificate.
func issueRawURIs(t *testing.T, ca *CA, uris ...string) *x509.Certificate {
	t.Helper()
	var names []asn1.RawValue
	for _, u := range uris {
		names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(u)})
	}
	san, err := asn1.Marshal(names)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:    randomSerial(),
		Subject:         pkix.Name{CommonName: "test"},
		NotBefore:       time.Now().Add(-time.Hour),
		NotAfter:        time.Now().Add(time.Hour),
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		ExtraExtensions: []pkix.Extension{{Id: oidSubjectAltName, Value: san}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Logf("crypto/x509 refuses to make a certificate with %q: %v", uris, err)
		return nil
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Logf("crypto/x509 refuses to parse a certificate with %q: %v", uris, err)
		return nil
	}
	return cert
}

func TestUnitFromCertStrict(t *testing.T) {
	ca, err := NewCA("DE", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, ok := range [][]string{
		{"evx://unit/DE/forensics"},
		{"https://example.org/forensics", "evx://unit/DE/forensics"},
		{"evx://unit/DE/forensics", "urn:example:evx"},
	} {
		c := issueRawURIs(t, ca, ok...)
		if u, err := UnitFromCert(c); err != nil || u != "DE/forensics" {
			t.Errorf("%q: UnitFromCert = %q, %v; want DE/forensics", ok, u, err)
		}
	}
	for _, none := range [][]string{{}, {"https://example.org/"}, {"evx://gateway/DE"}} {
		if _, err := UnitFromCert(issueRawURIs(t, ca, none...)); !errors.Is(err, ErrNoIdentity) {
			t.Errorf("%q: err = %v, want ErrNoIdentity", none, err)
		}
	}
	for _, bad := range [][]string{
		{"EVX://unit/DE/forensics"},
		{"Evx://unit/DE/forensics"},
		{"evx://UNIT/DE/forensics"},
		{"evx://Unit/DE/forensics"},
		{"evx://user@unit/DE/forensics"},
		{"evx://:@unit/DE/forensics"},
		{"evx://unit:443/DE/forensics"},
		{"evx://unit:/DE/forensics"},
		{"evx://unit/DE/forensics?"},
		{"evx://unit/DE/forensics?role=admin"},
		{"evx://unit/DE/forensics#"},
		{"evx://unit/DE/forensics#x"},
		{"evx://unit/DE/forensics/"},
		{"evx://unit//DE/forensics"},
		{"evx://unit/DE//forensics"},
		{"evx://unit/DE/forensics/x"},
		{"evx://unit/./DE/forensics"},
		{"evx://unit/DE/../FR/forensics"},
		{"evx://unit/DE/%66orensics"},
		{"evx://unit/DE%2Fforensics"},
		{"evx://%75nit/DE/forensics"},
		{"evx://unit/de/forensics"},
		{"evx://unit/DE"},
		{"evx://unit/"},
		{"evx:unit/DE/forensics"},
		{"evx:/unit/DE/forensics"},
		{"evx:///DE/forensics"},
		{"evx://unit/DE/forensics", "evx://gateway/DE"},
		{"evx://gateway/DE", "evx://unit/DE/forensics"},
		{"evx://unit/DE/forensics", "evx://unit/DE/forensics"},
		{"evx://unit/DE/forensics", "evx://unit/DE/prosecutor"},
		{"evx://unit/DE/forensics", "EVX://unit/DE/prosecutor"},
		{"evx://unit/DE/forensics", "evx:whatever"},
	} {
		c := issueRawURIs(t, ca, bad...)
		if c == nil {
			continue
		}
		u, err := UnitFromCert(c)
		if err == nil {
			t.Errorf("%q: accepted as unit %q", bad, u)
			continue
		}
		if errors.Is(err, ErrNoIdentity) && len(bad) == 1 && strings.HasPrefix(bad[0], "evx://unit/") {
			t.Errorf("%q: err = %v, want a malformed identity rather than none", bad, err)
		}
	}
}

func TestIdentityURIsKeepsTheText(t *testing.T) {
	ca, err := NewCA("DE", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := issueRawURIs(t, ca, "https://example.org/", "EVX://gateway/DE", "evx://unit/DE/x")
	got, err := IdentityURIs(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"EVX://gateway/DE", "evx://unit/DE/x"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("IdentityURIs = %q, want %q", got, want)
	}
	// crypto/x509's own view has lost the difference, which is why
	// identities are checked on the text.
	t.Logf("crypto/x509 reads %q as %q", got[0], c.URIs[1])
}
