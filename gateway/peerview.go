package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"evx/agreement"
	"evx/audit"
	"evx/crypto"
	"evx/storage"
	"evx/transfer"

	"go.uber.org/zap"
)

// Each gateway tells each peer, signed, how it states its agreement with
// that peer (agreement.Summary), and keeps the peer's statement in return
// (docs/agreements.md 9): at start, after every reload, suspension and
// resumption, and every exchangeRefresh. A peer's summary lets the sending
// gateway refuse at pre-flight and upload what the peer would refuse on
// the offer (its suspension above all), hold queued bundles the peer would
// hold, and show an operator where the two sides disagree.

const (
	// peerViewsPrefix holds the peers' latest verified summaries, one
	// object per peer, written by compare-and-swap.
	peerViewsPrefix = "agreements/peers/"
	// exchangeRefresh is how often the summaries are exchanged when
	// nothing changed; exchangeRetry how soon a failed exchange is tried
	// again; exchangeTimeout bounds one exchange.
	exchangeRefresh = 10 * time.Minute
	exchangeRetry   = 30 * time.Second
	exchangeTimeout = 10 * time.Second
	// minPeerViewInterval is the least time between two summaries of one
	// peer that are kept.
	minPeerViewInterval = time.Second
	// maxPeerViewSize bounds a kept summary's object: the summary, its
	// signature, base64, and a little JSON.
	maxPeerViewSize = 2*agreement.MaxSummarySize + 4<<10
)

// peerView is a peer's latest verified summary of its agreement with this
// gateway.
type peerView struct {
	// agreement is the peer's agreement with this gateway (its Peer is
	// this gateway's id), nil if the peer has none.
	agreement *agreement.Agreement
	sequence  uint64
	received  time.Time
}

// keptPeerView is a peerView as storage keeps it: the signed summary
// itself, verified again when read.
type keptPeerView struct {
	Signed   *crypto.Signed `json:"signed"`
	Received time.Time      `json:"received"`
}

// peerViews are the peers' views, and the state of the exchanges.
type peerViews struct {
	mu     sync.Mutex
	byPeer map[string]*peerView
	// lastSequence is that of the last summary this gateway issued.
	lastSequence uint64
	// due are the peers to send a summary to at the next round; wake
	// starts the round.
	due  map[string]bool
	wake chan struct{}
}

func (v *peerViews) get(peer string) (*peerView, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	pv, ok := v.byPeer[peer]
	return pv, ok
}

// notifyPeers has the exchange loop send this gateway's summary to peers,
// or to every peer if none is named, at once.
func (g *Gateway) notifyPeers(peers ...string) {
	v := &g.peerViews
	v.mu.Lock()
	if v.due == nil {
		v.due = map[string]bool{}
	}
	if len(peers) == 0 {
		peers = g.settings().peerIDs()
	}
	for _, p := range peers {
		v.due[p] = true
	}
	v.mu.Unlock()
	select {
	case v.wake <- struct{}{}:
	default:
	}
}

// summaryFor signs this gateway's summary of its agreement with peer, as
// it applies now.
func (g *Gateway) summaryFor(peer string) (*crypto.Signed, error) {
	v := &g.peerViews
	v.mu.Lock()
	v.lastSequence = agreement.NextSequence(v.lastSequence, time.Now())
	seq := v.lastSequence
	v.mu.Unlock()
	s := agreement.Summary{Gateway: g.opts.ID, Peer: peer, Issued: g.now().UTC(), Sequence: seq,
		Agreement: g.agreementWith(g.settings(), peer)}
	body, err := s.Marshal()
	if err != nil {
		return nil, err
	}
	return g.opts.SigningKey.SignAgreementSummary(body)
}

var _ transfer.AgreementPeer = (*Gateway)(nil)

