package transfer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"evx/crypto"
	"evx/internal/evxtest"

	"github.com/quic-go/quic-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// world is two countries with their CAs, gateway certificates and keys, and
// an unrelated CA for forgeries.
type world struct {
	caDE, caFR, caXX *crypto.CA
	certDE, certFR   tls.Certificate
	signDE, signFR   *crypto.SigningKey
	poolDE, poolFR   *x509.CertPool
	unitDE           *crypto.UnitKey
	recipientFR      *crypto.UnitKey
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{}
	var err error
	for _, c := range []struct {
		ca   **crypto.CA
		name string
	}{{&w.caDE, "DE"}, {&w.caFR, "FR"}, {&w.caXX, "XX"}} {
		if *c.ca, err = crypto.NewCA(c.name, 24*time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	w.certDE = issueGateway(t, w.caDE, "DE", time.Time{})
	w.certFR = issueGateway(t, w.caFR, "FR", time.Time{})
	w.poolDE, w.poolFR = x509.NewCertPool(), x509.NewCertPool()
	w.poolDE.AddCert(w.caDE.Cert)
	w.poolFR.AddCert(w.caFR.Cert)
	if w.signDE, err = crypto.GenerateSigningKey(); err != nil {
		t.Fatal(err)
	}
	if w.signFR, err = crypto.GenerateSigningKey(); err != nil {
		t.Fatal(err)
	}
	if w.unitDE, err = crypto.GenerateUnitKey("DE/forensics"); err != nil {
		t.Fatal(err)
	}
	if w.recipientFR, err = crypto.GenerateUnitKey("FR/prosecutor"); err != nil {
		t.Fatal(err)
	}
	return w
}

func issueGateway(t *testing.T, ca *crypto.CA, id string, notAfter time.Time) tls.Certificate {
	t.Helper()
	req := crypto.CertRequest{CommonName: "gateway " + id, URIs: []string{GatewayURI(id)}, Server: true, Client: true, NotAfter: notAfter}
	if !notAfter.IsZero() {
		req.NotBefore = notAfter.Add(-48 * time.Hour)
	}
	c, err := ca.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// memReceiver keeps received bundles in memory, enforcing duplicates like a
// gateway would; storage itself is tested with real backends elsewhere.
type memReceiver struct {
	id   string
	sign *crypto.SigningKey
	mu   sync.Mutex
	got  map[string][]byte
	rcpt map[string]*crypto.Signed
}

func (m *memReceiver) Receive(ctx context.Context, peer string, o *Offer, accept func(int64) (io.Reader, error)) (*crypto.Signed, error) {
	m.mu.Lock()
	if r, ok := m.rcpt[o.Envelope.BundleID]; ok {
		m.mu.Unlock()
		return r, nil
	}
	m.mu.Unlock()
	r, err := accept(0)
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	rc, err := signReceipt(m.sign, o.Envelope, peer, m.id, int64(len(m.rcpt)))
	if err != nil {
		return nil, err
	}
	m.got[o.Envelope.BundleID] = data
	m.rcpt[o.Envelope.BundleID] = rc
	return rc, nil
}

// signReceipt returns key's version 2 receipt for env, received from
// sender by receiver, whose entry in the receiver's log is at index.
func signReceipt(key *crypto.SigningKey, env *crypto.Envelope, sender, receiver string, index int64) (*crypto.Signed, error) {
	r, err := crypto.NewReceipt(env, sender, receiver, time.Now(), testReceiptLog(env, index))
	if err != nil {
		return nil, err
	}
	return key.SignReceipt(r)
}

// testReceiptLog is the log position a test receiver promises for env.
func testReceiptLog(env *crypto.Envelope, index int64) crypto.ReceiptLog {
	leaf := sha256.Sum256(append([]byte{0}, env.BundleID...))
	return crypto.ReceiptLog{LeafHash: hex.EncodeToString(leaf[:]), LeafIndex: index, TreeSize: index}
}

// count returns the number of bundles stored.
func (m *memReceiver) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.got)
}

// stored returns the payload stored for bundle id.
func (m *memReceiver) stored(id string) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.got[id]
}

