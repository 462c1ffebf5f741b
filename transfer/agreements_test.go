package transfer

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"evx/crypto"

	"github.com/quic-go/quic-go"
	"go.uber.org/zap"
)

// summary returns a summary signed by key: its body is opaque to
// transfer, so the test's only look like the agreement package's.
func summary(t testing.TB, key *crypto.SigningKey, from, to string, seq int) *crypto.Signed {
	t.Helper()
	s, err := key.SignAgreementSummary(fmt.Appendf(nil, `{"agreement":null,"format":"evx-agreement-summary/1","gateway":%q,"issued":"2026-12-03T16:52:50Z","peer":%q,"sequence":%d}`, from, to, seq))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// agreementReceiver is a gateway's receiver with an AgreementPeer: it keeps
// the summaries it is sent and answers with its own, signed by sign.
type agreementReceiver struct {
	*memReceiver
	answer func(peer string, theirs *crypto.Signed) (*crypto.Signed, error)

	mu       sync.Mutex
	peers    []string
	got      []*crypto.Signed
	deadline time.Duration // the longest time a call was given
}

func newAgreementReceiver(id string, sign *crypto.SigningKey) *agreementReceiver {
	a := &agreementReceiver{memReceiver: &memReceiver{id: id, sign: sign, got: map[string][]byte{}, rcpt: map[string]*crypto.Signed{}}}
	seq := 0
	a.answer = func(peer string, _ *crypto.Signed) (*crypto.Signed, error) {
		seq++
		return sign.SignAgreementSummary(fmt.Appendf(nil, `{"gateway":%q,"peer":%q,"sequence":%d}`, id, peer, seq))
	}
	return a
}

func (a *agreementReceiver) ExchangeAgreements(ctx context.Context, peer string, theirs *crypto.Signed) (*crypto.Signed, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.peers = append(a.peers, peer)
	a.got = append(a.got, theirs)
	if d, ok := ctx.Deadline(); ok {
		a.deadline = max(a.deadline, time.Until(d))
	} else {
		a.deadline = 1 << 62
	}
	return a.answer(peer, theirs)
}

func (a *agreementReceiver) record() ([]string, []*crypto.Signed, time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.peers, a.got, a.deadline
}

// startAgreementFR starts FR's peer listener with an AgreementPeer,
// reporting refusals on the returned channel.
func startAgreementFR(t *testing.T, w *world) (*Server, *agreementReceiver, chan string) {
	t.Helper()
	recv := newAgreementReceiver("FR", w.signFR)
	refused := make(chan string, 100)
	srv := serve(t, ServerConfig{ID: "FR", Certificate: w.certFR, PeerCAs: map[string]*x509.CertPool{"DE": w.poolDE},
		Receiver: recv, Logger: zap.NewNop(), OnRefuse: func(stage, code string, _ net.Addr) { refused <- stage + " " + code }})
	return srv, recv, refused
}

// TestAgreementExchange exchanges summaries both ways on real QUIC: DE
// tells FR, FR tells DE, and each learns the other's from the answer.
func TestAgreementExchange(t *testing.T) {
	w := newWorld(t)
	ctx := bounded(t)
	fr, frRecv, _ := startAgreementFR(t, w)
	deRecv := newAgreementReceiver("DE", w.signDE)
	de := serve(t, ServerConfig{ID: "DE", Certificate: w.certDE, PeerCAs: map[string]*x509.CertPool{"FR": w.poolFR},
		Receiver: deRecv, Logger: zap.NewNop()})
	deClient := newTestClient(t, "DE", w.certDE)
	frClient := newTestClient(t, "FR", w.certFR)
	peerDE := Peer{ID: "DE", Address: de.Addr(), CA: w.poolDE, SigningKey: w.signDE.Public()}

	mineDE := summary(t, w.signDE, "DE", "FR", 1)
	theirs, err := deClient.ExchangeAgreements(ctx, w.peerFR(fr), mineDE)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"gateway":"FR","peer":"DE","sequence":1}`; string(theirs.Body) != want {
		t.Errorf("DE got FR's summary %s, want %s", theirs.Body, want)
	}
	if _, err := crypto.VerifyAgreementSummary(theirs, w.signFR.Public()); err != nil {
		t.Error(err)
	}

	mineFR := summary(t, w.signFR, "FR", "DE", 2)
	theirs, err = frClient.ExchangeAgreements(ctx, peerDE, mineFR)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"gateway":"DE","peer":"FR","sequence":1}`; string(theirs.Body) != want {
		t.Errorf("FR got DE's summary %s, want %s", theirs.Body, want)
	}

	// The largest summary there may be goes through.
	largest, err := w.signDE.SignAgreementSummary(bytes.Repeat([]byte{'x'}, crypto.MaxAgreementSummarySize))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := deClient.ExchangeAgreements(ctx, w.peerFR(fr), largest); err != nil {
		t.Fatalf("the largest summary: %v", err)
	}

	for _, side := range []struct {
		name string
		recv *agreementReceiver
		from string
		sent []*crypto.Signed
	}{{"FR", frRecv, "DE", []*crypto.Signed{mineDE, largest}}, {"DE", deRecv, "FR", []*crypto.Signed{mineFR}}} {
		peers, got, deadline := side.recv.record()
		if len(got) != len(side.sent) {
			t.Fatalf("%s was told %d summaries, want %d", side.name, len(got), len(side.sent))
		}
		for i := range got {
			if peers[i] != side.from || !bytes.Equal(got[i].Body, side.sent[i].Body) || !bytes.Equal(got[i].Signature, side.sent[i].Signature) {
				t.Errorf("%s was told %s by %s, want %s by %s", side.name, got[i].Body, peers[i], side.sent[i].Body, side.from)
			}
		}
		if deadline <= 0 || deadline > agreementAnswerTimeout {
			t.Errorf("%s's ExchangeAgreements was given %v to answer, want at most %v", side.name, deadline, agreementAnswerTimeout)
		}
	}
}

