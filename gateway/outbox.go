package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"evx/api"
	"evx/audit"
	"evx/crypto"
	"evx/storage"
	"evx/transfer"

	"go.uber.org/zap"
)

// submit checks a bundle uploaded by a local submitter and stores it in the
// outbox, returning once it is durably stored; delivery follows. With
// direct set it first tries to deliver the upload as it arrives (see
// deliverDirect), and stores it only if the peer cannot take it at once.
func (g *Gateway) submit(ctx context.Context, u User, envJSON, sig []byte, body io.Reader, length int64, direct bool) (*api.OutboxStatus, error) {
	env, err := crypto.ParseEnvelope(envJSON)
	if err != nil {
		return nil, api.Errorf(api.CodeMalformedEnvelope, "%v", err)
	}
	if err := crypto.VerifySignature(env, envJSON, sig); err != nil {
		return nil, api.Errorf(api.CodeBadSignature, "%v", err)
	}
	if env.Sender.Unit != u.Unit {
		return nil, api.Errorf(api.CodeSenderMismatch, "the envelope names sender %q, but you are %s", env.Sender.Unit, u.Unit)
	}
	if env.Sender.Key != u.Key.SigningKey {
		return nil, api.Errorf(api.CodeUnknownSenderKey, "the envelope is signed with %s, not with the signing key on file for %s", env.Sender.Key, u.Unit)
	}
	if env.PayloadSize > g.opts.MaxBundleSize {
		return nil, api.Errorf(api.CodeTooLarge, "payload of %d bytes exceeds this gateway's limit of %d", env.PayloadSize, g.opts.MaxBundleSize)
	}
	if length != env.PayloadSize {
		return nil, api.Errorf(api.CodeSizeMismatch, "request body is %d bytes, the envelope declares %d", length, env.PayloadSize)
	}
	var peers []string
	for _, r := range env.Recipients {
		if r.Unit == "" {
			return nil, api.Errorf(api.CodeUnknownRecipient, "recipient %s has no unit id: seal to units resolved through the gateway", r.Key)
		}
		e, err := g.lookupUnit(ctx, r.Unit)
		if err != nil {
			return nil, lookupErr(err, api.CodeUnknownRecipient)
		}
		if api.Role(e.Role) != api.RoleRecipient || e.AgeRecipient != r.Key {
			return nil, api.Errorf(api.CodeUnknownRecipient, "the key sealed to for %s is not its key in the directory", r.Unit)
		}
		country, _, _ := strings.Cut(r.Unit, "/")
		if country == g.opts.ID {
			return nil, api.Errorf(api.CodeUnknownRecipient, "%s is a local unit: evx carries bundles between countries", r.Unit)
		}
		if !slices.Contains(peers, country) {
			peers = append(peers, country)
		}
	}
	if len(peers) > 1 {
		return nil, api.Errorf(api.CodeMultipleCountries, "the bundle is addressed to units in %s: evx delivers each bundle to one country, so seal one bundle per country", strings.Join(peers, ", "))
	}
	id := env.BundleID
	defer g.outboxLocks.lock(id)()
	var prev outboxRecord
	switch err := getJSON(ctx, g.opts.Storage, key(outboxPrefix, id, recordFile), &prev); {
	case err == nil:
		return nil, api.Errorf(api.CodeDuplicate, "bundle %s was already submitted", id)
	case !errors.Is(err, storage.ErrNotExist):
		return nil, err
	}
	// The agreement decides before anything of the bundle is stored or
	// sent, and after the checks above, so that only bundles that could
	// flow count against its rate limits.
	decided, err := g.decideUpload(ctx, u, env, peers[0])
	if err != nil {
		return nil, err
	}
	// Retention is enforced from the first byte stored: a bundle whose
	// retention has ended cannot be taken.
	if !env.RetainUntil.After(g.now().Add(lockMargin)) {
		return nil, api.Errorf(api.CodeExpired, "the envelope's retain_until %s has passed: the bundle may no longer be kept; seal it again with a retention that has not ended",
			env.RetainUntil.UTC().Format(time.RFC3339))
	}
	if direct {
		st, err := g.deliverDirect(ctx, u, env, envJSON, sig, peers, body, decided)
		if !errors.Is(err, errNotOffered) {
			return st, err
		}
		g.log.Info("direct delivery not possible; storing for delivery", zap.String("bundle", id), zap.Error(err))
	}
	// Stored for delivery: the decision is recorded before anything is.
	if err := decided.record(ctx, g); err != nil {
		return nil, err
	}
	// The reaper's entry goes before anything of the bundle is stored.
	if err := g.dueAt(ctx, env.RetainUntil, dueOutbox, id); err != nil {
		return nil, err
	}
	verified := crypto.NewPayloadVerifier(body, env)
	if err := storePayload(ctx, g.opts.Storage, key(outboxPrefix, id, payloadFile), verified, env.PayloadSize); err != nil {
		g.undue(ctx, env.RetainUntil, dueOutbox, id, outboxPrefix+id+"/")
		switch {
		// Fixed messages: err names internal storage keys.
		case errors.Is(err, crypto.ErrPayloadSize):
			return nil, api.Errorf(api.CodeSizeMismatch, "the request body is shorter or longer than the %d bytes the envelope declares", env.PayloadSize)
		case errors.Is(err, crypto.ErrPayloadHash):
			return nil, api.Errorf(api.CodeHashMismatch, "%v", crypto.ErrPayloadHash)
		case errors.Is(err, io.ErrUnexpectedEOF):
			// The body ended before its Content-Length: the client
			// stopped sending, which is bad input, not a gateway fault.
			return nil, api.Errorf(api.CodeSizeMismatch, "the request body ended before the %d bytes the envelope declares", env.PayloadSize)
		}
		return nil, err
	}
	if _, err := g.recordOrRefuse(ctx, audit.Entry{Event: audit.EventUploadAccepted, Actor: audit.UnitActor(u.Unit), Peer: peers[0]}, env); err != nil {
		return nil, err
	}
	if err := g.putOutboxRecord(ctx, u, env, envJSON, sig, peers); err != nil {
		return nil, err
	}
	g.submitted(u, env, peers, "stored")
	g.enqueue(id)
	return &api.OutboxStatus{BundleID: id, State: api.StateQueued, Peer: peers[0]}, nil
}