// ExchangeAgreements implements transfer.AgreementPeer: it keeps peer's
// summary, if it verifies and is newer than the one kept, and answers with
// this gateway's.
func (g *Gateway) ExchangeAgreements(ctx context.Context, peer string, theirs *crypto.Signed) (*crypto.Signed, error) {
	if err := g.acceptPeerView(ctx, peer, theirs); err != nil {
		var rej *transfer.Rejection
		if errors.As(err, &rej) {
			return nil, rej
		}
		g.log.Warn("agreement summary refused", zap.String("peer", peer), zap.Error(err))
		if errors.Is(err, crypto.ErrBadSignature) {
			return nil, transfer.Reject(transfer.CodeBadSignature, "%v", err)
		}
		return nil, transfer.Reject(transfer.CodeMalformed, "%v", err)
	}
	return g.summaryFor(peer)
}

// acceptPeerView verifies peer's signed summary against the peer's
// configured key and, if it is newer than the one kept, keeps it in
// storage and in memory. A change of the peer's status is recorded in the
// transfer log, and wakes the deliveries that it holds or releases.
func (g *Gateway) acceptPeerView(ctx context.Context, peer string, signed *crypto.Signed) error {
	p, ok := g.settings().peers[peer]
	if !ok {
		return transfer.Reject(transfer.CodeNotAccepted, "%s is not a peer of gateway %s", peer, g.opts.ID)
	}
	body, err := crypto.VerifyAgreementSummary(signed, p.SigningKey)
	if err != nil {
		return fmt.Errorf("agreement summary of %s: %w", peer, err)
	}
	s, err := agreement.ParseSummary(body, peer, g.opts.ID)
	if err != nil {
		return err
	}
	v := &g.peerViews
	v.mu.Lock()
	old := v.byPeer[peer]
	if old != nil && s.Sequence <= old.sequence {
		v.mu.Unlock()
		return nil // an older or repeated summary: the kept one stands
	}
	if old != nil && g.now().Sub(old.received) < minPeerViewInterval && g.now().After(old.received) {
		// Each kept summary costs a write to storage, and a change of
		// status an entry in the log: a peer cannot have them made
		// without bound.
		v.mu.Unlock()
		return transfer.Reject(transfer.CodeUnavailable, "a summary of %s was kept less than %v ago; send it again later", peer, minPeerViewInterval)
	}
	pv := &peerView{agreement: s.Agreement, sequence: s.Sequence, received: g.now()}
	if v.byPeer == nil {
		v.byPeer = map[string]*peerView{}
	}
	v.byPeer[peer] = pv
	v.mu.Unlock()
	if err := g.keepPeerView(ctx, peer, signed, pv.received); err != nil {
		// Memory serves until the next exchange stores it.
		g.log.Warn("keeping a peer's agreement summary", zap.String("peer", peer), zap.Error(err))
	}
	g.peerStatusChanged(ctx, peer, old, pv)
	g.setAgreementGauges()
	if g.opts.onPeerView != nil {
		g.opts.onPeerView(peer, pv.agreement)
	}
	return nil
}

// peerStatusChanged records, when peer's summary says it suspended or
// resumed cooperation, the change in the transfer log, and wakes the
// deliveries.
func (g *Gateway) peerStatusChanged(ctx context.Context, peer string, old, now *peerView) {
	was, is := statusOf(old), statusOf(now)
	if was == is {
		return
	}
	var e audit.Entry
	switch {
	case is == agreement.Suspended:
		e = audit.Entry{Event: audit.EventAgreementSuspended, Actor: audit.PeerActor(peer), Peer: peer,
			Reason: audit.CleanReason(fmt.Sprintf("%s suspended cooperation: %s", peer, now.agreement.StatusReason))}
		if e.Reason == "" {
			e.Reason = peer + " suspended cooperation"
		}
	case was == agreement.Suspended && is == agreement.Active:
		e = audit.Entry{Event: audit.EventAgreementResumed, Actor: audit.PeerActor(peer), Peer: peer}
	}
	if e.Event != "" {
		setAgreementMembers(&e, g.settings().agreements[peer])
		if _, err := g.recordAll(context.WithoutCancel(ctx), e); err != nil {
			g.log.Error("transfer log", zap.String("event", string(e.Event)), zap.Error(err))
		}
		g.log.Warn("peer changed the status of its agreement", zap.String("peer", peer),
			zap.String("from", string(was)), zap.String("to", string(is)))
	}
	g.agreementsChanged()
}

