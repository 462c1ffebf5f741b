package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"evx/agreement"
	"evx/api"
	"evx/audit"
	"evx/crypto"
	"evx/storage"
	"evx/transfer"

	"go.uber.org/zap"
)

// The gateway enforces its agreements with its peers (docs/agreements.md)
// on both sides: at an upload (outbound, before anything is stored), at a
// peer's offer (inbound, before anything is stored) and again when a
// queued bundle is delivered (outbound). Each place asks decide, the one
// path that finds the peer's agreement, decides under it with the
// gateway's clock, applies the rate limits, records the decision in the
// transfer log and counts it; the caller acts on the decision only after
// it is recorded.

// decision is a decision as the gateway made it: the agreement's, or a
// rate limit's, with how long to wait before a rate-limited bundle may
// be tried again.
type decision struct {
	agreement.Decision
	retryAfter time.Duration
}

// refuseByRate turns d, allowed by a, into a refusal by a's rate limit,
// which why names, for wait.
func (d *decision) refuseByRate(self string, a *agreement.Agreement, wait time.Duration, why string) {
	d.Code, d.retryAfter = agreement.CodeRateLimited, wait
	d.Reason = fmt.Sprintf("%s %s; retry after %s", a.Name(self), why, retryText(wait))
}

// decideRequest is what decide is asked about.
type decideRequest struct {
	peer string
	dir  agreement.Direction
	env  *crypto.Envelope
	// recipients are the bundle's recipients with their purposes: the
	// users here for an inbound decision; for an upload, those the peer's
	// directory lists purposes for (recipients.go).
	recipients []agreement.Recipient
	// actor is who made the decision necessary: the uploading unit, the
	// offering peer, or the gateway delivering its queue.
	actor string
	// rate says whether the bundle counts against the rate limits: a
	// queued bundle was counted when it was uploaded.
	rate bool
	// then are the events an allowed decision leads to at once (the
	// offer it lets the gateway send or accept): recorded with it, in one
	// write to the log; a refused decision is recorded alone.
	then []audit.Entry
}

// decide decides r under the agreement with r.peer, records the decision
// in the transfer log and counts it. An error means the decision could
// not be recorded: the caller does not act on it, and answers as it does
// when the log fails.
func (g *Gateway) decide(ctx context.Context, r decideRequest) (decision, error) {
	d := g.decideOnly(r)
	return d, g.recordDecision(ctx, r, d)
}

// decideOnly decides r, taking from the rate limits if r.rate, but
// records nothing: the caller records the decision (recordDecision) before
// it acts on it, and on every path, refusals at once.
func (g *Gateway) decideOnly(r decideRequest) decision {
	now := g.now()
	env := r.env
	// The retention runs from the bundle's creation, but never from a
	// time to come: a sender cannot stretch the cap by dating its bundle
	// ahead.
	start := env.Created
	if now.Before(start) {
		start = now
	}
	d, a := g.decideUnder(now, agreement.Request{
		Peer: r.peer, Direction: r.dir, Purpose: env.Purpose, Handling: env.Handling, TLP: env.TLP,
		Retention: ceilSecond(env.RetainUntil.Sub(start)), Size: env.PayloadSize, Recipients: r.recipients,
	})
	if d.Allowed() && r.rate {
		if wait, why := g.rates.take(a, r.dir, now, env.PayloadSize); why != "" {
			d.refuseByRate(g.opts.ID, a, wait, why)
		}
	}
	return d
}

// decideUnder decides r under the agreement in force with r.Peer and,
// for a bundle to send, under the peer's own agreement as its summary
// states it (peerview.go), without the rate limits. It returns the
// agreement in force, whose rate limits apply next.
func (g *Gateway) decideUnder(now time.Time, r agreement.Request) (decision, *agreement.Agreement) {
	a := g.agreementWith(g.settings(), r.Peer)
	d := decision{Decision: agreement.Decide(g.opts.ID, a, now, r)}
	if d.Allowed() && r.Direction == agreement.Outbound {
		// The decision stays this side's, with its version and
		// reference; the reason names the peer's clause.
		if pd := g.peerDecision(r.Peer, r); pd != nil {
			d.Code, d.Reason = pd.Code, pd.Reason
		}
	}
	return d, a
}

