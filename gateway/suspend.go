package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"evx/agreement"
	"evx/api"
	"evx/audit"
	"evx/storage"
	"evx/transfer"

	"go.uber.org/zap"
)

// An operator suspends cooperation with a peer at once, without editing
// the configuration (docs/agreements.md 8). The suspension is kept in
// storage, not in memory only, so that it survives a restart and a
// reload, and replicas on one storage share it. While it stands, the
// agreement with the peer decides as if its status were suspended, in
// both directions; transfers in flight with the peer are stopped.

// suspensionsKey holds the operators' suspensions, by peer, in one object
// written by compare-and-swap (storage.Backend.Replace).
const suspensionsKey = "agreements/suspensions.json"

// suspensionsFormat is the format of the object at suspensionsKey.
const suspensionsFormat = "evx-suspensions/1"

type suspensionsDoc struct {
	Format      string                    `json:"format"`
	Suspensions map[string]api.Suspension `json:"suspensions"`
}

// maxSuspensionsSize bounds the object: a suspension takes under 1 KiB.
const maxSuspensionsSize = 256 << 10

// suspensions are the operators' suspensions as last read from or
// written to storage.
type suspensions struct {
	mu      sync.Mutex
	byPeer  map[string]api.Suspension
	version string // of the object read, for Replace; "" if none
}

// get returns the suspension of cooperation with peer, if any.
func (s *suspensions) get(peer string) (api.Suspension, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sp, ok := s.byPeer[peer]
	return sp, ok
}

// loadSuspensions reads the suspensions from storage.
func (g *Gateway) loadSuspensions(ctx context.Context) error {
	doc, version, err := g.readSuspensions(ctx)
	if err != nil {
		return err
	}
	g.suspensions.mu.Lock()
	g.suspensions.byPeer, g.suspensions.version = doc.Suspensions, version
	g.suspensions.mu.Unlock()
	return nil
}

// refreshSuspensions reads the suspensions again, for another process of
// this gateway on the same storage may have changed them: a suspension
// found stops this process's transfers with the peer too, and a change
// either way wakes the held deliveries.
func (g *Gateway) refreshSuspensions(ctx context.Context) {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	doc, version, err := g.readSuspensions(ctx)
	if err != nil {
		g.log.Warn("reading the suspensions again", zap.Error(err))
		return
	}
	g.suspensions.mu.Lock()
	same := version == g.suspensions.version
	old := g.suspensions.byPeer
	g.suspensions.byPeer, g.suspensions.version = doc.Suspensions, version
	g.suspensions.mu.Unlock()
	if same {
		return
	}
	set := g.settings()
	for peer := range doc.Suspensions {
		if _, was := old[peer]; !was {
			g.inflight.stop(peer, suspendedRejection(g.opts.ID, peer, g.agreementWith(set, peer), doc.Suspensions[peer]))
		}
	}
	g.log.Info("suspensions changed in storage", zap.Int("suspended", len(doc.Suspensions)))
	g.setAgreementGauges()
	g.agreementsChanged()
}

func (g *Gateway) readSuspensions(ctx context.Context) (*suspensionsDoc, string, error) {
	doc := &suspensionsDoc{Format: suspensionsFormat, Suspensions: map[string]api.Suspension{}}
	data, version, err := g.opts.Storage.ReadVersion(ctx, suspensionsKey, maxSuspensionsSize)
	switch {
	case errors.Is(err, storage.ErrNotExist):
		return doc, "", nil
	case err != nil:
		return nil, "", fmt.Errorf("reading the suspensions: %w", err)
	}
	if err := json.Unmarshal(data, doc); err != nil || doc.Format != suspensionsFormat {
		return nil, "", fmt.Errorf("the suspensions in storage (%s) are not of format %s", suspensionsKey, suspensionsFormat)
	}
	if doc.Suspensions == nil {
		doc.Suspensions = map[string]api.Suspension{}
	}
	return doc, version, nil
}

// changeSuspension reads the suspensions from storage, applies change to
// them, and writes them back by compare-and-swap, again from the read if
// another writer came first.
func (g *Gateway) changeSuspension(ctx context.Context, change func(map[string]api.Suspension) error) error {
	for range 8 {
		doc, version, err := g.readSuspensions(ctx)
		if err != nil {
			return err
		}
		if err := change(doc.Suspensions); err != nil {
			return err
		}
		data, err := json.Marshal(doc)
		if err != nil {
			return err
		}
		newVersion, err := g.opts.Storage.Replace(ctx, suspensionsKey, data, version)
		if errors.Is(err, storage.ErrVersionMismatch) {
			continue
		}
		if err != nil {
			return fmt.Errorf("storing the suspensions: %w", err)
		}
		g.suspensions.mu.Lock()
		g.suspensions.byPeer, g.suspensions.version = doc.Suspensions, newVersion
		g.suspensions.mu.Unlock()
		return nil
	}
	return errors.New("storing the suspensions: other writers kept changing them")
}

