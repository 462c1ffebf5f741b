package transfer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"evx/crypto"

	"go.uber.org/zap"
)

// logReceiver is FR's receiver with a LogPeer: a witness that holds the
// size of the last checkpoint of DE's log it cosigned, and a log that
// proves whatever its prove function says. Checkpoints are opaque to
// transfer, so the test's are "<origin>\n<size>\n…" and nothing more.
type logReceiver struct {
	*memReceiver
	prove func(*ProofRequest) (*ProofResponse, error)

	mu       sync.Mutex
	known    int64
	calls    int
	witness  []WitnessRequest
	proofs   []ProofRequest
	deadline time.Duration // the longest time a LogPeer call was given
}

func newLogReceiver(w *world) *logReceiver {
	return &logReceiver{memReceiver: &memReceiver{id: "FR", sign: w.signFR, got: map[string][]byte{}, rcpt: map[string]*crypto.Signed{}}}
}

func (l *logReceiver) called(ctx context.Context) {
	l.calls++
	if d, ok := ctx.Deadline(); ok {
		l.deadline = max(l.deadline, time.Until(d))
	} else {
		l.deadline = 1 << 62
	}
}

func (l *logReceiver) Cosign(ctx context.Context, peer string, req *WitnessRequest) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.called(ctx)
	l.witness = append(l.witness, *req)
	if peer != "DE" {
		return nil, Reject(CodeNotAccepted, "no log key for %s", peer)
	}
	var origin string
	var size int64
	if _, err := fmt.Sscanf(string(req.Checkpoint), "%s\n%d\n", &origin, &size); err != nil {
		return nil, Reject(CodeMalformed, "checkpoint: %v", err)
	}
	if req.OldSize != l.known {
		return nil, WitnessConflict(l.known, "old size %d, the last checkpoint cosigned has size %d", req.OldSize, l.known)
	}
	l.known = size
	sum := sha256.Sum256(req.Checkpoint)
	return fmt.Appendf(nil, "— evx.witness/FR %s\n", base64.StdEncoding.EncodeToString(sum[:])), nil
}

func (l *logReceiver) Prove(ctx context.Context, peer string, req *ProofRequest) (*ProofResponse, error) {
	l.mu.Lock()
	l.called(ctx)
	l.proofs = append(l.proofs, *req)
	prove := l.prove
	l.mu.Unlock()
	return prove(req)
}

// record returns the calls made and the requests seen.
func (l *logReceiver) record() (int, []WitnessRequest, []ProofRequest, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls, l.witness, l.proofs, l.deadline
}

// startLogFR starts FR's peer listener with a LogPeer, reporting refusals
// on the returned channel.
func startLogFR(t *testing.T, w *world) (*Server, *logReceiver, chan string) {
	t.Helper()
	recv := newLogReceiver(w)
	recv.prove = func(req *ProofRequest) (*ProofResponse, error) {
		return &ProofResponse{Checkpoint: checkpoint(12), LeafIndex: req.LeafIndex, Proof: hashes(3, HashSize)}, nil
	}
	refused := make(chan string, 100)
	srv := serve(t, ServerConfig{ID: "FR", Certificate: w.certFR, PeerCAs: map[string]*x509.CertPool{"DE": w.poolDE},
		Receiver: recv, Logger: zap.NewNop(), OnRefuse: func(stage, code string, _ net.Addr) { refused <- stage + " " + code }})
	return srv, recv, refused
}

func checkpoint(size int64) []byte {
	return fmt.Appendf(nil, "evx.transfer-log/DE\n%d\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— evx.transfer-log/DE sig\n", size)
}

// hashes returns n distinct hashes of size bytes.
func hashes(n, size int) [][]byte {
	hs := make([][]byte, n)
	for i := range hs {
		hs[i] = bytes.Repeat([]byte{byte(i + 1)}, size)
	}
	return hs
}

func ptr(n int64) *int64 { return &n }

