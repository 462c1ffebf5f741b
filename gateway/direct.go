package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"evx/agreement"
	"evx/api"
	"evx/audit"
	"evx/crypto"
	"evx/storage"
	"evx/transfer"

	"go.uber.org/zap"
)

// Direct delivery forwards an upload to the peer gateway while it arrives,
// for a submitter that waits for delivery anyway: the payload crosses this
// gateway once, is never stored here, and the peer's receipt answers the
// upload. Store-and-forward remains the way whenever the peer cannot take
// the bundle at once.

// errNotOffered means that direct delivery did not start (the peer could
// not be reached, or asked to be tried later) and no byte of the upload was
// read: the caller stores the bundle for delivery instead.
var errNotOffered = errors.New("not offered to the peer")

// deliverDirect offers a checked upload to its peer and streams the body to
// it. The caller holds the bundle's outbox lock and has found no record. On
// success or a final refusal it stores the record with the receipt or the
// refusal, but never the payload. It records the agreement's decision,
// decided, with the offer; if it returns errNotOffered before that, the
// caller records it.
func (g *Gateway) deliverDirect(ctx context.Context, u User, env *crypto.Envelope, envJSON, sig []byte, peers []string, body io.Reader, decided *pendingDecision) (*api.OutboxStatus, error) {
	id := env.BundleID
	peer, ok := g.settings().peers[peers[0]]
	if !ok {
		return nil, fmt.Errorf("%w: %s is not a peer", errNotOffered, peers[0])
	}
	start := time.Now()
	// A suspension of cooperation with the peer stops the transfer
	// (suspend.go). The upload's decision came before the tracking: one
	// that came between is seen here.
	ctx, done := g.inflight.track(ctx, peer.ID)
	defer done()
	if a := g.agreementWith(g.settings(), peer.ID); a != nil && a.Status == agreement.Suspended {
		return nil, api.Errorf(api.CodeAgreementSuspended, "%s is suspended: %s", a.Name(g.opts.ID), a.StatusReason)
	}
	cctx, cancel := context.WithTimeout(ctx, g.opts.DirectConnectTimeout)
	err := g.client.Connect(cctx, peer)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNotOffered, err)
	}
	// The agreement's decision and the offer it allows are one write.
	if err := decided.record(ctx, g, audit.Entry{Event: audit.EventOfferSent, Actor: audit.GatewayActor, Peer: peer.ID}); err != nil {
		return nil, err
	}
	o, err := g.client.Offer(ctx, peer, envJSON, sig)
	var rej *transfer.Rejection
	switch {
	case stoppedBy(ctx) != nil:
		return nil, suspendedDuring(peer.ID, stoppedBy(ctx))
	case errors.As(err, &rej) && heldBy(rej.Code):
		// The peer's agreement holds the bundle for now: it is stored
		// and held, as a queued one is, until cooperation allows it.
		return nil, fmt.Errorf("%w: %w", errNotOffered, err)
	case errors.As(err, &rej) && !rej.Temporary():
		return g.refusedDirect(ctx, u, env, envJSON, sig, peers, rej)
	case err != nil:
		return nil, fmt.Errorf("%w: %w", errNotOffered, err)
	}
	d := o.Delivery
	if d == nil {
		g.log.Info("forwarding bundle", zap.String("bundle", id), zap.String("peer", peer.ID), zap.Int64("size", env.PayloadSize))
		src := &sourceReader{r: body}
		// The peer asks for the bytes it lacks; the body holds them all.
		if _, err := io.CopyN(io.Discard, src, o.Offset); err != nil {
			o.Abort()
			return nil, uploadEnded(env)
		}
		d, err = o.Send(src)
		switch {
		case stoppedBy(ctx) != nil:
			return nil, suspendedDuring(peer.ID, stoppedBy(ctx))
		case errors.As(err, &rej) && heldBy(rej.Code):
			// The peer suspended cooperation while the payload flowed:
			// nothing was stored there, and the body is spent here.
			return nil, suspendedDuring(peer.ID, rej)
		case errors.As(err, &rej) && rej.Code == transfer.CodeHashMismatch:
			// The upload itself was wrong, as this gateway's own check
			// would have found when storing: nothing is recorded.
			g.log.Info("upload refused by peer as corrupt", zap.String("bundle", id), zap.String("code", rej.Code))
			return nil, api.Errorf(api.CodeHashMismatch, "%s", rej.Reason)
		case errors.As(err, &rej) && rej.Code == transfer.CodeSizeMismatch:
			g.log.Info("upload refused by peer as corrupt", zap.String("bundle", id), zap.String("code", rej.Code))
			return nil, api.Errorf(api.CodeSizeMismatch, "%s", rej.Reason)
		case errors.As(err, &rej) && !rej.Temporary():
			return g.refusedDirect(ctx, u, env, envJSON, sig, peers, rej)
		case src.err != nil:
			// Checked before the stream's error: a submitter whose
			// connection breaks also ends the request's context, which
			// may stop the stream first.
			return nil, uploadEnded(env)
		case err != nil:
			g.log.Warn("direct delivery interrupted", zap.String("bundle", id), zap.String("peer", peer.ID), zap.Error(err))
			return nil, api.Errorf(api.CodeDeliveryInterrupted, "the delivery to %s was interrupted; nothing was stored, upload the bundle again", peer.ID)
		}
	}
	// The bundle has crossed the border: record it even if the submitter
	// has gone meanwhile.
	// The upload's acceptance and the delivery are one write: a small
	// push waits for the log's storage once, not twice.
	ctx = context.WithoutCancel(ctx)
	if err := g.recordDelivered(ctx, env, peer.ID, d,
		audit.Entry{Event: audit.EventUploadAccepted, Actor: audit.UnitActor(u.Unit), Peer: peer.ID}); err != nil {
		return nil, err
	}
	out := outboxReceipt{Peer: peer.ID, Receipt: d.Receipt, Delivered: g.now().UTC()}
	// The receipt goes first: the record is the commit point, and a record
	// without a payload must never be left waiting for delivery. The
	// reaper's entry goes before both.
	if err := g.dueAt(ctx, env.RetainUntil, dueOutbox, id); err != nil {
		return nil, err
	}
	if err := g.putJSONLocked(ctx, key(outboxPrefix, id, receiptFile), out, env.RetainUntil); err != nil && !errors.Is(err, storage.ErrExist) {
		return nil, err
	}
	g.expectInclusion(id, peer.ID, d, out.Delivered)
	if err := g.putOutboxRecord(ctx, u, env, envJSON, sig, peers); err != nil {
		return nil, err
	}
	g.submitted(u, env, peers, "direct")
	g.delivered(id, peer.ID, d.Duplicate, start)
	return &api.OutboxStatus{BundleID: id, State: api.StateDelivered, Peer: peer.ID, Receipt: d.Receipt, Delivered: &out.Delivered}, nil
}