func (m *memReceiver) Directory(ctx context.Context, peer string) (*crypto.Signed, error) {
	return m.sign.SignDirectory(crypto.Directory{Format: crypto.DirectoryFormat, Gateway: m.id,
		Issued: time.Now().UTC().Format(time.RFC3339), Units: []crypto.DirectoryEntry{{Unit: "FR/prosecutor", Role: "recipient"}}})
}

// startFR starts FR's peer listener, which knows DE as its only peer.
func startFR(t *testing.T, w *world) (*Server, *memReceiver, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	recv := &memReceiver{id: "FR", sign: w.signFR, got: map[string][]byte{}, rcpt: map[string]*crypto.Signed{}}
	srv := serve(t, ServerConfig{
		ID: "FR", Certificate: w.certFR,
		PeerCAs:  map[string]*x509.CertPool{"DE": w.poolDE},
		Receiver: recv, Logger: zap.New(core),
	})
	return srv, recv, logs
}

// serve starts a server and serves until the test ends.
func serve(t *testing.T, cfg ServerConfig) *Server {
	t.Helper()
	return serveWith(t, cfg, listenOptions{})
}

func serveWith(t *testing.T, cfg ServerConfig, o listenOptions) *Server {
	t.Helper()
	srv, err := listen("127.0.0.1:0", cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); srv.Close(); <-done })
	return srv
}

func (w *world) peerFR(srv *Server) Peer {
	return Peer{ID: "FR", Address: srv.Addr(), CA: w.poolFR, SigningKey: w.signFR.Public()}
}

// sealed returns a real bundle's envelope, signature and payload.
func sealed(t *testing.T, sender *crypto.UnitKey, to *crypto.UnitKey, size int) ([]byte, []byte, []byte) {
	t.Helper()
	b := evxtest.Seal(t, sender, []crypto.PublicKey{to.Public()}, size)
	return b.EnvJSON, b.Sig, b.Payload
}

func newTestClient(t *testing.T, id string, cert tls.Certificate) *Client {
	c := NewClient(id, cert, zap.NewNop())
	t.Cleanup(func() { c.Close() })
	return c
}