// putOutboxRecord stores the record of a submitted bundle, locked until its
// retain-until: the commit point of its outbox entry.
func (g *Gateway) putOutboxRecord(ctx context.Context, u User, env *crypto.Envelope, envJSON, sig []byte, peers []string) error {
	id := env.BundleID
	rec := outboxRecord{Envelope: envJSON, Signature: sig, SubmittedBy: u.Unit, SubmittedAt: time.Now().UTC(), Peers: peers}
	err := g.putJSONLocked(ctx, key(outboxPrefix, id, recordFile), rec, env.RetainUntil)
	if errors.Is(err, storage.ErrExist) {
		return api.Errorf(api.CodeDuplicate, "bundle %s was already submitted", id)
	}
	return err
}

// submitted counts and logs a submission; how is "stored" for
// store-and-forward or "direct".
func (g *Gateway) submitted(u User, env *crypto.Envelope, peers []string, how string) {
	g.metrics.bundles.WithLabelValues("submitted").Inc()
	g.metrics.bytes.WithLabelValues("submitted").Add(float64(env.PayloadSize))
	g.log.Info("bundle submitted", zap.String("bundle", env.BundleID), zap.String("by", u.Unit),
		zap.Strings("to", peers), zap.String("purpose", env.Purpose), zap.Int64("size", env.PayloadSize),
		zap.String("delivery", how))
}

