package transfer

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"

	"evx/crypto"

	"github.com/quic-go/quic-go"
	"go.uber.org/zap"
)

// The recall exchange (docs/protocol.md section 4.6): the gateway that
// sent a bundle forwards its unit's signed request to shorten the bundle's
// retention, or to recall it, in a RECALL, and the receiving gateway
// answers with its signed ack in a RECALL_ACK, whether it applied the
// request or refused it (a legal hold). transfer checks the documents'
// bounds and that the request is the authenticated peer's unit's; whose
// key signed it, and what to do, are the receiving gateway's to decide.

// MaxRecallFrameSize bounds RECALL and RECALL_ACK frames: a request or an
// ack of 4 KiB, base64-encoded, with its signature and the bundle id,
// takes under 6 KiB.
const MaxRecallFrameSize = 16 << 10

// stageRecall is the stage of the recall exchange's refusals, as OnRefuse
// reports them.
const stageRecall = "recall"

// recallAnswerTimeout bounds a RecallReceiver's answer: the client gives
// the whole exchange the stall timeout.
const recallAnswerTimeout = stallTimeout

// recallFrame is the body of RECALL: the bundle recalled and the unit's
// signed request.
type recallFrame struct {
	BundleID string         `json:"bundle_id"`
	Request  *crypto.Signed `json:"request"`
}

func (f *recallFrame) check() error {
	if err := checkSignedBounds("request", f.Request, crypto.MaxRecallBodySize); err != nil {
		return err
	}
	// The request must parse to name the bundle; its signature is the
	// receiver's to check, against the envelope's sender key.
	r, err := crypto.ParseRecallBody(f.Request.Body)
	if err != nil {
		return err
	}
	if r.BundleID != f.BundleID {
		return fmt.Errorf("the request is for bundle %s, the frame names %q", r.BundleID, truncate(f.BundleID))
	}
	return nil
}

// recallAckFrame is the body of RECALL_ACK: the receiving gateway's
// signed ack.
type recallAckFrame struct {
	Ack *crypto.Signed `json:"ack"`
}

func (f *recallAckFrame) check() error {
	return checkSignedBounds("ack", f.Ack, crypto.MaxRecallAckBodySize)
}

// checkSignedBounds checks a signed document's sizes before anything else
// reads it: a body of 1 to limit bytes and an Ed25519 signature.
func checkSignedBounds(what string, s *crypto.Signed, limit int) error {
	if s == nil {
		return fmt.Errorf("%s is missing", what)
	}
	if len(s.Body) == 0 || len(s.Body) > limit {
		return fmt.Errorf("%s body of %d bytes, want 1 to %d", what, len(s.Body), limit)
	}
	if len(s.Signature) != ed25519.SignatureSize {
		return fmt.Errorf("%s signature of %d bytes, want %d", what, len(s.Signature), ed25519.SignatureSize)
	}
	return nil
}

// truncate shortens s, which a peer chose, for an error message.
func truncate(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

// RecallReceiver takes recall requests from peers: ServerConfig.Recalls.
// A server without one refuses RECALL with not-accepted.
type RecallReceiver interface {
	// Recall takes req, a request from a unit of gateway peer to shorten
	// the retention of a bundle received from peer, and returns this
	// gateway's signed ack, applied or not (crypto.RecallAck). transfer has
	// checked that req is within its bounds, parses as a request
	// (crypto.ParseRecallBody) and is made by a unit of peer; Recall
	// verifies its signature under the bundle's sender key and checks it
	// against the bundle. To refuse without an ack it returns a
	// *Rejection: bad-signature, not-accepted (no such bundle from peer),
	// malformed, unavailable; any other error is answered as internal.
	// ctx ends when peer can no longer be answered.
	Recall(ctx context.Context, peer string, req *crypto.Signed) (*crypto.Signed, error)
}

// Recall forwards req, a unit's signed request to shorten the retention
// of a bundle sent to p (crypto.RecallRequest), and returns p's signed ack
// once it verifies under p.SigningKey and answers req
// (crypto.RecallAck.CheckRequest). An ack may say that the request was not
// applied; a refusal without an ack is a *Rejection.
func (c *Client) Recall(ctx context.Context, p Peer, req *crypto.Signed) (*crypto.Signed, error) {
	if err := checkSignedBounds("request", req, crypto.MaxRecallBodySize); err != nil {
		return nil, fmt.Errorf("recall for %s: %w", p.ID, err)
	}
	r, err := crypto.ParseRecallBody(req.Body)
	if err != nil {
		return nil, fmt.Errorf("recall for %s: %w", p.ID, err)
	}
	var resp recallAckFrame
	if err := c.exchange(ctx, p, "recall ack", frameRecall, &recallFrame{BundleID: r.BundleID, Request: req}, frameRecallAck, &resp); err != nil {
		return nil, refusedByPeer(p.ID, err)
	}
	a, err := crypto.VerifyRecallAck(resp.Ack, p.SigningKey)
	if err == nil {
		err = a.CheckRequest(req, r, p.ID)
	}
	if err != nil {
		return nil, fmt.Errorf("recall of bundle %s at %s: %w", r.BundleID, p.ID, err)
	}
	return resp.Ack, nil
}

func (s *Server) serveRecall(ctx context.Context, peer string, str *quic.Stream, body []byte, log *zap.Logger) {
	var req recallFrame
	if err := unmarshalStrict(body, &req); err != nil {
		s.reject(str, log, stageRecall, Reject(CodeMalformed, "recall: %v", err))
		return
	}
	log = log.With(zap.String("bundle", req.BundleID))
	// A gateway speaks for its own units only, as an offer's sender must
	// be one (section 5, check 3).
	r, _ := crypto.ParseRecallBody(req.Request.Body)
	if country, _, _ := strings.Cut(r.Unit, "/"); country != peer {
		s.reject(str, log, stageRecall, Reject(CodeSenderMismatch, "the recall's unit %q does not belong to the authenticated peer %s", r.Unit, peer))
		return
	}
	if s.cfg.Recalls == nil {
		s.reject(str, log, stageRecall, Reject(CodeNotAccepted, "gateway %s takes no recalls", s.cfg.ID))
		return
	}
	ctx, cancel := context.WithTimeout(ctx, recallAnswerTimeout)
	defer cancel()
	ack, err := s.cfg.Recalls.Recall(ctx, peer, req.Request)
	if err == nil && ack == nil {
		err = errors.New("no ack and no error")
	}
	if err != nil {
		s.reject(str, log, stageRecall, logRejection(log, "answering a recall", err))
		return
	}
	resp := recallAckFrame{Ack: ack}
	if err := resp.check(); err != nil {
		log.Error("answering a recall", zap.Error(err))
		s.reject(str, log, stageRecall, Reject(CodeInternal, "gateway %s failed to answer the recall; it has been logged there", s.cfg.ID))
		return
	}
	if err := writeFrame(stallWriter{str, stallTimeout}, frameRecallAck, &resp); err != nil {
		log.Warn("sending recall ack", zap.Error(err))
		return
	}
	log.Info("recall answered")
}
