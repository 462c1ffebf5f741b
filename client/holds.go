package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"evx/api"
)

// ErrNoHoldCalls is returned by the hold calls when the gateway does not
// know them: one older than them.
var ErrNoHoldCalls = errors.New("the gateway does not offer legal holds: it is older than them")

// Bounds on the hold calls' answers: a hold is a few hundred bytes, but a
// hostile gateway could send without end.
const (
	maxHoldAnswer = 64 << 10
	maxHoldList   = api.MaxHoldList * 2 << 10
)

// PlaceHold places a legal hold on bundle id, stored at the gateway (in
// its inbox or its outbox), for reason under reference
// (POST /v1/holds/{id}): the bundle is kept past its retention until the
// hold is released. Only the units the gateway's configuration names may;
// others are refused with forbidden, a second hold with already-held.
func (c *Client) PlaceHold(ctx context.Context, id, reason, reference string) (*api.Hold, error) {
	if err := checkBundleID(id); err != nil {
		return nil, err
	}
	body, err := json.Marshal(api.HoldRequest{Reason: reason, Reference: reference})
	if err != nil {
		return nil, err
	}
	if len(body) > api.MaxHoldBody {
		return nil, fmt.Errorf("a hold's reason and reference of %d bytes: want at most %d and %d", len(reason)+len(reference), api.MaxHoldReason, api.MaxHoldReference)
	}
	var h api.Hold
	if err := c.call(ctx, "POST", "/v1/holds/"+id, body, maxHoldAnswer, &h, ErrNoHoldCalls); err != nil {
		return nil, err
	}
	return &h, checkHold(&h, id, false)
}

// ReleaseHold releases the legal hold on bundle id, for reason
// (DELETE /v1/holds/{id}), and returns the hold released. A bundle
// without one is refused with not-held.
func (c *Client) ReleaseHold(ctx context.Context, id, reason string) (*api.Hold, error) {
	if err := checkBundleID(id); err != nil {
		return nil, err
	}
	body, err := json.Marshal(api.ReleaseRequest{Reason: reason})
	if err != nil {
		return nil, err
	}
	if len(body) > api.MaxHoldBody {
		return nil, fmt.Errorf("a release's reason of %d bytes: want at most %d", len(reason), api.MaxHoldReason)
	}
	var h api.Hold
	if err := c.call(ctx, "DELETE", "/v1/holds/"+id, body, maxHoldAnswer, &h, ErrNoHoldCalls); err != nil {
		return nil, err
	}
	return &h, checkHold(&h, id, true)
}

// Holds lists the legal holds placed at the gateway (GET /v1/holds), for
// an operator or a unit that places holds.
func (c *Client) Holds(ctx context.Context) (*api.HoldList, error) {
	var l api.HoldList
	if err := c.call(ctx, "GET", "/v1/holds", nil, maxHoldList, &l, ErrNoHoldCalls); err != nil {
		return nil, err
	}
	if len(l.Holds) > api.MaxHoldList {
		return nil, fmt.Errorf("%w: the gateway lists %d holds, more than the %d it may", ErrBadAnswer, len(l.Holds), api.MaxHoldList)
	}
	for i := range l.Holds {
		if err := checkBundleID(l.Holds[i].BundleID); err != nil {
			return nil, fmt.Errorf("%w: a hold on %v", ErrBadAnswer, err)
		}
	}
	return &l, nil
}

// checkHold checks that an answer about the hold on id is about it, and
// says it was released if released was asked for.
func checkHold(h *api.Hold, id string, released bool) error {
	switch {
	case h.BundleID != id:
		return fmt.Errorf("%w: a hold on %q where bundle %s was asked for", ErrBadAnswer, Printable(truncate(h.BundleID, 100)), id)
	case released && h.Released == nil:
		return fmt.Errorf("%w: the gateway does not say that the hold on %s was released", ErrBadAnswer, id)
	case !released && h.Released != nil:
		return fmt.Errorf("%w: the gateway says the hold on %s it placed is released", ErrBadAnswer, id)
	}
	return nil
}

// checkBundleID refuses, before anything is sent, an id that is not a
// bundle id: it becomes part of the request's path.
func checkBundleID(id string) error {
	if len(id) != 32 {
		return fmt.Errorf("%q is not a bundle id (32 lowercase hex digits)", Printable(truncate(id, 100)))
	}
	for _, c := range []byte(id) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("%q is not a bundle id (32 lowercase hex digits)", Printable(truncate(id, 100)))
		}
	}
	return nil
}
