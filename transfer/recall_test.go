package transfer

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"evx/crypto"

	"go.uber.org/zap"
)

// recallReceiver is FR's RecallReceiver: it holds the envelopes of the
// bundles it received, verifies a request under its bundle's sender key
// and answers with an ack signed by sign, applied unless refuse says why
// not.
type recallReceiver struct {
	sign   *crypto.SigningKey
	answer func(peer string, req *crypto.Signed) (*crypto.Signed, error)

	mu       sync.Mutex
	envs     map[string]*crypto.Envelope
	refuse   string // the code of a refusal, "" to apply
	peers    []string
	got      []*crypto.Signed
	deadline time.Duration // the longest time a call was given
}

func newRecallReceiver(sign *crypto.SigningKey, envs ...*crypto.Envelope) *recallReceiver {
	r := &recallReceiver{sign: sign, envs: map[string]*crypto.Envelope{}}
	for _, e := range envs {
		r.envs[e.BundleID] = e
	}
	r.answer = r.apply
	return r
}

func (r *recallReceiver) Recall(ctx context.Context, peer string, req *crypto.Signed) (*crypto.Signed, error) {
	r.mu.Lock()
	r.peers = append(r.peers, peer)
	r.got = append(r.got, req)
	if d, ok := ctx.Deadline(); ok {
		r.deadline = max(r.deadline, time.Until(d))
	} else {
		r.deadline = 1 << 62
	}
	answer := r.answer
	r.mu.Unlock()
	return answer(peer, req)
}

// apply is what a gateway does, in short.
func (r *recallReceiver) apply(peer string, req *crypto.Signed) (*crypto.Signed, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	body, err := crypto.ParseRecallBody(req.Body)
	if err != nil {
		return nil, err
	}
	env := r.envs[body.BundleID]
	if env == nil {
		return nil, Reject(CodeNotAccepted, "no bundle %s from %s", body.BundleID, peer)
	}
	rq, err := crypto.VerifyRecall(req, env.Sender.Key)
	if err != nil {
		return nil, Reject(CodeBadSignature, "%v", err)
	}
	if err := rq.CheckBundle(env); err != nil {
		return nil, Reject(CodeMalformed, "%v", err)
	}
	a, err := crypto.NewRecallAck("FR", req, rq, true, "", "", rq.RetainUntil, time.Now())
	if r.refuse != "" {
		a, err = crypto.NewRecallAck("FR", req, rq, false, r.refuse, "held for case 17", env.RetainUntil, time.Now())
	}
	if err != nil {
		return nil, err
	}
	return r.sign.SignRecallAck(a)
}

func (r *recallReceiver) record() ([]string, []*crypto.Signed, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.peers, r.got, r.deadline
}

// startRecallFR starts FR's peer listener with a RecallReceiver that holds
// envs, reporting refusals on the returned channel.
func startRecallFR(t *testing.T, w *world, envs ...*crypto.Envelope) (*Server, *recallReceiver, chan string) {
	t.Helper()
	recv := newRecallReceiver(w.signFR, envs...)
	refused := make(chan string, 100)
	srv := serve(t, ServerConfig{ID: "FR", Certificate: w.certFR, PeerCAs: map[string]*x509.CertPool{"DE": w.poolDE},
		Receiver: &memReceiver{id: "FR", sign: w.signFR, got: map[string][]byte{}, rcpt: map[string]*crypto.Signed{}},
		Recalls:  recv, Logger: zap.NewNop(), OnRefuse: func(stage, code string, _ net.Addr) { refused <- stage + " " + code }})
	return srv, recv, refused
}

// recallOf returns the envelope of a bundle DE's unit sealed and that
// unit's signed request to recall it, made by key.
func recallOf(t *testing.T, w *world, key *crypto.UnitKey) (*crypto.Envelope, *crypto.Signed) {
	t.Helper()
	envJSON, _, _ := sealed(t, w.unitDE, w.recipientFR, 100)
	env := mustEnvelope(t, envJSON)
	now := time.Now()
	r, err := crypto.NewRecallRequest(env, now, now, "seized in error")
	if err != nil {
		t.Fatal(err)
	}
	if key.Unit != "" && key.Unit != r.Unit {
		r.Unit = key.Unit
	}
	s, err := key.SignRecall(r)
	if err != nil {
		t.Fatal(err)
	}
	return env, s
}

