package gateway

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"evx/api"
	"evx/audit"
	"evx/crypto"
	"evx/storage"

	"go.uber.org/zap"
)

func (g *Gateway) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/whoami", g.handle(nil, g.whoami))
	g.agreementRoutes(mux)
	g.holdRoutes(mux)
	g.recallRoutes(mux)
	g.bundleStatusRoutes(mux)
	// Recipients look up senders too, to check a bundle's signing key
	// against the sending country's directory themselves.
	mux.HandleFunc("GET /v1/directory/{country}/{unit}", g.handle([]api.Role{api.RoleSubmitter, api.RoleRecipient}, g.directoryLookup))
	// The peers' signing keys, from the configuration: recipients verify
	// the sending gateway's directory kept with a bundle, submitters may
	// verify receipts.
	mux.HandleFunc("GET /v1/peers", g.handle([]api.Role{api.RoleSubmitter, api.RoleRecipient}, g.peerList))
	mux.HandleFunc("POST /v1/bundles", g.handle([]api.Role{api.RoleSubmitter}, g.upload))
	mux.HandleFunc("POST /v1/preflight", g.handle([]api.Role{api.RoleSubmitter}, g.preflight))
	mux.HandleFunc("GET /v1/outbox", g.handle([]api.Role{api.RoleSubmitter, api.RoleOperator}, g.outboxList))
	mux.HandleFunc("GET /v1/outbox/{id}", g.handle([]api.Role{api.RoleSubmitter, api.RoleOperator}, g.outboxStatus))
	mux.HandleFunc("GET /v1/inbox", g.handle([]api.Role{api.RoleRecipient}, g.inbox))
	mux.HandleFunc("GET /v1/inbox/{id}", g.handle([]api.Role{api.RoleRecipient}, g.inboxEntry))
	mux.HandleFunc("GET /v1/inbox/{id}/payload", g.handle([]api.Role{api.RoleRecipient}, g.payload))
	mux.HandleFunc("POST /v1/inbox/{id}/ack", g.handle([]api.Role{api.RoleRecipient}, g.ack))
	// The transfer log (logapi.go): its files for auditors only, since
	// entries name every bundle and its legal basis; its status for
	// operators too.
	mux.HandleFunc("GET /v1/log/status", g.handle([]api.Role{api.RoleOperator, api.RoleAuditor}, g.logStatus))
	mux.HandleFunc("GET /v1/log/checkpoints", g.handle([]api.Role{api.RoleAuditor}, g.logCheckpoints))
	mux.HandleFunc("GET /v1/log/{path...}", g.handle([]api.Role{api.RoleAuditor}, g.logFile))
	return mux
}