func TestSendReceiptAndDuplicate(t *testing.T) {
	w := newWorld(t)
	srv, recv, _ := startFR(t, w)
	env, sig, payload := sealed(t, w.unitDE, w.recipientFR, 3<<20)
	c := newTestClient(t, "DE", w.certDE)
	ctx := context.Background()

	d, err := c.Send(ctx, w.peerFR(srv), env, sig, bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	if d.Duplicate {
		t.Error("first delivery reported as duplicate")
	}
	e, _ := crypto.ParseEnvelope(env)
	if !bytes.Equal(recv.stored(e.BundleID), payload) {
		t.Fatal("received payload differs from the one sent")
	}
	again, err := c.Send(ctx, w.peerFR(srv), env, sig, bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || !bytes.Equal(again.Receipt.Body, d.Receipt.Body) {
		t.Errorf("second offer: duplicate=%v, same receipt=%v; want the original receipt", again.Duplicate, bytes.Equal(again.Receipt.Body, d.Receipt.Body))
	}
	dir, err := c.FetchDirectory(ctx, w.peerFR(srv))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := dir.Lookup("FR/prosecutor"); !ok {
		t.Errorf("directory lacks FR/prosecutor: %+v", dir)
	}
	// The signed document as received verifies on its own, for whoever
	// the fetching gateway shows it to.
	p := w.peerFR(srv)
	signed, dir2, err := c.FetchSignedDirectory(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	again2, err := crypto.VerifyDirectory(signed, p.SigningKey, "FR")
	if err != nil {
		t.Fatalf("the signed directory returned does not verify: %v", err)
	}
	if _, ok := again2.Lookup("FR/prosecutor"); !ok || again2.Issued != dir2.Issued {
		t.Errorf("signed directory %+v differs from the verified one %+v", again2, dir2)
	}
}

func TestHandshakeRefusals(t *testing.T) {
	w := newWorld(t)
	refused := make(chan string, 1)
	core, logs := observer.New(zap.InfoLevel)
	recv := &memReceiver{id: "FR", sign: w.signFR, got: map[string][]byte{}, rcpt: map[string]*crypto.Signed{}}
	srv := serve(t, ServerConfig{ID: "FR", Certificate: w.certFR,
		PeerCAs: map[string]*x509.CertPool{"DE": w.poolDE}, Receiver: recv, Logger: zap.New(core),
		OnRefuse: func(stage, code string, _ net.Addr) { refused <- stage + " " + code },
	})
	env, sig, payload := sealed(t, w.unitDE, w.recipientFR, 1000)
	expired := issueGateway(t, w.caDE, "DE", time.Now().Add(-time.Hour))
	tests := []struct {
		name   string
		cert   tls.Certificate
		reason string
	}{
		{"certificate from another CA", issueGateway(t, w.caXX, "DE", time.Time{}), "wrong-ca"},
		{"expired certificate", expired, "expired"},
		{"FR certificate claiming to be DE", issueGateway(t, w.caFR, "DE", time.Time{}), "wrong-ca"},
		{"unknown peer", issueGateway(t, w.caXX, "XX", time.Time{}), "unknown-peer"},
		{"no certificate", tls.Certificate{}, "no-certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestClient(t, "DE", tt.cert)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := c.Send(ctx, w.peerFR(srv), env, sig, bytes.NewReader(payload))
			if err == nil {
				t.Fatal("send succeeded")
			}
			// The client learns that the peer refused its certificate,
			// which no retry mends.
			var he *HandshakeError
			if !errors.As(err, &he) || he.Reason != "refused-by-peer" {
				t.Errorf("client error %v, want a HandshakeError refused-by-peer", err)
			}
			// The server calls OnRefuse before its alert ends the handshake.
			if got := <-refused; got != "handshake "+tt.reason {
				t.Errorf("refusal %q, want handshake %s (err: %v)", got, tt.reason, err)
			}
		})
	}
	// The first refusal of each reason from this source is logged at
	// once; the second wrong-ca waits for the window's summary.
	for reason, want := range map[string]int{"wrong-ca": 1, "expired": 1, "unknown-peer": 1, "no-certificate": 1} {
		got := logs.FilterMessage("peer handshake refused").FilterField(zap.String("reason", reason)).FilterField(zap.String("source", "127.0.0.0/24"))
		if got.Len() != want {
			t.Errorf("refusals logged at once from 127.0.0.0/24 with reason %q: %d, want %d", reason, got.Len(), want)
		}
	}
	if n := recv.count(); n != 0 {
		t.Errorf("%d bundles stored after refused handshakes", n)
	}
}

func TestClientRefusesWrongServer(t *testing.T) {
	w := newWorld(t)
	srv, _, _ := startFR(t, w)
	env, sig, payload := sealed(t, w.unitDE, w.recipientFR, 1000)
	c := newTestClient(t, "DE", w.certDE)
	// Dialling FR's address while expecting it to be signed by DE's CA.
	p := w.peerFR(srv)
	p.CA = w.poolDE
	_, err := c.Send(context.Background(), p, env, sig, bytes.NewReader(payload))
	var he *HandshakeError
	if !errors.As(err, &he) && !strings.Contains(fmt.Sprint(err), "wrong-ca") {
		t.Fatalf("err = %v, want a wrong-ca refusal", err)
	}
}

func TestSenderMismatchRejected(t *testing.T) {
	w := newWorld(t)
	srv, recv, _ := startFR(t, w)
	// A bundle sealed by a FR unit, delivered over DE's authenticated link.
	frUnit, _ := crypto.GenerateUnitKey("FR/forensics")
	env, sig, payload := sealed(t, frUnit, w.recipientFR, 1000)
	c := newTestClient(t, "DE", w.certDE)
	_, err := c.Send(context.Background(), w.peerFR(srv), env, sig, bytes.NewReader(payload))
	wantRejection(t, err, CodeSenderMismatch)
	if recv.count() != 0 {
		t.Error("bundle stored despite sender mismatch")
	}
}

func wantRejection(t *testing.T, err error, code string) {
	t.Helper()
	var rej *Rejection
	if !errors.As(err, &rej) || rej.Code != code {
		t.Fatalf("err = %v, want a %s rejection", err, code)
	}
	if rej.Reason == "" {
		t.Error("rejection without a reason")
	}
}

// rawStream opens a stream to a peer and lets the test misbehave on it.
func rawStream(t *testing.T, ctx context.Context, c *Client, p Peer) *quic.Stream {
	t.Helper()
	conn, err := c.conn(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return str
}

func TestPayloadMisbehaviour(t *testing.T) {
	w := newWorld(t)
	srv, recv, _ := startFR(t, w)
	env, sig, payload := sealed(t, w.unitDE, w.recipientFR, 200_000)
	flipped := bytes.Clone(payload)
	flipped[len(flipped)/2] ^= 1
	tests := []struct {
		name string
		send []byte
		code string
	}{
		{"shorter than declared", payload[:len(payload)-1], CodeSizeMismatch},
		{"longer than declared", append(bytes.Clone(payload), 0), CodeSizeMismatch},
		{"hash mismatch", flipped, CodeHashMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestClient(t, "DE", w.certDE)
			str := rawStream(t, context.Background(), c, w.peerFR(srv))
			if err := writeFrame(str, frameOffer, offerFrame{Envelope: env, Signature: sig}); err != nil {
				t.Fatal(err)
			}
			var a acceptFrame
			if err := decodeFrame(str, frameAccept, &a); err != nil {
				t.Fatal(err)
			}
			str.Write(tt.send)
			str.Close()
			var rf receiptFrame
			wantRejection(t, decodeFrame(str, frameReceipt, &rf), tt.code)
		})
	}
	if n := recv.count(); n != 0 {
		t.Errorf("%d bundles stored from bad payloads", n)
	}
}

func TestMalformedFrames(t *testing.T) {
	w := newWorld(t)
	srv, _, _ := startFR(t, w)
	env, _, _ := sealed(t, w.unitDE, w.recipientFR, 1000)
	oversized := []byte{frameOffer, 0xff, 0xff, 0xff, 0xff}
	tests := []struct {
		name  string
		bytes []byte
		code  string
	}{
		{"oversized frame", oversized, CodeMalformed},
		{"unknown frame type", append([]byte{99, 0, 0, 0, 2}, "{}"...), CodeMalformed},
		{"offer that is not JSON", append([]byte{frameOffer, 0, 0, 0, 3}, "abc"...), CodeMalformed},
		{"truncated frame", []byte{frameOffer, 0, 0, 1, 0, '{'}, CodeMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestClient(t, "DE", w.certDE)
			str := rawStream(t, context.Background(), c, w.peerFR(srv))
			str.Write(tt.bytes)
			str.Close()
			var rf receiptFrame
			wantRejection(t, decodeFrame(str, frameReceipt, &rf), tt.code)
		})
	}
	t.Run("bad signature", func(t *testing.T) {
		c := newTestClient(t, "DE", w.certDE)
		str := rawStream(t, context.Background(), c, w.peerFR(srv))
		writeFrame(str, frameOffer, offerFrame{Envelope: env, Signature: make([]byte, 64)})
		str.Close()
		var rf receiptFrame
		wantRejection(t, decodeFrame(str, frameReceipt, &rf), CodeBadSignature)
	})
}
