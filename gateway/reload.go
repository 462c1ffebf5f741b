package gateway

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"evx/agreement"
	"evx/api"
	"evx/audit"

	"go.uber.org/zap"
)

// A reload (SIGHUP, or POST /v1/agreements/reload) applies the peers,
// users and agreements of the configuration file as it is now, all at
// once, or nothing of them (docs/agreements.md 7). The change is recorded
// in the transfer log before it applies: an auditor can tell which
// agreement decided each bundle.

// Reload reads the configuration again (Options.Reload) and applies its
// peers, users and agreements, at the request of by (an operator's unit
// id, or "" for the gateway itself, on SIGHUP). An invalid configuration
// changes nothing and is an invalid-config error that says why.
func (g *Gateway) Reload(ctx context.Context, by string) (*api.Reload, error) {
	if g.opts.Reload == nil {
		return nil, api.Errorf(api.CodeReloadUnavailable, "gateway %s was not started from a configuration file it can read again", g.opts.ID)
	}
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	s, err := g.opts.Reload(ctx)
	if err == nil {
		var next *settings
		if next, err = newSettings(g.opts.ID, *s); err == nil {
			return g.apply(ctx, next, s.RestartNeeded, by)
		}
	}
	g.metrics.reloads.WithLabelValues(reloadRefused).Inc()
	g.log.Error("configuration not reloaded; the running one stays", zap.String("by", by), zap.Error(err))
	return nil, api.Errorf(api.CodeInvalidConfig, "the configuration was not reloaded, the running one stays: %v", err)
}

// apply records next in the transfer log and puts it in force. The
// caller holds reloadMu.
func (g *Gateway) apply(ctx context.Context, next *settings, restart []string, by string) (*api.Reload, error) {
	old := g.settings()
	changes, byPeer := settingsChanges(old, next)
	restart = append(slices.Clip(restart), g.logPeerChanges(next)...)
	out := &api.Reload{Changed: len(changes) > 0, Changes: changes, RestartNeeded: restart}
	if out.Changes == nil {
		out.Changes = []string{}
	}
	if !out.Changed {
		g.metrics.reloads.WithLabelValues(reloadUnchanged).Inc()
		g.log.Info("configuration reloaded: nothing to apply", zap.Strings("restart_needed", restart))
		return out, nil
	}
	actor := actorOf(by)
	es := []audit.Entry{{Event: audit.EventConfigReloaded, Actor: actor, ConfigSHA256: next.configSHA256,
		OldConfigSHA256: old.configSHA256, Changes: logLines(changes)}}
	for _, peer := range slices.Sorted(maps.Keys(byPeer)) {
		e := audit.Entry{Event: audit.EventAgreementChanged, Actor: actor, Peer: peer, Changes: logLines(byPeer[peer])}
		if a := old.agreements[peer]; a != nil {
			e.OldAgreementVersion = int64(a.Version)
		}
		setAgreementMembers(&e, next.agreements[peer])
		es = append(es, e)
	}
	// Recorded before it applies: a change the log cannot hold is not
	// made.
	if _, err := g.recordAll(context.WithoutCancel(ctx), es...); err != nil {
		g.log.Error("transfer log", zap.String("event", string(audit.EventConfigReloaded)), zap.Error(err))
		return nil, errLogFailed
	}
	g.set.Store(next)
	g.metrics.reloads.WithLabelValues(reloadApplied).Inc()
	g.server.SetPeerCAs(next.peerCAs())
	for id, p := range old.peers {
		if q, ok := next.peers[id]; !ok || !p.CA.Equal(q.CA) || p.Address != q.Address {
			// Connections made under what no longer holds end now.
			g.server.ClosePeer(id)
			g.client.ClosePeer(id)
		}
		if _, ok := next.peers[id]; !ok {
			g.deletePeerMetrics(id)
		}
	}
	g.log.Info("configuration reloaded", zap.String("by", by), zap.Strings("changes", changes), zap.Strings("restart_needed", restart))
	g.setAgreementGauges()
	g.agreementsChanged()
	g.notifyPeers()
	return out, nil
}