// agreementWith returns the agreement in force with peer under set: the
// configured one, suspended if an operator suspended cooperation, or nil.
func (g *Gateway) agreementWith(set *settings, peer string) *agreement.Agreement {
	a := set.agreements[peer]
	if a == nil || a.Status != agreement.Active {
		return a
	}
	sp, ok := g.suspensions.get(peer)
	if !ok {
		return a
	}
	c := *a
	c.Status = agreement.Suspended
	c.StatusReason = fmt.Sprintf("suspended by %s on %s: %s", sp.By, sp.At.UTC().Format(time.DateOnly), sp.Reason)
	if len(c.StatusReason) > agreement.MaxSummaryReason {
		// The peer is told the reason in a summary, which bounds it; a
		// suspension stored by an older version may be longer.
		c.StatusReason = strings.ToValidUTF8(c.StatusReason[:agreement.MaxSummaryReason], "")
	}
	return &c
}

// errSuspending answers an operator whose suspension could not be stored.
var errSuspending = api.Errorf(api.CodeStorageUnavailable, "the gateway cannot store the suspension; nothing was changed, retry later")

// Suspend suspends cooperation with peer, for reason, at the request of
// by (an operator's unit id, or "" for the gateway itself): it is stored,
// recorded in the transfer log, and stops every transfer in flight with
// peer.
func (g *Gateway) Suspend(ctx context.Context, peer, reason, by string) (*api.Reload, error) {
	if err := checkSuspendReason(reason); err != nil {
		return nil, err
	}
	sp := api.Suspension{Reason: reason, By: by, At: g.now().UTC().Truncate(time.Second)}
	if by == "" {
		sp.By = "gateway " + g.opts.ID
	}
	e := audit.Entry{Event: audit.EventAgreementSuspended, Actor: actorOf(by), Peer: peer, Reason: audit.CleanReason(reason)}
	if e.Reason == "" {
		e.Reason = "reason withheld from the log: it looks like a path or a key"
	}
	a, err := g.changeCooperation(ctx, peer, e, func(m map[string]api.Suspension) error {
		if _, ok := m[peer]; ok {
			return api.Errorf(api.CodeAlreadySuspended, "cooperation with %s is already suspended: resume it first", peer)
		}
		m[peer] = sp
		return nil
	})
	if err != nil {
		return nil, err
	}
	stopped := g.inflight.stop(peer, suspendedRejection(g.opts.ID, peer, a, sp))
	g.log.Warn("cooperation suspended", zap.String("peer", peer), zap.String("by", sp.By), zap.String("reason", reason),
		zap.Int("transfers_stopped", stopped))
	changes := []string{fmt.Sprintf("cooperation with %s suspended: %s", peer, reason)}
	if stopped > 0 {
		changes = append(changes, fmt.Sprintf("%d transfers in flight with %s stopped", stopped, peer))
	}
	return &api.Reload{Changed: true, Changes: changes}, nil
}

// Resume ends an operator's suspension of cooperation with peer; bundles
// held for it go out at once.
func (g *Gateway) Resume(ctx context.Context, peer, by string) (*api.Reload, error) {
	a, err := g.changeCooperation(ctx, peer, audit.Entry{Event: audit.EventAgreementResumed, Actor: actorOf(by), Peer: peer},
		func(m map[string]api.Suspension) error {
			if _, ok := m[peer]; !ok {
				return api.Errorf(api.CodeNotSuspended, "cooperation with %s is not suspended by an operator", peer)
			}
			delete(m, peer)
			return nil
		})
	if err != nil {
		return nil, err
	}
	g.log.Info("cooperation resumed", zap.String("peer", peer), zap.String("by", by))
	changes := []string{fmt.Sprintf("cooperation with %s resumed", peer)}
	if a != nil && a.Status != agreement.Active {
		changes = append(changes, fmt.Sprintf("the configuration still states the agreement with %s is %s: edit it and reload", peer, a.Status))
	}
	if a == nil {
		changes = append(changes, fmt.Sprintf("there is no agreement with %s: nothing flows until one is configured", peer))
	}
	return &api.Reload{Changed: true, Changes: changes}, nil
}

// changeCooperation applies change to the stored suspensions for peer,
// records e in the transfer log, and puts the result in force at once:
// decisions, gauges and held deliveries follow, and the peer is told, so
// that its units see the change at pre-flight rather than in a failed
// transfer. It returns the agreement now in force with peer.
func (g *Gateway) changeCooperation(ctx context.Context, peer string, e audit.Entry, change func(map[string]api.Suspension) error) (*agreement.Agreement, error) {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	set := g.settings()
	if _, ok := set.peers[peer]; !ok {
		return nil, api.Errorf(api.CodeUnknownPeer, "%q is not a peer of gateway %s", peer, g.opts.ID)
	}
	err := g.changeSuspension(ctx, change)
	var ae *api.Error
	if errors.As(err, &ae) {
		return nil, err
	}
	if err != nil {
		g.log.Error("changing a suspension", zap.String("peer", peer), zap.String("event", string(e.Event)), zap.Error(err))
		return nil, errSuspending
	}
	a := g.agreementWith(set, peer)
	setAgreementMembers(&e, a)
	if _, err := g.recordAll(context.WithoutCancel(ctx), e); err != nil {
		// The change stands: it is in storage and decides from now.
		g.log.Error("transfer log", zap.String("event", string(e.Event)), zap.Error(err))
	}
	g.setAgreementGauges()
	g.agreementsChanged()
	g.notifyPeers(peer)
	return a, nil
}