// wantRefused takes the next refusal from OnRefuse.
// wantMalformed sends frame alone on a new stream to p and checks that the
// server rejects it as malformed, saying want, instead of answering with
// a frame of type answer.
func wantMalformed(t *testing.T, c *Client, p Peer, frame []byte, answer byte, want string) {
	t.Helper()
	str := rawStream(t, bounded(t), c, p)
	str.Write(frame)
	str.Close()
	err := decodeFrame(str, answer, new(json.RawMessage))
	str.CancelRead(0)
	wantRejection(t, err, CodeMalformed)
	if !strings.Contains(err.Error(), want) {
		t.Errorf("rejection %v does not say %q", err, want)
	}
}

func wantRefused(t *testing.T, refused chan string, want string) {
	t.Helper()
	select {
	case got := <-refused:
		if got != want {
			t.Errorf("refusal %q, want %q", got, want)
		}
	default:
		t.Errorf("no refusal reported, want %q", want)
	}
}

func TestWitnessExchange(t *testing.T) {
	w := newWorld(t)
	srv, recv, refused := startLogFR(t, w)
	c := newTestClient(t, "DE", w.certDE)
	ctx := bounded(t)
	peer := w.peerFR(srv)

	sent := []WitnessRequest{
		{Checkpoint: checkpoint(5), OldSize: 0, Consistency: [][]byte{}},
		{Checkpoint: checkpoint(9), OldSize: 5, Consistency: hashes(3, HashSize)},
		// The largest request there may be.
		{Checkpoint: append(checkpoint(20), bytes.Repeat([]byte{'x'}, MaxCheckpointSize-len(checkpoint(20)))...), OldSize: 9, Consistency: hashes(MaxProofHashes, HashSize)},
	}
	for _, req := range sent {
		resp, err := c.Witness(ctx, peer, req)
		if err != nil {
			t.Fatalf("witnessing size %d from %d: %v", len(req.Checkpoint), req.OldSize, err)
		}
		sum := sha256.Sum256(req.Checkpoint)
		if want := "— evx.witness/FR " + base64.StdEncoding.EncodeToString(sum[:]) + "\n"; string(resp.Cosignature) != want {
			t.Errorf("cosignature %q, want %q", resp.Cosignature, want)
		}
	}
	// A first request needs no proof: nil goes out as an empty one.
	_, err := c.Witness(ctx, peer, WitnessRequest{Checkpoint: checkpoint(20), OldSize: 20})
	if err != nil {
		t.Fatal(err)
	}
	_, seen, _, deadline := recv.record()
	if !reflect.DeepEqual(seen[:len(sent)], sent) {
		t.Errorf("the witness saw %+v, want what was sent", seen)
	}
	if got := seen[len(sent)].Consistency; got == nil || len(got) != 0 {
		t.Errorf("a request without proof arrived with consistency %#v, want an empty one", got)
	}
	if deadline <= 0 || deadline > logAnswerTimeout {
		t.Errorf("Cosign was given %v to answer, want at most %v", deadline, logAnswerTimeout)
	}

	// An old size the witness does not hold: it says which it holds.
	_, err = c.Witness(ctx, peer, WitnessRequest{Checkpoint: checkpoint(30), OldSize: 9})
	var rej *Rejection
	if !errors.As(err, &rej) || rej.Code != CodeConflict || rej.KnownSize == nil || *rej.KnownSize != 20 {
		t.Fatalf("err = %#v, want a conflict with known size 20", err)
	}
	wantRefused(t, refused, "witness conflict")

	// A witness that has cosigned nothing holds size 0, and says so.
	recv.mu.Lock()
	recv.known = 0
	recv.mu.Unlock()
	_, err = c.Witness(ctx, peer, WitnessRequest{Checkpoint: checkpoint(30), OldSize: 20, Consistency: hashes(2, HashSize)})
	if !errors.As(err, &rej) || rej.Code != CodeConflict || rej.KnownSize == nil || *rej.KnownSize != 0 {
		t.Fatalf("err = %#v, want a conflict with known size 0", err)
	}
	wantRefused(t, refused, "witness conflict")
}