// TestAgreementExchangeWithoutAgreementPeer tells a gateway whose receiver
// exchanges no summaries: it refuses with not-accepted.
func TestAgreementExchangeWithoutAgreementPeer(t *testing.T) {
	w := newWorld(t)
	refused := make(chan string, 10)
	recv := &memReceiver{id: "FR", sign: w.signFR, got: map[string][]byte{}, rcpt: map[string]*crypto.Signed{}}
	srv := serve(t, ServerConfig{ID: "FR", Certificate: w.certFR, PeerCAs: map[string]*x509.CertPool{"DE": w.poolDE},
		Receiver: recv, Logger: zap.NewNop(), OnRefuse: func(stage, code string, _ net.Addr) { refused <- stage + " " + code }})
	c := newTestClient(t, "DE", w.certDE)
	_, err := c.ExchangeAgreements(bounded(t), w.peerFR(srv), summary(t, w.signDE, "DE", "FR", 1))
	wantRejection(t, err, CodeNotAccepted)
	if !strings.Contains(err.Error(), "gateway FR exchanges no agreement summaries") {
		t.Errorf("rejection %v does not say why", err)
	}
	wantRefused(t, refused, "agreement not-accepted")
}

// TestMalformedAgreementNotices sends FR notices that break the frame's
// rules or bounds: each is refused as malformed before the AgreementPeer
// sees it.
func TestMalformedAgreementNotices(t *testing.T) {
	w := newWorld(t)
	srv, recv, refused := startAgreementFR(t, w)
	b64 := func(b []byte) string { return `"` + base64.StdEncoding.EncodeToString(b) + `"` }
	sig := `"signature":` + b64(make([]byte, 64))
	body := `"body":` + b64([]byte(`{}`))
	oversized := rawFrame(frameAgreementNotice, "")
	oversized[1], oversized[2], oversized[3], oversized[4] = 0, 1, 0, 1 // MaxAgreementFrameSize + 1
	tests := []struct {
		name  string
		frame []byte
		want  string
	}{
		{"a notice over the frame limit", oversized, "exceeds the limit of 65536"},
		{"a summary over its limit", rawFrame(frameAgreementNotice, `{"body":`+b64(make([]byte, crypto.MaxAgreementSummarySize+1))+`,`+sig+`}`), "summary body of 32769 bytes"},
		{"an empty summary", rawFrame(frameAgreementNotice, `{"body":"",`+sig+`}`), "summary body of 0 bytes"},
		{"no summary", rawFrame(frameAgreementNotice, `{`+sig+`}`), "summary body of 0 bytes"},
		{"a short signature", rawFrame(frameAgreementNotice, `{`+body+`,"signature":`+b64(make([]byte, 63))+`}`), "summary signature of 63 bytes"},
		{"no signature", rawFrame(frameAgreementNotice, `{`+body+`}`), "summary signature of 0 bytes"},
		{"an unknown member", rawFrame(frameAgreementNotice, `{`+body+`,`+sig+`,"sequence":3}`), "unknown field"},
		{"a member twice", rawFrame(frameAgreementNotice, `{`+body+`,`+sig+`,`+body+`}`), "more than once"},
		{"a member twice in another case", rawFrame(frameAgreementNotice, `{`+body+`,`+sig+`,"Body":"e30="}`), "more than once"},
		{"null", rawFrame(frameAgreementNotice, `null`), "not a JSON object"},
		{"not base64", rawFrame(frameAgreementNotice, `{"body":"!!",`+sig+`}`), "illegal base64"},
	}
	c := newTestClient(t, "DE", w.certDE)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantMalformed(t, c, w.peerFR(srv), tt.frame, frameAgreement, tt.want)
			wantRefused(t, refused, "agreement "+CodeMalformed)
		})
	}
	if _, got, _ := recv.record(); len(got) != 0 {
		t.Errorf("the AgreementPeer was called %d times for malformed notices", len(got))
	}
}

