package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"evx/api"
	"evx/crypto"
)

// ErrNoRecallCalls is returned by the recall calls when the gateway does
// not know them: one older than them.
var ErrNoRecallCalls = errors.New("the gateway does not offer recalls: it is older than them")

// Bounds on the recall calls' answers: an answer holds a request and an
// ack of 4 KiB each, a status an envelope of 64 KiB and at most
// api.MaxRecalls answers; a hostile gateway could send without end.
const (
	maxRecallAnswer = 64 << 10
	maxRecallStatus = 256<<10 + api.MaxRecalls*maxRecallAnswer
)

// RecallStatus returns what the caller needs to recall bundle id, which it
// submitted, and the recalls made so far (GET /v1/outbox/{id}/recall).
func (c *Client) RecallStatus(ctx context.Context, id string) (*api.RecallStatus, error) {
	if err := checkBundleID(id); err != nil {
		return nil, err
	}
	var st api.RecallStatus
	if err := c.call(ctx, "GET", "/v1/outbox/"+id+"/recall", nil, maxRecallStatus, &st, ErrNoRecallCalls); err != nil {
		return nil, err
	}
	if st.BundleID != id {
		return nil, fmt.Errorf("%w: the recall status of %q where bundle %s was asked for", ErrBadAnswer, Printable(truncate(st.BundleID, 100)), id)
	}
	if len(st.Recalls) > api.MaxRecalls {
		return nil, fmt.Errorf("%w: the gateway lists %d recalls, more than the %d it may", ErrBadAnswer, len(st.Recalls), api.MaxRecalls)
	}
	return &st, nil
}

// SendRecall posts req, a signed crypto.RecallRequest, to recall bundle
// id (POST /v1/outbox/{id}/recall), and returns the peer's answer as the
// gateway verified it. The caller checks it further (CheckRecall).
func (c *Client) SendRecall(ctx context.Context, id string, req *crypto.Signed) (*api.Recall, error) {
	if err := checkBundleID(id); err != nil {
		return nil, err
	}
	body, err := json.Marshal(api.RecallRequest{Request: req})
	if err != nil {
		return nil, err
	}
	if len(body) > api.MaxRecallBody {
		return nil, fmt.Errorf("a recall request of %d bytes: want at most %d", len(body), api.MaxRecallBody)
	}
	var a api.Recall
	if err := c.call(ctx, "POST", "/v1/outbox/"+id+"/recall", body, maxRecallAnswer, &a, ErrNoRecallCalls); err != nil {
		return nil, err
	}
	return &a, nil
}

// Recall recalls bundle id, which the caller submitted and sealed with
// key: it asks the gateway that received it to end the bundle's retention
// at retainUntil, or now if retainUntil is zero, for reason (which may be
// empty). It signs the request here, with key, so that no one else, the
// caller's own gateway included, can make one; and it checks the answer:
// the peer's ack, verified under the peer's signing key as the gateway's
// GET /v1/peers gives it, for this request. The ack may say that the peer
// did not apply it (Applied false, with its Code and Reason).
func (c *Client) Recall(ctx context.Context, key *crypto.UnitKey, id string, retainUntil time.Time, reason string) (*api.Recall, error) {
	st, err := c.RecallStatus(ctx, id)
	if err != nil {
		return nil, err
	}
	env, err := crypto.ParseEnvelope(st.Envelope)
	if err != nil {
		return nil, fmt.Errorf("%w: the envelope of bundle %s: %v", ErrBadAnswer, id, err)
	}
	if env.BundleID != id {
		return nil, fmt.Errorf("%w: the envelope of bundle %s is that of %s", ErrBadAnswer, id, env.BundleID)
	}
	if crypto.FormatSigningKey(key.SigningPublicKey()) != env.Sender.Key {
		return nil, fmt.Errorf("bundle %s was sealed with the signing key %s, not with this key's %s: recall it with the key that sealed it",
			id, env.Sender.Key, crypto.FormatSigningKey(key.SigningPublicKey()))
	}
	if !st.Delivered {
		return nil, fmt.Errorf("bundle %s has not been delivered to %s: there is nothing to recall there", id, Printable(truncate(st.Peer, 100)))
	}
	now := time.Now()
	if retainUntil.IsZero() {
		retainUntil = now
	}
	r, err := crypto.NewRecallRequest(env, retainUntil, now, reason)
	if err != nil {
		return nil, err
	}
	if err := r.CheckBundle(env); err != nil {
		return nil, err
	}
	req, err := key.SignRecall(r)
	if err != nil {
		return nil, err
	}
	peerKey, err := c.peerKey(ctx, st.Peer)
	if err != nil {
		return nil, err
	}
	a, err := c.SendRecall(ctx, id, req)
	if err != nil {
		return nil, err
	}
	if err := CheckRecall(a, req, &r, st.Peer, peerKey); err != nil {
		return nil, err
	}
	return a, nil
}

// peerKey returns the signing key of peer as the gateway's configuration
// gives it.
func (c *Client) peerKey(ctx context.Context, peer string) (string, error) {
	peers, err := c.Peers(ctx)
	if err != nil {
		return "", err
	}
	for _, p := range peers {
		if p.ID == peer {
			return p.SigningKey, nil
		}
	}
	return "", fmt.Errorf("gateway %s is not a peer of this gateway: the bundle cannot be recalled there", Printable(truncate(peer, 100)))
}

// CheckRecall checks a gateway's answer to the recall request req, made
// as r, of a bundle sent to peer: that it carries the request sent, and
// the peer's ack to it, which verifies under peerKey and whose fields the
// answer repeats.
func CheckRecall(a *api.Recall, req *crypto.Signed, r *crypto.RecallRequest, peer, peerKey string) error {
	if a.Request == nil || !bytes.Equal(a.Request.Body, req.Body) || !bytes.Equal(a.Request.Signature, req.Signature) {
		return fmt.Errorf("%w: the answer is not about the request sent", ErrBadAnswer)
	}
	if a.Peer != peer || a.BundleID != r.BundleID {
		return fmt.Errorf("%w: an answer from %q about bundle %q, where %s and %s were asked", ErrBadAnswer,
			Printable(truncate(a.Peer, 100)), Printable(truncate(a.BundleID, 100)), peer, r.BundleID)
	}
	ack, err := crypto.VerifyRecallAck(a.Ack, peerKey)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadAnswer, err)
	}
	if err := ack.CheckRequest(req, r, peer); err != nil {
		return fmt.Errorf("%w: %v", ErrBadAnswer, err)
	}
	if ack.Applied != a.Applied || ack.Code != a.Code || ack.Reason != a.Reason || !ack.RetainUntil.Equal(a.RetainUntil) || !ack.At.Equal(a.At) {
		return fmt.Errorf("%w: the answer says otherwise than the peer's signed ack", ErrBadAnswer)
	}
	return nil
}