// The outcomes of reloads, the values of evx_config_reloads_total's label.
const (
	reloadApplied   = "applied"
	reloadUnchanged = "unchanged"
	reloadRefused   = "refused"
)

var reloadOutcomes = []string{reloadApplied, reloadUnchanged, reloadRefused}

// settingsChanges says, one line each, what changed from old to next: the
// agreements (also by peer, for the agreement-changed entries), the peers
// and the users.
func settingsChanges(old, next *settings) (all []string, byPeer map[string][]string) {
	byPeer = map[string][]string{}
	for _, peer := range unionKeys(old.agreements, next.agreements) {
		if c := agreement.Changes(old.agreements[peer], next.agreements[peer]); len(c) > 0 {
			byPeer[peer] = c
			all = append(all, c...)
		}
	}
	for _, id := range unionKeys(old.peers, next.peers) {
		p, wasPeer := old.peers[id]
		q, isPeer := next.peers[id]
		switch {
		case !wasPeer:
			all = append(all, fmt.Sprintf("peer %s added, at %s", id, q.Address))
		case !isPeer:
			all = append(all, fmt.Sprintf("peer %s removed", id))
		default:
			if p.Address != q.Address {
				all = append(all, fmt.Sprintf("peer %s: address %s → %s", id, p.Address, q.Address))
			}
			if !p.CA.Equal(q.CA) {
				all = append(all, fmt.Sprintf("peer %s: CA changed", id))
			}
			if p.SigningKey != q.SigningKey {
				all = append(all, fmt.Sprintf("peer %s: signing key changed", id))
			}
		}
	}
	for _, unit := range unionKeys(old.users, next.users) {
		u, was := old.users[unit]
		v, is := next.users[unit]
		switch {
		case !was:
			all = append(all, fmt.Sprintf("user %s added, %s", unit, v.Role))
		case !is:
			all = append(all, fmt.Sprintf("user %s removed", unit))
		default:
			if u.Role != v.Role {
				all = append(all, fmt.Sprintf("user %s: role %s → %s", unit, u.Role, v.Role))
			}
			if u.Key != v.Key {
				all = append(all, fmt.Sprintf("user %s: key changed", unit))
			}
			if c := agreement.ListChange(u.Purposes, v.Purposes); c != "" {
				all = append(all, fmt.Sprintf("user %s: purposes %s", unit, c))
			}
		}
	}
	return all, byPeer
}

// logPeerChanges names the changes of peers' transfer-log keys, which the
// witnessing and the checks of receipts (witness.go, inclusion.go) take
// only at start.
func (g *Gateway) logPeerChanges(next *settings) []string {
	var out []string
	for _, id := range next.peerIDs() {
		p := next.peers[id]
		lp, ok := g.logPeers[id]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("peers[%s]: the transfer-log witnessing of a new peer", id))
		case lp.peer.LogKey != p.LogKey || lp.peer.WitnessKey != p.WitnessKey:
			out = append(out, fmt.Sprintf("peers[%s]: log_key, witness_key", id))
		}
	}
	return out
}

// logLines fits change lines to a log entry: at most audit.MaxChanges,
// each a clean reason; the rest are counted in the last line.
func logLines(lines []string) []string {
	var out []string
	for i, l := range lines {
		if len(out) == audit.MaxChanges-1 && len(lines)-i > 1 {
			out = append(out, fmt.Sprintf("and %d more changes", len(lines)-i))
			break
		}
		if c := audit.CleanReason(l); c != "" {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		out = []string{"changes withheld from the log: they look like paths or keys"}
	}
	return out
}

// deletePeerMetrics drops a removed peer's agreement gauges.
func (g *Gateway) deletePeerMetrics(peer string) {
	for _, s := range agreementStates {
		g.metrics.agreementStatus.DeleteLabelValues(peer, s)
		g.metrics.peerAgreement.DeleteLabelValues(peer, s)
	}
	g.metrics.peerAgreement.DeleteLabelValues(peer, "unknown")
	g.metrics.agreementDaysLeft.DeleteLabelValues(peer)
}

// unionKeys returns the keys of a and b, sorted.
func unionKeys[V any](a, b map[string]V) []string {
	keys := slices.Collect(maps.Keys(a))
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}