// TestClientRefusesBadSummaries checks a summary before sending it.
func TestClientRefusesBadSummaries(t *testing.T) {
	w := newWorld(t)
	srv, recv, _ := startAgreementFR(t, w)
	c := newTestClient(t, "DE", w.certDE)
	good := summary(t, w.signDE, "DE", "FR", 1)
	for _, s := range []*crypto.Signed{
		nil,
		{},
		{Signature: good.Signature},
		{Body: make([]byte, crypto.MaxAgreementSummarySize+1), Signature: good.Signature},
		{Body: good.Body},
		{Body: good.Body, Signature: good.Signature[:63]},
	} {
		if _, err := c.ExchangeAgreements(bounded(t), w.peerFR(srv), s); err == nil || !strings.HasPrefix(err.Error(), "agreement summary for FR: ") {
			t.Errorf("summary %+v: err = %v", s, err)
		}
	}
	if _, got, _ := recv.record(); len(got) != 0 {
		t.Errorf("the AgreementPeer was called %d times", len(got))
	}
}

// TestHostileAgreementAnswers has FR answer with frames that break the
// rules or bounds, or a summary it did not sign: each is an error, never
// a summary or a rejection to act on.
func TestHostileAgreementAnswers(t *testing.T) {
	w := newWorld(t)
	b64 := func(b []byte) string { return `"` + base64.StdEncoding.EncodeToString(b) + `"` }
	frame := func(s *crypto.Signed) []byte {
		return rawFrame(frameAgreement, `{"body":`+b64(s.Body)+`,"signature":`+b64(s.Signature)+`}`)
	}
	good := summary(t, w.signFR, "FR", "DE", 1)
	oversized := rawFrame(frameAgreement, "")
	oversized[1], oversized[2], oversized[3], oversized[4] = 0, 1, 0, 1
	tests := []struct {
		name   string
		answer []byte
		want   string
	}{
		{"signed by another key", frame(summary(t, w.signDE, "FR", "DE", 1)), "exchanging agreement summaries with FR: agreement summary: signature does not verify under " + w.signFR.Public()},
		{"a changed body", frame(&crypto.Signed{Body: append(bytes.Clone(good.Body), ' '), Signature: good.Signature}), "signature does not verify"},
		{"signed as a directory", frame(func() *crypto.Signed {
			d, err := w.signFR.SignDirectory(crypto.Directory{Format: crypto.DirectoryFormat, Gateway: "FR", Issued: "2026-12-03T16:52:50Z"})
			if err != nil {
				t.Fatal(err)
			}
			return d
		}()), "signature does not verify"},
		{"a frame over the limit", oversized, "exceeds the limit of 65536"},
		{"a summary over its limit", rawFrame(frameAgreement, `{"body":`+b64(make([]byte, crypto.MaxAgreementSummarySize+1))+`,"signature":`+b64(good.Signature)+`}`), "summary body of 32769 bytes"},
		{"an unknown member", rawFrame(frameAgreement, `{"body":`+b64(good.Body)+`,"signature":`+b64(good.Signature)+`,"x":1}`), "unknown field"},
		{"a member twice", rawFrame(frameAgreement, `{"body":`+b64(good.Body)+`,"signature":`+b64(good.Signature)+`,"body":"e30="}`), "more than once"},
		{"another frame", rawFrame(frameWitness, `{"cosignature":"eA=="}`), "got frame type 8, want 12"},
		{"no answer", nil, "EOF"},
		{"a rejection with a size", rawFrame(frameReject, `{"code":"conflict","reason":"x","known_size":3}`), "known_size in a \"conflict\" rejection"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestClient(t, "DE", w.certDE)
			s, err := c.ExchangeAgreements(bounded(t), hostileFR(t, w, tt.answer), summary(t, w.signDE, "DE", "FR", 1))
			var rej *Rejection
			if err == nil || errors.As(err, &rej) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("answer %+v, err = %v, want an error with %q", s, err, tt.want)
			}
		})
	}
}