func TestProofExchange(t *testing.T) {
	w := newWorld(t)
	srv, recv, _ := startLogFR(t, w)
	c := newTestClient(t, "DE", w.certDE)
	ctx := bounded(t)
	peer := w.peerFR(srv)
	leaf := bytes.Repeat([]byte{0xab}, HashSize)

	sent := []ProofRequest{
		{LeafHash: leaf, LeafIndex: 3, TreeSize: 12},
		{LeafHash: leaf, LeafIndex: 11, TreeSize: 0},
		{LeafHash: leaf, LeafIndex: 0},
	}
	for _, req := range sent {
		resp, err := c.Prove(ctx, peer, req)
		if err != nil {
			t.Fatal(err)
		}
		want := req.LeafIndex
		if resp.LeafIndex != want || !bytes.Equal(resp.Checkpoint, checkpoint(12)) || !reflect.DeepEqual(resp.Proof, hashes(3, HashSize)) {
			t.Errorf("proof %+v, want leaf %d of checkpoint 12 with 3 hashes", resp, want)
		}
	}
	_, _, seen, deadline := recv.record()
	if !reflect.DeepEqual(seen, sent) {
		t.Errorf("the log saw %+v, want %+v", seen, sent)
	}
	if deadline <= 0 || deadline > logAnswerTimeout {
		t.Errorf("Prove was given %v to answer, want at most %v", deadline, logAnswerTimeout)
	}

	// The only entry of a tree is proved by no hash: a LogPeer may say
	// so with nil.
	recv.mu.Lock()
	recv.prove = func(*ProofRequest) (*ProofResponse, error) {
		return &ProofResponse{Checkpoint: checkpoint(1), LeafIndex: 0}, nil
	}
	recv.mu.Unlock()
	resp, err := c.Prove(ctx, peer, ProofRequest{LeafHash: leaf, LeafIndex: 0, TreeSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Proof == nil || len(resp.Proof) != 0 {
		t.Errorf("proof %#v, want an empty one", resp.Proof)
	}
}

// TestLogExchangesWithoutLogPeer asks a gateway whose receiver keeps no log
// to witness and to prove: it refuses with not-accepted.
func TestLogExchangesWithoutLogPeer(t *testing.T) {
	w := newWorld(t)
	refused := make(chan string, 10)
	recv := &memReceiver{id: "FR", sign: w.signFR, got: map[string][]byte{}, rcpt: map[string]*crypto.Signed{}}
	srv := serve(t, ServerConfig{ID: "FR", Certificate: w.certFR, PeerCAs: map[string]*x509.CertPool{"DE": w.poolDE},
		Receiver: recv, Logger: zap.NewNop(), OnRefuse: func(stage, code string, _ net.Addr) { refused <- stage + " " + code }})
	c := newTestClient(t, "DE", w.certDE)
	ctx := bounded(t)
	_, err := c.Witness(ctx, w.peerFR(srv), WitnessRequest{Checkpoint: checkpoint(1)})
	wantRejection(t, err, CodeNotAccepted)
	wantRefused(t, refused, "witness not-accepted")
	_, err = c.Prove(ctx, w.peerFR(srv), ProofRequest{LeafHash: make([]byte, HashSize)})
	wantRejection(t, err, CodeNotAccepted)
	wantRefused(t, refused, "proof not-accepted")
}

// streamCase is one kind of exchange run manyExchanges times on one
// connection: each must give its stream back, so that a delivery still
// finds one afterwards.
type streamCase struct {
	name     string
	srv      *Server
	exchange func(context.Context, *Client, Peer) error
	want     string // the refusal's code, "" for an answer
}

func (tt streamCase) run(t *testing.T, w *world) {
	ctx := bounded(t)
	c := newTestClient(t, "DE", w.certDE)
	p := w.peerFR(tt.srv)
	for range manyExchanges {
		err := tt.exchange(ctx, c, p)
		if tt.want == "" && err != nil {
			t.Fatal(err)
		}
		if tt.want != "" {
			wantRejection(t, err, tt.want)
		}
	}
	env, sig, payload := sealed(t, w.unitDE, w.recipientFR, 100_000)
	if _, err := c.Send(ctx, p, env, sig, bytes.NewReader(payload)); err != nil {
		t.Fatalf("delivery after %d exchanges on the connection: %v", manyExchanges, err)
	}
}

// TestLogStreamsAreGivenBack refuses and answers more witness and proof
// requests than a connection has streams, then delivers a bundle on the
// same connection.
func TestLogStreamsAreGivenBack(t *testing.T) {
	w := newWorld(t)
	srv, recv, _ := startLogFR(t, w)
	noLog := serve(t, ServerConfig{ID: "FR", Certificate: w.certFR, PeerCAs: map[string]*x509.CertPool{"DE": w.poolDE},
		Receiver: &memReceiver{id: "FR", sign: w.signFR, got: map[string][]byte{}, rcpt: map[string]*crypto.Signed{}}, Logger: zap.NewNop()})
	for _, tt := range []streamCase{
		{"witness requests refused as not accepted", noLog, func(ctx context.Context, c *Client, p Peer) error {
			_, err := c.Witness(ctx, p, WitnessRequest{Checkpoint: checkpoint(1)})
			return err
		}, CodeNotAccepted},
		{"proof requests refused as not accepted", noLog, func(ctx context.Context, c *Client, p Peer) error {
			_, err := c.Prove(ctx, p, ProofRequest{LeafHash: make([]byte, HashSize)})
			return err
		}, CodeNotAccepted},
		{"witness requests refused as conflicts", srv, func(ctx context.Context, c *Client, p Peer) error {
			_, err := c.Witness(ctx, p, WitnessRequest{Checkpoint: checkpoint(1), OldSize: 1000})
			return err
		}, CodeConflict},
		// The request's FIN arrives after the answer: the server must
		// not wait to read it to finish the stream.
		{"malformed witness requests ended after the answer", srv, func(ctx context.Context, c *Client, p Peer) error {
			str := rawStream(t, ctx, c, p)
			defer str.CancelRead(0)
			defer str.Close()
			str.Write(rawFrame(frameWitnessRequest, `{"checkpoint":"eA==","old_size":0,"consistency":[],"old_size":1}`))
			return decodeFrame(str, frameWitness, new(WitnessResponse))
		}, CodeMalformed},
		{"proof requests answered and ended after the answer", srv, func(ctx context.Context, c *Client, p Peer) error {
			str := rawStream(t, ctx, c, p)
			defer str.CancelRead(0)
			defer str.Close()
			if err := writeFrame(str, frameProofRequest, &ProofRequest{LeafHash: make([]byte, HashSize)}); err != nil {
				return err
			}
			return decodeFrame(str, frameProof, new(ProofResponse))
		}, ""},
		{"witness requests answered", srv, func(ctx context.Context, c *Client, p Peer) error {
			recv.mu.Lock()
			recv.known = 0
			recv.mu.Unlock()
			_, err := c.Witness(ctx, p, WitnessRequest{Checkpoint: checkpoint(1)})
			return err
		}, ""},
		{"proof requests answered", srv, func(ctx context.Context, c *Client, p Peer) error {
			_, err := c.Prove(ctx, p, ProofRequest{LeafHash: make([]byte, HashSize)})
			return err
		}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, w) })
	}
	if n := recv.count(); n != 5 {
		t.Errorf("%d bundles stored by the gateway with a log, want 5", n)
	}
}

