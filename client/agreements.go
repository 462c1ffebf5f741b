package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"evx/api"
	"evx/crypto"
)

// ErrNoAgreementCalls is returned by the agreement calls when the gateway
// does not know them: one older than them, whose configuration is read
// only at start.
var ErrNoAgreementCalls = errors.New("the gateway does not offer the agreement calls (reload, suspend, resume, show, diff): it is older than them")

// Bounds on the agreement calls' answers: an agreement is a few hundred
// bytes, but a hostile gateway could send without end. One pair is both
// sides of one agreement; a list holds one pair per peer.
const (
	maxAgreementAnswer = 256 << 10
	maxAgreementList   = 8 << 20
)

// Agreements returns the agreements in force at the gateway, one per
// configured peer, each with the peer's view of it as the peer's last
// signed summary states it. It is the operator's call
// (GET /v1/agreements).
func (c *Client) Agreements(ctx context.Context) (*api.AgreementList, error) {
	var l api.AgreementList
	if err := c.call(ctx, "GET", "/v1/agreements", nil, maxAgreementList, &l, ErrNoAgreementCalls); err != nil {
		return nil, err
	}
	for i := range l.Agreements {
		p := &l.Agreements[i]
		if err := checkPair(p, p.Peer); err != nil {
			return nil, err
		}
		if p.Ours.Gateway != l.Gateway {
			return nil, fmt.Errorf("%w: gateway %q lists an agreement of %q", ErrBadAnswer, Printable(truncate(l.Gateway, 100)), Printable(truncate(p.Ours.Gateway, 100)))
		}
	}
	return &l, nil
}

// Agreement returns the gateway's agreement with peer and the peer's view
// of it (GET /v1/agreements/{peer}). A peer the gateway does not know is
// refused with unknown-peer.
func (c *Client) Agreement(ctx context.Context, peer string) (*api.AgreementPair, error) {
	if err := checkPeerID(peer); err != nil {
		return nil, err
	}
	var p api.AgreementPair
	if err := c.call(ctx, "GET", "/v1/agreements/"+peer, nil, maxAgreementAnswer, &p, ErrNoAgreementCalls); err != nil {
		return nil, err
	}
	if err := checkPair(&p, peer); err != nil {
		return nil, err
	}
	return &p, nil
}

// AgreementDiff returns where the gateway's agreement with peer and the
// peer's disagree (GET /v1/agreements/{peer}/diff): no mismatches when
// they agree, Unknown when the peer's summary has not been received.
func (c *Client) AgreementDiff(ctx context.Context, peer string) (*api.AgreementDiff, error) {
	if err := checkPeerID(peer); err != nil {
		return nil, err
	}
	var d api.AgreementDiff
	if err := c.call(ctx, "GET", "/v1/agreements/"+peer+"/diff", nil, maxAgreementAnswer, &d, ErrNoAgreementCalls); err != nil {
		return nil, err
	}
	switch {
	case d.Peer != peer:
		return nil, fmt.Errorf("%w: asked for the differences with %s, the gateway answered for %q", ErrBadAnswer, peer, Printable(truncate(d.Peer, 100)))
	case d.Unknown && len(d.Mismatches) > 0:
		return nil, fmt.Errorf("%w: the differences with %s are both unknown and listed", ErrBadAnswer, peer)
	}
	return &d, nil
}

// ReloadConfig asks the gateway to read its configuration file again
// (POST /v1/agreements/reload) and returns what changed. A file with any
// invalid setting changes nothing and is refused with invalid-config,
// whose message names the field and line; a gateway that was not started
// from a file refuses with reload-unavailable.
func (c *Client) ReloadConfig(ctx context.Context) (*api.Reload, error) {
	var r api.Reload
	if err := c.call(ctx, "POST", "/v1/agreements/reload", nil, maxAgreementAnswer, &r, ErrNoAgreementCalls); err != nil {
		return nil, err
	}
	return &r, checkReload(&r)
}

// SuspendAgreement suspends cooperation with peer at once, in both
// directions, for reason (POST /v1/agreements/{peer}/suspend), and returns
// what changed. The reason is required: at most [api.MaxSuspendReason]
// bytes of printable text, which the gateway checks (bad-reason).
func (c *Client) SuspendAgreement(ctx context.Context, peer, reason string) (*api.Reload, error) {
	if err := checkPeerID(peer); err != nil {
		return nil, err
	}
	body, err := json.Marshal(api.SuspendRequest{Reason: reason})
	if err != nil {
		return nil, err
	}
	if len(body) > api.MaxSuspendBody {
		return nil, fmt.Errorf("a suspension's reason of %d bytes: want at most %d", len(reason), api.MaxSuspendReason)
	}
	var r api.Reload
	if err := c.call(ctx, "POST", "/v1/agreements/"+peer+"/suspend", body, maxAgreementAnswer, &r, ErrNoAgreementCalls); err != nil {
		return nil, err
	}
	return &r, checkReload(&r)
}

// ResumeAgreement lifts an operator's suspension of cooperation with peer
// (POST /v1/agreements/{peer}/resume) and returns what changed. A
// suspension stated in the configuration file is not lifted by it.
func (c *Client) ResumeAgreement(ctx context.Context, peer string) (*api.Reload, error) {
	if err := checkPeerID(peer); err != nil {
		return nil, err
	}
	var r api.Reload
	if err := c.call(ctx, "POST", "/v1/agreements/"+peer+"/resume", nil, maxAgreementAnswer, &r, ErrNoAgreementCalls); err != nil {
		return nil, err
	}
	return &r, checkReload(&r)
}

// maxConfigMessage bounds the message of a refused reload, which lists
// the configuration's problems, at most 20 of them, one per line.
const maxConfigMessage = 16 << 10

// checkPeerID refuses, before anything is sent, a peer that is not a
// gateway id: it becomes part of the request's path.
func checkPeerID(peer string) error {
	if !crypto.ValidGatewayID(peer) {
		return fmt.Errorf("%q is not a gateway id, such as FR", truncate(peer, 100))
	}
	return nil
}

// checkPair checks that an answer about the agreement with peer is about
// it: ours between the gateway and peer, theirs the other way round.
func checkPair(p *api.AgreementPair, peer string) error {
	switch {
	case p.Peer != peer || !crypto.ValidGatewayID(peer):
		return fmt.Errorf("%w: an agreement with %q where %s was asked for", ErrBadAnswer, Printable(truncate(p.Peer, 100)), Printable(truncate(peer, 100)))
	case p.Ours.Peer != peer:
		return fmt.Errorf("%w: the agreement with %s is stated as one with %q", ErrBadAnswer, peer, Printable(truncate(p.Ours.Peer, 100)))
	case p.Theirs != nil && (p.Theirs.Gateway != peer || p.Theirs.Peer != p.Ours.Gateway):
		return fmt.Errorf("%w: %s's view of its agreement with %s is stated by %q for %q", ErrBadAnswer, peer,
			Printable(truncate(p.Ours.Gateway, 100)), Printable(truncate(p.Theirs.Gateway, 100)), Printable(truncate(p.Theirs.Peer, 100)))
	}
	return nil
}

// checkReload checks that an answer saying nothing changed lists no
// change.
func checkReload(r *api.Reload) error {
	if !r.Changed && len(r.Changes) > 0 {
		return fmt.Errorf("%w: the gateway says nothing changed and lists %d changes", ErrBadAnswer, len(r.Changes))
	}
	return nil
}
