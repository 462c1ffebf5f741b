package gateway

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"evx/crypto"
	"evx/storage"

	"go.uber.org/zap"
)

// APIError is an error answer of the local API: an HTTP status, a code from
// a fixed set and a message for people. Clients get it back from Client.
type APIError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *APIError) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

func apiErr(status int, code, format string, args ...any) *APIError {
	return &APIError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Header names carrying the envelope and signature of an upload, base64.
const (
	headerEnvelope  = "Evx-Envelope"
	headerSignature = "Evx-Signature"
)

func (g *Gateway) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/whoami", g.handle(nil, g.whoami))
	// Recipients look up senders too, to check a bundle's signing key
	// against the sending country's directory themselves.
	mux.HandleFunc("GET /v1/directory/{country}/{unit}", g.handle([]string{RoleSubmitter, RoleRecipient}, g.directoryLookup))
	mux.HandleFunc("POST /v1/bundles", g.handle([]string{RoleSubmitter}, g.upload))
	mux.HandleFunc("GET /v1/outbox/{id}", g.handle([]string{RoleSubmitter, RoleOperator}, g.outboxStatus))
	mux.HandleFunc("GET /v1/inbox", g.handle([]string{RoleRecipient}, g.inbox))
	mux.HandleFunc("GET /v1/inbox/{id}", g.handle([]string{RoleRecipient}, g.inboxEntry))
	mux.HandleFunc("GET /v1/inbox/{id}/payload", g.handle([]string{RoleRecipient}, g.payload))
	mux.HandleFunc("POST /v1/inbox/{id}/ack", g.handle([]string{RoleRecipient}, g.ack))
	return mux
}

// handle authenticates the caller by its client certificate, checks its
// role, runs h and writes its JSON answer or error. Every refusal is logged.
func (g *Gateway) handle(roles []string, h func(http.ResponseWriter, *http.Request, User) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		log := g.log.Named("api").With(zap.String("method", r.Method), zap.String("path", r.URL.Path))
		u, err := g.authenticate(r)
		if err == nil && roles != nil && !slices.Contains(roles, u.Role) {
			err = apiErr(403, "forbidden", "%s has role %s; this needs %s", u.Unit, u.Role, strings.Join(roles, " or "))
		}
		var out any
		if err == nil {
			out, err = h(w, r, u)
		}
		if err != nil {
			var ae *APIError
			if !errors.As(err, &ae) {
				log.Error("request failed", zap.String("unit", u.Unit), zap.Error(err))
				ae = apiErr(500, "internal", "the gateway failed to process the request; it has been logged there")
			} else {
				g.metrics.refusals.WithLabelValues("api", ae.Code).Inc()
				log.Warn("request refused", zap.String("unit", u.Unit), zap.Int("status", ae.Status),
					zap.String("code", ae.Code), zap.String("reason", ae.Message))
			}
			writeJSON(w, ae.Status, map[string]any{"error": ae})
			return
		}
		if out == nil {
			return // h wrote the answer itself
		}
		writeJSON(w, http.StatusOK, out)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func (g *Gateway) authenticate(r *http.Request) (User, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return User{}, apiErr(401, "unauthenticated", "a client certificate is required")
	}
	unit, err := crypto.UnitFromCert(r.TLS.PeerCertificates[0])
	if err != nil {
		return User{}, apiErr(403, "no-identity", "%v", err)
	}
	u, ok := g.users[unit]
	if !ok {
		return User{Unit: unit}, apiErr(403, "no-role", "%s has no role at gateway %s", unit, g.opts.ID)
	}
	return u, nil
}

// WhoAmI is the answer of GET /v1/whoami.
type WhoAmI struct {
	Gateway string `json:"gateway"`
	Unit    string `json:"unit"`
	Role    string `json:"role"`
}

func (g *Gateway) whoami(_ http.ResponseWriter, r *http.Request, u User) (any, error) {
	return WhoAmI{Gateway: g.opts.ID, Unit: u.Unit, Role: u.Role}, nil
}

func (g *Gateway) directoryLookup(_ http.ResponseWriter, r *http.Request, u User) (any, error) {
	unit := r.PathValue("country") + "/" + r.PathValue("unit")
	e, err := g.lookupUnit(r.Context(), unit)
	if err != nil {
		return nil, lookupErr(err, "unknown-unit")
	}
	return e, nil
}

