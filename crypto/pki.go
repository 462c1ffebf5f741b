package crypto

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
)

// CA is a country's certificate authority: it issues the certificates of its
// gateway (for peers and for its local API) and of its local users. Each
// country runs its own; there is no common root.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA makes a self-signed CA for country, valid for the given period.
func NewCA(country string, validFor time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "evx CA " + country, Country: []string{country}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validFor),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// CertRequest describes a certificate for a CA to issue.
type CertRequest struct {
	// CommonName is informational; identities are carried in URIs.
	CommonName string
	// URIs are the identities: evx://gateway/<ID> or evx://unit/<COUNTRY>/<unit>.
	URIs []string
	// DNSNames and IPs are the names the certificate serves under, for
	// the HTTPS API.
	DNSNames  []string
	IPs       []net.IP
	NotBefore time.Time
	NotAfter  time.Time
	// Server and Client select the extended key usages.
	Server, Client bool
}

// Issue returns a new key and a certificate for it, signed by ca.
func (ca *CA) Issue(req CertRequest) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: req.CommonName},
		NotBefore:    req.NotBefore,
		NotAfter:     req.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		DNSNames:     req.DNSNames,
		IPAddresses:  req.IPs,
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(365 * 24 * time.Hour)
	}
	for _, u := range req.URIs {
		parsed, err := url.Parse(u)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("malformed identity URI %q: %v", u, err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	if req.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if req.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

func randomSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// CertPEM returns the PEM encoding of a certificate.
func CertPEM(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

// KeyPEM returns the PEM encoding of a private key (PKCS #8).
func KeyPEM(key any) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// WriteFiles writes the CA's certificate and key as PEM files.
func (ca *CA) WriteFiles(certPath, keyPath string) error {
	keyPEM, err := KeyPEM(ca.Key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(certPath, CertPEM(ca.Cert), 0o644); err != nil {
		return err
	}
	return os.WriteFile(keyPath, keyPEM, 0o600)
}

// WriteCertFiles writes a certificate and its key as PEM files.
func WriteCertFiles(c tls.Certificate, certPath, keyPath string) error {
	keyPEM, err := KeyPEM(c.PrivateKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(certPath, CertPEM(c.Leaf), 0o644); err != nil {
		return err
	}
	return os.WriteFile(keyPath, keyPEM, 0o600)
}

// maxPEMFileSize bounds the certificate and key files read: a chain of a
// few certificates is a few KiB.
const maxPEMFileSize = 1 << 20

// ReadCertPool reads a PEM file of one or more CA certificates.
func ReadCertPool(path string) (*x509.CertPool, error) {
	data, err := ReadFileLimit(path, maxPEMFileSize)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%q holds no PEM certificate", path)
	}
	return pool, nil
}

// ErrNoIdentity is returned by UnitFromCert for a certificate without an
// evx://unit/ identity.
var ErrNoIdentity = errors.New("certificate carries no evx://unit/ identity")

// UnitFromCert returns the unit id named by a certificate's identity, which
// must be its only evx URI and read exactly evx://unit/<COUNTRY>/<unit>:
// no other case, user info, port, query, fragment, percent-encoding or
// trailing slash.
func UnitFromCert(cert *x509.Certificate) (string, error) {
	uris, err := IdentityURIs(cert)
	if err != nil {
		return "", err
	}
	switch {
	case len(uris) == 0:
		return "", ErrNoIdentity
	case len(uris) > 1:
		return "", fmt.Errorf("certificate %q carries %d evx identities %q, want exactly 1", cert.Subject, len(uris), uris)
	}
	id, ok := strings.CutPrefix(uris[0], unitURIPrefix)
	if !ok {
		if strings.HasPrefix(uris[0], "evx://gateway/") {
			return "", fmt.Errorf("%w: it names %q", ErrNoIdentity, uris[0])
		}
		return "", fmt.Errorf("certificate %q carries malformed identity %q, want %s<COUNTRY>/<unit>", cert.Subject, uris[0], unitURIPrefix)
	}
	// The unit id syntax admits no character that a URI would escape or
	// read as a delimiter, so the identity is exactly its canonical form.
	if err := checkUnitID(id); err != nil {
		return "", fmt.Errorf("certificate %q carries identity %q: %v", cert.Subject, uris[0], err)
	}
	return id, nil
}

const unitURIPrefix = "evx://unit/"

// UnitURI returns the URI SAN that identifies a local user's certificate.
func UnitURI(unit string) string { return unitURIPrefix + unit }

// IdentityURIs returns the certificate's URI SANs whose scheme is evx, in
// any case, as the exact text the certificate carries. crypto/x509 hands
// URIs over parsed by net/url, which lowercases the scheme and decodes a
// percent-encoded host, so that EVX://gateway/DE and evx://g%61teway/DE
// would both look like evx://gateway/DE: identities are checked on the
// text instead. Any evx URI counts, whatever follows the scheme, so that a
// certificate cannot carry a second identity in a form the checks skip.
func IdentityURIs(cert *x509.Certificate) ([]string, error) {
	var uris []string
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		// crypto/x509 parsed this extension already and refuses a second
		// one, so errors here are not expected; they are refusals all the
		// same.
		var seq asn1.RawValue
		rest, err := asn1.Unmarshal(ext.Value, &seq)
		if err != nil || len(rest) != 0 || seq.Class != asn1.ClassUniversal || seq.Tag != asn1.TagSequence || !seq.IsCompound {
			return nil, fmt.Errorf("certificate %q: malformed subject alternative names", cert.Subject)
		}
		for b := seq.Bytes; len(b) > 0; {
			var name asn1.RawValue
			if b, err = asn1.Unmarshal(b, &name); err != nil {
				return nil, fmt.Errorf("certificate %q: malformed subject alternative name: %v", cert.Subject, err)
			}
			const uniformResourceIdentifier = 6 // RFC 5280, GeneralName
			if name.Class == asn1.ClassContextSpecific && name.Tag == uniformResourceIdentifier {
				if u := string(name.Bytes); len(u) >= 4 && strings.EqualFold(u[:4], "evx:") {
					uris = append(uris, u)
				}
			}
		}
	}
	return uris, nil
}

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}
