package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"evx/api"
	"evx/audit"
	"evx/crypto"
	"evx/storage"
	"evx/transfer"

	"go.uber.org/zap"
)

// Recall and shortening (docs/retention.md, "Recall and shortening"). The
// unit that submitted a bundle signs a request to end the bundle's
// retention at the peer that received it, now or at a date before the
// envelope's, with the key that signed the envelope. This gateway checks
// it and forwards it (transfer's RECALL); the peer checks it again under
// the envelope's sender key, applies it unless a legal hold there
// prevents it, and answers with a signed ack, which this gateway keeps
// beside the outbox record and hands to the unit. Each side records the
// request and its outcome in its transfer log before it acts or answers.
//
// Layout, in addition to records.go's:
//
//	outbox/<id>/recall-<h>.json   a recall forwarded and its ack
//	                              (recallRecord), locked until the
//	                              bundle's retain-until; <h> is the first
//	                              16 hex digits of the request's SHA-256,
//	                              so a request repeated is kept once

// recallFilePrefix begins the name of a kept recall in a bundle's outbox.
const recallFilePrefix = "recall-"

// recallRecord is a recall forwarded to the peer and its ack, as kept.
// Storage is not trusted: what is shown is read from the signed documents.
type recallRecord struct {
	Peer    string         `json:"peer"`
	Request *crypto.Signed `json:"request"`
	Ack     *crypto.Signed `json:"ack"`
}

func recallFile(req *crypto.Signed) string {
	return recallFilePrefix + crypto.RequestSHA256(req)[:16] + ".json"
}

// The codes of a peer's ack that did not apply a request (docs/protocol.md
// 4.6).
const (
	recallCodeLegalHold  = "legal-hold"
	recallCodeNotShorter = "not-shorter"
	recallCodeExpired    = "expired"
)

// recallRoutes registers the endpoints of recalls (docs/api.md 3.23,
// 3.24).
func (g *Gateway) recallRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/outbox/{id}/recall", g.handle([]api.Role{api.RoleSubmitter}, g.recallPost))
	mux.HandleFunc("GET /v1/outbox/{id}/recall", g.handle([]api.Role{api.RoleSubmitter, api.RoleOperator}, g.recallGet))
}

// badRecall refuses a request that is malformed or does not verify.
// bad-signature is the nearest code the table has.
func badRecall(format string, args ...any) error {
	return api.Errorf(api.CodeBadSignature, format, args...)
}

func (g *Gateway) recallPost(w http.ResponseWriter, r *http.Request, u User) (any, error) {
	var req api.RecallRequest
	if err := readSmallJSON(w, r, g.opts.uploadStallTimeout(), api.MaxRecallBody, api.CodeBadSignature, "a recall request", &req); err != nil {
		return nil, err
	}
	return g.RecallBundle(r.Context(), r.PathValue("id"), req.Request, u)
}

// outboxRecall reads the outbox record of bundle id for u: submitters see
// their own bundles only, as in GET /v1/outbox/{id}.
func (g *Gateway) outboxRecall(ctx context.Context, id string, u User) (*outboxRecord, *crypto.Envelope, error) {
	if !crypto.ValidBundleID(id) {
		return nil, nil, api.Errorf(api.CodeNotFound, "no bundle %q in the outbox", id)
	}
	var rec outboxRecord
	if err := getJSON(ctx, g.opts.Storage, key(outboxPrefix, id, recordFile), &rec); err != nil {
		return nil, nil, notFound(err, "no bundle %q in the outbox", id)
	}
	env, err := crypto.ParseEnvelope(rec.Envelope)
	if err != nil {
		return nil, nil, fmt.Errorf("outbox record of %s: %w", id, err)
	}
	if env.BundleID != id || len(rec.Peers) != 1 {
		return nil, nil, fmt.Errorf("outbox record of %s holds the envelope of %s, for %d peers", id, env.BundleID, len(rec.Peers))
	}
	return &rec, env, nil
}