func (g *Gateway) upload(_ http.ResponseWriter, r *http.Request, u User) (any, error) {
	envJSON, err := base64.StdEncoding.DecodeString(r.Header.Get(headerEnvelope))
	if err != nil || len(envJSON) == 0 {
		return nil, apiErr(400, "malformed-envelope", "the %s header must hold the base64 envelope", headerEnvelope)
	}
	sig, err := base64.StdEncoding.DecodeString(r.Header.Get(headerSignature))
	if err != nil {
		return nil, apiErr(400, "bad-signature", "the %s header must hold the base64 signature", headerSignature)
	}
	if r.ContentLength < 0 {
		return nil, apiErr(411, "length-required", "uploads need a Content-Length")
	}
	var direct bool
	switch d := r.URL.Query().Get("deliver"); d {
	case "", "queue":
	case "direct":
		direct = true
	default:
		return nil, apiErr(400, "bad-deliver", "deliver=%q: want queue or direct", d)
	}
	return g.submit(r.Context(), u, envJSON, sig, r.Body, r.ContentLength, direct)
}

// OutboxStatus is the delivery state of a submitted bundle.
type OutboxStatus struct {
	BundleID  string         `json:"bundle_id"`
	State     string         `json:"state"` // queued, delivered, refused
	Peer      string         `json:"peer,omitempty"`
	Receipt   *crypto.Signed `json:"receipt,omitempty"`
	Delivered *time.Time     `json:"delivered,omitempty"`
	Refusal   *refusalRecord `json:"refusal,omitempty"`
}

// maxStatusWait bounds the wait of GET /v1/outbox/{id}?wait=, so that
// clients and proxies with request timeouts get an answer.
const maxStatusWait = time.Minute

// outboxStatus answers at once, or with ?wait=DURATION, for a queued
// bundle, once its delivery ends or the wait is over: a client waiting for
// delivery learns of it at once, without polling storage.
func (g *Gateway) outboxStatus(_ http.ResponseWriter, r *http.Request, u User) (any, error) {
	ctx, id := r.Context(), r.PathValue("id")
	var wait time.Duration
	if s := r.URL.Query().Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 || d > maxStatusWait {
			return nil, apiErr(400, "bad-wait", "wait=%q: want a duration from 0s to %v, such as 30s", s, maxStatusWait)
		}
		wait = d
	}
	deadline := time.Now().Add(wait)
	for {
		// Watching before reading: a delivery that ends in between is
		// not missed.
		changed := g.outboxWatch()
		st, err := g.readOutboxStatus(ctx, id, u)
		if err != nil {
			return nil, err
		}
		left := time.Until(deadline)
		if st.State != "queued" || left <= 0 {
			return st, nil
		}
		timer := time.NewTimer(left)
		select {
		case <-changed:
		case <-timer.C:
		case <-g.stopping:
			left = 0
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		}
		timer.Stop()
		if left == 0 {
			return st, nil
		}
	}
}

func (g *Gateway) readOutboxStatus(ctx context.Context, id string, u User) (*OutboxStatus, error) {
	var rec outboxRecord
	if err := getJSON(ctx, g.opts.Storage, key(outboxPrefix, id, recordFile), &rec); err != nil {
		return nil, notFound(err, "no bundle %q in the outbox", id)
	}
	if u.Role == RoleSubmitter && rec.SubmittedBy != u.Unit {
		return nil, apiErr(404, "not-found", "no bundle %q in the outbox", id)
	}
	st := &OutboxStatus{BundleID: id, State: "queued", Peer: strings.Join(rec.Peers, ",")}
	var out outboxReceipt
	if err := getJSON(ctx, g.opts.Storage, key(outboxPrefix, id, receiptFile), &out); err == nil {
		st.State, st.Receipt, st.Delivered = "delivered", out.Receipt, &out.Delivered
		return st, nil
	}
	var ref refusalRecord
	if err := getJSON(ctx, g.opts.Storage, key(outboxPrefix, id, refusalFile), &ref); err == nil {
		st.State, st.Refusal = "refused", &ref
	}
	return st, nil
}

func notFound(err error, format string, args ...any) error {
	if errors.Is(err, storage.ErrNotExist) || errors.Is(err, storage.ErrInvalidKey) {
		return apiErr(404, "not-found", format, args...)
	}
	return err
}

// InboxEntry describes a received bundle to its recipient.
type InboxEntry struct {
	BundleID    string    `json:"bundle_id"`
	From        string    `json:"from"`
	Sender      string    `json:"sender"`
	Purpose     string    `json:"purpose"`
	LegalBasis  string    `json:"legal_basis"`
	Case        string    `json:"case,omitempty"`
	Handling    string    `json:"handling"`
	TLP         string    `json:"tlp"`
	Size        int64     `json:"size"`
	ReceivedAt  time.Time `json:"received_at"`
	RetainUntil time.Time `json:"retain_until"`
	// SenderCheck says how the gateway checked the sender's signing key.
	SenderCheck  string `json:"sender_check"`
	Acknowledged bool   `json:"acknowledged"`
	// Envelope and Signature are set by GET /v1/inbox/{id} only.
	Envelope  []byte `json:"envelope,omitempty"`
	Signature []byte `json:"signature,omitempty"`
}

