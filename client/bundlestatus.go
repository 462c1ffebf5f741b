package client

import (
	"context"
	"errors"
	"fmt"

	"evx/api"
)

// ErrNoBundleState is returned by [Client.BundleState] when the gateway
// does not know GET /v1/bundles/{id}: one older than it. The delivery
// state of a submitted bundle is then still at [Client.OutboxStatus].
var ErrNoBundleState = errors.New("the gateway does not offer the state of a bundle: it is older than GET /v1/bundles/{id}")

// maxBundleStateAnswer bounds the answer of GET /v1/bundles/{id}: a
// receipt, an inbox entry without its envelope and a hold are a few KiB,
// but a hostile gateway could send without end.
const maxBundleStateAnswer = 256 << 10

// BundleState returns what the client may see of bundle id, stored at its
// gateway (GET /v1/bundles/{id}): for the submitter of a bundle sent from
// there, or an operator, its delivery and the retention of the sender's
// records; for a recipient it is addressed to, or an operator, its inbox
// entry and retention; and the legal hold placed on it, if any. A bundle
// the client may not see is refused with not-found, as one that is not
// there; a gateway that does not know the call with ErrNoBundleState.
func (c *Client) BundleState(ctx context.Context, id string) (*api.BundleState, error) {
	if err := checkBundleID(id); err != nil {
		return nil, err
	}
	var st api.BundleState
	if err := c.call(ctx, "GET", "/v1/bundles/"+id, nil, maxBundleStateAnswer, &st, ErrNoBundleState); err != nil {
		return nil, err
	}
	if err := checkBundleState(&st, id); err != nil {
		return nil, err
	}
	return &st, nil
}

// checkBundleState checks that an answer about bundle id is about it,
// in each of its parts, and says something.
func checkBundleState(st *api.BundleState, id string) error {
	other := func(what, got string) error {
		return fmt.Errorf("%w: %s of bundle %q where bundle %s was asked for", ErrBadAnswer, what, Printable(truncate(got, 100)), id)
	}
	switch {
	case st.BundleID != id:
		return other("the state", st.BundleID)
	case st.Outbox == nil && st.Inbox == nil:
		return fmt.Errorf("%w: the state of bundle %s says neither how it was sent nor how it was received", ErrBadAnswer, id)
	case st.Outbox != nil && st.Outbox.BundleID != id:
		return other("the delivery state", st.Outbox.BundleID)
	case st.Inbox != nil && st.Inbox.BundleID != id:
		return other("the inbox entry", st.Inbox.BundleID)
	case st.Hold != nil && st.Hold.BundleID != id:
		return other("the legal hold", st.Hold.BundleID)
	}
	if st.Outbox != nil {
		if err := checkRetention(&st.Outbox.Retention, id); err != nil {
			return err
		}
		if !st.Outbox.State.Valid() {
			return fmt.Errorf("%w: bundle %s has delivery state %q", ErrBadAnswer, id, Printable(truncate(string(st.Outbox.State), 100)))
		}
	}
	if st.Inbox != nil {
		return checkRetention(&st.Inbox.Retention, id)
	}
	return nil
}

func checkRetention(r *api.Retention, id string) error {
	switch r.State {
	case api.RetentionKept, api.RetentionHeld, api.RetentionExpired:
		return nil
	}
	return fmt.Errorf("%w: bundle %s has retention state %q", ErrBadAnswer, id, Printable(truncate(string(r.State), 100)))
}