// RecallBundle forwards req, the signed request of u to shorten the retention of
// bundle id at the peer that received it, and returns the peer's verified
// answer, applied or not. Only the bundle's submitter may recall it, with
// the key that signed the envelope.
func (g *Gateway) RecallBundle(ctx context.Context, id string, req *crypto.Signed, u User) (*api.Recall, error) {
	rec, env, err := g.outboxRecall(ctx, id, u)
	if err != nil {
		return nil, err
	}
	if rec.SubmittedBy != u.Unit {
		return nil, api.Errorf(api.CodeForbidden, "bundle %s was submitted by %s: only its submitter may recall it", id, rec.SubmittedBy)
	}
	if req == nil {
		return nil, badRecall("the body has no signed request")
	}
	body, err := crypto.ParseRecallBody(req.Body)
	if err != nil {
		return nil, badRecall("%v", err)
	}
	switch {
	case body.Unit != env.Sender.Unit:
		return nil, api.Errorf(api.CodeForbidden, "the request is made by %s, but the bundle's sender is %s: a unit recalls only the bundles it sealed",
			body.Unit, env.Sender.Unit)
	case body.Unit != u.Unit:
		return nil, api.Errorf(api.CodeForbidden, "the request is made by %s, not by you (%s): a unit posts only its own requests", body.Unit, u.Unit)
	}
	// The peer verifies under the envelope's key, as this gateway does:
	// a unit whose key changed since recalls with the key it sealed with.
	r, err := crypto.VerifyRecall(req, env.Sender.Key)
	if err != nil {
		return nil, badRecall("%v: sign it with the key that signed the bundle's envelope", err)
	}
	if err := r.CheckBundle(env); err != nil {
		return nil, badRecall("%v", err)
	}
	peerID := rec.Peers[0]
	if _, err := g.opts.Storage.Stat(ctx, key(outboxPrefix, id, receiptFile)); errors.Is(err, storage.ErrNotExist) {
		return nil, api.Errorf(api.CodeNotFound, "bundle %s has not been delivered to %s: there is nothing to recall there", id, peerID)
	} else if err != nil {
		return nil, err
	}
	peer, ok := g.settings().peers[peerID]
	if !ok {
		return nil, api.Errorf(api.CodeUnknownPeer, "%s, which received bundle %s, is no longer a peer of gateway %s", peerID, id, g.opts.ID)
	}
	kept, err := g.keptRecalls(ctx, id)
	if err != nil {
		return nil, err
	}
	if len(kept) >= api.MaxRecalls {
		return nil, api.Errorf(api.CodeDuplicate, "bundle %s was recalled %d times already, the most a bundle keeps: its last answer stands", id, len(kept))
	}
	if _, err := g.recordOrRefuse(ctx, audit.Entry{Event: audit.EventRecallRequested, Actor: audit.UnitActor(u.Unit),
		Peer: peerID, RetainUntil: r.RetainUntil}, env); err != nil {
		return nil, err
	}
	log := g.log.With(zap.String("bundle", id), zap.String("peer", peerID))
	signedAck, err := g.client.Recall(ctx, peer, req)
	if err != nil {
		return nil, g.recallFailed(log, peerID, err)
	}
	// Client.Recall verified it and checked that it answers req.
	ack, err := crypto.VerifyRecallAck(signedAck, peer.SigningKey)
	if err != nil {
		return nil, err
	}
	// The peer's answer is recorded and kept before the unit learns of
	// it; the peer applied it already, and a repeated request is
	// answered again.
	ctx = context.WithoutCancel(ctx)
	e := audit.Entry{Event: audit.EventRecallAcknowledged, Actor: audit.PeerActor(peerID), Peer: peerID, RetainUntil: ack.RetainUntil}
	if !ack.Applied {
		e = audit.Entry{Event: audit.EventRecallDeclined, Actor: audit.PeerActor(peerID), Peer: peerID, Code: ack.Code, Reason: declinedReason(peerID, ack.Code)}
	}
	if _, err := g.recordOrRefuse(ctx, e, env); err != nil {
		return nil, err
	}
	kr := recallRecord{Peer: peerID, Request: req, Ack: signedAck}
	if err := g.putJSONLocked(ctx, key(outboxPrefix, id, recallFile(req)), kr, env.RetainUntil); err != nil && !errors.Is(err, storage.ErrExist) {
		g.log.Error("keeping a recall's ack", zap.String("bundle", id), zap.Error(err))
		return nil, api.Errorf(api.CodeStorageUnavailable, "%s answered the recall, but the gateway cannot keep its answer: recall again to have it", peerID)
	}
	out := recallAnswer(id, peerID, req, signedAck, ack)
	if ack.Applied {
		log.Info("recall acknowledged", zap.Time("retain_until", ack.RetainUntil))
	} else {
		log.Info("recall declined", zap.String("code", ack.Code), zap.String("reason", ack.Reason))
	}
	return out, nil
}

// declinedReason says in this gateway's words why peer declined a recall:
// the transfer log holds no text a peer chose.
func declinedReason(peer, code string) string {
	switch code {
	case recallCodeLegalHold:
		return peer + " keeps the bundle under a legal hold"
	case recallCodeNotShorter:
		return peer + " keeps the bundle to an earlier date already"
	case recallCodeExpired:
		return "the bundle's retention at " + peer + " has ended already"
	}
	return peer + " did not apply the recall"
}