// TestRecallExchange recalls a bundle from DE to FR on real QUIC: FR's
// RecallReceiver gets the request as DE's unit signed it, and DE the ack
// FR signed, applied or refused.
func TestRecallExchange(t *testing.T) {
	w := newWorld(t)
	env, req := recallOf(t, w, w.unitDE)
	srv, recv, _ := startRecallFR(t, w, env)
	c := newTestClient(t, "DE", w.certDE)
	ack, err := c.Recall(bounded(t), w.peerFR(srv), req)
	if err != nil {
		t.Fatal(err)
	}
	a, err := crypto.VerifyRecallAck(ack, w.signFR.Public())
	if err != nil {
		t.Fatal(err)
	}
	if !a.Applied || a.BundleID != env.BundleID || a.Unit != "DE/forensics" || a.RequestSHA256 != crypto.RequestSHA256(req) {
		t.Errorf("ack %+v", a)
	}

	recv.mu.Lock()
	recv.refuse = "legal-hold"
	recv.mu.Unlock()
	ack, err = c.Recall(bounded(t), w.peerFR(srv), req)
	if err != nil {
		t.Fatal(err)
	}
	if a, err := crypto.VerifyRecallAck(ack, w.signFR.Public()); err != nil || a.Applied || a.Code != "legal-hold" || a.Reason != "held for case 17" {
		t.Errorf("refusal %+v, %v", a, err)
	}

	peers, got, deadline := recv.record()
	if len(got) != 2 {
		t.Fatalf("the RecallReceiver was called %d times, want 2", len(got))
	}
	for i := range got {
		if peers[i] != "DE" || !bytes.Equal(got[i].Body, req.Body) || !bytes.Equal(got[i].Signature, req.Signature) {
			t.Errorf("the RecallReceiver got %s from %s, want %s from DE", got[i].Body, peers[i], req.Body)
		}
	}
	if deadline <= 0 || deadline > recallAnswerTimeout {
		t.Errorf("the RecallReceiver was given %v to answer, want at most %v", deadline, recallAnswerTimeout)
	}
}

// TestRecallRefusals has FR refuse recalls without an ack: one its
// RecallReceiver cannot verify, one of a bundle it does not hold, one of
// another country's unit, and any at a server without a RecallReceiver.
func TestRecallRefusals(t *testing.T) {
	w := newWorld(t)
	env, req := recallOf(t, w, w.unitDE)
	srv, recv, refused := startRecallFR(t, w, env)
	c := newTestClient(t, "DE", w.certDE)

	other, _ := crypto.GenerateUnitKey("DE/forensics")
	_, forged := recallOf(t, w, other)
	forgedEnv, _ := crypto.ParseRecallBody(forged.Body)
	recv.mu.Lock()
	recv.envs[forgedEnv.BundleID] = mustEnvelope(t, func() []byte {
		e := *env
		e.BundleID = forgedEnv.BundleID
		b, _ := e.MarshalCanonical()
		return b
	}())
	recv.mu.Unlock()
	_, err := c.Recall(bounded(t), w.peerFR(srv), forged)
	wantRejection(t, err, CodeBadSignature)
	wantRefused(t, refused, "recall bad-signature")

	_, unknown := recallOf(t, w, w.unitDE)
	_, err = c.Recall(bounded(t), w.peerFR(srv), unknown)
	wantRejection(t, err, CodeNotAccepted)
	wantRefused(t, refused, "recall not-accepted")

	// DE speaks for its own units only, never for FR's.
	frUnit, _ := crypto.GenerateUnitKey("FR/lab")
	_, foreign := recallOf(t, w, frUnit)
	_, err = c.Recall(bounded(t), w.peerFR(srv), foreign)
	wantRejection(t, err, CodeSenderMismatch)
	if !strings.Contains(err.Error(), `the recall's unit "FR/lab" does not belong to the authenticated peer DE`) {
		t.Errorf("rejection %v does not say why", err)
	}
	wantRefused(t, refused, "recall sender-mismatch")
	if _, got, _ := recv.record(); len(got) != 2 {
		t.Errorf("the RecallReceiver was called %d times, want 2 (not for another country's unit)", len(got))
	}

	none := serve(t, ServerConfig{ID: "FR", Certificate: w.certFR, PeerCAs: map[string]*x509.CertPool{"DE": w.poolDE},
		Receiver: &memReceiver{id: "FR", sign: w.signFR, got: map[string][]byte{}, rcpt: map[string]*crypto.Signed{}}, Logger: zap.NewNop()})
	// A client of its own: c holds a connection to the other FR.
	_, err = newTestClient(t, "DE", w.certDE).Recall(bounded(t), w.peerFR(none), req)
	wantRejection(t, err, CodeNotAccepted)
	if !strings.Contains(err.Error(), "gateway FR takes no recalls") {
		t.Errorf("rejection %v does not say why", err)
	}
}

