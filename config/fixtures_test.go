package config

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"evx/crypto"
)

// writeFixtures writes a valid file at every path g refers to: CAs, a
// gateway certificate issued by tls.ca, a signing key file, units' public
// keys, credentials. It is how testdata/valid was made (go test -update)
// and how the example configuration is given real files.
func writeFixtures(t testing.TB, g *Gateway) {
	t.Helper()
	var ca *x509.Certificate
	var caKey *ecdsa.PrivateKey
	var leafKey *ecdsa.PrivateKey
	for _, f := range g.pathFields() {
		p := *f.path
		if p == "" {
			continue
		}
		if f.kind == dirPath {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		var data []byte
		switch f.kind {
		case caFile, rootsFile:
			cert, key, der := newCert(t, "evx test CA "+f.field, nil, nil, nil)
			if f.field == "tls.ca" {
				ca, caKey = cert, key
			}
			data = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		case certFile:
			var der []byte
			san := &url.URL{Scheme: "evx", Host: "gateway", Path: "/" + g.ID}
			_, leafKey, der = newCert(t, "evx gateway "+g.ID, ca, caKey, san)
			data = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		case tlsKeyFile:
			der, err := x509.MarshalPKCS8PrivateKey(leafKey)
			if err != nil {
				t.Fatal(err)
			}
			data = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		case signingKeyFile:
			k, err := crypto.GenerateSigningKey()
			if err != nil {
				t.Fatal(err)
			}
			data, _ = k.MarshalText()
		case masterKeyFile:
			var b bytes.Buffer
			if err := crypto.GenerateMasterKey(&b); err != nil {
				t.Fatal(err)
			}
			data = b.Bytes()
		case publicKeyFile:
			k, err := crypto.GenerateUnitKey(f.user.Identity)
			if err != nil {
				t.Fatal(err)
			}
			data, _ = k.Public().MarshalText()
		case secretFile:
			b := make([]byte, 20)
			rand.Read(b)
			data = []byte(hex.EncodeToString(b) + "\n")
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// newCert makes a CA certificate (parent nil) or a leaf issued by parent.
func newCert(t testing.TB, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, san *url.URL) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		// Fixtures are committed; they must outlive the repository.
		NotAfter: time.Date(2125, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	signer, signerKey := tmpl, key
	if parent == nil {
		tmpl.IsCA = true
		tmpl.BasicConstraintsValid = true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		tmpl.URIs = []*url.URL{san}
		signer, signerKey = parent, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key, der
}
