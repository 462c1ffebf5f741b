package gateway

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"evx/api"
	"evx/audit"
	"evx/crypto"
	"evx/storage"
	"evx/transfer"

	"go.uber.org/zap"
)

var _ transfer.Receiver = (*Gateway)(nil)

// Receive implements transfer.Receiver: it checks an offer from a peer
// against the directories and limits, stores the payload and the record,
// and returns the signed receipt. Its refusals are recorded in the
// transfer log before the peer learns of them; its receipt is the promise
// of a log entry, recorded before it is signed.
func (g *Gateway) Receive(ctx context.Context, peer string, o *transfer.Offer, accept func(int64) (io.Reader, error)) (*crypto.Signed, error) {
	receipt, err := g.receive(ctx, peer, o, accept)
	var rej *transfer.Rejection
	if errors.As(err, &rej) && rej.Code != transfer.CodeUnavailable {
		e := audit.Entry{Event: audit.EventOfferRefused, Actor: audit.PeerActor(peer), Peer: peer,
			Code: rej.Code, Reason: audit.CleanReason(rej.Reason)}
		if _, lerr := g.recordEnvelope(context.WithoutCancel(ctx), e, o.Envelope); lerr != nil {
			g.log.Error("transfer log", zap.String("event", string(e.Event)), zap.Error(lerr))
			return nil, transfer.Reject(transfer.CodeUnavailable, "the receiving gateway cannot record the offer in its transfer log; retry later")
		}
	}
	return receipt, err
}

func (g *Gateway) receive(ctx context.Context, peer string, o *transfer.Offer, accept func(int64) (io.Reader, error)) (*crypto.Signed, error) {
	env := o.Envelope
	id := env.BundleID
	defer g.inboxLocks.lock(id)()
	var rec inboxRecord
	switch err := getJSON(ctx, g.opts.Storage, key(inboxPrefix, id, recordFile), &rec); {
	case err == nil:
		prev, perr := crypto.ParseEnvelope(rec.Envelope)
		if perr != nil {
			return nil, fmt.Errorf("stored record of %s: %w", id, perr)
		}
		if prev.PayloadSHA256 != env.PayloadSHA256 || rec.From != peer {
			return nil, transfer.Reject(transfer.CodeConflict, "bundle %s was already received, from another gateway or with another payload hash", id)
		}
		return rec.Receipt, nil
	case !errors.Is(err, storage.ErrNotExist):
		g.log.Error("reading inbox record", zap.String("bundle", id), zap.Error(err))
		return nil, transfer.Reject(transfer.CodeUnavailable, "the receiving gateway cannot read its storage; retry later")
	}

	check, rej := g.checkSender(ctx, peer, env)
	if rej != nil {
		return nil, rej
	}
	if rej := g.checkLocalRecipients(env); rej != nil {
		return nil, rej
	}
	if env.PayloadSize > g.opts.MaxBundleSize {
		return nil, transfer.Reject(transfer.CodeTooLarge, "payload of %d bytes exceeds this gateway's limit of %d", env.PayloadSize, g.opts.MaxBundleSize)
	}
	// A suspension of cooperation with the peer stops the transfer
	// (suspend.go); it is tracked before the agreement decides.
	ctx, done := g.inflight.track(ctx, peer)
	defer done()
	// The agreement with the peer decides last, before any payload byte
	// is taken: a refused offer stores nothing. An allowed decision is
	// recorded with the acceptance, in one write.
	if rej := g.decideOffer(ctx, peer, env); rej != nil {
		return nil, rej
	}
	if !env.RetainUntil.After(g.now().Add(lockMargin)) {
		return nil, transfer.Reject(transfer.CodeNotAccepted, "the bundle's retain_until %s has passed: it may no longer be kept", env.RetainUntil.UTC().Format(time.RFC3339))
	}
	r, err := accept(0)
	if err != nil {
		return nil, err
	}
	outer, err := g.storeOuterLayer(ctx, id, stoppable{ctx, r}, env.PayloadSize, env.RetainUntil)
	if err != nil {
		var rej *transfer.Rejection
		if rej = stoppedBy(ctx); rej != nil || errors.As(err, &rej) {
			// Storage removes what a failed Create wrote: nothing
			// partial stays.
			return nil, rej
		}
		if errors.Is(err, transfer.ErrCanceled) {
			return nil, transfer.ErrCanceled
		}
		g.log.Error("storing payload", zap.String("bundle", id), zap.Error(err))
		return nil, transfer.Reject(transfer.CodeUnavailable, "the receiving gateway could not store the payload; retry later")
	}
	// The entry goes first: the receipt carries where it is, the promise
	// that the delivery is in this gateway's log.
	_, cp, err := g.tlog.Checkpoint(ctx)
	if err != nil {
		return nil, err
	}
	entry, err := g.recordEnvelope(ctx, audit.Entry{Event: audit.EventReceiptIssued, Actor: audit.PeerActor(peer), Peer: peer}, env)
	if err != nil {
		g.log.Error("transfer log", zap.String("bundle", id), zap.Error(err))
		return nil, transfer.Reject(transfer.CodeUnavailable, "the receiving gateway cannot record the bundle in its transfer log; retry later")
	}
	now := time.Now()
	rc, err := crypto.NewReceipt(env, peer, g.opts.ID, now, crypto.ReceiptLog{
		LeafHash: hex.EncodeToString(entry.leaf[:]), LeafIndex: entry.index, TreeSize: cp.N})
	if err != nil {
		return nil, err
	}
	receipt, err := g.opts.SigningKey.SignReceipt(rc)
	if err != nil {
		return nil, err
	}
	rec = inboxRecord{Envelope: o.EnvelopeJSON, Signature: o.Signature, From: peer,
		ReceivedAt: now.UTC(), Receipt: receipt, SenderCheck: check.text, SenderDirectory: check.directory, Outer: &outer}
	if err := g.putJSONLocked(ctx, key(inboxPrefix, id, recordFile), rec, env.RetainUntil); err != nil {
		g.log.Error("storing inbox record", zap.String("bundle", id), zap.Error(err))
		return nil, transfer.Reject(transfer.CodeUnavailable, "the receiving gateway could not store the bundle; retry later")
	}
	g.metrics.bundles.WithLabelValues("received").Inc()
	g.metrics.bytes.WithLabelValues("received").Add(float64(env.PayloadSize))
	g.log.Info("bundle stored", zap.String("bundle", id), zap.String("from", peer),
		zap.String("purpose", env.Purpose), zap.Int64("size", env.PayloadSize))
	return receipt, nil
}