func b64(b []byte) string { return `"` + base64.StdEncoding.EncodeToString(b) + `"` }

// recallFrameJSON is a RECALL body naming id, carrying s as it is.
func recallFrameJSON(id string, s *crypto.Signed) string {
	return `{"bundle_id":"` + id + `","request":{"body":` + b64(s.Body) + `,"signature":` + b64(s.Signature) + `}}`
}

// TestMalformedRecalls sends FR recalls that break the frame's rules or
// bounds: each is refused as malformed before the RecallReceiver sees it.
func TestMalformedRecalls(t *testing.T) {
	w := newWorld(t)
	env, req := recallOf(t, w, w.unitDE)
	srv, recv, refused := startRecallFR(t, w, env)
	id := env.BundleID
	big := &crypto.Signed{Body: make([]byte, crypto.MaxRecallBodySize+1), Signature: req.Signature}
	oversized := rawFrame(frameRecall, "")
	oversized[1], oversized[2], oversized[3], oversized[4] = 0, 0, 0x40, 1 // MaxRecallFrameSize + 1
	otherBody := bytes.Replace(req.Body, []byte(`"unit"`), []byte(`"x":1,"unit"`), 1)
	tests := []struct {
		name  string
		frame []byte
		want  string
	}{
		{"a frame over the limit", oversized, "exceeds the limit of 16384"},
		{"a request over its limit", rawFrame(frameRecall, recallFrameJSON(id, big)), "request body of 4097 bytes"},
		{"an empty request", rawFrame(frameRecall, recallFrameJSON(id, &crypto.Signed{Signature: req.Signature})), "request body of 0 bytes"},
		{"no request", rawFrame(frameRecall, `{"bundle_id":"`+id+`"}`), "request is missing"},
		{"a null request", rawFrame(frameRecall, `{"bundle_id":"`+id+`","request":null}`), "request is missing"},
		{"a short signature", rawFrame(frameRecall, recallFrameJSON(id, &crypto.Signed{Body: req.Body, Signature: req.Signature[:63]})), "request signature of 63 bytes"},
		{"another bundle", rawFrame(frameRecall, recallFrameJSON(crypto.NewBundleID(), req)), "the request is for bundle " + id},
		{"no bundle", rawFrame(frameRecall, `{"request":{"body":`+b64(req.Body)+`,"signature":`+b64(req.Signature)+`}}`), "the request is for bundle " + id + `, the frame names ""`},
		{"a request that does not parse", rawFrame(frameRecall, recallFrameJSON(id, &crypto.Signed{Body: otherBody, Signature: req.Signature})), "recall: malformed body"},
		{"not a request", rawFrame(frameRecall, recallFrameJSON(id, &crypto.Signed{Body: []byte(`{}`), Signature: req.Signature})), "recall: unsupported format"},
		{"an unknown member", rawFrame(frameRecall, strings.Replace(recallFrameJSON(id, req), `{"bundle_id"`, `{"x":1,"bundle_id"`, 1)), "unknown field"},
		{"a member twice", rawFrame(frameRecall, strings.Replace(recallFrameJSON(id, req), `{"bundle_id"`, `{"Bundle_ID":"x","bundle_id"`, 1)), "more than once"},
		{"null", rawFrame(frameRecall, `null`), "not a JSON object"},
	}
	c := newTestClient(t, "DE", w.certDE)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantMalformed(t, c, w.peerFR(srv), tt.frame, frameRecallAck, tt.want)
			wantRefused(t, refused, "recall "+CodeMalformed)
		})
	}
	if _, got, _ := recv.record(); len(got) != 0 {
		t.Errorf("the RecallReceiver was called %d times for malformed recalls", len(got))
	}
}