// TestAgreementPeerAnswersAreChecked has FR's AgreementPeer answer what the
// protocol does not allow: the server sends internal instead.
func TestAgreementPeerAnswersAreChecked(t *testing.T) {
	w := newWorld(t)
	tests := []struct {
		name   string
		answer func() (*crypto.Signed, error)
		code   string
	}{
		{"no summary and no error", func() (*crypto.Signed, error) { return nil, nil }, CodeInternal},
		{"an error", func() (*crypto.Signed, error) { return nil, errors.New("disk on fire") }, CodeInternal},
		{"a summary over its limit", func() (*crypto.Signed, error) {
			return &crypto.Signed{Body: make([]byte, crypto.MaxAgreementSummarySize+1), Signature: make([]byte, 64)}, nil
		}, CodeInternal},
		{"an unsigned summary", func() (*crypto.Signed, error) { return &crypto.Signed{Body: []byte(`{}`)}, nil }, CodeInternal},
		{"a refusal", func() (*crypto.Signed, error) { return nil, Reject(CodeBadSignature, "DE's summary does not verify") }, CodeBadSignature},
		{"a refusal with a size", func() (*crypto.Signed, error) { return nil, WitnessConflict(3, "x") }, CodeConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recv := newAgreementReceiver("FR", w.signFR)
			recv.answer = func(string, *crypto.Signed) (*crypto.Signed, error) { return tt.answer() }
			srv := serve(t, ServerConfig{ID: "FR", Certificate: w.certFR, PeerCAs: map[string]*x509.CertPool{"DE": w.poolDE},
				Receiver: recv, Logger: zap.NewNop()})
			c := newTestClient(t, "DE", w.certDE)
			_, err := c.ExchangeAgreements(bounded(t), w.peerFR(srv), summary(t, w.signDE, "DE", "FR", 1))
			wantRejection(t, err, tt.code)
		})
	}
}

// TestAgreementStreamsAreGivenBack answers and refuses more agreement
// notices than a connection has streams, then delivers a bundle on the
// same connection.
func TestAgreementStreamsAreGivenBack(t *testing.T) {
	w := newWorld(t)
	srv, recv, _ := startAgreementFR(t, w)
	noPeer := serve(t, ServerConfig{ID: "FR", Certificate: w.certFR, PeerCAs: map[string]*x509.CertPool{"DE": w.poolDE},
		Receiver: &memReceiver{id: "FR", sign: w.signFR, got: map[string][]byte{}, rcpt: map[string]*crypto.Signed{}}, Logger: zap.NewNop()})
	mine := summary(t, w.signDE, "DE", "FR", 1)
	for _, tt := range []streamCase{
		{"notices answered", srv, func(ctx context.Context, c *Client, p Peer) error {
			_, err := c.ExchangeAgreements(ctx, p, mine)
			return err
		}, ""},
		{"notices refused as not accepted", noPeer, func(ctx context.Context, c *Client, p Peer) error {
			_, err := c.ExchangeAgreements(ctx, p, mine)
			return err
		}, CodeNotAccepted},
		{"malformed notices", srv, func(ctx context.Context, c *Client, p Peer) error {
			str := rawStream(t, ctx, c, p)
			defer str.CancelRead(0)
			defer str.Close()
			str.Write(rawFrame(frameAgreementNotice, `{"body":"e30=","signature":""}`))
			return decodeFrame(str, frameAgreement, new(agreementFrame))
		}, CodeMalformed},
		// The notice's FIN arrives after the answer: the server must
		// not wait to read it to finish the stream.
		{"notices ended after the answer", srv, func(ctx context.Context, c *Client, p Peer) error {
			str := rawStream(t, ctx, c, p)
			defer str.CancelRead(0)
			defer str.Close()
			if err := writeFrame(str, frameAgreementNotice, (*agreementFrame)(mine)); err != nil {
				return err
			}
			return decodeFrame(str, frameAgreement, new(agreementFrame))
		}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, w) })
	}
	if _, got, _ := recv.record(); len(got) != 2*manyExchanges {
		t.Errorf("the AgreementPeer was called %d times, want %d", len(got), 2*manyExchanges)
	}
}