// TestMalformedLogRequests sends FR witness and proof requests that break
// the frames' rules or bounds: each is refused as malformed before the
// LogPeer sees it.
func TestMalformedLogRequests(t *testing.T) {
	w := newWorld(t)
	srv, recv, refused := startLogFR(t, w)
	b64 := func(b []byte) string { return `"` + base64.StdEncoding.EncodeToString(b) + `"` }
	list := func(hs [][]byte) string {
		s := make([]string, len(hs))
		for i, h := range hs {
			s[i] = b64(h)
		}
		return "[" + strings.Join(s, ",") + "]"
	}
	cp := `"checkpoint":` + b64(checkpoint(5))
	leaf := `"leaf_hash":` + b64(make([]byte, HashSize))
	oversized := rawFrame(frameWitnessRequest, "")
	oversized[1], oversized[2], oversized[3], oversized[4] = 0, 0, 0x40, 0x01 // MaxLogFrameSize + 1
	oversizedProof := bytes.Clone(oversized)
	oversizedProof[0] = frameProofRequest
	tests := []struct {
		name  string
		frame []byte
		stage string
		want  string
	}{
		{"witness request over the frame limit", oversized, stageWitness, "exceeds the limit of 16384"},
		{"witness request repeating a member", rawFrame(frameWitnessRequest, `{`+cp+`,"old_size":0,"consistency":[],"old_size":3}`), stageWitness, "more than once"},
		{"witness request repeating a member in another case", rawFrame(frameWitnessRequest, `{`+cp+`,"old_size":0,"consistency":[],"Old_Size":3}`), stageWitness, "more than once"},
		{"witness request with an unknown member", rawFrame(frameWitnessRequest, `{`+cp+`,"old_size":0,"consistency":[],"new_size":3}`), stageWitness, "unknown field"},
		{"witness request that is null", rawFrame(frameWitnessRequest, `null`), stageWitness, "not a JSON object"},
		{"witness request without a checkpoint", rawFrame(frameWitnessRequest, `{"old_size":0,"consistency":[]}`), stageWitness, "checkpoint of 0 bytes"},
		{"checkpoint over its limit", rawFrame(frameWitnessRequest, `{"checkpoint":`+b64(make([]byte, MaxCheckpointSize+1))+`,"old_size":0,"consistency":[]}`), stageWitness, "checkpoint of 8193 bytes"},
		{"witness request without a proof", rawFrame(frameWitnessRequest, `{`+cp+`,"old_size":0}`), stageWitness, "consistency missing"},
		{"null proof", rawFrame(frameWitnessRequest, `{`+cp+`,"old_size":0,"consistency":null}`), stageWitness, "consistency missing"},
		{"proof of too many hashes", rawFrame(frameWitnessRequest, `{`+cp+`,"old_size":0,"consistency":`+list(hashes(MaxProofHashes+1, HashSize))+`}`), stageWitness, "consistency of 65 hashes"},
		{"proof with a short hash", rawFrame(frameWitnessRequest, `{`+cp+`,"old_size":0,"consistency":`+list([][]byte{make([]byte, HashSize), make([]byte, HashSize-1)})+`}`), stageWitness, "consistency hash 1 of 31 bytes"},
		{"negative old size", rawFrame(frameWitnessRequest, `{`+cp+`,"old_size":-1,"consistency":[]}`), stageWitness, "old_size -1"},
		{"proof request over the frame limit", oversizedProof, stageProof, "exceeds the limit of 16384"},
		{"proof request without a leaf hash", rawFrame(frameProofRequest, `{"leaf_index":0,"tree_size":0}`), stageProof, "leaf_hash of 0 bytes"},
		{"proof request with a long leaf hash", rawFrame(frameProofRequest, `{"leaf_hash":`+b64(make([]byte, HashSize+1))+`,"leaf_index":0,"tree_size":0}`), stageProof, "leaf_hash of 33 bytes"},
		{"proof request repeating a member", rawFrame(frameProofRequest, `{`+leaf+`,"leaf_index":1,"tree_size":5,"leaf_index":2}`), stageProof, "more than once"},
		{"proof request with an unknown member", rawFrame(frameProofRequest, `{`+leaf+`,"leaf_index":1,"tree_size":5,"index":2}`), stageProof, "unknown field"},
		{"negative tree size", rawFrame(frameProofRequest, `{`+leaf+`,"leaf_index":1,"tree_size":-5}`), stageProof, "tree_size -5"},
		{"negative leaf index", rawFrame(frameProofRequest, `{`+leaf+`,"leaf_index":-1,"tree_size":0}`), stageProof, "leaf_index -1"},
		{"leaf index outside the tree", rawFrame(frameProofRequest, `{`+leaf+`,"leaf_index":5,"tree_size":5}`), stageProof, "leaf_index 5 is outside a tree of size 5"},
		{"leaf index that is not an integer", rawFrame(frameProofRequest, `{`+leaf+`,"leaf_index":1.5,"tree_size":5}`), stageProof, "cannot unmarshal"},
	}
	c := newTestClient(t, "DE", w.certDE)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantMalformed(t, c, w.peerFR(srv), tt.frame, frameWitness, tt.want)
			wantRefused(t, refused, tt.stage+" "+CodeMalformed)
		})
	}
	if calls, _, _, _ := recv.record(); calls != 0 {
		t.Errorf("the LogPeer was called %d times for malformed requests", calls)
	}
}