// TestClientRefusesBadRecalls checks a request before sending it.
func TestClientRefusesBadRecalls(t *testing.T) {
	w := newWorld(t)
	env, req := recallOf(t, w, w.unitDE)
	srv, recv, _ := startRecallFR(t, w, env)
	c := newTestClient(t, "DE", w.certDE)
	for _, s := range []*crypto.Signed{
		nil,
		{},
		{Signature: req.Signature},
		{Body: make([]byte, crypto.MaxRecallBodySize+1), Signature: req.Signature},
		{Body: req.Body},
		{Body: req.Body, Signature: req.Signature[:63]},
		{Body: []byte(`{}`), Signature: req.Signature},
	} {
		if _, err := c.Recall(bounded(t), w.peerFR(srv), s); err == nil || !strings.HasPrefix(err.Error(), "recall for FR: ") {
			t.Errorf("request %+v: err = %v", s, err)
		}
	}
	if _, got, _ := recv.record(); len(got) != 0 {
		t.Errorf("the RecallReceiver was called %d times", len(got))
	}
}

// TestHostileRecallAnswers has FR answer with frames that break the rules
// or bounds, or an ack it did not sign or that answers another request:
// each is an error, never an ack or a rejection to act on.
func TestHostileRecallAnswers(t *testing.T) {
	w := newWorld(t)
	env, req := recallOf(t, w, w.unitDE)
	r, _ := crypto.ParseRecallBody(req.Body)
	_, otherReq := recallOf(t, w, w.unitDE)
	otherR, _ := crypto.ParseRecallBody(otherReq.Body)
	ackBy := func(key *crypto.SigningKey, gateway string, req *crypto.Signed, r *crypto.RecallRequest, until time.Time) *crypto.Signed {
		a, err := crypto.NewRecallAck(gateway, req, r, true, "", "", until, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		s, err := key.SignRecallAck(a)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	frame := func(s *crypto.Signed) []byte {
		return rawFrame(frameRecallAck, `{"ack":{"body":`+b64(s.Body)+`,"signature":`+b64(s.Signature)+`}}`)
	}
	good := ackBy(w.signFR, "FR", req, r, r.RetainUntil)
	receipt, err := signReceipt(w.signFR, env, "DE", "FR", 0)
	if err != nil {
		t.Fatal(err)
	}
	oversized := rawFrame(frameRecallAck, "")
	oversized[1], oversized[2], oversized[3], oversized[4] = 0, 0, 0x40, 1
	tests := []struct {
		name   string
		answer []byte
		want   string
	}{
		{"signed by another key", frame(ackBy(w.signDE, "FR", req, r, r.RetainUntil)), "recall ack: signature does not verify under " + w.signFR.Public()},
		{"a changed body", frame(&crypto.Signed{Body: bytes.Replace(good.Body, []byte(`"applied":true`), []byte(`"applied":fals`), 1), Signature: good.Signature}), "signature does not verify"},
		{"signed as a receipt", frame(&crypto.Signed{Body: good.Body, Signature: receipt.Signature}), "signature does not verify"},
		{"a receipt", frame(receipt), "signature does not verify"},
		{"for another request", frame(ackBy(w.signFR, "FR", otherReq, otherR, otherR.RetainUntil)), "recall ack from FR is for bundle"},
		{"by another gateway", frame(ackBy(w.signFR, "NL", req, r, r.RetainUntil)), `recall ack from FR is for gateway "NL", not "FR"`},
		{"applied but longer", frame(ackBy(w.signFR, "FR", req, r, r.RetainUntil.Add(time.Hour))), "says the request was applied, but leaves retain-until"},
		{"a frame over the limit", oversized, "exceeds the limit of 16384"},
		{"an ack over its limit", frame(&crypto.Signed{Body: make([]byte, crypto.MaxRecallAckBodySize+1), Signature: good.Signature}), "ack body of 4097 bytes"},
		{"no ack", rawFrame(frameRecallAck, `{}`), "ack is missing"},
		{"an unknown member", rawFrame(frameRecallAck, `{"ack":{"body":`+b64(good.Body)+`,"signature":`+b64(good.Signature)+`},"x":1}`), "unknown field"},
		{"a member twice", rawFrame(frameRecallAck, `{"ack":{"body":`+b64(good.Body)+`,"signature":`+b64(good.Signature)+`},"ack":null}`), "more than once"},
		{"another frame", rawFrame(frameAgreement, `{"body":"e30=","signature":`+b64(good.Signature)+`}`), "got frame type 12, want 14"},
		{"no answer", nil, "EOF"},
		{"a rejection with a size", rawFrame(frameReject, `{"code":"conflict","reason":"x","known_size":3}`), "known_size in a \"conflict\" rejection"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestClient(t, "DE", w.certDE)
			s, err := c.Recall(bounded(t), hostileFR(t, w, tt.answer), req)
			var rej *Rejection
			if err == nil || errors.As(err, &rej) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("answer %+v, err = %v, want an error with %q", s, err, tt.want)
			}
		})
	}
	// The good ack passes the same way, so that the cases above fail for
	// what they change.
	c := newTestClient(t, "DE", w.certDE)
	if _, err := c.Recall(bounded(t), hostileFR(t, w, frame(good)), req); err != nil {
		t.Errorf("the good ack: %v", err)
	}
}