// suspendedRejection is what stops a transfer with peer that suspension
// sp ended: the agreement in force names it, if there is one.
func suspendedRejection(self, peer string, a *agreement.Agreement, sp api.Suspension) *transfer.Rejection {
	if a != nil && a.Status == agreement.Suspended {
		return transfer.Reject(string(agreement.CodeSuspended), "%s is suspended: %s", a.Name(self), a.StatusReason)
	}
	return transfer.Reject(string(agreement.CodeSuspended), "cooperation of %s with %s is suspended by %s: %s", self, peer, sp.By, sp.Reason)
}

// checkSuspendReason checks a suspension's reason: required, bounded,
// printable on one line.
func checkSuspendReason(reason string) error {
	if reason == "" {
		return api.Errorf(api.CodeBadReason, "a suspension needs a reason")
	}
	if len(reason) > api.MaxSuspendReason {
		return api.Errorf(api.CodeBadReason, "the reason has %d bytes, at most %d allowed", len(reason), api.MaxSuspendReason)
	}
	if !printableLine(reason) {
		return api.Errorf(api.CodeBadReason, "the reason %q is not printable text on one line", reason)
	}
	return nil
}

// actorOf is the log's actor for a change requested by unit by, or made
// by the gateway itself when by is "".
func actorOf(by string) string {
	if by == "" {
		return audit.GatewayActor
	}
	return audit.UnitActor(by)
}

// setAgreementMembers sets e's agreement version and reference from a,
// if there is one.
func setAgreementMembers(e *audit.Entry, a *agreement.Agreement) {
	if a != nil {
		e.AgreementVersion, e.AgreementRef = int64(a.Version), a.Ref
	}
}

// inflight tracks the transfers in flight with each peer, so that a
// suspension stops them: offers being received, and deliveries, queued
// or direct, being sent.
type inflight struct {
	mu     sync.Mutex
	byPeer map[string]map[*int]context.CancelCauseFunc
}

// track returns a context for a transfer with peer, which stop cancels,
// and the function to call when the transfer ends. A transfer is tracked
// before the agreement decides on it: a suspension then either comes
// first, and the decision sees it, or comes after, and stops it.
func (f *inflight) track(ctx context.Context, peer string) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	id := new(int)
	f.mu.Lock()
	if f.byPeer == nil {
		f.byPeer = map[string]map[*int]context.CancelCauseFunc{}
	}
	if f.byPeer[peer] == nil {
		f.byPeer[peer] = map[*int]context.CancelCauseFunc{}
	}
	f.byPeer[peer][id] = cancel
	f.mu.Unlock()
	return ctx, func() {
		f.mu.Lock()
		delete(f.byPeer[peer], id)
		f.mu.Unlock()
		cancel(nil)
	}
}

// stop cancels every transfer in flight with peer, with cause, and
// returns how many.
func (f *inflight) stop(peer string, cause error) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.byPeer[peer])
	for _, cancel := range f.byPeer[peer] {
		cancel(cause)
	}
	return n
}

// stoppedBy returns the rejection that stopped the transfer of ctx (one
// from track), or nil if nothing did.
func stoppedBy(ctx context.Context) *transfer.Rejection {
	var rej *transfer.Rejection
	if errors.As(context.Cause(ctx), &rej) {
		return rej
	}
	return nil
}

// agreementsChanged wakes the deliveries that wait to retry, after
// something changed what the agreements allow: held bundles go out at
// once if they now may.
func (g *Gateway) agreementsChanged() {
	g.outboxMu.Lock()
	close(g.retryNow)
	g.retryNow = make(chan struct{})
	g.outboxMu.Unlock()
}

// retryWatch returns a channel closed at the next agreementsChanged.
func (g *Gateway) retryWatch() <-chan struct{} {
	g.outboxMu.Lock()
	defer g.outboxMu.Unlock()
	return g.retryNow
}

// printableLine reports whether s is valid UTF-8 without control
// characters: it goes into logs and answers as one line.
func printableLine(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return false
		}
	}
	return true
}

// stoppable reads r until ctx is done, then fails with what stopped it:
// a suspension ends a transfer between two reads of its payload, however
// the storage it is written to treats a cancelled context.
type stoppable struct {
	ctx context.Context
	r   io.Reader
}

func (s stoppable) Read(p []byte) (int, error) {
	if s.ctx.Err() != nil {
		return 0, context.Cause(s.ctx)
	}
	return s.r.Read(p)
}
