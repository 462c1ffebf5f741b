package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"
)

// ConnError is a request that got no answer from the gateway: the gateway
// could not be reached or the connection broke, or one side of the TLS
// handshake refused the other's certificate.
type ConnError struct {
	// Gateway is the API's base URL.
	Gateway string
	// Refused tells which side refused the TLS handshake, if one did.
	Refused Side
	// Alert is the TLS alert the gateway refused with, such as
	// "unknown_ca", when Refused is RefusedByGateway.
	Alert string
	// Err is the underlying error.
	Err error

	reason string
}

// Side is the side of a TLS handshake that refused the other's
// certificate.
type Side string

const (
	// RefusedByGateway: the gateway did not accept this client's
	// certificate, and said so with a TLS alert.
	RefusedByGateway Side = "gateway"
	// RefusedByClient: this client did not accept the gateway's
	// certificate.
	RefusedByClient Side = "client"
)

func (e *ConnError) Error() string {
	switch e.Refused {
	case RefusedByGateway, RefusedByClient:
		return e.reason
	}
	return fmt.Sprintf("cannot reach the gateway at %s: %v", e.Gateway, e.Err)
}

func (e *ConnError) Unwrap() error { return e.Err }

// Temporary reports whether the same request may succeed later unchanged:
// true when the gateway was not reached or the connection broke, false
// when a certificate was refused, which only a change of certificate or
// configuration mends.
func (e *ConnError) Temporary() bool { return e.Refused == "" }

// Certificate alerts a gateway sends when it refuses a client certificate
// (RFC 8446 section 6.2), by the names the RFC gives them.
var certAlerts = []struct {
	code uint8
	name string
}{
	{42, "bad_certificate"},
	{43, "unsupported_certificate"},
	{44, "certificate_revoked"},
	{45, "certificate_expired"},
	{46, "certificate_unknown"},
	{48, "unknown_ca"},
	{49, "access_denied"},
	{116, "certificate_required"},
}

// unreachable explains a request that got no answer: which gateway could
// not be reached, or, when the TLS handshake failed on a certificate,
// which side refused which certificate and why. It leaves out the request
// URL that net/http puts in its errors.
func (c *Client) unreachable(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	e := &ConnError{Gateway: c.base, Err: err}
	var (
		opErr    *net.OpError
		verifErr *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		// crypto/tls reports a received alert as a net.OpError whose
		// Err is its unexported alert type, with the text of
		// tls.AlertError of the same code.
		for _, a := range certAlerts {
			if opErr.Err.Error() == tls.AlertError(a.code).Error() {
				e.Refused, e.Alert = RefusedByGateway, a.name
			}
		}
		if e.Refused == "" {
			return e // another alert: not about certificates
		}
		e.reason = fmt.Sprintf("the gateway at %s was reached, but refused the client certificate%s (TLS alert %s from the gateway): %s",
			c.base, c.inFile(c.certFile), e.Alert, c.whyRefused(e.Alert))
	case errors.As(err, &verifErr):
		e.Refused = RefusedByClient
		e.reason = fmt.Sprintf("the gateway at %s was reached, but its certificate failed verification on this side%s: %s",
			c.base, c.against(), Printable(whyNotVerified(verifErr.Err)))
	}
	return e
}

func (c *Client) inFile(path string) string {
	if path == "" {
		return ""
	}
	return " in " + path
}

func (c *Client) against() string {
	if c.caFile == "" {
		return ""
	}
	return " against the CA in " + c.caFile
}

// whyRefused explains a certificate alert from the gateway, with what the
// client knows of its own certificate.
func (c *Client) whyRefused(alert string) string {
	var why string
	switch alert {
	case "unknown_ca":
		why = "it was not issued by the CA the gateway trusts (its country's CA)"
	case "certificate_expired":
		why = "it has expired"
	case "certificate_required":
		why = "no client certificate was sent"
	default:
		why = "the gateway does not accept it (check its CA, its validity and that it is for client authentication)"
	}
	if c.leaf != nil {
		switch now := time.Now(); {
		case now.After(c.leaf.NotAfter):
			why += fmt.Sprintf("; it was valid until %s", c.leaf.NotAfter.UTC().Format(time.RFC3339))
		case now.Before(c.leaf.NotBefore):
			why += fmt.Sprintf("; it is valid only from %s", c.leaf.NotBefore.UTC().Format(time.RFC3339))
		}
	}
	return why
}

// whyNotVerified explains why the gateway's certificate was not accepted.
// Its text quotes names from that certificate: the caller makes it
// printable.
func whyNotVerified(err error) string {
	var (
		unknown  x509.UnknownAuthorityError
		invalid  x509.CertificateInvalidError
		hostname x509.HostnameError
	)
	switch {
	case errors.As(err, &unknown):
		return fmt.Sprintf("it was not issued by that CA (%v)", err)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return fmt.Sprintf("it has expired or is not yet valid (%v)", err)
	case errors.As(err, &hostname):
		return fmt.Sprintf("it is not valid for the host of the API URL (%v)", err)
	}
	return err.Error()
}