// senderCheck is how a bundle's sender was checked, for its inbox record.
type senderCheck struct {
	// text describes the check for people.
	text string
	// directory is the storage key of the kept signed directory the
	// check used, "" if it was not kept.
	directory string
}

// checkSender checks that the envelope's signing key is the one the sending
// gateway's signed directory lists for the sending unit. While the sending
// gateway cannot be reached to fetch its directory, the copy kept from an
// earlier fetch serves.
func (g *Gateway) checkSender(ctx context.Context, peer string, env *crypto.Envelope) (senderCheck, *transfer.Rejection) {
	for _, refresh := range []bool{false, true} {
		d, err := g.peerDirectory(ctx, peer, refresh)
		if err != nil {
			if why, ok := peerRefusal(peer, err); ok {
				g.log.Error("peer authentication failed", zap.String("peer", peer), zap.String("during", "sender check"), zap.String("reason", why))
			}
			return senderCheck{}, transfer.Reject(transfer.CodeUnavailable, "cannot fetch the unit directory of %s to check the sender: retry later", peer)
		}
		e, ok := d.dir.Lookup(env.Sender.Unit)
		if ok && api.Role(e.Role) == api.RoleSubmitter && e.SigningKey == env.Sender.Key {
			text := fmt.Sprintf("signing key listed for %s in the directory of %s issued %s", env.Sender.Unit, peer, d.dir.Issued)
			if d.kept {
				text += fmt.Sprintf(" (the copy kept while %s could not be reached)", peer)
			}
			return senderCheck{text: text, directory: d.key}, nil
		}
	}
	return senderCheck{}, transfer.Reject(transfer.CodeUnknownSender, "signing key %s is not listed for submitter %s in the directory of %s", env.Sender.Key, env.Sender.Unit, peer)
}

// checkLocalRecipients checks that the bundle is addressed to at least one
// local recipient and that each local recipient's key is the one on file.
func (g *Gateway) checkLocalRecipients(env *crypto.Envelope) *transfer.Rejection {
	local := 0
	for _, r := range env.Recipients {
		country, _, _ := strings.Cut(r.Unit, "/")
		if country != g.opts.ID {
			continue
		}
		u, ok := g.settings().users[r.Unit]
		if !ok || u.Role != api.RoleRecipient {
			return transfer.Reject(transfer.CodeUnknownRecipient, "no recipient unit %q at gateway %s", r.Unit, g.opts.ID)
		}
		if u.Key.AgeRecipient != r.Key {
			return transfer.Reject(transfer.CodeUnknownRecipient, "the bundle is sealed to a key that is not %s's current key", r.Unit)
		}
		local++
	}
	if local == 0 {
		return transfer.Reject(transfer.CodeUnknownRecipient, "the bundle has no recipient at gateway %s", g.opts.ID)
	}
	return nil
}