// recordDecision records d, made for r, in the transfer log, with r.then
// if d allows, and counts it.
func (g *Gateway) recordDecision(ctx context.Context, r decideRequest, d decision) error {
	env := r.env
	e := audit.Entry{Event: audit.EventAgreementDecision, Actor: r.actor, Peer: r.peer, Code: string(d.Code),
		AgreementVersion: int64(d.Version), AgreementRef: d.Ref}
	if !d.Allowed() {
		e.Reason = audit.CleanReason(d.Reason)
	}
	es := []audit.Entry{e}
	if d.Allowed() {
		es = append(es, r.then...)
	}
	for i := range es {
		if err := withEnvelope(&es[i], env); err != nil {
			return err
		}
	}
	if _, err := g.recordAll(context.WithoutCancel(ctx), es...); err != nil {
		g.log.Error("transfer log", zap.String("event", string(e.Event)), zap.Error(err))
		return err
	}
	g.metrics.agreementDecisions.WithLabelValues(r.peer, metricDirection(r.dir), string(d.Code)).Inc()
	g.setAgreementGauges()
	if !d.Allowed() {
		g.log.Warn("agreement refuses a bundle", zap.String("bundle", env.BundleID), zap.String("peer", r.peer),
			zap.String("direction", string(r.dir)), zap.String("code", string(d.Code)), zap.String("reason", d.Reason))
	}
	return nil
}

// ceilSecond rounds d up to the second: a retention counted from now is
// stated, and compared with a cap, in whole seconds.
func ceilSecond(d time.Duration) time.Duration {
	return (d + time.Second - 1).Truncate(time.Second)
}

// retryText rounds a wait up to the second, for people.
func retryText(d time.Duration) string {
	return ceilSecond(d).String()
}

func metricDirection(d agreement.Direction) string {
	if d == agreement.Inbound {
		return string(audit.Inbound)
	}
	return string(audit.Outbound)
}

// decideUpload decides a local unit's upload to peer, before anything of
// it is stored. A refusal is recorded at once and is an API error with the
// agreement's code; a rate-limited one is a *rateLimited, whose wait the
// API answers with in Retry-After. An allowed decision is returned
// unrecorded: the caller records it with its first action (the offer of a
// direct delivery), or alone with recordUpload before it stores anything.
func (g *Gateway) decideUpload(ctx context.Context, u User, env *crypto.Envelope, peer string) (*pendingDecision, error) {
	r := decideRequest{peer: peer, dir: agreement.Outbound, env: env, actor: audit.UnitActor(u.Unit), rate: true}
	r.recipients = g.directoryRecipients(ctx, envelopeUnits(env))
	d := g.decideOnly(r)
	if d.Allowed() {
		return &pendingDecision{r: r, d: d}, nil
	}
	if err := g.recordDecision(ctx, r, d); err != nil {
		return nil, errLogFailed
	}
	ae := api.Errorf(api.Code(d.Code), "%s", d.Reason)
	if d.retryAfter > 0 {
		return nil, &rateLimited{err: ae, after: d.retryAfter}
	}
	return nil, ae
}

// errLogFailed answers a unit whose request the log could not record.
var errLogFailed = api.Errorf(api.CodeStorageUnavailable, "the gateway cannot record the request in its transfer log; nothing was done, retry later")

// pendingDecision is an upload's allowed decision, not yet recorded.
type pendingDecision struct {
	r        decideRequest
	d        decision
	recorded bool
}

// record records the decision, with then, before the upload is acted on:
// once, whichever path does it first.
func (p *pendingDecision) record(ctx context.Context, g *Gateway, then ...audit.Entry) error {
	if p.recorded {
		return nil
	}
	r := p.r
	r.then = then
	if err := g.recordDecision(ctx, r, p.d); err != nil {
		return errLogFailed
	}
	p.recorded = true
	return nil
}

// rateLimited is an upload refused by a rate limit, and how long to wait.
type rateLimited struct {
	err   *api.Error
	after time.Duration
}

func (r *rateLimited) Error() string { return r.err.Error() }
func (r *rateLimited) Unwrap() error { return r.err }

// retryAfterSeconds is the value of a Retry-After header for a wait.
func retryAfterSeconds(d time.Duration) string {
	return fmt.Sprint(int64((d + time.Second - 1) / time.Second))
}