// handle authenticates the caller by its client certificate, checks its
// role, runs h and writes its JSON answer or error. Every refusal is logged.
func (g *Gateway) handle(roles []api.Role, h func(http.ResponseWriter, *http.Request, User) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		log := g.log.Named("api").With(zap.String("method", r.Method), zap.String("path", r.URL.Path))
		u, err := g.authenticate(r)
		if err == nil && roles != nil && !slices.Contains(roles, u.Role) {
			err = api.Errorf(api.CodeForbidden, "%s has role %s; this needs %s", u.Unit, u.Role, joinRoles(roles))
		}
		var out any
		if err == nil {
			out, err = h(w, r, u)
		}
		if err != nil {
			ae := g.refusal(log, u, err)
			if ae.Code != api.CodeInternal { // a failure, not a refusal
				g.refusalSum.addAPI(r.RemoteAddr, string(ae.Code))
			}
			writeJSON(w, ae.Code.Status(), api.ErrorBody{Error: ae})
			return
		}
		if out == nil {
			return // h wrote the answer itself
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// refusal turns a handler's error into the API error it answers with, and
// logs it: a refusal (an *api.Error) at warning level, anything else, which
// the caller cannot act on, as an internal error with its detail kept in
// the log only.
func (g *Gateway) refusal(log *zap.Logger, u User, err error) *api.Error {
	var ae *api.Error
	switch {
	case errors.As(err, &ae):
	case errors.Is(err, storage.ErrUnavailable):
		log.Error("storage unavailable", zap.String("unit", u.Unit), zap.Error(err))
		ae = api.Errorf(api.CodeStorageUnavailable, "the gateway cannot reach its storage; retry later")
	default:
		log.Error("request failed", zap.String("unit", u.Unit), zap.Error(err))
		return api.Errorf(api.CodeInternal, "the gateway failed to process the request; it has been logged there")
	}
	g.metrics.refusals.WithLabelValues("api", string(ae.Code)).Inc()
	log.Warn("request refused", zap.String("unit", u.Unit), zap.Int("status", ae.Code.Status()),
		zap.String("code", string(ae.Code)), zap.String("reason", ae.Message))
	return ae
}

func joinRoles(roles []api.Role) string {
	s := make([]string, len(roles))
	for i, r := range roles {
		s[i] = string(r)
	}
	return strings.Join(s, " or ")
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
		return User{}, api.Errorf(api.CodeUnauthenticated, "a client certificate is required")
	}
	unit, err := crypto.UnitFromCert(r.TLS.PeerCertificates[0])
	if err != nil {
		return User{}, api.Errorf(api.CodeNoIdentity, "%v", err)
	}
	u, ok := g.settings().users[unit]
	if !ok {
		return User{Unit: unit}, api.Errorf(api.CodeNoRole, "%s has no role at gateway %s", unit, g.opts.ID)
	}
	return u, nil
}

func (g *Gateway) whoami(_ http.ResponseWriter, r *http.Request, u User) (any, error) {
	return api.WhoAmI{Gateway: g.opts.ID, Unit: u.Unit, Role: u.Role}, nil
}

func (g *Gateway) directoryLookup(_ http.ResponseWriter, r *http.Request, u User) (any, error) {
	unit := r.PathValue("country") + "/" + r.PathValue("unit")
	e, err := g.lookupUnit(r.Context(), unit)
	if err != nil {
		return nil, lookupErr(err, api.CodeUnknownUnit)
	}
	return e, nil
}

// upload takes a bundle from a submitter. Its body is read through a
// stallGuard: one that brings no byte for the stall timeout ends the upload
// as upload-stalled, which releases the bundle's lock, the storage object
// being written or the delivery to the peer, and the connection. A body
// left unread, whatever the answer, is not drained: net/http would read up
// to 256 KiB of it before answering, waiting for a client that may send
// slowly or not at all, so the answer closes the HTTP/1 connection instead
// (HTTP/2 resets the stream by itself).
func (g *Gateway) upload(w http.ResponseWriter, r *http.Request, u User) (any, error) {
	timeout := g.opts.uploadStallTimeout()
	body := newStallGuard(w, r.Body, timeout)
	out, err := g.uploadBody(r, u, body)
	stalled, read := body.stop()
	if r.ProtoMajor == 1 && (r.ContentLength < 0 || read < r.ContentLength) {
		w.Header().Set("Connection", "close")
	}
	if err != nil && stalled {
		err = api.Errorf(api.CodeUploadStalled, "the request body brought no byte for %v, after %d of %d bytes; nothing was stored: upload again", timeout, read, r.ContentLength)
	}
	var limited *rateLimited
	if errors.As(err, &limited) {
		w.Header().Set("Retry-After", retryAfterSeconds(limited.after))
	}
	if err != nil {
		err = g.recordUploadRefused(r, u, err)
	}
	return out, err
}

// recordUploadRefused records a refused upload in the transfer log before
// the refusal is answered, with the bundle id if the envelope parses. A
// failure of the gateway itself (internal, storage) is not a refusal of
// the upload and is not recorded as one.
func (g *Gateway) recordUploadRefused(r *http.Request, u User, err error) error {
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code == api.CodeStorageUnavailable || ae.Code.Status() >= 500 && ae.Code != api.CodeDeliveryInterrupted {
		return err
	}
	e := audit.Entry{Event: audit.EventUploadRefused, Actor: audit.UnitActor(u.Unit), Code: string(ae.Code)}
	if envJSON, derr := base64.StdEncoding.DecodeString(r.Header.Get(api.HeaderEnvelope)); derr == nil {
		if env, perr := crypto.ParseEnvelope(envJSON); perr == nil {
			e.BundleID = env.BundleID
		}
	}
	if _, lerr := g.recordOrRefuse(context.WithoutCancel(r.Context()), e, nil); lerr != nil {
		return lerr
	}
	return err
}

func (g *Gateway) uploadBody(r *http.Request, u User, body io.Reader) (any, error) {
	envJSON, err := base64.StdEncoding.DecodeString(r.Header.Get(api.HeaderEnvelope))
	if err != nil || len(envJSON) == 0 {
		return nil, api.Errorf(api.CodeMalformedEnvelope, "the %s header must hold the base64 envelope", api.HeaderEnvelope)
	}
	sig, err := base64.StdEncoding.DecodeString(r.Header.Get(api.HeaderSignature))
	if err != nil {
		return nil, api.Errorf(api.CodeBadSignature, "the %s header must hold the base64 signature", api.HeaderSignature)
	}
	if r.ContentLength < 0 {
		return nil, api.Errorf(api.CodeLengthRequired, "uploads need a Content-Length")
	}
	var direct bool
	switch d := api.DeliveryMode(r.URL.Query().Get("deliver")); d {
	case "", api.Queue:
	case api.Direct:
		direct = true
	default:
		return nil, api.Errorf(api.CodeBadDeliver, "deliver=%q: want queue or direct", d)
	}
	return g.submit(r.Context(), u, envJSON, sig, body, r.ContentLength, direct)
}

// outboxStatus answers at once, or with ?wait=DURATION, for a queued
// bundle, once its delivery ends or the wait is over: a client waiting for
// delivery learns of it at once, without polling storage.
func (g *Gateway) outboxStatus(_ http.ResponseWriter, r *http.Request, u User) (any, error) {
	ctx, id := r.Context(), r.PathValue("id")
	var wait time.Duration
	if s := r.URL.Query().Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 || d > api.MaxStatusWait {
			return nil, api.Errorf(api.CodeBadWait, "wait=%q: want a duration from 0s to %v, such as 30s", s, api.MaxStatusWait)
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
		if st.State != api.StateQueued || left <= 0 {
			return st, nil
		}
		if g.opts.onStatusWait != nil {
			g.opts.onStatusWait(id)
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

func (g *Gateway) readOutboxStatus(ctx context.Context, id string, u User) (*api.OutboxStatus, error) {
	st, _, err := g.outboxRecordStatus(ctx, id, u)
	return st, err
}

// outboxRecordStatus is readOutboxStatus, returning the record too.
func (g *Gateway) outboxRecordStatus(ctx context.Context, id string, u User) (*api.OutboxStatus, *outboxRecord, error) {
	var rec outboxRecord
	if err := getJSON(ctx, g.opts.Storage, key(outboxPrefix, id, recordFile), &rec); err != nil {
		return nil, nil, notFound(err, "no bundle %q in the outbox", id)
	}
	if u.Role == api.RoleSubmitter && rec.SubmittedBy != u.Unit {
		return nil, nil, api.Errorf(api.CodeNotFound, "no bundle %q in the outbox", id)
	}
	st := &api.OutboxStatus{BundleID: id, State: api.StateQueued, Peer: strings.Join(rec.Peers, ","),
		SubmittedBy: rec.SubmittedBy, Submitted: &rec.SubmittedAt}
	var out outboxReceipt
	if err := getJSON(ctx, g.opts.Storage, key(outboxPrefix, id, receiptFile), &out); err == nil {
		st.State, st.Receipt, st.Delivered = api.StateDelivered, out.Receipt, &out.Delivered
		return st, &rec, nil
	}
	var ref api.Refusal
	if err := getJSON(ctx, g.opts.Storage, key(outboxPrefix, id, refusalFile), &ref); err == nil {
		st.State, st.Refusal = api.StateRefused, &ref
	}
	return st, &rec, nil
}

func notFound(err error, format string, args ...any) error {
	if errors.Is(err, storage.ErrNotExist) || errors.Is(err, storage.ErrInvalidKey) {
		return api.Errorf(api.CodeNotFound, format, args...)
	}
	return err
}

// inboxEntryFor loads a received bundle's record and checks that u is one of
// its recipients; to anyone else it does not exist.
func (g *Gateway) inboxEntryFor(ctx context.Context, id string, u User) (*api.InboxEntry, error) {
	e, _, err := g.inboxRecordFor(ctx, id, u)
	return e, err
}

// inboxRecordFor is inboxEntryFor, returning the record too.
func (g *Gateway) inboxRecordFor(ctx context.Context, id string, u User) (*api.InboxEntry, *inboxRecord, error) {
	var rec inboxRecord
	if err := getJSON(ctx, g.opts.Storage, key(inboxPrefix, id, recordFile), &rec); err != nil {
		return nil, nil, notFound(err, "no bundle %q in your inbox", id)
	}
	env, err := crypto.ParseEnvelope(rec.Envelope)
	if err != nil {
		return nil, nil, err
	}
	addressed := false
	for _, r := range env.Recipients {
		addressed = addressed || r.Unit == u.Unit
	}
	if !addressed {
		return nil, nil, api.Errorf(api.CodeNotFound, "no bundle %q in your inbox", id)
	}
	_, ackErr := g.opts.Storage.Stat(ctx, key(inboxPrefix, id, "ack-"+ackName(u.Unit)+".json"))
	ret, err := g.retentionState(ctx, id, env)
	if err != nil {
		return nil, nil, err
	}
	return &api.InboxEntry{
		BundleID: id, From: rec.From, Sender: env.Sender.Unit, Purpose: env.Purpose,
		LegalBasis: env.LegalBasis, Case: env.Case, Handling: env.Handling, TLP: env.TLP,
		Size: env.PayloadSize, ReceivedAt: rec.ReceivedAt, RetainUntil: env.RetainUntil,
		SenderCheck: rec.SenderCheck, Acknowledged: ackErr == nil, Retention: ret,
		Envelope: rec.Envelope, Signature: rec.Signature,
	}, &rec, nil
}

// readableInboxRecordFor is inboxRecordFor for reading the bundle: once its
// retention has ended it is refused (expired).
func (g *Gateway) readableInboxRecordFor(ctx context.Context, id string, u User) (*api.InboxEntry, *inboxRecord, error) {
	e, rec, err := g.inboxRecordFor(ctx, id, u)
	if err == nil && e.Retention.State == api.RetentionExpired {
		return nil, nil, expiredErr(id, e.Retention.Until)
	}
	return e, rec, err
}

// ackName turns a unit id into a key segment.
func ackName(unit string) string { return strings.ReplaceAll(unit, "/", "_") }

func (g *Gateway) inbox(_ http.ResponseWriter, r *http.Request, u User) (any, error) {
	ctx := r.Context()
	infos, err := g.opts.Storage.List(ctx, inboxPrefix)
	if err != nil {
		return nil, err
	}
	entries := []api.InboxEntry{}
	for _, in := range infos {
		if !strings.HasSuffix(in.Key, "/"+recordFile) {
			continue
		}
		e, err := g.inboxEntryFor(ctx, bundleIDOf(in.Key), u)
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code == api.CodeNotFound {
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

// inboxEntry answers with the entry, its envelope and signature, and the
// sending gateway's signed directory the sender was checked against.
func (g *Gateway) inboxEntry(_ http.ResponseWriter, r *http.Request, u User) (any, error) {
	e, rec, err := g.readableInboxRecordFor(r.Context(), r.PathValue("id"), u)
	if err != nil {
		return nil, err
	}
	e.SenderDirectory = g.senderDirectory(r.Context(), e.BundleID, rec)
	return e, nil
}

// payload streams the ciphertext itself and returns no JSON.
func (g *Gateway) payload(w http.ResponseWriter, r *http.Request, u User) (any, error) {
	id := r.PathValue("id")
	entry, rec, err := g.readableInboxRecordFor(r.Context(), id, u)
	if err != nil {
		return nil, err
	}
	env, err := crypto.ParseEnvelope(entry.Envelope)
	if err != nil {
		return nil, err
	}
	// Opened before the download is recorded: a payload whose key the
	// reaper destroyed meanwhile was never handed out.
	payload, obj, err := g.openInboxPayload(r.Context(), id, rec, env.PayloadSize)
	if errors.Is(err, errShredded) {
		return nil, expiredErr(id, entry.Retention.Until)
	}
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	if _, err := g.recordOrRefuse(r.Context(), audit.Entry{Event: audit.EventPayloadDownloaded, Actor: audit.UnitActor(u.Unit),
		Peer: entry.From}, env); err != nil {
		return nil, err
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(env.PayloadSize, 10))
	w.WriteHeader(http.StatusOK)
	out := &stallWriter{w: w, rc: http.NewResponseController(w), timeout: g.opts.uploadStallTimeout()}
	_, err = io.Copy(out, payload)
	if err != nil {
		g.log.Warn("sending payload", zap.String("bundle", id), zap.String("unit", u.Unit), zap.Error(err))
	}
	if g.opts.onDownloadEnded != nil {
		g.opts.onDownloadEnded(id, err)
	}
	return nil, nil
}

func (g *Gateway) ack(_ http.ResponseWriter, r *http.Request, u User) (any, error) {
	ctx, id := r.Context(), r.PathValue("id")
	entry, _, err := g.readableInboxRecordFor(ctx, id, u)
	if err != nil {
		return nil, err
	}
	if !entry.Acknowledged {
		env, err := crypto.ParseEnvelope(entry.Envelope)
		if err != nil {
			return nil, err
		}
		if _, err := g.recordOrRefuse(ctx, audit.Entry{Event: audit.EventRetrievalAcknowledged, Actor: audit.UnitActor(u.Unit),
			Peer: entry.From}, env); err != nil {
			return nil, err
		}
	}
	err = g.putJSONLocked(ctx, key(inboxPrefix, id, "ack-"+ackName(u.Unit)+".json"), ackRecord{Unit: u.Unit, At: time.Now().UTC()}, entry.RetainUntil)
	switch {
	case errors.Is(err, storage.ErrExist):
		// Acknowledged before: answered alike, counted and logged once.
	case err != nil:
		return nil, err
	default:
		g.metrics.bundles.WithLabelValues("retrieved").Inc()
		g.log.Info("retrieval acknowledged", zap.String("bundle", id), zap.String("unit", u.Unit))
	}
	return api.Acknowledged{BundleID: id, Status: "acknowledged"}, nil
}

// lookupErr maps a failed unit lookup to an API error: an unreachable peer
// is a temporary condition, anything else means the unit is not known,
// which is refused with notKnown.
func lookupErr(err error, notKnown api.Code) error {
	if errors.Is(err, errPeerUnavailable) {
		return api.Errorf(api.CodeUnavailable, "%v; retry later", err)
	}
	if errors.Is(err, errUnknownUnit) {
		return api.Errorf(notKnown, "%v", err)
	}
	return err
}