// recordDelivered records a delivery with the peer's receipt, before the
// receipt is stored: the commit point of the delivery at this gateway.
// Events that happened with it (before) go into the log in the same write.
func (g *Gateway) recordDelivered(ctx context.Context, env *crypto.Envelope, peer string, d *transfer.Delivery, before ...audit.Entry) error {
	es := append(before[:len(before):len(before)], audit.Entry{Event: audit.EventDelivered, Actor: audit.PeerActor(peer), Peer: peer, Receipt: d.Receipt})
	for i := range es {
		if err := withEnvelope(&es[i], env); err != nil {
			return err
		}
	}
	_, err := g.recordAll(context.WithoutCancel(ctx), es...)
	return err
}

// delivered counts and logs a delivery and wakes those waiting for it.
func (g *Gateway) delivered(id, peer string, duplicate bool, start time.Time) {
	g.metrics.bundles.WithLabelValues("delivered").Inc()
	g.outboxNotify()
	g.log.Info("bundle delivered", zap.String("bundle", id), zap.String("peer", peer),
		zap.Bool("duplicate", duplicate), zap.Duration("took", time.Since(start)))
}

// refused counts and logs a peer's final refusal.
func (g *Gateway) refused(id string, rej *transfer.Rejection) {
	g.log.Error("delivery refused by peer", zap.String("bundle", id),
		zap.String("code", rej.Code), zap.String("reason", rej.Reason))
	code := rej.Code
	if !transfer.KnownCode(code) {
		code = "other" // the peer's own invention: labels stay a fixed set
	}
	g.metrics.refusals.WithLabelValues("delivery", code).Inc()
}

func (g *Gateway) enqueue(id string) {
	select {
	case g.queue <- id:
	default:
		// The queue is full; requeueOutbox finds the bundle on the next scan.
		g.log.Warn("delivery queue full", zap.String("bundle", id))
	}
}

// requeueOutbox queues every submitted bundle not yet delivered: the queue
// lives in storage, not in memory.
func (g *Gateway) requeueOutbox(ctx context.Context) error {
	infos, err := g.opts.Storage.List(ctx, outboxPrefix)
	if err != nil {
		return fmt.Errorf("scanning the outbox: %w", err)
	}
	done := map[string]bool{}
	for _, in := range infos {
		if strings.HasSuffix(in.Key, "/"+receiptFile) || strings.HasSuffix(in.Key, "/"+refusalFile) {
			done[bundleIDOf(in.Key)] = true
		}
	}
	for _, in := range infos {
		if id := bundleIDOf(in.Key); strings.HasSuffix(in.Key, "/"+recordFile) && !done[id] {
			g.enqueue(id)
		}
	}
	return nil
}

func bundleIDOf(k string) string {
	parts := strings.Split(k, "/")
	if len(parts) < 3 {
		return ""
	}
	return parts[1]
}

// maxDeliveries bounds concurrent deliveries; each is one QUIC stream.
const maxDeliveries = 4

// deliverLoop delivers queued bundles, each bundle once at a time, at most
// maxDeliveries attempts at a time, retrying failures with exponential
// backoff, until ctx is done; it returns once every delivery has stopped.
func (g *Gateway) deliverLoop(ctx context.Context) error {
	slots := make(chan struct{}, maxDeliveries)
	var mu sync.Mutex
	var wg sync.WaitGroup
	defer wg.Wait()
	inflight := map[string]bool{}
	scan := time.NewTicker(g.opts.RetryMax)
	defer scan.Stop()
	for {
		var id string
		select {
		case <-ctx.Done():
			return nil
		case <-scan.C:
			// The outbox in storage is the queue that counts: a rescan
			// finds bundles the channel dropped when full, and those
			// whose record was stored although storing it failed.
			if err := g.requeueOutbox(ctx); err != nil && ctx.Err() == nil {
				g.log.Warn("rescanning the outbox", zap.Error(err))
			}
			continue
		case id = <-g.queue:
		}
		mu.Lock()
		busy := inflight[id]
		inflight[id] = true
		mu.Unlock()
		if busy {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				delete(inflight, id)
				mu.Unlock()
			}()
			g.deliverWithRetry(ctx, id, slots)
		}()
	}
}

