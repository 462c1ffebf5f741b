package gateway

import (
	"context"
	"slices"

	"evx/agreement"
	"evx/crypto"
	"evx/transfer"

	"go.uber.org/zap"
)

// Recipients' purposes. A peer's signed unit directory lists the purposes
// each of its recipients is authorised for (protocol.md 7.3). The sending
// gateway hands them to the agreement's decision of an upload, and of a
// pre-flight, as the receiving gateway hands its own users' at the offer:
// the same check, in the same place among the clauses, with the same code
// (recipient-not-authorised) and sentence, recorded in the transfer log
// with the other refusals of an upload. A unit so learns before it seals,
// and before anything is stored or sent, that the peer would refuse the
// bundle. A recipient whose entry lists no purposes (its gateway predates
// them) is not checked here: the peer decides at the offer.

// A gateway older than directory purposes refuses a directory that lists
// them, as it refuses every member it does not know, and could then
// neither resolve this gateway's recipients nor check its senders. So the
// directory signed for a peer lists purposes only if the peer is known to
// read them: it told this gateway its agreement in a signed summary
// (peerview.go), which came to evx with the purposes, less than
// peerPurposesFresh ago. Until a peer's first summary arrives (the
// gateways exchange them as either starts) it gets its directory without
// purposes and does not check them; the receiver still does. A peer that
// goes back to older code stops sending summaries, and gets directories
// it can read again once its last one is that old.
const peerPurposesFresh = 3 * exchangeRefresh

// readsPurposes reports whether peer is known to read the purposes of a
// directory entry.
func (g *Gateway) readsPurposes(peer string) bool {
	pv, ok := g.peerViews.get(peer)
	return ok && g.now().Sub(pv.received) < peerPurposesFresh
}

// announceBeforeFetch has p take this gateway's agreement summary before
// this gateway first fetches p's directory, so that p lists its
// recipients' purposes in it (readsPurposes). The exchange loop sends the
// summary as the gateway starts, but a lookup may come first, or while p
// is still taking the answer of an exchange it began. A peer that predates
// the summaries refuses it, and is asked again before the next fetch: it
// lists no purposes anyway.
func (g *Gateway) announceBeforeFetch(ctx context.Context, p transfer.Peer) {
	g.dirs.mu.Lock()
	done := g.dirState(p.ID).announced
	g.dirs.mu.Unlock()
	if done || g.exchangeWith(ctx, p) != nil {
		return // exchangeWith logs its failures
	}
	g.dirs.mu.Lock()
	g.dirState(p.ID).announced = true
	g.dirs.mu.Unlock()
}

// withoutPurposes returns d without its entries' purposes: the directory
// as a gateway older than them signs it.
func withoutPurposes(d crypto.Directory) crypto.Directory {
	d.Units = slices.Clone(d.Units)
	for i := range d.Units {
		d.Units[i].Purposes = nil
	}
	return d
}

// directoryRecipients returns those of units (a bundle's recipients, all
// at one peer) whose entries in the peer's directory list purposes, with
// those purposes. The recipients were resolved just before (upload check
// 10, or the pre-flight's), so the directory is at hand; a recipient that
// cannot be resolved now is left to the peer, which decides anyway.
func (g *Gateway) directoryRecipients(ctx context.Context, units []string) []agreement.Recipient {
	if g.opts.withoutPeerViews {
		return nil
	}
	var rs []agreement.Recipient
	for _, unit := range units {
		e, err := g.lookupUnit(ctx, unit)
		if err != nil {
			g.log.Warn("recipient's purposes not known; the peer decides", zap.String("unit", unit), zap.Error(err))
			continue
		}
		if len(e.Purposes) > 0 {
			rs = append(rs, agreement.Recipient{Unit: e.Unit, Purposes: e.Purposes})
		}
	}
	return rs
}

// envelopeUnits returns the unit ids of env's recipients.
func envelopeUnits(env *crypto.Envelope) []string {
	units := make([]string, 0, len(env.Recipients))
	for _, r := range env.Recipients {
		units = append(units, r.Unit)
	}
	return units
}