// TestClientRefusesBadLogRequests checks requests before sending them.
func TestClientRefusesBadLogRequests(t *testing.T) {
	w := newWorld(t)
	srv, recv, _ := startLogFR(t, w)
	c := newTestClient(t, "DE", w.certDE)
	ctx := bounded(t)
	for _, req := range []WitnessRequest{
		{},
		{Checkpoint: make([]byte, MaxCheckpointSize+1)},
		{Checkpoint: checkpoint(1), OldSize: -1},
		{Checkpoint: checkpoint(1), Consistency: hashes(MaxProofHashes+1, HashSize)},
		{Checkpoint: checkpoint(1), Consistency: hashes(1, HashSize+1)},
	} {
		if _, err := c.Witness(ctx, w.peerFR(srv), req); err == nil || !strings.HasPrefix(err.Error(), "witness request for FR: ") {
			t.Errorf("witness request %+v: err = %v", req, err)
		}
	}
	for _, req := range []ProofRequest{
		{},
		{LeafHash: make([]byte, HashSize), TreeSize: -1},
		{LeafHash: make([]byte, HashSize), LeafIndex: -1},
		{LeafHash: make([]byte, HashSize), LeafIndex: 4, TreeSize: 4},
	} {
		if _, err := c.Prove(ctx, w.peerFR(srv), req); err == nil || !strings.HasPrefix(err.Error(), "proof request for FR: ") {
			t.Errorf("proof request %+v: err = %v", req, err)
		}
	}
	if calls, _, _, _ := recv.record(); calls != 0 {
		t.Errorf("the LogPeer was called %d times", calls)
	}
}