// statusOf is the status a peer's view states, "" if none is known.
func statusOf(v *peerView) agreement.Status {
	switch {
	case v == nil:
		return ""
	case v.agreement == nil:
		return "none"
	}
	return v.agreement.Status
}

func peerViewKey(peer string) string { return peerViewsPrefix + peer + ".json" }

// keepPeerView stores peer's signed summary, unless a newer one is stored
// already (by another replica).
func (g *Gateway) keepPeerView(ctx context.Context, peer string, signed *crypto.Signed, received time.Time) error {
	data, err := json.Marshal(keptPeerView{Signed: signed, Received: received.UTC()})
	if err != nil {
		return err
	}
	for range 4 {
		kept, version, err := g.readPeerView(ctx, peer)
		if err != nil && !errors.Is(err, storage.ErrNotExist) {
			return err
		}
		if kept != nil && kept.sequence >= g.sequenceOf(peer, signed) {
			return nil
		}
		_, err = g.opts.Storage.Replace(ctx, peerViewKey(peer), data, version)
		if !errors.Is(err, storage.ErrVersionMismatch) {
			return err
		}
	}
	return errors.New("other writers kept changing it")
}

// sequenceOf returns the sequence of a summary this gateway verified.
func (g *Gateway) sequenceOf(peer string, signed *crypto.Signed) uint64 {
	p := g.settings().peers[peer]
	body, err := crypto.VerifyAgreementSummary(signed, p.SigningKey)
	if err != nil {
		return 0
	}
	s, err := agreement.ParseSummary(body, peer, g.opts.ID)
	if err != nil {
		return 0
	}
	return s.Sequence
}

// readPeerView reads the kept summary of peer and verifies it again:
// storage is not trusted with what a peer signed.
func (g *Gateway) readPeerView(ctx context.Context, peer string) (*peerView, string, error) {
	data, version, err := g.opts.Storage.ReadVersion(ctx, peerViewKey(peer), maxPeerViewSize)
	if err != nil {
		return nil, "", err
	}
	var kept keptPeerView
	if err := json.Unmarshal(data, &kept); err != nil || kept.Signed == nil {
		return nil, version, fmt.Errorf("kept agreement summary of %s is not one", peer)
	}
	p, ok := g.settings().peers[peer]
	if !ok {
		return nil, version, fmt.Errorf("%s is no longer a peer", peer)
	}
	body, err := crypto.VerifyAgreementSummary(kept.Signed, p.SigningKey)
	if err != nil {
		return nil, version, fmt.Errorf("kept agreement summary of %s: %w", peer, err)
	}
	s, err := agreement.ParseSummary(body, peer, g.opts.ID)
	if err != nil {
		return nil, version, err
	}
	return &peerView{agreement: s.Agreement, sequence: s.Sequence, received: kept.Received}, version, nil
}

// loadPeerViews reads the kept summaries of the peers: a gateway that
// starts while a peer is down still knows that peer's last statement.
func (g *Gateway) loadPeerViews(ctx context.Context) {
	v := &g.peerViews
	for _, peer := range g.settings().peerIDs() {
		pv, _, err := g.readPeerView(ctx, peer)
		if err != nil {
			if !errors.Is(err, storage.ErrNotExist) {
				g.log.Warn("kept agreement summary not used", zap.String("peer", peer), zap.Error(err))
			}
			continue
		}
		v.mu.Lock()
		if v.byPeer == nil {
			v.byPeer = map[string]*peerView{}
		}
		v.byPeer[peer] = pv
		v.mu.Unlock()
	}
}

