package transfer

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"

	"evx/crypto"

	"github.com/quic-go/quic-go"
	"go.uber.org/zap"
)

// The agreement exchange (docs/protocol.md section 4.5): a gateway sends a
// peer its signed summary of its agreement with that peer in an
// AGREEMENT_NOTICE, and the peer answers with its own for the sender in an
// AGREEMENT, so that one exchange tells each side the other's. transfer
// carries the summaries as signed documents within bounds; their meaning,
// and which gateway they name, are package agreement's.

// MaxAgreementFrameSize bounds AGREEMENT_NOTICE and AGREEMENT frames: a
// summary of crypto.MaxAgreementSummarySize, base64-encoded, with its
// signature takes under 44 KiB.
const MaxAgreementFrameSize = 64 << 10

// stageAgreement is the stage of the agreement exchange's refusals, as
// OnRefuse reports them.
const stageAgreement = "agreement"

// agreementFrame is the body of AGREEMENT_NOTICE and AGREEMENT: a signed
// summary, {"body", "signature"}.
type agreementFrame crypto.Signed

func (f *agreementFrame) check() error {
	if len(f.Body) == 0 || len(f.Body) > crypto.MaxAgreementSummarySize {
		return fmt.Errorf("summary body of %d bytes, want 1 to %d", len(f.Body), crypto.MaxAgreementSummarySize)
	}
	if len(f.Signature) != ed25519.SignatureSize {
		return fmt.Errorf("summary signature of %d bytes, want %d", len(f.Signature), ed25519.SignatureSize)
	}
	return nil
}

// AgreementPeer is what a Receiver implements, besides Receiver, to exchange
// agreement summaries with its peers. A server whose Receiver does not
// implement it refuses AGREEMENT_NOTICE with not-accepted.
type AgreementPeer interface {
	// ExchangeAgreements takes theirs, peer's signed summary of its
	// agreement with this gateway, and returns this gateway's signed
	// summary of its agreement with peer. It verifies theirs against
	// peer's signing key and checks that it names peer as its issuer and
	// this gateway as its peer, and keeps it if it is newer than the one
	// it holds. To refuse it returns a *Rejection: bad-signature,
	// malformed, or the codes of docs/protocol.md section 4.5; any other
	// error is answered as internal. theirs is within the bounds of the
	// frame; ctx ends when peer can no longer be answered.
	ExchangeAgreements(ctx context.Context, peer string, theirs *crypto.Signed) (*crypto.Signed, error)
}

// ExchangeAgreements sends mine, this gateway's signed summary of its
// agreement with p, and returns p's signed summary of its agreement with
// this gateway, once its signature verifies under p.SigningKey: the caller
// parses its body and checks whom it names (agreement.ParseSummary). A
// refusal is a *Rejection.
func (c *Client) ExchangeAgreements(ctx context.Context, p Peer, mine *crypto.Signed) (*crypto.Signed, error) {
	if mine == nil {
		return nil, fmt.Errorf("agreement summary for %s: missing", p.ID)
	}
	req := agreementFrame(*mine)
	if err := req.check(); err != nil {
		return nil, fmt.Errorf("agreement summary for %s: %w", p.ID, err)
	}
	var resp agreementFrame
	if err := c.exchange(ctx, p, "agreement summary", frameAgreementNotice, &req, frameAgreement, &resp); err != nil {
		return nil, refusedByPeer(p.ID, err)
	}
	theirs := crypto.Signed(resp)
	if _, err := crypto.VerifyAgreementSummary(&theirs, p.SigningKey); err != nil {
		return nil, fmt.Errorf("exchanging agreement summaries with %s: %w", p.ID, err)
	}
	return &theirs, nil
}

func (s *Server) serveAgreement(ctx context.Context, peer string, str *quic.Stream, body []byte, log *zap.Logger) {
	var req agreementFrame
	if err := unmarshalStrict(body, &req); err != nil {
		s.reject(str, log, stageAgreement, Reject(CodeMalformed, "agreement notice: %v", err))
		return
	}
	ap, ok := s.cfg.Receiver.(AgreementPeer)
	if !ok {
		s.reject(str, log, stageAgreement, Reject(CodeNotAccepted, "gateway %s exchanges no agreement summaries", s.cfg.ID))
		return
	}
	ctx, cancel := context.WithTimeout(ctx, agreementAnswerTimeout)
	defer cancel()
	theirs := crypto.Signed(req)
	mine, err := ap.ExchangeAgreements(ctx, peer, &theirs)
	if err == nil && mine == nil {
		err = errors.New("no summary and no error")
	}
	if err != nil {
		s.reject(str, log, stageAgreement, logRejection(log, "exchanging agreement summaries", err))
		return
	}
	resp := agreementFrame(*mine)
	if err := resp.check(); err != nil {
		log.Error("exchanging agreement summaries", zap.Error(err))
		s.reject(str, log, stageAgreement, Reject(CodeInternal, "gateway %s failed to state its agreement; it has been logged there", s.cfg.ID))
		return
	}
	if err := writeFrame(stallWriter{str, stallTimeout}, frameAgreement, &resp); err != nil {
		log.Warn("sending agreement summary", zap.Error(err))
		return
	}
	log.Info("agreement summaries exchanged")
}

// firstFrameStage is the stage of an exchange that began with a frame of
// type typ, for counting the refusal of a first frame that could not be
// read.
func firstFrameStage(typ byte) string {
	switch typ {
	case frameAgreementNotice:
		return stageAgreement
	case frameRecall:
		return stageRecall
	}
	return stageOf(typ)
}

// agreementAnswerTimeout bounds an AgreementPeer's answer: the client
// gives the whole exchange the stall timeout.
const agreementAnswerTimeout = stallTimeout