// TestHostileLogAnswers has FR answer witness and proof requests with
// frames that break the rules or bounds: each is an error, never a
// cosignature, a proof or a rejection to act on.
func TestHostileLogAnswers(t *testing.T) {
	w := newWorld(t)
	b64 := func(b []byte) string { return `"` + base64.StdEncoding.EncodeToString(b) + `"` }
	oversized := rawFrame(frameWitness, "")
	oversized[1], oversized[2], oversized[3], oversized[4] = 0, 0, 0x40, 0x01
	witness := []struct {
		name   string
		answer []byte
		want   string
	}{
		{"empty cosignature", rawFrame(frameWitness, `{"cosignature":""}`), "cosignature of 0 bytes"},
		{"no cosignature", rawFrame(frameWitness, `{}`), "cosignature of 0 bytes"},
		{"cosignature over its limit", rawFrame(frameWitness, `{"cosignature":`+b64(make([]byte, MaxCosignatureSize+1))+`}`), "cosignature of 1025 bytes"},
		{"cosignature repeated", rawFrame(frameWitness, `{"cosignature":"eA==","cosignature":"eQ=="}`), "more than once"},
		{"unknown member", rawFrame(frameWitness, `{"cosignature":"eA==","size":3}`), "unknown field"},
		{"frame over the limit", oversized, "exceeds the limit of 16384"},
		{"conflict without a size", rawFrame(frameReject, `{"code":"conflict","reason":"x"}`), "conflict without known_size"},
		{"conflict with a negative size", rawFrame(frameReject, `{"code":"conflict","reason":"x","known_size":-1}`), "negative"},
		{"conflict naming the size sent", rawFrame(frameReject, `{"code":"conflict","reason":"x","known_size":4}`), "a conflict naming the old size 4"},
		{"conflict repeating its size", rawFrame(frameReject, `{"code":"conflict","reason":"x","known_size":3,"known_size":5}`), "more than once"},
		{"size in another refusal", rawFrame(frameReject, `{"code":"not-accepted","reason":"x","known_size":3}`), "known_size in a \"not-accepted\" rejection"},
	}
	for _, tt := range witness {
		t.Run("witness: "+tt.name, func(t *testing.T) {
			c := newTestClient(t, "DE", w.certDE)
			resp, err := c.Witness(bounded(t), hostileFR(t, w, tt.answer), WitnessRequest{Checkpoint: checkpoint(9), OldSize: 4, Consistency: hashes(2, HashSize)})
			var rej *Rejection
			if err == nil || errors.As(err, &rej) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("answer %+v, err = %v, want an error with %q", resp, err, tt.want)
			}
		})
	}
	proof := `"checkpoint":` + b64(checkpoint(12))
	prove := []struct {
		name   string
		answer []byte
		want   string
	}{
		{"no checkpoint", rawFrame(frameProof, `{"leaf_index":3,"proof":[]}`), "checkpoint of 0 bytes"},
		{"no proof", rawFrame(frameProof, `{`+proof+`,"leaf_index":3}`), "proof missing"},
		{"proof of too many hashes", rawFrame(frameProof, `{`+proof+`,"leaf_index":3,"proof":[`+strings.Repeat(b64(make([]byte, HashSize))+",", MaxProofHashes)+b64(make([]byte, HashSize))+`]}`), "proof of 65 hashes"},
		{"proof with a long hash", rawFrame(frameProof, `{`+proof+`,"leaf_index":3,"proof":[`+b64(make([]byte, HashSize+1))+`]}`), "proof hash 0 of 33 bytes"},
		{"another leaf", rawFrame(frameProof, `{`+proof+`,"leaf_index":4,"proof":[]}`), "a proof for leaf_index 4, asked for 3"},
		{"negative leaf index", rawFrame(frameProof, `{`+proof+`,"leaf_index":-3,"proof":[]}`), "leaf_index -3"},
		{"leaf index repeated", rawFrame(frameProof, `{`+proof+`,"leaf_index":3,"proof":[],"leaf_index":4}`), "more than once"},
		{"size in a refusal", rawFrame(frameReject, `{"code":"conflict","reason":"x","known_size":3}`), "known_size in a \"conflict\" rejection"},
	}
	for _, tt := range prove {
		t.Run("proof: "+tt.name, func(t *testing.T) {
			c := newTestClient(t, "DE", w.certDE)
			resp, err := c.Prove(bounded(t), hostileFR(t, w, tt.answer), ProofRequest{LeafHash: make([]byte, HashSize), LeafIndex: 3, TreeSize: 12})
			var rej *Rejection
			if err == nil || errors.As(err, &rej) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("answer %+v, err = %v, want an error with %q", resp, err, tt.want)
			}
		})
	}
}