// runAgreementExchange exchanges summaries with the peers until ctx is
// done: with every peer at start and every exchangeRefresh, with those
// notifyPeers names at once, and again after exchangeRetry with those it
// could not reach. Each peer's exchange runs on its own, so that a peer
// that does not answer delays no other; one named while its exchange runs
// gets another right after.
func (g *Gateway) runAgreementExchange(ctx context.Context) error {
	v := &g.peerViews
	var wg sync.WaitGroup
	defer wg.Wait()
	var mu sync.Mutex              // guards the three maps
	next := map[string]time.Time{} // when each peer is next due
	running := map[string]bool{}
	again := map[string]bool{} // named while running
	t := time.NewTimer(exchangeRetry)
	defer t.Stop()
	g.notifyPeers()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-v.wake:
		case <-t.C:
		}
		now := time.Now()
		v.mu.Lock()
		due := maps.Clone(v.due)
		clear(v.due)
		v.mu.Unlock()
		set := g.settings()
		earliest := now.Add(exchangeRefresh)
		mu.Lock()
		for _, peer := range set.peerIDs() {
			switch at, ok := next[peer]; {
			case running[peer]:
				again[peer] = again[peer] || due[peer]
				continue
			case ok && now.Before(at) && !due[peer]:
				if at.Before(earliest) {
					earliest = at
				}
				continue
			}
			running[peer] = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := g.exchangeWith(ctx, set.peers[peer])
				mu.Lock()
				running[peer] = false
				var rej *transfer.Rejection
				switch {
				case again[peer]:
					next[peer] = time.Now()
					delete(again, peer)
				case errors.As(err, &rej) && rej.Code == transfer.CodeUnavailable:
					// The peer kept a summary a moment ago: this one,
					// which may tell of a suspension, follows soon.
					next[peer] = time.Now().Add(2 * minPeerViewInterval)
				case err != nil:
					next[peer] = time.Now().Add(exchangeRetry)
				default:
					next[peer] = time.Now().Add(exchangeRefresh)
				}
				mu.Unlock()
				// The loop plans its timer anew.
				select {
				case v.wake <- struct{}{}:
				default:
				}
			}()
		}
		mu.Unlock()
		t.Reset(time.Until(earliest))
	}
}

// exchangeWith sends this gateway's summary to p and keeps p's answer.
func (g *Gateway) exchangeWith(ctx context.Context, p transfer.Peer) error {
	mine, err := g.summaryFor(p.ID)
	if err != nil {
		g.log.Error("signing the agreement summary", zap.String("peer", p.ID), zap.Error(err))
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, exchangeTimeout)
	defer cancel()
	theirs, err := g.client.ExchangeAgreements(ctx, p, mine)
	if err == nil {
		err = g.acceptPeerView(ctx, p.ID, theirs)
	}
	if err != nil && ctx.Err() == nil {
		g.log.Info("agreement summaries not exchanged; retrying", zap.String("peer", p.ID), zap.Error(err))
	}
	if g.opts.onExchanged != nil {
		g.opts.onExchanged(p.ID, err)
	}
	return err
}

// peerDecision decides r as peer's own agreement with this gateway, as its
// last summary states it, would decide the offer: nil when no summary is
// known, or when it allows. Recipients and rates are the peer's to
// check.
func (g *Gateway) peerDecision(peer string, r agreement.Request) *agreement.Decision {
	pv, ok := g.peerViews.get(peer)
	if !ok || g.opts.withoutPeerViews {
		return nil
	}
	r.Peer, r.Direction, r.Recipients = g.opts.ID, agreement.Inbound, nil
	d := agreement.Decide(peer, pv.agreement, g.now(), r)
	if d.Allowed() {
		return nil
	}
	d.Reason = fmt.Sprintf("%s's own agreement refuses, as it stated on %s: %s", peer,
		pv.received.UTC().Format(time.RFC3339), d.Reason)
	return &d
}
