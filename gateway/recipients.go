package gateway

import (
	"context"

	"evx/agreement"
	"evx/crypto"

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