// deliverWithRetry holds a slot only while an attempt runs, so that bundles
// waiting to retry a peer that is down do not hold up other deliveries.
func (g *Gateway) deliverWithRetry(ctx context.Context, id string, slots chan struct{}) {
	wait := g.opts.RetryInterval
	for attempt := 1; ; attempt++ {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		// A change of the agreements while the attempt runs wakes the
		// wait after it: a held bundle goes out as soon as it may.
		changed := g.retryWatch()
		err := g.deliver(ctx, id)
		<-slots
		if err == nil || ctx.Err() != nil {
			return
		}
		var rej *transfer.Rejection
		if errors.As(err, &rej) && !rej.Temporary() && !heldBy(rej.Code) {
			g.refused(id, rej)
			g.recordRefusal(ctx, id, rej)
			return
		}
		g.deliveryFailed(id, attempt, wait, err)
		select {
		case <-ctx.Done():
			return
		case <-changed:
			wait = g.opts.RetryInterval
			continue
		case <-time.After(wait):
		}
		wait = min(2*wait, g.opts.RetryMax)
	}
}

// deliver sends one outbox bundle to every peer that has not yet receipted it.
func (g *Gateway) deliver(ctx context.Context, id string) error {
	var rec outboxRecord
	if err := getJSON(ctx, g.opts.Storage, key(outboxPrefix, id, recordFile), &rec); err != nil {
		if errors.Is(err, storage.ErrNotExist) {
			// Removed by the reaper at its retain-until while queued:
			// there is nothing left to deliver.
			g.log.Warn("bundle no longer in the outbox: its retention ended before delivery", zap.String("bundle", id))
			return nil
		}
		return err
	}
	if _, err := g.opts.Storage.Stat(ctx, key(outboxPrefix, id, receiptFile)); err == nil {
		return nil
	}
	obj, err := g.opts.Storage.Open(ctx, key(outboxPrefix, id, payloadFile))
	if err != nil {
		return err
	}
	defer obj.Close()
	// Bundles go to one peer: the recipients' country. Several countries
	// per bundle would need one receipt object per peer.
	if len(rec.Peers) != 1 {
		return &transfer.Rejection{Code: transfer.CodeNotAccepted, Reason: fmt.Sprintf("bundle %s is addressed to %d countries; evx delivers each bundle to one", id, len(rec.Peers))}
	}
	peer, ok := g.settings().peers[rec.Peers[0]]
	if !ok {
		return &transfer.Rejection{Code: transfer.CodeNotAccepted, Reason: fmt.Sprintf("%s is no longer a peer", rec.Peers[0])}
	}
	env, err := crypto.ParseEnvelope(rec.Envelope)
	if err != nil {
		return err
	}
	start := time.Now()
	// An offer is recorded once the peer can be reached, so that attempts
	// at a peer that is down do not each add an entry.
	if err := g.client.Connect(ctx, peer); err != nil {
		return &peerError{peer: peer.ID, err: err}
	}
	// A suspension of cooperation with the peer stops the delivery
	// (suspend.go); it is tracked before the agreement decides.
	ctx, done := g.inflight.track(ctx, peer.ID)
	defer done()
	// The agreement decides again: it may have lapsed or changed since
	// the upload. A refusal is final, as a peer's would be, but for
	// cooperation that is only paused: the bundle is held, and retried.
	switch rej, err := g.decideDelivery(ctx, peer.ID, env); {
	case err != nil:
		return err
	case rej != nil && heldBy(rej.Code):
		return rej
	case rej != nil:
		return g.storeAgreementRefusal(ctx, id, rej)
	}
	// The allowed decision was recorded with offer-sent.
	d, err := g.client.Send(ctx, peer, rec.Envelope, rec.Signature, obj)
	if rej := stoppedBy(ctx); rej != nil {
		// Stopped by a suspension: held, as the agreement holds it.
		return rej
	}
	if err != nil {
		return &peerError{peer: peer.ID, err: err}
	}
	if err := g.recordDelivered(ctx, env, peer.ID, d); err != nil {
		return err
	}
	out := outboxReceipt{Peer: peer.ID, Receipt: d.Receipt, Delivered: g.now().UTC()}
	// The sender's copy of the payload goes after the grace: the reaper's
	// entry first, then the receipt that allows it.
	if err := g.dueAt(ctx, out.Delivered.Add(g.opts.OutboxGrace), dueSent, id); err != nil {
		return err
	}
	if err := g.putJSONLocked(ctx, key(outboxPrefix, id, receiptFile), out, env.RetainUntil); err != nil && !errors.Is(err, storage.ErrExist) {
		return err
	}
	g.expectInclusion(id, peer.ID, d, out.Delivered)
	g.delivered(id, peer.ID, d.Duplicate, start)
	return nil
}