// refusedDirect records a peer's final refusal of a bundle offered
// directly, as deliverWithRetry does for stored bundles.
func (g *Gateway) refusedDirect(ctx context.Context, u User, env *crypto.Envelope, envJSON, sig []byte, peers []string, rej *transfer.Rejection) (*api.OutboxStatus, error) {
	id := env.BundleID
	ctx = context.WithoutCancel(ctx)
	if _, err := g.recordEnvelope(ctx, audit.Entry{Event: audit.EventUploadAccepted, Actor: audit.UnitActor(u.Unit), Peer: peers[0]}, env); err != nil {
		return nil, err
	}
	if err := g.dueAt(ctx, env.RetainUntil, dueOutbox, id); err != nil {
		return nil, err
	}
	ref, err := g.putRefusal(ctx, env, peers[0], rej)
	if err != nil {
		return nil, err
	}
	if err := g.putOutboxRecord(ctx, u, env, envJSON, sig, peers); err != nil {
		return nil, err
	}
	g.submitted(u, env, peers, "direct")
	g.refused(id, rej)
	g.outboxNotify()
	return &api.OutboxStatus{BundleID: id, State: api.StateRefused, Peer: peers[0], Refusal: ref}, nil
}

func uploadEnded(env *crypto.Envelope) error {
	return api.Errorf(api.CodeSizeMismatch, "the request body ended before the %d bytes the envelope declares", env.PayloadSize)
}

// sourceReader remembers a read error, telling a failed upload from a
// failed delivery.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// suspendedDuring answers a direct upload whose transfer to peer a
// suspension of cooperation, rej, stopped part-way: nothing was stored on
// either side.
func suspendedDuring(peer string, rej *transfer.Rejection) error {
	code := api.Code(rej.Code)
	if code.Status() == http.StatusInternalServerError {
		code = api.CodeAgreementSuspended
	}
	return api.Errorf(code, "the transfer to %s was stopped: %s; nothing was stored, push the bundle again once cooperation resumes", peer, rej.Reason)
}