// TestRecallReceiverAnswersAreChecked has FR's RecallReceiver answer what
// the protocol does not allow: the server sends internal instead.
func TestRecallReceiverAnswersAreChecked(t *testing.T) {
	w := newWorld(t)
	env, req := recallOf(t, w, w.unitDE)
	tests := []struct {
		name   string
		answer func() (*crypto.Signed, error)
		code   string
	}{
		{"no ack and no error", func() (*crypto.Signed, error) { return nil, nil }, CodeInternal},
		{"an error", func() (*crypto.Signed, error) { return nil, errors.New("disk on fire") }, CodeInternal},
		{"an ack over its limit", func() (*crypto.Signed, error) {
			return &crypto.Signed{Body: make([]byte, crypto.MaxRecallAckBodySize+1), Signature: make([]byte, 64)}, nil
		}, CodeInternal},
		{"an unsigned ack", func() (*crypto.Signed, error) { return &crypto.Signed{Body: []byte(`{}`)}, nil }, CodeInternal},
		{"a refusal", func() (*crypto.Signed, error) { return nil, Reject(CodeUnavailable, "storage down") }, CodeUnavailable},
		{"a refusal with a size", func() (*crypto.Signed, error) { return nil, WitnessConflict(3, "x") }, CodeConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, recv, _ := startRecallFR(t, w, env)
			recv.mu.Lock()
			recv.answer = func(string, *crypto.Signed) (*crypto.Signed, error) { return tt.answer() }
			recv.mu.Unlock()
			c := newTestClient(t, "DE", w.certDE)
			_, err := c.Recall(bounded(t), w.peerFR(srv), req)
			wantRejection(t, err, tt.code)
			var rej *Rejection
			if errors.As(err, &rej) && rej.KnownSize != nil {
				t.Errorf("a recall's rejection carries known_size %d", *rej.KnownSize)
			}
		})
	}
}

// TestRecallStreamsAreGivenBack answers and refuses more recalls than a
// connection has streams, then delivers a bundle on the same connection.
func TestRecallStreamsAreGivenBack(t *testing.T) {
	w := newWorld(t)
	env, req := recallOf(t, w, w.unitDE)
	srv, recv, _ := startRecallFR(t, w, env)
	none := serve(t, ServerConfig{ID: "FR", Certificate: w.certFR, PeerCAs: map[string]*x509.CertPool{"DE": w.poolDE},
		Receiver: &memReceiver{id: "FR", sign: w.signFR, got: map[string][]byte{}, rcpt: map[string]*crypto.Signed{}}, Logger: zap.NewNop()})
	recall := func(ctx context.Context, c *Client, p Peer) error {
		_, err := c.Recall(ctx, p, req)
		return err
	}
	for _, tt := range []streamCase{
		{"recalls answered", srv, recall, ""},
		{"recalls refused as not accepted", none, recall, CodeNotAccepted},
		{"malformed recalls", srv, func(ctx context.Context, c *Client, p Peer) error {
			str := rawStream(t, ctx, c, p)
			defer str.CancelRead(0)
			defer str.Close()
			str.Write(rawFrame(frameRecall, `{"bundle_id":"x","request":null}`))
			return decodeFrame(str, frameRecallAck, new(json.RawMessage))
		}, CodeMalformed},
		// The request's FIN arrives after the answer: the server must
		// not wait to read it to finish the stream.
		{"recalls ended after the answer", srv, func(ctx context.Context, c *Client, p Peer) error {
			str := rawStream(t, ctx, c, p)
			defer str.CancelRead(0)
			defer str.Close()
			if err := writeFrame(str, frameRecall, &recallFrame{BundleID: env.BundleID, Request: req}); err != nil {
				return err
			}
			return decodeFrame(str, frameRecallAck, new(recallAckFrame))
		}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, w) })
	}
	if _, got, _ := recv.record(); len(got) != 2*manyExchanges {
		t.Errorf("the RecallReceiver was called %d times, want %d", len(got), 2*manyExchanges)
	}
}
