package transfer

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"evx/crypto"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/quic-go/quic-go"
)

// ALPN is the application protocol negotiated in the TLS handshake; its
// suffix is the protocol version.
const ALPN = "evx/1"

// GatewayURI returns the URI SAN that identifies gateway id in certificates.
func GatewayURI(id string) string { return gatewayURIPrefix + id }

const gatewayURIPrefix = "evx://gateway/"

// gatewayID returns the gateway id named by the certificate's identity,
// which must be its only evx URI (crypto.IdentityURIs: a unit identity
// next to it counts too) and read exactly evx://gateway/<ID>. The text is
// compared, not the URI as net/url parses it, which would let case
// variants, user info, a port, a query, a fragment, percent-encoding or a
// trailing slash through or hide them.
func gatewayID(cert *x509.Certificate) (string, error) {
	uris, err := crypto.IdentityURIs(cert)
	if err != nil {
		return "", err
	}
	if len(uris) != 1 {
		return "", fmt.Errorf("certificate %q carries %d evx identities %q, want exactly 1", cert.Subject, len(uris), uris)
	}
	// The id syntax admits no character that a URI would escape or read
	// as a delimiter, so the identity is exactly its canonical form.
	id, ok := strings.CutPrefix(uris[0], gatewayURIPrefix)
	if !ok || !crypto.ValidGatewayID(id) {
		return "", fmt.Errorf("certificate %q carries identity %q, want %s<ID>", cert.Subject, uris[0], gatewayURIPrefix)
	}
	return id, nil
}

// GatewayIDFromURI parses an evx://gateway/<ID> URI, which must be exactly
// that: no user info, port, query, fragment or escapes, path "/<ID>". A
// parsed URL no longer shows the case its scheme was written in, nor an
// empty fragment; check certificates' identities as gatewayID does, on
// their text.
func GatewayIDFromURI(u *url.URL) (string, bool) {
	if u == nil || u.Scheme != "evx" || u.Opaque != "" || u.User != nil || u.Host != "gateway" ||
		u.RawPath != "" || u.ForceQuery || u.RawQuery != "" || u.Fragment != "" || u.RawFragment != "" {
		return "", false
	}
	id, ok := strings.CutPrefix(u.Path, "/")
	if !ok || !crypto.ValidGatewayID(id) || u.String() != GatewayURI(id) {
		return "", false
	}
	return id, true
}

// HandshakeError is a refused TLS handshake: the peer's certificate did not
// authenticate it. Reason is a fixed category, suitable as a metric label.
type HandshakeError struct {
	// Reason is unknown-peer, wrong-ca, expired, no-certificate,
	// bad-identity or wrong-peer when this side refused the peer's
	// certificate, or refused-by-peer when the peer ended the handshake
	// with a TLS alert, refusing this gateway's certificate.
	Reason string
	Err    error
}

// refusedByPeer turns err, the failure of a dial to peer, into a
// *HandshakeError if the peer ended the handshake with a TLS alert: it
// refused this gateway's certificate, which no retry changes until a
// configuration does, here or there.
func refusedByPeer(peer string, err error) error {
	var te *quic.TransportError
	if !errors.As(err, &te) || !te.Remote || !te.ErrorCode.IsCryptoError() {
		return err
	}
	return &HandshakeError{"refused-by-peer", fmt.Errorf("gateway %s ended the TLS handshake with alert %d (%w): it does not accept this gateway's certificate", peer, uint64(te.ErrorCode)-0x100, err)}
}

func (e *HandshakeError) Error() string { return fmt.Sprintf("peer refused (%s): %v", e.Reason, e.Err) }
func (e *HandshakeError) Unwrap() error { return e.Err }

// verifyPeer checks a peer's certificate chain against the CA of the peer
// it claims to be (or, when want is set, must be), for the given usage.
func verifyPeer(rawCerts [][]byte, cas map[string]*x509.CertPool, want string, usage x509.ExtKeyUsage, now time.Time) (string, error) {
	if len(rawCerts) == 0 {
		return "", &HandshakeError{"no-certificate", errors.New("the peer presented no certificate")}
	}
	certs := make([]*x509.Certificate, len(rawCerts))
	for i, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return "", &HandshakeError{"bad-identity", fmt.Errorf("malformed certificate: %v", err)}
		}
		certs[i] = c
	}
	leaf := certs[0]
	id, err := gatewayID(leaf)
	if err != nil {
		return "", &HandshakeError{"bad-identity", err}
	}
	if want != "" && id != want {
		return "", &HandshakeError{"wrong-peer", fmt.Errorf("dialled gateway %s but its certificate says %s", want, id)}
	}
	pool, ok := cas[id]
	if !ok {
		return "", &HandshakeError{"unknown-peer", fmt.Errorf("gateway %s is not a configured peer", id)}
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err = leaf.Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	if err != nil {
		var invalid x509.CertificateInvalidError
		if errors.As(err, &invalid) && invalid.Reason == x509.Expired {
			return "", &HandshakeError{"expired", fmt.Errorf("certificate of %s: %v", id, err)}
		}
		return "", &HandshakeError{"wrong-ca", fmt.Errorf("certificate claiming %s is not issued by %s's CA: %v", id, id, err)}
	}
	return id, nil
}

// serverTLS returns the TLS configuration of a gateway's peer listener: TLS
// 1.3, a client certificate required and checked against the CA of the
// peer it claims to be. onRefuse is called for every refused handshake,
// with the address it came from.
func serverTLS(cert tls.Certificate, cas map[string]*x509.CertPool, now func() time.Time, onRefuse func(net.Addr, error)) *tls.Config {
	base := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{ALPN},
		// The chain is verified in VerifyPeerCertificate against the
		// claimed peer's CA only, not against a pool of all CAs; it is
		// also called without a certificate, so that a missing one is
		// refused there and logged like any other refusal.
		ClientAuth: tls.RequestClientCert,
		// A resumed session would skip VerifyPeerCertificate, and so the
		// pinning; a handshake per connection costs little.
		SessionTicketsDisabled: true,
	}
	verify := func(remote net.Addr) func([][]byte, [][]*x509.Certificate) error {
		return func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := verifyPeer(raw, cas, "", x509.ExtKeyUsageClientAuth, now())
			if err != nil {
				onRefuse(remote, err)
			}
			return err
		}
	}
	conf := base.Clone()
	conf.VerifyPeerCertificate = verify(nil)
	// VerifyPeerCertificate is not told where the handshake comes from;
	// the ClientHello is, through the connection quic-go gives it, so
	// each handshake gets a configuration that knows.
	conf.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		var remote net.Addr
		if hello.Conn != nil {
			remote = hello.Conn.RemoteAddr()
		}
		c := base.Clone()
		c.VerifyPeerCertificate = verify(remote)
		return c, nil
	}
	return conf
}

// clientTLS returns the TLS configuration for dialling peer, pinned to that
// peer's CA and identity.
func clientTLS(cert tls.Certificate, peer string, ca *x509.CertPool, now func() time.Time, onRefuse func(error)) *tls.Config {
	cas := map[string]*x509.CertPool{peer: ca}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{ALPN},
		ServerName:   peer,
		// Standard verification wants a DNS name; gateways are named by
		// URI SANs, which VerifyPeerCertificate checks instead.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := verifyPeer(raw, cas, peer, x509.ExtKeyUsageServerAuth, now())
			if err != nil {
				onRefuse(err)
			}
			return err
		},
	}
}