// clientConn returns the connection c holds to peer id.
func clientConn(t *testing.T, c *Client, id string) *quic.Conn {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	conn := c.conns[id]
	if conn == nil {
		t.Fatalf("no connection to %s", id)
	}
	return conn
}

// waitClosed waits until conn is closed, as its peer closed it.
func waitClosed(t *testing.T, ctx context.Context, conn *quic.Conn) {
	t.Helper()
	select {
	case <-conn.Context().Done():
	case <-ctx.Done():
		t.Fatal("the connection was not closed")
	}
}

// TestSetPeerCAs removes DE from FR's peers and adds it back, and changes
// its CA: a removed peer's connection is closed and its handshakes
// refused; a peer that stays keeps its connection.
func TestSetPeerCAs(t *testing.T) {
	w := newWorld(t)
	srv, recv, refused := startAgreementFR(t, w)
	poolXX := x509.NewCertPool()
	poolXX.AddCert(w.caXX.Cert)
	ctx := bounded(t)
	c := newTestClient(t, "DE", w.certDE)
	mine := summary(t, w.signDE, "DE", "FR", 1)
	exchange := func() error {
		_, err := c.ExchangeAgreements(ctx, w.peerFR(srv), mine)
		return err
	}
	wantRefusedHandshake := func(t *testing.T, reason string) {
		t.Helper()
		err := exchange()
		var he *HandshakeError
		if !errors.As(err, &he) || he.Reason != "refused-by-peer" {
			t.Fatalf("err = %v, want a handshake refused by FR", err)
		}
		wantRefused(t, refused, "handshake "+reason)
		// The refused connection is closed: the client may notice it
		// only after the exchange has failed on it.
		c.mu.Lock()
		conn := c.conns["FR"]
		c.mu.Unlock()
		if conn != nil {
			waitClosed(t, ctx, conn)
		}
	}
	if err := exchange(); err != nil {
		t.Fatal(err)
	}
	first := clientConn(t, c, "FR")

	// A peer that stays keeps its connection; the map given may change
	// afterwards.
	cas := map[string]*x509.CertPool{"DE": w.poolDE, "IT": poolXX}
	srv.SetPeerCAs(cas)
	delete(cas, "DE")
	if err := exchange(); err != nil {
		t.Fatal(err)
	}
	if clientConn(t, c, "FR") != first {
		t.Error("DE connected again although it stayed a peer")
	}

	t.Run("removed", func(t *testing.T) {
		srv.SetPeerCAs(map[string]*x509.CertPool{"IT": poolXX})
		waitClosed(t, ctx, first)
		wantRefusedHandshake(t, "unknown-peer")
	})
	t.Run("added", func(t *testing.T) {
		srv.SetPeerCAs(map[string]*x509.CertPool{"DE": w.poolDE})
		if err := exchange(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("another CA", func(t *testing.T) {
		conn := clientConn(t, c, "FR")
		srv.SetPeerCAs(map[string]*x509.CertPool{"DE": poolXX})
		waitClosed(t, ctx, conn)
		wantRefusedHandshake(t, "wrong-ca")
	})
	t.Run("none", func(t *testing.T) {
		srv.SetPeerCAs(map[string]*x509.CertPool{"DE": w.poolDE})
		if err := exchange(); err != nil {
			t.Fatal(err)
		}
		conn := clientConn(t, c, "FR")
		srv.SetPeerCAs(nil)
		waitClosed(t, ctx, conn)
		wantRefusedHandshake(t, "unknown-peer")
	})
	// 1 before, 1 while DE stayed, 1 after it was added, 1 before none.
	if _, got, _ := recv.record(); len(got) != 4 {
		t.Errorf("the AgreementPeer was called %d times, want 4", len(got))
	}
}

// TestSetPeerCAsDuringHandshake removes DE while its handshake is under
// way, after its certificate was verified against the peers of before:
// the connection is closed once it is established, and nothing is served
// on it.
func TestSetPeerCAsDuringHandshake(t *testing.T) {
	w := newWorld(t)
	recv := newAgreementReceiver("FR", w.signFR)
	// The certificate's check reads the time once the peers it checks
	// against are chosen: the moment to remove DE.
	var srv *Server
	var armed atomic.Bool
	now := func() time.Time {
		if armed.CompareAndSwap(true, false) {
			srv.SetPeerCAs(map[string]*x509.CertPool{})
		}
		return time.Now()
	}
	srv = serve(t, ServerConfig{ID: "FR", Certificate: w.certFR, PeerCAs: map[string]*x509.CertPool{"DE": w.poolDE},
		Receiver: recv, Logger: zap.NewNop(), Now: now})
	armed.Store(true)
	c := newTestClient(t, "DE", w.certDE)
	_, err := c.ExchangeAgreements(bounded(t), w.peerFR(srv), summary(t, w.signDE, "DE", "FR", 1))
	var ae *quic.ApplicationError
	if !errors.As(err, &ae) || !ae.Remote || ae.ErrorMessage != "peer no longer accepted" {
		t.Errorf("err = %v, want the connection closed by FR", err)
	}
	if armed.Load() {
		t.Error("the handshake did not read the time")
	}
	if _, got, _ := recv.record(); len(got) != 0 {
		t.Errorf("the AgreementPeer was called %d times", len(got))
	}
}

// TestSetPeerCAsEndsExchanges removes DE while FR's AgreementPeer is
// answering it: the call's context ends.
func TestSetPeerCAsEndsExchanges(t *testing.T) {
	w := newWorld(t)
	started, ended := make(chan struct{}), make(chan error, 1)
	stuck := &stuckAgreementPeer{agreementReceiver: newAgreementReceiver("FR", w.signFR), started: started, ended: ended}
	srv := serve(t, ServerConfig{ID: "FR", Certificate: w.certFR, PeerCAs: map[string]*x509.CertPool{"DE": w.poolDE},
		Receiver: stuck, Logger: zap.NewNop()})
	c := newTestClient(t, "DE", w.certDE)
	ctx := bounded(t)
	mine := summary(t, w.signDE, "DE", "FR", 1)
	done := make(chan error, 1)
	go func() {
		_, err := c.ExchangeAgreements(ctx, w.peerFR(srv), mine)
		done <- err
	}()
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("the AgreementPeer was not called")
	}
	srv.SetPeerCAs(map[string]*x509.CertPool{})
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the AgreementPeer's context ended with %v, want canceled", err)
		}
	case <-ctx.Done():
		t.Fatal("the AgreementPeer's context did not end")
	}
	if err := <-done; err == nil {
		t.Error("the exchange succeeded")
	}
}