// inboxEntryFor loads a received bundle's record and checks that u is one of
// its recipients; to anyone else it does not exist.
func (g *Gateway) inboxEntryFor(ctx context.Context, id string, u User) (*InboxEntry, error) {
	var rec inboxRecord
	if err := getJSON(ctx, g.opts.Storage, key(inboxPrefix, id, recordFile), &rec); err != nil {
		return nil, notFound(err, "no bundle %q in your inbox", id)
	}
	env, err := crypto.ParseEnvelope(rec.Envelope)
	if err != nil {
		return nil, err
	}
	addressed := false
	for _, r := range env.Recipients {
		addressed = addressed || r.Unit == u.Unit
	}
	if !addressed {
		return nil, apiErr(404, "not-found", "no bundle %q in your inbox", id)
	}
	_, ackErr := g.opts.Storage.Stat(ctx, key(inboxPrefix, id, "ack-"+ackName(u.Unit)+".json"))
	return &InboxEntry{
		BundleID: id, From: rec.From, Sender: env.Sender.Unit, Purpose: env.Purpose,
		LegalBasis: env.LegalBasis, Case: env.Case, Handling: env.Handling, TLP: env.TLP,
		Size: env.PayloadSize, ReceivedAt: rec.ReceivedAt, RetainUntil: env.RetainUntil,
		SenderCheck: rec.SenderCheck, Acknowledged: ackErr == nil,
		Envelope: rec.Envelope, Signature: rec.Signature,
	}, nil
}

// ackName turns a unit id into a key segment.
func ackName(unit string) string { return strings.ReplaceAll(unit, "/", "_") }

func (g *Gateway) inbox(_ http.ResponseWriter, r *http.Request, u User) (any, error) {
	ctx := r.Context()
	infos, err := g.opts.Storage.List(ctx, inboxPrefix)
	if err != nil {
		return nil, err
	}
	entries := []InboxEntry{}
	for _, in := range infos {
		if !strings.HasSuffix(in.Key, "/"+recordFile) {
			continue
		}
		e, err := g.inboxEntryFor(ctx, bundleIDOf(in.Key), u)
		var ae *APIError
		if errors.As(err, &ae) && ae.Status == 404 {
			continue
		}
		if err != nil {
			return nil, err
		}
		e.Envelope, e.Signature = nil, nil
		entries = append(entries, *e)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].ReceivedAt.Before(entries[j].ReceivedAt) })
	return entries, nil
}

func (g *Gateway) inboxEntry(_ http.ResponseWriter, r *http.Request, u User) (any, error) {
	return g.inboxEntryFor(r.Context(), r.PathValue("id"), u)
}

// payload streams the ciphertext itself and returns no JSON.
func (g *Gateway) payload(w http.ResponseWriter, r *http.Request, u User) (any, error) {
	id := r.PathValue("id")
	if _, err := g.inboxEntryFor(r.Context(), id, u); err != nil {
		return nil, err
	}
	obj, err := g.opts.Storage.Open(r.Context(), key(inboxPrefix, id, payloadFile))
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(obj.Size(), 10))
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, io.NewSectionReader(obj, 0, obj.Size())); err != nil {
		g.log.Warn("sending payload", zap.String("bundle", id), zap.String("unit", u.Unit), zap.Error(err))
	}
	return nil, nil
}

func (g *Gateway) ack(_ http.ResponseWriter, r *http.Request, u User) (any, error) {
	ctx, id := r.Context(), r.PathValue("id")
	if _, err := g.inboxEntryFor(ctx, id, u); err != nil {
		return nil, err
	}
	err := putJSON(ctx, g.opts.Storage, key(inboxPrefix, id, "ack-"+ackName(u.Unit)+".json"), ackRecord{Unit: u.Unit, At: time.Now().UTC()})
	if err != nil && !errors.Is(err, storage.ErrExist) {
		return nil, err
	}
	g.metrics.bundles.WithLabelValues("retrieved").Inc()
	g.log.Info("retrieval acknowledged", zap.String("bundle", id), zap.String("unit", u.Unit))
	return map[string]string{"bundle_id": id, "status": "acknowledged"}, nil
}

// lookupErr maps a failed unit lookup to an API error: an unreachable peer
// is a temporary condition, anything else means the unit is not known.
func lookupErr(err error, code string) *APIError {
	if errors.Is(err, errPeerUnavailable) {
		return apiErr(503, "unavailable", "%v; retry later", err)
	}
	status := 404
	if code == "unknown-recipient" {
		status = 400
	}
	return apiErr(status, code, "%v", err)
}