// recallFailed turns a failed exchange with the peer into the API's
// refusal.
func (g *Gateway) recallFailed(log *zap.Logger, peer string, err error) error {
	var rej *transfer.Rejection
	var he *transfer.HandshakeError
	switch {
	case errors.As(err, &rej) && rej.Temporary():
		log.Warn("recall: the peer cannot answer now", zap.String("code", rej.Code), zap.String("reason", rej.Reason))
		return api.Errorf(api.CodeUnavailable, "%s cannot answer the recall now (%s): %s; recall again later",
			peer, rej.Code, truncateReason(rej.Reason))
	case errors.As(err, &rej):
		log.Warn("recall refused by the peer", zap.String("code", rej.Code), zap.String("reason", rej.Reason))
		return api.Errorf(api.CodePeerRefused, "%s refused the recall (%s): %s", peer, rej.Code, truncateReason(rej.Reason))
	case errors.As(err, &he):
		log.Warn("recall: the peer refused the connection", zap.Error(err))
		return api.Errorf(api.CodePeerRefused, "%s refused this gateway's connection: %v", peer, he)
	}
	log.Warn("recall: no answer from the peer", zap.Error(err))
	return api.Errorf(api.CodeUnavailable, "%s did not answer the recall: %v; recall again later", peer, err)
}