// decideOffer decides a peer's offer under the agreement with it, for the
// local recipients it is addressed to (checkLocalRecipients has checked
// that they are users here), and records its acceptance with an allowed
// decision. A refusal is a rejection with the agreement's code.
func (g *Gateway) decideOffer(ctx context.Context, peer string, env *crypto.Envelope) *transfer.Rejection {
	var rs []agreement.Recipient
	users := g.settings().users
	for _, r := range env.Recipients {
		if country, _, _ := strings.Cut(r.Unit, "/"); country == g.opts.ID {
			rs = append(rs, agreement.Recipient{Unit: r.Unit, Purposes: users[r.Unit].Purposes})
		}
	}
	d, err := g.decide(ctx, decideRequest{peer: peer, dir: agreement.Inbound, env: env, recipients: rs,
		actor: audit.PeerActor(peer), rate: true,
		then: []audit.Entry{{Event: audit.EventOfferAccepted, Actor: audit.PeerActor(peer), Peer: peer}}})
	if err != nil {
		return transfer.Reject(transfer.CodeUnavailable, "the receiving gateway cannot record the offer in its transfer log; retry later")
	}
	if d.Allowed() {
		return nil
	}
	return transfer.Reject(string(d.Code), "%s", d.Reason)
}

// decideDelivery decides a queued bundle again when it is delivered: the
// agreement may have lapsed or changed since the upload. The rate limits
// counted it at the upload. An allowed decision is recorded with the
// offer it lets the gateway send.
func (g *Gateway) decideDelivery(ctx context.Context, peer string, env *crypto.Envelope) (*transfer.Rejection, error) {
	d, err := g.decide(ctx, decideRequest{peer: peer, dir: agreement.Outbound, env: env, actor: audit.GatewayActor,
		then: []audit.Entry{{Event: audit.EventOfferSent, Actor: audit.GatewayActor, Peer: peer}}})
	if err != nil || d.Allowed() {
		return nil, err
	}
	return transfer.Reject(string(d.Code), "%s", d.Reason), nil
}

// heldBy reports whether a refusal with code, this gateway's or the
// peer's, holds a queued bundle rather than refuses it: cooperation is
// suspended, not yet or no longer in force, or without an agreement, all of
// which an operator can end. The bundle stays queued, neither lost nor
// failed, and goes out once the agreements on both sides allow it again.
// A terminated agreement, and every clause about the bundle itself,
// refuse it for good.
func heldBy(code string) bool {
	switch agreement.Code(code) {
	case agreement.CodeSuspended, agreement.CodeLapsed, agreement.CodeNotYetValid, agreement.CodeNoAgreement:
		return true
	}
	return false
}

// rateWindow is the length of a rate limit's window, and rateBuckets the
// number of its slots: the window slides by a minute.
const (
	rateWindow  = time.Hour
	rateBuckets = 60
)

// rateLimits count, per peer and direction, the bundles and bytes allowed
// in the last hour, in minute slots, so that a limit costs the same memory
// however many bundles flow. Only allowed bundles count.
type rateLimits struct {
	mu     sync.Mutex
	counts map[rateKey]*rateCount
}

type rateKey struct {
	peer string
	dir  agreement.Direction
}

type rateCount struct {
	slots [rateBuckets]struct {
		minute  int64 // the slot's minute since the epoch
		bundles int
		bytes   int64
	}
}

// take counts a bundle of size bytes against a's limits at now, if they
// allow it, and returns "" then; otherwise it counts nothing and returns
// how long until they allow it, and which limit refuses.
func (l *rateLimits) take(a *agreement.Agreement, dir agreement.Direction, now time.Time, size int64) (time.Duration, string) {
	return l.check(a, dir, now, size, true)
}

// peek answers as take would, and counts nothing: a pre-flight asks
// whether an upload would pass the limits without using them up.
func (l *rateLimits) peek(a *agreement.Agreement, dir agreement.Direction, now time.Time, size int64) (time.Duration, string) {
	return l.check(a, dir, now, size, false)
}