// misbehavingLog is a LogPeer whose answers break the protocol's rules.
type misbehavingLog struct {
	*memReceiver
	cosign func() ([]byte, error)
	prove  func() (*ProofResponse, error)
}

func (m misbehavingLog) Cosign(ctx context.Context, peer string, req *WitnessRequest) ([]byte, error) {
	return m.cosign()
}

func (m misbehavingLog) Prove(ctx context.Context, peer string, req *ProofRequest) (*ProofResponse, error) {
	return m.prove()
}

// TestLogPeerAnswersAreChecked has FR's LogPeer answer what the protocol
// does not allow: the server sends internal instead, and sends known_size
// only in a witness's conflict.
func TestLogPeerAnswersAreChecked(t *testing.T) {
	w := newWorld(t)
	good := &ProofResponse{Checkpoint: checkpoint(12), LeafIndex: 3, Proof: [][]byte{}}
	tests := []struct {
		name   string
		cosign func() ([]byte, error)
		prove  func() (*ProofResponse, error)
		code   string
		known  *int64
	}{
		{name: "cosignature over its limit", cosign: func() ([]byte, error) { return make([]byte, MaxCosignatureSize+1), nil }, code: CodeInternal},
		{name: "no cosignature", cosign: func() ([]byte, error) { return nil, nil }, code: CodeInternal},
		{name: "an error", cosign: func() ([]byte, error) { return nil, errors.New("disk on fire") }, code: CodeInternal},
		{name: "conflict without a size", cosign: func() ([]byte, error) { return nil, Reject(CodeConflict, "x") }, code: CodeInternal},
		{name: "conflict naming the size sent", cosign: func() ([]byte, error) { return nil, WitnessConflict(4, "x") }, code: CodeInternal},
		{name: "conflict with a negative size", cosign: func() ([]byte, error) { return nil, WitnessConflict(-1, "x") }, code: CodeInternal},
		{name: "size in another refusal", cosign: func() ([]byte, error) {
			r := Reject(CodeInconsistent, "fork")
			r.KnownSize = ptr(5)
			return nil, r
		}, code: CodeInconsistent},
		{name: "conflict", cosign: func() ([]byte, error) { return nil, WitnessConflict(0, "x") }, code: CodeConflict, known: ptr(0)},
		{name: "proof of another leaf", prove: func() (*ProofResponse, error) {
			return &ProofResponse{Checkpoint: checkpoint(12), LeafIndex: 2, Proof: [][]byte{}}, nil
		}, code: CodeInternal},
		{name: "no proof and no error", prove: func() (*ProofResponse, error) { return nil, nil }, code: CodeInternal},
		{name: "proof without a checkpoint", prove: func() (*ProofResponse, error) { return &ProofResponse{LeafIndex: 3}, nil }, code: CodeInternal},
		{name: "proof over its limit", prove: func() (*ProofResponse, error) {
			return &ProofResponse{Checkpoint: checkpoint(12), LeafIndex: 3, Proof: hashes(MaxProofHashes+1, HashSize)}, nil
		}, code: CodeInternal},
		{name: "proof refused with a size", prove: func() (*ProofResponse, error) { return nil, WitnessConflict(3, "another leaf at 3") }, code: CodeConflict},
		{name: "proof refused", prove: func() (*ProofResponse, error) { return nil, Reject(CodeUnavailable, "not yet") }, code: CodeUnavailable},
		{name: "proof", prove: func() (*ProofResponse, error) { return good, nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recv := misbehavingLog{memReceiver: &memReceiver{}, cosign: tt.cosign, prove: tt.prove}
			srv := serve(t, ServerConfig{ID: "FR", Certificate: w.certFR, PeerCAs: map[string]*x509.CertPool{"DE": w.poolDE},
				Receiver: recv, Logger: zap.NewNop()})
			c := newTestClient(t, "DE", w.certDE)
			var err error
			if tt.cosign != nil {
				_, err = c.Witness(bounded(t), w.peerFR(srv), WitnessRequest{Checkpoint: checkpoint(9), OldSize: 4, Consistency: hashes(2, HashSize)})
			} else {
				var resp *ProofResponse
				resp, err = c.Prove(bounded(t), w.peerFR(srv), ProofRequest{LeafHash: make([]byte, HashSize), LeafIndex: 3})
				if tt.code == "" && (err != nil || !reflect.DeepEqual(resp, good)) {
					t.Fatalf("proof %+v, err = %v, want %+v", resp, err, good)
				}
			}
			if tt.code == "" {
				return
			}
			wantRejection(t, err, tt.code)
			var rej *Rejection
			errors.As(err, &rej)
			if !reflect.DeepEqual(rej.KnownSize, tt.known) {
				t.Errorf("known size %v, want %v", rej.KnownSize, tt.known)
			}
		})
	}
}
