package transfer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"evx/crypto"

	"go.uber.org/zap"
)

// issueRawURIs returns a gateway certificate issued by ca whose subject
// alternative names are exactly the given URI texts, which crypto/x509
// would otherwise normalise on the way in. ok is false if crypto/x509
// itself refuses such a certificate.
func issueRawURIs(t *testing.T, ca *crypto.CA, uris ...string) (cert tls.Certificate, ok bool) {
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
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:    serial,
		Subject:         pkix.Name{CommonName: "gateway"},
		NotBefore:       time.Now().Add(-time.Hour),
		NotAfter:        time.Now().Add(time.Hour),
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: san}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Logf("crypto/x509 refuses to make a certificate with %q: %v", uris, err)
		return tls.Certificate{}, false
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Logf("crypto/x509 refuses to parse a certificate with %q: %v", uris, err)
		return tls.Certificate{}, false
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, true
}

// badGatewayIdentities are certificates' URI SANs that must not identify
// gateway DE.
var badGatewayIdentities = [][]string{
	{"EVX://gateway/DE"},
	{"Evx://gateway/DE"},
	{"evx://GATEWAY/DE"},
	{"evx://Gateway/DE"},
	{"evx://de@gateway/DE"},
	{"evx://:@gateway/DE"},
	{"evx://gateway:4433/DE"},
	{"evx://gateway:/DE"},
	{"evx://gateway/DE?"},
	{"evx://gateway/DE?peer=FR"},
	{"evx://gateway/DE#"},
	{"evx://gateway/DE#FR"},
	{"evx://gateway/DE/"},
	{"evx://gateway//DE"},
	{"evx://gateway/./DE"},
	{"evx://gateway/FR/../DE"},
	{"evx://gateway/%44E"},
	{"evx://gateway/D%45"},
	{"evx://gateway/de"},
	{"evx://gateway/"},
	{"evx://gateway"},
	{"evx:gateway/DE"},
	{"evx:/gateway/DE"},
	{"evx:///DE"},
	{"evx://unit/DE/forensics"},
	{},
	{"https://gateway/DE"},
	{"evx://gateway/DE", "evx://unit/DE/forensics"},
	{"evx://unit/DE/forensics", "evx://gateway/DE"},
	{"evx://gateway/DE", "evx://gateway/DE"},
	{"evx://gateway/DE", "evx://gateway/FR"},
	{"evx://gateway/DE", "EVX://gateway/FR"},
	{"evx://gateway/DE", "evx:whatever"},
}

func TestGatewayIDStrict(t *testing.T) {
	w := newWorld(t)
	for _, ok := range [][]string{{"evx://gateway/DE"}, {"https://de.example/", "evx://gateway/DE", "urn:example:evx"}} {
		c, _ := issueRawURIs(t, w.caDE, ok...)
		if id, err := gatewayID(c.Leaf); err != nil || id != "DE" {
			t.Errorf("%q: gatewayID = %q, %v; want DE", ok, id, err)
		}
	}
	for _, bad := range badGatewayIdentities {
		c, ok := issueRawURIs(t, w.caDE, bad...)
		if !ok {
			continue
		}
		if id, err := gatewayID(c.Leaf); err == nil {
			t.Errorf("%q: accepted as gateway %q", bad, id)
		}
	}
}

// TestHandshakeRefusesLooseIdentities presents each variant, issued by the
// right CA, in real handshakes: as DE's client certificate to FR, and as
// FR's server certificate to DE.
func TestHandshakeRefusesLooseIdentities(t *testing.T) {
	w := newWorld(t)
	refused := make(chan string, 1)
	recv := &memReceiver{id: "FR", sign: w.signFR, got: map[string][]byte{}, rcpt: map[string]*crypto.Signed{}}
	srv := serve(t, ServerConfig{ID: "FR", Certificate: w.certFR,
		PeerCAs: map[string]*x509.CertPool{"DE": w.poolDE}, Receiver: recv, Logger: zap.NewNop(),
		OnRefuse: func(stage, code string, remote net.Addr) {
			// A refused handshake names where it came from: loopback.
			if ua, ok := remote.(*net.UDPAddr); !ok || !ua.IP.IsLoopback() {
				stage = fmt.Sprintf("%s from %v", stage, remote)
			}
			refused <- stage + " " + code
		},
	})
	for _, bad := range badGatewayIdentities {
		cert, ok := issueRawURIs(t, w.caDE, bad...)
		if !ok {
			continue
		}
		c := newTestClient(t, "DE", cert)
		// The client's side of the handshake completes before the
		// server has checked its certificate: an exchange tells.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.FetchDirectory(ctx, w.peerFR(srv))
		cancel()
		if err == nil {
			t.Errorf("%q: FR accepted DE's handshake", bad)
			continue
		}
		// The server calls OnRefuse before its alert ends the handshake.
		if got := <-refused; got != "handshake bad-identity" {
			t.Errorf("%q: refusal %q, want a bad-identity handshake refusal", bad, got)
		}
	}

	// The same from the client's side: FR presenting a loose identity.
	for _, bad := range [][]string{{"EVX://gateway/FR"}, {"evx://gateway/FR", "evx://unit/FR/prosecutor"}, {"evx://gateway/FR/"}} {
		cert, ok := issueRawURIs(t, w.caFR, bad...)
		if !ok {
			t.Fatalf("%q: certificate refused by crypto/x509", bad)
		}
		fr := serve(t, ServerConfig{ID: "FR", Certificate: cert,
			PeerCAs: map[string]*x509.CertPool{"DE": w.poolDE}, Receiver: recv, Logger: zap.NewNop()})
		c := newTestClient(t, "DE", w.certDE)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.Connect(ctx, w.peerFR(fr))
		cancel()
		var he *HandshakeError
		if err == nil || !errors.As(err, &he) && !strings.Contains(err.Error(), "bad-identity") {
			t.Errorf("%q: DE's dial: err = %v, want a bad-identity refusal", bad, err)
		}
	}
}

func TestGatewayIDFromURIStrict(t *testing.T) {
	u, _ := url.Parse("evx://gateway/DE")
	if id, ok := GatewayIDFromURI(u); !ok || id != "DE" {
		t.Errorf("GatewayIDFromURI(%v) = %q, %v", u, id, ok)
	}
	for _, bad := range badGatewayIdentities {
		if len(bad) != 1 {
			continue
		}
		u, err := url.Parse(bad[0])
		if err != nil {
			continue
		}
		// A parsed URL has lost its scheme's case and an empty
		// fragment: only the certificate's text tells (gatewayID).
		if strings.HasPrefix(bad[0], "EVX:") || strings.HasPrefix(bad[0], "Evx:") || strings.HasSuffix(bad[0], "#") {
			continue
		}
		if id, ok := GatewayIDFromURI(u); ok {
			t.Errorf("GatewayIDFromURI(%q) = %q, accepted", bad[0], id)
		}
	}
	if _, ok := GatewayIDFromURI(nil); ok {
		t.Error("nil URL accepted")
	}
}