// check is take if count is set, peek if not.
func (l *rateLimits) check(a *agreement.Agreement, dir agreement.Direction, now time.Time, size int64, count bool) (time.Duration, string) {
	if a == nil || a.RateBundles <= 0 && a.RateBytes <= 0 {
		return 0, ""
	}
	if a.RateBytes > 0 && size > a.RateBytes {
		return rateWindow, fmt.Sprintf("allows %d bytes an hour %s; this bundle alone has %d", a.RateBytes, dirText(dir), size)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.counts == nil {
		l.counts = map[rateKey]*rateCount{}
	}
	k := rateKey{a.Peer, dir}
	c := l.counts[k]
	if c == nil {
		c = &rateCount{}
		l.counts[k] = c
	}
	minute := now.Unix() / 60
	// In the window: the slots of the last rateBuckets minutes, this one
	// included.
	bundles, bytes := 0, int64(0)
	for _, s := range c.slots {
		if s.minute > minute-rateBuckets {
			bundles += s.bundles
			bytes += s.bytes
		}
	}
	fits := func(bundles int, bytes int64) bool {
		return (a.RateBundles <= 0 || bundles+1 <= a.RateBundles) && (a.RateBytes <= 0 || bytes+size <= a.RateBytes)
	}
	if !fits(bundles, bytes) {
		what := fmt.Sprintf("allows %d bundles an hour %s", a.RateBundles, dirText(dir))
		if a.RateBundles <= 0 || bundles+1 <= a.RateBundles {
			what = fmt.Sprintf("allows %d bytes an hour %s", a.RateBytes, dirText(dir))
		}
		// Wait for the oldest slots to leave the window until it fits.
		for m := minute - rateBuckets + 1; m <= minute; m++ {
			s := c.slots[((m%rateBuckets)+rateBuckets)%rateBuckets]
			if s.minute == m {
				bundles -= s.bundles
				bytes -= s.bytes
			}
			if fits(bundles, bytes) {
				return time.Unix((m+rateBuckets)*60, 0).Sub(now), what + ": the limit is reached"
			}
		}
		return rateWindow, what + ": the limit is reached"
	}
	if !count {
		return 0, ""
	}
	s := &c.slots[((minute%rateBuckets)+rateBuckets)%rateBuckets]
	if s.minute != minute {
		s.minute, s.bundles, s.bytes = minute, 0, 0
	}
	s.bundles++
	s.bytes += size
	return 0, ""
}

func dirText(d agreement.Direction) string {
	if d == agreement.Inbound {
		return "inbound"
	}
	return "outbound"
}

// agreementStates are the values of evx_agreement_status's status label.
var agreementStates = []string{"active", "suspended", "terminated", "not-yet-valid", "lapsed", "none"}

// agreementState is the state of a, at now, as evx_agreement_status
// names it.
func agreementState(a *agreement.Agreement, now time.Time) string {
	switch {
	case a == nil:
		return "none"
	case a.Status == agreement.Terminated:
		return "terminated"
	case a.Status != agreement.Active:
		return "suspended"
	case !a.ValidFrom.IsZero() && now.Before(a.ValidFrom):
		return "not-yet-valid"
	case !a.ValidUntil.IsZero() && !now.Before(a.ValidUntil):
		return "lapsed"
	}
	return "active"
}

// agreementGaugesInterval is how often the agreement gauges follow the
// clock: days until valid_until change slowly.
const agreementGaugesInterval = time.Minute

// runAgreementGauges keeps the agreement gauges current until ctx is done.
func (g *Gateway) runAgreementGauges(ctx context.Context) error {
	t := time.NewTicker(agreementGaugesInterval)
	defer t.Stop()
	for {
		g.setAgreementGauges()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		// Another process on the same storage may have suspended or
		// resumed cooperation (suspend.go).
		g.refreshSuspensions(ctx)
	}
}

// setAgreementGauges sets each peer's agreement gauges by the gateway's
// clock.
func (g *Gateway) setAgreementGauges() {
	now := g.now()
	set := g.settings()
	for peer := range set.peers {
		a := g.agreementWith(set, peer)
		state := agreementState(a, now)
		for _, s := range agreementStates {
			v := 0.0
			if s == state {
				v = 1
			}
			g.metrics.agreementStatus.WithLabelValues(peer, s).Set(v)
		}
		if a == nil || a.ValidUntil.IsZero() {
			g.metrics.agreementDaysLeft.DeleteLabelValues(peer)
			continue
		}
		g.metrics.agreementDaysLeft.WithLabelValues(peer).Set(a.ValidUntil.Sub(now).Hours() / 24)
	}
	for peer := range set.peers {
		state := "unknown"
		if pv, ok := g.peerViews.get(peer); ok {
			state = agreementState(pv.agreement, now)
		}
		for _, s := range append(agreementStates, "unknown") {
			v := 0.0
			if s == state {
				v = 1
			}
			g.metrics.peerAgreement.WithLabelValues(peer, s).Set(v)
		}
	}
}

// storeAgreementRefusal stores this gateway's own final refusal of a
// queued bundle, which its agreement-decision entry has recorded, where
// the submitter sees it as it sees a peer's.
func (g *Gateway) storeAgreementRefusal(ctx context.Context, id string, rej *transfer.Rejection) error {
	r := &api.Refusal{Code: rej.Code, Reason: rej.Reason, At: g.now().UTC()}
	if err := putJSON(ctx, g.opts.Storage, key(outboxPrefix, id, refusalFile), r); err != nil && !errors.Is(err, storage.ErrExist) {
		return err
	}
	g.outboxNotify()
	return nil
}