// outboxWatch returns a channel that is closed when the next delivery ends,
// delivered or refused.
func (g *Gateway) outboxWatch() <-chan struct{} {
	g.outboxMu.Lock()
	defer g.outboxMu.Unlock()
	return g.outboxChanged
}

// outboxNotify wakes everyone waiting for a delivery to end. Waiters then
// read their bundle's state again: one channel for all bundles is simpler
// than one per bundle, and deliveries end at most a few times a second.
func (g *Gateway) outboxNotify() {
	g.outboxMu.Lock()
	defer g.outboxMu.Unlock()
	close(g.outboxChanged)
	g.outboxChanged = make(chan struct{})
}

// refusalFile records a peer's final refusal of an outbox bundle, so that
// the submitter can see why it was not delivered.
const refusalFile = "refusal.json"

func (g *Gateway) recordRefusal(ctx context.Context, id string, rej *transfer.Rejection) {
	var rec outboxRecord
	if err := getJSON(ctx, g.opts.Storage, key(outboxPrefix, id, recordFile), &rec); err != nil {
		g.log.Error("recording refusal", zap.String("bundle", id), zap.Error(err))
		return
	}
	env, err := crypto.ParseEnvelope(rec.Envelope)
	if err != nil || len(rec.Peers) == 0 {
		g.log.Error("recording refusal: unreadable record", zap.String("bundle", id), zap.Error(err))
		return
	}
	if _, err := g.putRefusal(ctx, env, rec.Peers[0], rej); err != nil {
		g.log.Error("recording refusal", zap.String("bundle", id), zap.Error(err))
		return
	}
	g.outboxNotify()
}

// putRefusal records a peer's final refusal of an outbox bundle in the
// transfer log, then stores it; one stored already stands. The log gets
// the code, if protocol v1 knows it, but not the peer's reason: entries
// hold the gateway's own words only.
func (g *Gateway) putRefusal(ctx context.Context, env *crypto.Envelope, peer string, rej *transfer.Rejection) (*api.Refusal, error) {
	id := env.BundleID
	code := rej.Code
	if !transfer.KnownCode(code) {
		code = "other"
	}
	if _, err := g.recordEnvelope(ctx, audit.Entry{Event: audit.EventDeliveryRefused, Actor: audit.PeerActor(peer),
		Peer: peer, Code: code}, env); err != nil {
		return nil, err
	}
	r := &api.Refusal{Code: rej.Code, Reason: rej.Reason, At: time.Now().UTC()}
	if err := putJSON(ctx, g.opts.Storage, key(outboxPrefix, id, refusalFile), r); err != nil && !errors.Is(err, storage.ErrExist) {
		return nil, err
	}
	return r, nil
}
