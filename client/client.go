package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"evx/api"
	"evx/crypto"
)

// Client is a local user's client of the gateway API.
type Client struct {
	base string
	http *http.Client
	// leaf is the client certificate; certFile and caFile name the files
	// it and the trusted CA came from, when known, for error messages.
	leaf             *x509.Certificate
	certFile, caFile string
}

// New returns a client of the API at base (https://host:port),
// authenticating with cert and trusting the gateway certificate issued by
// the CA in roots (roots.RootCAs; nil means the system's roots).
func New(base string, cert tls.Certificate, roots *tls.Config) *Client {
	conf := roots.Clone()
	if conf == nil {
		conf = &tls.Config{}
	}
	// The certificate is sent whatever CAs the gateway asks for: one from
	// the wrong CA is then refused with alert unknown_ca, which says what
	// is wrong, rather than not sent at all (certificate_required).
	conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	conf.MinVersion = tls.VersionTLS13
	leaf := cert.Leaf
	if leaf == nil && len(cert.Certificate) > 0 {
		leaf, _ = x509.ParseCertificate(cert.Certificate[0])
	}
	return &Client{base: base, leaf: leaf, http: &http.Client{Transport: &http.Transport{
		TLSClientConfig:     conf,
		TLSHandshakeTimeout: 10 * time.Second,
		// The gateway answers an upload only once the payload is stored.
		ResponseHeaderTimeout: 10 * time.Minute,
	}}}
}

// Load returns a client of the API at base that authenticates with the
// client certificate and key in certFile and keyFile and trusts the gateway
// certificate issued by the CA in caFile, as a profile names them. Its
// errors name those files: a certificate the gateway refuses is reported
// with the file it came from.
func Load(base, certFile, keyFile, caFile string) (*Client, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("client certificate %s: %w", certFile, err)
	}
	roots, err := crypto.ReadCertPool(caFile)
	if err != nil {
		return nil, err
	}
	return New(base, cert, &tls.Config{RootCAs: roots}).WithFiles(certFile, caFile), nil
}

// WithFiles returns a client like c whose errors name certFile and caFile
// as the files the client certificate and the trusted CA came from, for a
// client made with [New] from files, as [Load] does.
func (c *Client) WithFiles(certFile, caFile string) *Client {
	n := *c
	n.certFile, n.caFile = certFile, caFile
	return &n
}

// Gateway returns the base URL of the API.
func (c *Client) Gateway() string { return c.base }

// Certificate returns the client certificate the client authenticates
// with.
func (c *Client) Certificate() *x509.Certificate { return c.leaf }

// send sends req. A request without a body that finds its new connection
// closed before it was written is sent once more: in TLS 1.3 the gateway's
// verdict on the client certificate comes after the client's side of the
// handshake, and the transport may see the connection closed before it
// reads the alert that says why; the second attempt reads it (or
// succeeds).
func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil && errors.Is(err, net.ErrClosed) && req.Body == nil && req.Context().Err() == nil {
		resp, err = c.http.Do(req)
	}
	return resp, err
}

func (c *Client) do(req *http.Request, out any) error {
	resp, err := c.send(req)
	if err != nil {
		return c.unreachable(err)
	}
	defer resp.Body.Close()
	return decodeAnswer(resp, out)
}

// maxMessage bounds the message of a refusal that is passed on: it is
// for people, and a hostile gateway could send a megabyte of it.
const maxMessage = 1000

func decodeAnswer(resp *http.Response, out any) error {
	if resp.StatusCode != http.StatusOK {
		var e api.ErrorBody
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(body, &e) == nil && e.Error != nil {
			// The message is shown on a terminal: it must not drive it.
			e.Error.Code = api.Code(Printable(truncate(string(e.Error.Code), 100)))
			if e.Error.Code == api.CodeInvalidConfig {
				// Names the file, line and field of each error.
				e.Error.Message = PrintableLines(truncate(e.Error.Message, maxConfigMessage))
			} else {
				e.Error.Message = Printable(truncate(e.Error.Message, maxMessage))
			}
			e.Error.HTTPStatus = resp.StatusCode
			return e.Error
		}
		return fmt.Errorf("gateway answered %s", Printable(truncate(resp.Status, 100)))
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(out)
}

// truncate cuts s to at most n bytes, at a character boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xc0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}

func (c *Client) get(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+path, nil)
	if err != nil {
		return err
	}
	return c.do(req, out)
}

