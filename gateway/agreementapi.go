package gateway

import (
	"net/http"
	"time"

	"evx/agreement"
	"evx/api"
)

// The operator's agreement endpoints (docs/api.md 3.16–3.19): the
// agreements in force with the peers' views of them, their differences,
// reload, suspension and resumption.

// agreementRoutes registers the operator's agreement endpoints.
func (g *Gateway) agreementRoutes(mux *http.ServeMux) {
	op := []api.Role{api.RoleOperator}
	mux.HandleFunc("GET /v1/agreements", g.handle(op, g.agreementList))
	mux.HandleFunc("GET /v1/agreements/{peer}", g.handle(op, g.agreementPair))
	mux.HandleFunc("GET /v1/agreements/{peer}/diff", g.handle(op, g.agreementDiff))
	mux.HandleFunc("POST /v1/agreements/reload", g.handle(op, func(_ http.ResponseWriter, r *http.Request, u User) (any, error) {
		return g.Reload(r.Context(), u.Unit)
	}))
	mux.HandleFunc("POST /v1/agreements/{peer}/suspend", g.handle(op, g.suspendPeer))
	mux.HandleFunc("POST /v1/agreements/{peer}/resume", g.handle(op, func(_ http.ResponseWriter, r *http.Request, u User) (any, error) {
		return g.Resume(r.Context(), r.PathValue("peer"), u.Unit)
	}))
}

func (g *Gateway) suspendPeer(w http.ResponseWriter, r *http.Request, u User) (any, error) {
	var req api.SuspendRequest
	if err := readSmallJSON(w, r, g.opts.uploadStallTimeout(), api.MaxSuspendBody, api.CodeBadReason, "a suspension request", &req); err != nil {
		return nil, err
	}
	return g.Suspend(r.Context(), r.PathValue("peer"), req.Reason, u.Unit)
}

func (g *Gateway) agreementList(_ http.ResponseWriter, r *http.Request, _ User) (any, error) {
	set := g.settings()
	out := api.AgreementList{Gateway: g.opts.ID, Agreements: []api.AgreementPair{}}
	for _, peer := range set.peerIDs() {
		out.Agreements = append(out.Agreements, g.pair(set, peer))
	}
	return out, nil
}

func (g *Gateway) agreementPair(_ http.ResponseWriter, r *http.Request, _ User) (any, error) {
	set := g.settings()
	peer := r.PathValue("peer")
	if _, ok := set.peers[peer]; !ok {
		return nil, api.Errorf(api.CodeUnknownPeer, "%q is not a peer of gateway %s", peer, g.opts.ID)
	}
	return g.pair(set, peer), nil
}

func (g *Gateway) agreementDiff(_ http.ResponseWriter, r *http.Request, _ User) (any, error) {
	set := g.settings()
	peer := r.PathValue("peer")
	if _, ok := set.peers[peer]; !ok {
		return nil, api.Errorf(api.CodeUnknownPeer, "%q is not a peer of gateway %s", peer, g.opts.ID)
	}
	theirs, ok := g.peerViews.get(peer)
	if !ok {
		return api.AgreementDiff{Peer: peer, Mismatches: []string{}, Unknown: true}, nil
	}
	d := agreement.Diff(g.opts.ID, g.agreementWith(set, peer), peer, theirs.agreement)
	if d == nil {
		d = []string{}
	}
	return api.AgreementDiff{Peer: peer, Mismatches: d}, nil
}

// pair returns the agreement with peer under set, and the peer's view.
func (g *Gateway) pair(set *settings, peer string) api.AgreementPair {
	now := g.now()
	p := api.AgreementPair{Peer: peer, Ours: agreementView(g.opts.ID, peer, g.agreementWith(set, peer), now)}
	if sp, ok := g.suspensions.get(peer); ok {
		p.Suspension = &sp
	}
	if theirs, ok := g.peerViews.get(peer); ok {
		v := agreementView(peer, g.opts.ID, theirs.agreement, now)
		p.Theirs = &v
		received := theirs.received.UTC()
		p.TheirsReceived = &received
	}
	return p
}

// agreementView is a, the agreement of gateway with peer, as the API shows
// it, with its state at now.
func agreementView(gateway, peer string, a *agreement.Agreement, now time.Time) api.AgreementView {
	v := api.AgreementView{Gateway: gateway, Peer: peer, State: agreementState(a, now)}
	if a == nil {
		v.None = true
		return v
	}
	v.Version, v.Ref, v.Status, v.StatusReason = a.Version, a.Ref, string(a.Status), a.StatusReason
	v.Outbound, v.Inbound, v.Handling, v.TLP = a.Outbound, a.Inbound, a.Handling, a.TLP
	if len(a.MaxRetention) > 0 {
		v.MaxRetention = map[string]int64{}
		for p, d := range a.MaxRetention {
			v.MaxRetention[p] = int64(d / time.Second)
		}
	}
	v.MaxBundleSize, v.RateBundles, v.RateBytes = a.MaxBundleSize, a.RateBundles, a.RateBytes
	if !a.ValidFrom.IsZero() {
		t := a.ValidFrom.UTC()
		v.ValidFrom = &t
	}
	if !a.ValidUntil.IsZero() {
		t := a.ValidUntil.UTC()
		v.ValidUntil = &t
	}
	return v
}