// stuckAgreementPeer answers nothing until its context ends.
type stuckAgreementPeer struct {
	*agreementReceiver
	started chan struct{}
	ended   chan error
}

func (s *stuckAgreementPeer) ExchangeAgreements(ctx context.Context, peer string, theirs *crypto.Signed) (*crypto.Signed, error) {
	close(s.started)
	<-ctx.Done()
	s.ended <- ctx.Err()
	return nil, ctx.Err()
}

// TestClosePeer closes DE's connection at FR, then FR's at DE: each side's
// next exchange connects afresh.
func TestClosePeer(t *testing.T) {
	w := newWorld(t)
	srv, _, _ := startAgreementFR(t, w)
	ctx := bounded(t)
	c := newTestClient(t, "DE", w.certDE)
	mine := summary(t, w.signDE, "DE", "FR", 1)
	if _, err := c.ExchangeAgreements(ctx, w.peerFR(srv), mine); err != nil {
		t.Fatal(err)
	}
	conn := clientConn(t, c, "FR")
	srv.ClosePeer("IT")
	srv.ClosePeer("DE")
	waitClosed(t, ctx, conn)
	if _, err := c.ExchangeAgreements(ctx, w.peerFR(srv), mine); err != nil {
		t.Fatal(err)
	}
	again := clientConn(t, c, "FR")
	if again == conn {
		t.Fatal("the closed connection is still used")
	}
	c.ClosePeer("IT")
	c.ClosePeer("FR")
	waitClosed(t, ctx, again)
	c.mu.Lock()
	held := c.conns["FR"]
	c.mu.Unlock()
	if held != nil {
		t.Error("the client still holds the closed connection")
	}
	if _, err := c.ExchangeAgreements(ctx, w.peerFR(srv), mine); err != nil {
		t.Fatal(err)
	}
}