// WhoAmI asks the gateway who the client is.
func (c *Client) WhoAmI(ctx context.Context) (*api.WhoAmI, error) {
	var w api.WhoAmI
	return &w, c.get(ctx, "/v1/whoami", &w)
}

// Connection is what [Client.Check] learned about the connection to the
// gateway.
type Connection struct {
	// WhoAmI is who the gateway takes the client to be.
	WhoAmI api.WhoAmI
	// GatewayCert is the certificate the gateway presented; TLS verified
	// it against the CA the client trusts, for the host of the API URL.
	GatewayCert *x509.Certificate
	// TLSVersion is the version of TLS in use, such as tls.VersionTLS13.
	TLSVersion uint16
}

// Check connects to the gateway and asks who the client is: it tells
// whether the gateway is reachable, whether each side accepts the other's
// certificate, and which identity and role the gateway gives the client.
func (c *Client) Check(ctx context.Context) (*Connection, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+"/v1/whoami", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.send(req)
	if err != nil {
		return nil, c.unreachable(err)
	}
	defer resp.Body.Close()
	if resp.TLS == nil || len(resp.TLS.VerifiedChains) == 0 {
		return nil, fmt.Errorf("the gateway at %s answered without a verified TLS connection: the API URL must start with https://", c.base)
	}
	conn := &Connection{GatewayCert: resp.TLS.PeerCertificates[0], TLSVersion: resp.TLS.Version}
	if err := decodeAnswer(resp, &conn.WhoAmI); err != nil {
		return nil, err
	}
	return conn, nil
}

// Lookup resolves a unit id, such as FR/prosecutor, to its directory entry.
func (c *Client) Lookup(ctx context.Context, unit string) (*crypto.DirectoryEntry, error) {
	var e crypto.DirectoryEntry
	if err := c.get(ctx, "/v1/directory/"+unit, &e); err != nil {
		return nil, err
	}
	if e.Unit != unit {
		return nil, fmt.Errorf("%w: asked for unit %s, the gateway answered with %q", ErrBadAnswer, unit, Printable(e.Unit))
	}
	return &e, nil
}

// Peers returns the peer gateways of the client's gateway, with their
// signing keys, as its configuration names them.
func (c *Client) Peers(ctx context.Context) ([]api.Peer, error) {
	var peers []api.Peer
	return peers, c.get(ctx, "/v1/peers", &peers)
}

// ErrBadAnswer is wrapped by the errors of answers that do not fit the
// request: another bundle's envelope, a payload longer than its envelope
// declares. The gateway, or something between, is faulty or hostile.
var ErrBadAnswer = errors.New("the gateway's answer does not fit the request")