// truncateReason bounds a peer's reason passed on to a unit.
func truncateReason(s string) string {
	const max = 300
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

// recallAnswer is the API's form of a verified ack to req.
func recallAnswer(id, peer string, req, signedAck *crypto.Signed, ack *crypto.RecallAck) *api.Recall {
	return &api.Recall{BundleID: id, Peer: peer, Applied: ack.Applied, Code: ack.Code, Reason: ack.Reason,
		RetainUntil: ack.RetainUntil.UTC(), At: ack.At.UTC(), Request: req, Ack: signedAck}
}

// keptRecalls lists the recalls kept of bundle id.
func (g *Gateway) keptRecalls(ctx context.Context, id string) ([]string, error) {
	prefix := outboxPrefix + id + "/"
	infos, err := g.opts.Storage.List(ctx, prefix+recallFilePrefix)
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, in := range infos {
		if name := strings.TrimPrefix(in.Key, prefix); strings.HasPrefix(name, recallFilePrefix) && strings.HasSuffix(name, ".json") && !strings.Contains(name, "/") {
			keys = append(keys, in.Key)
		}
	}
	return keys, nil
}

func (g *Gateway) recallGet(_ http.ResponseWriter, r *http.Request, u User) (any, error) {
	return g.RecallStatus(r.Context(), r.PathValue("id"), u)
}

// RecallStatus returns what u needs to recall bundle id, and the recalls
// made so far: to its submitter, and to operators.
func (g *Gateway) RecallStatus(ctx context.Context, id string, u User) (*api.RecallStatus, error) {
	rec, env, err := g.outboxRecall(ctx, id, u)
	if err != nil {
		return nil, err
	}
	if u.Role == api.RoleSubmitter && rec.SubmittedBy != u.Unit {
		return nil, api.Errorf(api.CodeNotFound, "no bundle %q in the outbox", id)
	}
	st := &api.RecallStatus{BundleID: id, Peer: rec.Peers[0], Envelope: rec.Envelope, Recalls: []api.Recall{}}
	switch _, err := g.opts.Storage.Stat(ctx, key(outboxPrefix, id, receiptFile)); {
	case err == nil:
		st.Delivered = true
	case !errors.Is(err, storage.ErrNotExist):
		return nil, err
	}
	keys, err := g.keptRecalls(ctx, id)
	if err != nil {
		return nil, err
	}
	for i, k := range keys {
		if i == api.MaxRecalls {
			break
		}
		var kr recallRecord
		if err := getJSON(ctx, g.opts.Storage, k, &kr); err != nil {
			if errors.Is(err, storage.ErrNotExist) {
				continue
			}
			return nil, err
		}
		a, err := g.readKeptRecall(&kr, env)
		if err != nil {
			g.log.Error("reading a kept recall", zap.String("bundle", id), zap.String("key", k), zap.Error(err))
			continue
		}
		st.Recalls = append(st.Recalls, *a)
	}
	sort.SliceStable(st.Recalls, func(i, j int) bool { return st.Recalls[i].At.Before(st.Recalls[j].At) })
	return st, nil
}

// readKeptRecall checks a kept recall, which storage gave, as it was
// checked when it was kept: the request is the bundle's sender's, the ack
// the peer's answer to it.
func (g *Gateway) readKeptRecall(kr *recallRecord, env *crypto.Envelope) (*api.Recall, error) {
	r, err := crypto.VerifyRecall(kr.Request, env.Sender.Key)
	if err != nil {
		return nil, err
	}
	if err := r.CheckBundle(env); err != nil {
		return nil, err
	}
	var ack *crypto.RecallAck
	if p, ok := g.settings().peers[kr.Peer]; ok {
		ack, err = crypto.VerifyRecallAck(kr.Ack, p.SigningKey)
	} else if kr.Ack != nil {
		// A peer no longer configured: its key is gone, the ack was
		// verified when it was kept.
		ack, err = crypto.ParseRecallAckBody(kr.Ack.Body)
	} else {
		err = errors.New("no ack")
	}
	if err != nil {
		return nil, err
	}
	if err := ack.CheckRequest(kr.Request, r, kr.Peer); err != nil {
		return nil, err
	}
	return recallAnswer(env.BundleID, kr.Peer, kr.Request, kr.Ack, ack), nil
}

var _ transfer.RecallReceiver = (*Gateway)(nil)

// errNoRecallHere is the refusal of a recall of a bundle this gateway does
// not hold from the peer: the same words whether it never came or came
// from another gateway.
func errNoRecallHere(g *Gateway, id, peer string) error {
	return transfer.Reject(transfer.CodeNotAccepted, "gateway %s holds no bundle %s received from %s", g.opts.ID, id, peer)
}

// Recall implements transfer.RecallReceiver: it checks a recall of a
// bundle received from peer against the bundle's envelope, applies it
// unless a legal hold prevents it, records the outcome in the transfer
// log and answers with a signed ack (docs/protocol.md 4.6).
func (g *Gateway) Recall(ctx context.Context, peer string, req *crypto.Signed) (*crypto.Signed, error) {
	// transfer checked that it parses and that its unit is peer's.
	body, err := crypto.ParseRecallBody(req.Body)
	if err != nil {
		return nil, transfer.Reject(transfer.CodeMalformed, "%v", err)
	}
	id := body.BundleID
	var rec inboxRecord
	switch err := getJSON(ctx, g.opts.Storage, key(inboxPrefix, id, recordFile), &rec); {
	case errors.Is(err, storage.ErrNotExist):
		return nil, errNoRecallHere(g, id, peer)
	case err != nil:
		g.log.Error("reading inbox record", zap.String("bundle", id), zap.Error(err))
		return nil, transfer.Reject(transfer.CodeUnavailable, "the receiving gateway cannot read its storage; retry later")
	}
	if rec.From != peer {
		return nil, errNoRecallHere(g, id, peer)
	}
	env, err := crypto.ParseEnvelope(rec.Envelope)
	if err != nil || env.BundleID != id {
		return nil, fmt.Errorf("stored record of %s: %v", id, err)
	}
	log := g.log.With(zap.String("bundle", id), zap.String("peer", peer))
	r, rej := checkRecall(req, body, env)
	if rej != nil {
		// A request this gateway refuses to read is recorded too: a
		// recall from anyone but the bundle's sender is worth knowing of.
		e := audit.Entry{Event: audit.EventRecallRefused, Actor: audit.PeerActor(peer), Peer: peer, Code: rej.Code, Reason: refusedHere(rej.Code)}
		if _, err := g.recordEnvelope(context.WithoutCancel(ctx), e, env); err != nil {
			log.Error("transfer log", zap.String("event", string(e.Event)), zap.Error(err))
			return nil, transfer.Reject(transfer.CodeUnavailable, "the receiving gateway cannot record the recall in its transfer log; retry later")
		}
		return nil, rej
	}
	applied, code, reason, until, err := g.applyRecall(ctx, peer, id, env, r, log)
	if err != nil {
		return nil, err
	}
	a, err := crypto.NewRecallAck(g.opts.ID, req, r, applied, code, reason, until, g.now())
	if err != nil && !applied {
		// A hold's reason this gateway's users wrote may not fit an
		// ack's rules (a leading space): the code says enough.
		a, err = crypto.NewRecallAck(g.opts.ID, req, r, applied, code, declinedHere(code), until, g.now())
	}
	if err != nil {
		return nil, err
	}
	return g.opts.SigningKey.SignRecallAck(a)
}

// checkRecall checks a request against the bundle it names: by its
// sender, under the envelope's key, for that envelope, not lengthening its
// retention. The refusal's reason is this gateway's words.
func checkRecall(req *crypto.Signed, body *crypto.RecallRequest, env *crypto.Envelope) (*crypto.RecallRequest, *transfer.Rejection) {
	if body.Unit != env.Sender.Unit {
		return nil, transfer.Reject(transfer.CodeBadSignature, "the recall of bundle %s is made by %s, not by its sender %s", env.BundleID, body.Unit, env.Sender.Unit)
	}
	r, err := crypto.VerifyRecall(req, env.Sender.Key)
	if err != nil {
		return nil, transfer.Reject(transfer.CodeBadSignature, "the recall of bundle %s does not verify under the key that signed its envelope", env.BundleID)
	}
	if err := r.CheckBundle(env); err != nil {
		return nil, transfer.Reject(transfer.CodeMalformed, "%v", err)
	}
	return r, nil
}

// refusedHere says in the transfer log why this gateway refused a recall
// without an ack: the rejection's own reason quotes digests, which the
// log withholds as looking like keys.
func refusedHere(code string) string {
	if code == transfer.CodeBadSignature {
		return "the recall is not made by the bundle's sender, or does not verify under the key that signed its envelope"
	}
	return "the recall is not for the bundle's envelope, or asks for a later retain-until than the envelope's"
}

// declinedHere says why this gateway did not apply a recall, for an ack
// and for its transfer log.
func declinedHere(code string) string {
	switch code {
	case recallCodeLegalHold:
		return "a legal hold is placed on the bundle"
	case recallCodeNotShorter:
		return "a shorter retention is in force already"
	case recallCodeExpired:
		return "the bundle's retention has ended already"
	}
	return "the recall was not applied"
}

// applyRecall applies r to received bundle id unless a legal hold, a
// shorter retention or its end prevents it, recording the outcome first.
// It returns whether it applied it, why not, and the retain-until in
// force after it.
func (g *Gateway) applyRecall(ctx context.Context, from, id string, env *crypto.Envelope, r *crypto.RecallRequest, log *zap.Logger) (applied bool, code, reason string, until time.Time, err error) {
	unavailable := func(err error) error {
		log.Error("applying a recall", zap.Error(err))
		return transfer.Reject(transfer.CodeUnavailable, "the receiving gateway cannot apply the recall now; retry later")
	}
	current, err := g.inboxRetention(ctx, id, env)
	if err != nil {
		return false, "", "", time.Time{}, unavailable(err)
	}
	held, err := g.isHeld(ctx, id)
	if err != nil {
		return false, "", "", time.Time{}, unavailable(err)
	}
	now := g.now()
	switch {
	case held:
		code = recallCodeLegalHold
	case !now.Before(current):
		code = recallCodeExpired
	case r.RetainUntil.After(current):
		code = recallCodeNotShorter
	}
	peer := audit.PeerActor(from)
	refuse := func(code string, current time.Time) (bool, string, string, time.Time, error) {
		e := audit.Entry{Event: audit.EventRecallRefused, Actor: peer, Peer: from, Code: code, Reason: declinedHere(code)}
		if _, err := g.recordEnvelope(context.WithoutCancel(ctx), e, env); err != nil {
			return false, "", "", time.Time{}, unavailable(err)
		}
		reason := declinedHere(code)
		if code == recallCodeLegalHold {
			if h, _, err := g.readHold(ctx, id); err == nil && h.Reason != "" {
				reason = h.Reason
			}
		}
		log.Info("recall refused", zap.String("code", code))
		return false, code, reason, current, nil
	}
	if code != "" {
		return refuse(code, current)
	}
	// Recorded before it is done; a recall made some time ago takes
	// effect now, as the retention cannot end in the past.
	want := ceilTime(r.RetainUntil)
	if n := ceilTime(now); want.Before(n) {
		want = n
	}
	if _, err := g.recordEnvelope(context.WithoutCancel(ctx), audit.Entry{Event: audit.EventRecallApplied, Actor: peer, Peer: from,
		RetainUntil: want}, env); err != nil {
		return false, "", "", time.Time{}, unavailable(err)
	}
	ctx = context.WithoutCancel(ctx)
	until, err = g.shorten(ctx, id, env, want, r.Unit)
	if errors.Is(err, errHeld) {
		// Placed since it was checked.
		return refuse(recallCodeLegalHold, current)
	}
	if err != nil {
		return false, "", "", time.Time{}, unavailable(err)
	}
	log.Info("recall applied", zap.Time("retain_until", until))
	return true, "", "", until, nil
}
