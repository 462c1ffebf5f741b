package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"evx/api"
	"evx/crypto"
	"evx/storage"

	"go.uber.org/zap"
)

// GET /v1/bundles/{id} (docs/api.md 3.25) shows a bundle stored here to
// those it concerns, with where its retention stands: the sending side to
// its submitter, the receiving side to the recipients it is addressed to,
// both to operators. An operator sees of a received bundle only what the
// transfer log records of every bundle anyway, never its legal basis, case
// or handling. To anyone else the bundle does not exist, with the same
// answer as a bundle that is not stored here, so that the endpoint tells
// no one which bundles exist.

// bundleStatusRoutes registers GET /v1/bundles/{id}. Auditors have the
// transfer log, and are refused by role.
func (g *Gateway) bundleStatusRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/bundles/{id}", g.handle([]api.Role{api.RoleSubmitter, api.RoleRecipient, api.RoleOperator}, g.bundleStatus))
}

func (g *Gateway) bundleStatus(_ http.ResponseWriter, r *http.Request, u User) (any, error) {
	return g.BundleState(r.Context(), r.PathValue("id"), u)
}

// BundleState returns what user u may see of bundle id, stored at this
// gateway.
func (g *Gateway) BundleState(ctx context.Context, id string, u User) (*api.BundleState, error) {
	notFound := api.Errorf(api.CodeNotFound, "no bundle %q at gateway %s", id, g.opts.ID)
	if !crypto.ValidBundleID(id) {
		return nil, notFound
	}
	st := &api.BundleState{BundleID: id, Gateway: g.opts.ID, At: g.now().UTC()}
	if u.Role == api.RoleSubmitter || u.Role == api.RoleOperator {
		sent, err := g.sentState(ctx, id, u)
		if err != nil && !isNotFound(err) {
			return nil, err
		}
		st.Outbox = sent
	}
	switch u.Role {
	case api.RoleRecipient:
		e, _, err := g.inboxRecordFor(ctx, id, u)
		if err != nil && !isNotFound(err) {
			return nil, err
		}
		if e != nil {
			e.Envelope, e.Signature = nil, nil
		}
		st.Inbox = e
	case api.RoleOperator:
		e, err := g.inboxMetadata(ctx, id)
		if err != nil && !isNotFound(err) {
			return nil, err
		}
		st.Inbox = e
	}
	if st.Outbox == nil && st.Inbox == nil {
		return nil, notFound
	}
	h, _, err := g.readHold(ctx, id)
	switch {
	case err == nil:
		hold := h.api()
		st.Hold = &hold
	case errors.Is(err, errMalformedRecord):
		// It still holds the bundle (isHeld), as Holds lists it.
		g.log.Error("reading a legal hold", zap.String("bundle", id), zap.Error(err))
		st.Hold = &api.Hold{BundleID: id, Boxes: []string{}, Reason: "the gateway cannot read this hold's record; the bundle is kept as held"}
	case !errors.Is(err, storage.ErrNotExist):
		return nil, err
	}
	return st, nil
}

// isNotFound reports whether err is the API's not-found.
func isNotFound(err error) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Code == api.CodeNotFound
}

// sentState is the sending side of bundle id for u, a submitter (its own
// bundles only) or an operator: its delivery state, the retention of its
// records, and whether the sender's copy of its payload is still stored.
func (g *Gateway) sentState(ctx context.Context, id string, u User) (*api.SentState, error) {
	out, rec, err := g.outboxRecordStatus(ctx, id, u)
	if err != nil {
		return nil, err
	}
	env, err := crypto.ParseEnvelope(rec.Envelope)
	if err != nil {
		return nil, fmt.Errorf("outbox record of %s: %w", id, err)
	}
	if env.BundleID != id {
		return nil, fmt.Errorf("%w: the outbox record of %s holds the envelope of bundle %s", errMalformedRecord, id, env.BundleID)
	}
	held, err := g.isHeld(ctx, id)
	if err != nil {
		return nil, err
	}
	ret := retentionAt(env.RetainUntil, held, g.now())
	stored := true
	switch _, err := g.opts.Storage.Stat(ctx, key(outboxPrefix, id, payloadFile)); {
	case errors.Is(err, storage.ErrNotExist):
		stored = false
	case err != nil:
		return nil, err
	}
	return &api.SentState{OutboxStatus: *out, Retention: ret, PayloadStored: stored}, nil
}

// inboxMetadata is received bundle id's entry as an operator sees it: the
// members that every transfer-log entry about the bundle carries, and its
// retention, but not its legal basis, case, handling or TLP label, nor
// its envelope.
func (g *Gateway) inboxMetadata(ctx context.Context, id string) (*api.InboxEntry, error) {
	var rec inboxRecord
	if err := getJSON(ctx, g.opts.Storage, key(inboxPrefix, id, recordFile), &rec); err != nil {
		return nil, notFound(err, "no bundle %q in the inbox", id)
	}
	env, err := crypto.ParseEnvelope(rec.Envelope)
	if err != nil {
		return nil, fmt.Errorf("inbox record of %s: %w", id, err)
	}
	if env.BundleID != id {
		return nil, fmt.Errorf("%w: the inbox record of %s holds the envelope of bundle %s", errMalformedRecord, id, env.BundleID)
	}
	ret, err := g.retentionState(ctx, id, env)
	if err != nil {
		return nil, err
	}
	return &api.InboxEntry{BundleID: id, From: rec.From, Sender: env.Sender.Unit, Purpose: env.Purpose,
		Size: env.PayloadSize, ReceivedAt: rec.ReceivedAt, RetainUntil: env.RetainUntil, Retention: ret}, nil
}