// Upload submits a sealed bundle: its envelope, signature and payload.
func (c *Client) Upload(ctx context.Context, envJSON, sig []byte, payload io.Reader, size int64, mode api.DeliveryMode) (*api.OutboxStatus, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", c.base+"/v1/bundles?deliver="+url.QueryEscape(string(mode)), payload)
	if err != nil {
		return nil, err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set(api.HeaderEnvelope, base64.StdEncoding.EncodeToString(envJSON))
	req.Header.Set(api.HeaderSignature, base64.StdEncoding.EncodeToString(sig))
	var s api.OutboxStatus
	return &s, c.do(req, &s)
}

// OutboxStatus returns the delivery state of a submitted bundle.
func (c *Client) OutboxStatus(ctx context.Context, id string) (*api.OutboxStatus, error) {
	var s api.OutboxStatus
	return &s, c.get(ctx, "/v1/outbox/"+url.PathEscape(id), &s)
}

// OutboxStatusWait is OutboxStatus, except that the gateway answers for a
// queued bundle only once its delivery ends or after wait (at most a
// minute).
func (c *Client) OutboxStatusWait(ctx context.Context, id string, wait time.Duration) (*api.OutboxStatus, error) {
	var s api.OutboxStatus
	return &s, c.get(ctx, "/v1/outbox/"+url.PathEscape(id)+"?wait="+url.QueryEscape(wait.String()), &s)
}

// Outbox lists submitted bundles, newest first: a submitter's own, or, for
// an operator, all. state, if not empty, selects one delivery state; limit,
// if positive, is the most bundles listed (the gateway's default
// otherwise).
func (c *Client) Outbox(ctx context.Context, state api.State, limit int) (*api.OutboxList, error) {
	q := url.Values{}
	if state != "" {
		q.Set("state", string(state))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	path := "/v1/outbox"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var l api.OutboxList
	return &l, c.get(ctx, path, &l)
}

// Inbox lists the bundles addressed to the client.
func (c *Client) Inbox(ctx context.Context) ([]api.InboxEntry, error) {
	var list []api.InboxEntry
	return list, c.get(ctx, "/v1/inbox", &list)
}

// InboxEntry returns one received bundle's entry, with its envelope.
func (c *Client) InboxEntry(ctx context.Context, id string) (*api.InboxEntry, error) {
	var e api.InboxEntry
	return &e, c.get(ctx, "/v1/inbox/"+url.PathEscape(id), &e)
}

// Download writes a received bundle's payload to w and returns its size,
// at most crypto.MaxPayloadSize bytes. Pull uses [Client.Payload], which
// holds the gateway to the envelope's size.
func (c *Client) Download(ctx context.Context, id string, w io.Writer) (int64, error) {
	return c.download(ctx, id, crypto.MaxPayloadSize, false, w)
}

// Payload writes a received bundle's payload to w: exactly size bytes, the
// envelope's payload.size. A gateway that announces another length, or
// sends more or fewer bytes, is refused, and no more than size bytes are
// ever written to w.
func (c *Client) Payload(ctx context.Context, id string, size int64, w io.Writer) error {
	_, err := c.download(ctx, id, size, true, w)
	return err
}

// download copies at most limit bytes of the payload to w; with exact, it
// must be limit bytes. A longer payload is refused before a byte beyond
// limit is written.
func (c *Client) download(ctx context.Context, id string, limit int64, exact bool, w io.Writer) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+"/v1/inbox/"+url.PathEscape(id)+"/payload", nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.send(req)
	if err != nil {
		return 0, c.unreachable(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, decodeAnswer(resp, nil)
	}
	if resp.ContentLength > limit || exact && resp.ContentLength >= 0 && resp.ContentLength != limit {
		return 0, fmt.Errorf("%w: the gateway announces a payload of %d bytes for bundle %s; want %d", ErrBadAnswer, resp.ContentLength, id, limit)
	}
	n, err := io.CopyN(w, resp.Body, limit)
	switch {
	case err == io.EOF && !exact && (resp.ContentLength < 0 || n == resp.ContentLength):
		return n, nil
	case err == io.EOF:
		want := limit
		if !exact {
			want = resp.ContentLength
		}
		return n, fmt.Errorf("payload download ended after %d of %d bytes", n, want)
	case err != nil:
		return n, err
	}
	// limit bytes copied: anything more is refused unwritten.
	var extra [1]byte
	if k, _ := io.ReadFull(resp.Body, extra[:]); k > 0 {
		return n, fmt.Errorf("%w: the gateway sends more than the %d payload bytes of bundle %s", ErrBadAnswer, limit, id)
	}
	return n, nil
}

// Ack acknowledges retrieval of a received bundle.
func (c *Client) Ack(ctx context.Context, id string) error {
	req, err := http.NewRequestWithContext(ctx, "POST", c.base+"/v1/inbox/"+url.PathEscape(id)+"/ack", bytes.NewReader(nil))
	if err != nil {
		return err
	}
	return c.do(req, nil)
}
