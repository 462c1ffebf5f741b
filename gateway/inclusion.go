package gateway

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"evx/audit"
	"evx/crypto"
	"evx/storage"
	"evx/transfer"

	"go.uber.org/zap"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// A version 2 receipt carries the receiving gateway's promise to include
// its receipt-issued entry in its log, like a certificate transparency
// SCT (docs/audit.md 6, protocol.md 4.4). The sending gateway holds the
// peer to it: it asks for an inclusion proof of the entry once a
// checkpoint should cover it, checks the proof against a checkpoint signed
// with the peer's log key, and keeps the proof beside the receipt. A
// receipt not proven included within the maximum merge delay of its
// delivery is a security event in this gateway's own log; the check goes
// on, and a later proof is kept too, but the event stays.
//
// Storage (see records.go):
//
//	outbox/<id>/included.json      the proof, once checked: includedRecord
//	outbox/<id>/not-included.json  the security event was recorded
//
// Both are created once. A delivered bundle with a version 2 receipt and
// no included.json is pending: the gateway finds the pending ones in its
// outbox when it starts.

const (
	includedFile    = "included.json"
	notIncludedFile = "not-included.json"

	// defaultMaxMergeDelay is Options.MaxMergeDelay's default.
	defaultMaxMergeDelay = time.Minute
	// inclusionFirstWait is how long after a delivery the peer is first
	// asked: its log publishes a checkpoint within a second of an entry.
	inclusionFirstWait = time.Second
	// inclusionPoll is how often the pending checks are looked at while
	// there are some; each has its own time, by the gateway's clock.
	inclusionPoll = time.Second
	// maxPendingReceipts bounds the checks a peer has pending in memory:
	// beyond it, deliveries wait in storage for a rescan.
	maxPendingReceipts = 10_000
	// inclusionRescan is how often the outbox is scanned for checks
	// left in storage, when some were.
	inclusionRescan = 10 * time.Minute
	// maxChecksPerRound bounds the proofs asked of one peer in a round.
	maxChecksPerRound = 64
)

// includedRecord is the proof that a peer's log includes the entry its
// receipt promised: the checkpoint as the peer signed it and the
// inclusion proof, which anyone with the peer's log key can check again.
type includedRecord struct {
	Peer       string    `json:"peer"`
	LeafHash   string    `json:"leaf_hash"`
	LeafIndex  int64     `json:"leaf_index"`
	Checkpoint []byte    `json:"checkpoint"`
	Proof      [][]byte  `json:"proof"`
	ProvenAt   time.Time `json:"proven_at"`
}

// notIncludedRecord says that the receipt-not-included security event of a
// bundle was recorded, so that a restart does not record it again.
type notIncludedRecord struct {
	Peer       string    `json:"peer"`
	Deadline   time.Time `json:"deadline"`
	RecordedAt time.Time `json:"recorded_at"`
}

// pendingReceipt is a receipt whose promised entry is not yet proven in
// the peer's log. Once queued, its fields are the peer's check loop's.
type pendingReceipt struct {
	id       string
	receipt  *crypto.Signed
	log      crypto.ReceiptLog
	leaf     tlog.Hash
	deadline time.Time // delivery time + maximum merge delay
	next     time.Time // of the next request
	wait     time.Duration
	alerted  bool // the security event is recorded
}

// inclusionQueue is a peer's pending receipts.
type inclusionQueue struct {
	mu       sync.Mutex
	pending  map[string]*pendingReceipt
	overflow bool // a check was left in storage: rescan
	kick     chan struct{}

	// The peer's own backoff, for when it cannot be reached at all:
	// used by the check loop only.
	downUntil time.Time
	downWait  time.Duration
}

func (q *inclusionQueue) init() {
	q.pending = map[string]*pendingReceipt{}
	q.kick = make(chan struct{}, 1)
}

// add queues p unless its bundle is queued already or the queue is full,
// and reports whether it did.
func (q *inclusionQueue) add(p *pendingReceipt) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.pending[p.id] != nil {
		return false
	}
	if len(q.pending) >= maxPendingReceipts {
		q.overflow = true
		return false
	}
	q.pending[p.id] = p
	select {
	case q.kick <- struct{}{}:
	default:
	}
	return true
}

func (q *inclusionQueue) remove(id string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.pending, id)
}

func (q *inclusionQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pending)
}

// maxMergeDelay returns Options.MaxMergeDelay with its default.
func (o *Options) maxMergeDelay() time.Duration {
	if o.MaxMergeDelay <= 0 {
		return defaultMaxMergeDelay
	}
	return o.MaxMergeDelay
}

// inclusionRetryMax caps the wait between two requests for one receipt's
// proof: a quarter of the merge delay, so that a few come before it ends.
func (g *Gateway) inclusionRetryMax() time.Duration {
	return min(max(g.opts.maxMergeDelay()/4, time.Second), time.Minute)
}

// expectInclusion queues the check of a delivery's receipt, once the
// receipt is stored: a version 1 receipt promises nothing.
func (g *Gateway) expectInclusion(id, peer string, d *transfer.Delivery, delivered time.Time) {
	if d.Log == nil {
		return
	}
	g.queueReceipt(id, peer, d.Receipt, *d.Log, delivered, false)
}

// queueReceipt queues the check of bundle id's receipt from peer,
// delivered at delivered; alerted says that its security event is
// recorded already.
func (g *Gateway) queueReceipt(id, peer string, receipt *crypto.Signed, rl crypto.ReceiptLog, delivered time.Time, alerted bool) {
	lp := g.logPeers[peer]
	if lp == nil || lp.logV == nil {
		return // not checked: runInclusionChecks said so
	}
	var leaf tlog.Hash
	if b, err := hex.DecodeString(rl.LeafHash); err != nil || len(b) != len(leaf) {
		// crypto checked the receipt: a bug.
		g.log.Error("receipt with a malformed leaf hash", zap.String("bundle", id), zap.String("peer", peer))
		return
	} else {
		copy(leaf[:], b)
	}
	// An alerted receipt is counted while it is queued, from before the
	// check loop can prove it; a rescan finds it queued already and must
	// not count it twice.
	if alerted {
		g.metrics.receiptsNotIncluded.WithLabelValues(peer).Inc()
	}
	added := lp.incl.add(&pendingReceipt{id: id, receipt: receipt, log: rl, leaf: leaf, deadline: delivered.Add(g.opts.maxMergeDelay()),
		next: delivered.Add(inclusionFirstWait), wait: inclusionFirstWait, alerted: alerted})
	if alerted && !added {
		g.metrics.receiptsNotIncluded.WithLabelValues(peer).Dec()
	}
}

// runInclusionChecks checks the receipts' promises of each peer whose log
// key is configured, until ctx is done: the pending checks left in the
// outbox first, then each delivery's as it comes.
func (g *Gateway) runInclusionChecks(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, lp := range g.logPeers {
		if lp.logV == nil {
			g.log.Warn("receipts of the peer are not checked for inclusion in its transfer log: no log key is configured for it", zap.String("peer", lp.peer.ID))
			continue
		}
		g.metrics.receiptsNotIncluded.WithLabelValues(lp.peer.ID).Add(0)
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.inclusionLoop(ctx, lp)
		}()
	}
	if err := g.scanReceipts(ctx); err != nil && ctx.Err() == nil {
		g.log.Warn("scanning the outbox for receipts to check", zap.Error(err))
	}
	t := time.NewTicker(inclusionRescan)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		rescan := false
		for _, lp := range g.logPeers {
			lp.incl.mu.Lock()
			rescan = rescan || lp.incl.overflow
			lp.incl.overflow = false
			lp.incl.mu.Unlock()
		}
		if rescan {
			if err := g.scanReceipts(ctx); err != nil && ctx.Err() == nil {
				g.log.Warn("scanning the outbox for receipts to check", zap.Error(err))
			}
		}
	}
}

// scanReceipts queues the checks of the delivered bundles whose receipt
// is not yet proven included.
func (g *Gateway) scanReceipts(ctx context.Context) error {
	infos, err := g.opts.Storage.List(ctx, outboxPrefix)
	if err != nil {
		return err
	}
	type files struct{ receipt, included, alerted bool }
	byID := map[string]*files{}
	for _, in := range infos {
		id := bundleIDOf(in.Key)
		f := byID[id]
		if f == nil {
			f = &files{}
			byID[id] = f
		}
		switch {
		case strings.HasSuffix(in.Key, "/"+receiptFile):
			f.receipt = true
		case strings.HasSuffix(in.Key, "/"+includedFile):
			f.included = true
		case strings.HasSuffix(in.Key, "/"+notIncludedFile):
			f.alerted = true
		}
	}
	for id, f := range byID {
		if !f.receipt || f.included {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		var out outboxReceipt
		if err := getJSON(ctx, g.opts.Storage, key(outboxPrefix, id, receiptFile), &out); err != nil {
			g.log.Warn("reading a stored receipt", zap.String("bundle", id), zap.Error(err))
			continue
		}
		lp := g.logPeers[out.Peer]
		if lp == nil || lp.logV == nil || out.Receipt == nil {
			continue
		}
		// Storage is not trusted: the receipt is checked again.
		r, err := crypto.VerifyReceipt(out.Receipt, lp.peer.SigningKey)
		if err != nil {
			g.log.Error("stored receipt does not verify under the peer's signing key", zap.String("bundle", id), zap.String("peer", out.Peer), zap.Error(err))
			continue
		}
		if r.Log == nil || r.BundleID != id {
			continue
		}
		g.queueReceipt(id, out.Peer, out.Receipt, *r.Log, out.Delivered, f.alerted)
	}
	return nil
}

// inclusionLoop checks lp's pending receipts until ctx is done.
func (g *Gateway) inclusionLoop(ctx context.Context, lp *logPeer) {
	for {
		g.checkReceipts(ctx, lp)
		var tick <-chan time.Time
		if lp.incl.len() > 0 {
			tick = time.After(inclusionPoll)
		}
		select {
		case <-ctx.Done():
			return
		case <-lp.incl.kick:
		case <-tick:
		}
	}
}

// errBadProof wraps the errors of a proof that does not prove the entry.
var errBadProof = errors.New("inclusion proof does not verify")

// checkReceipts asks lp for the proofs that are due, and records the
// security event of each receipt whose merge delay has passed unproven.
func (g *Gateway) checkReceipts(ctx context.Context, lp *logPeer) {
	q := &lp.incl
	now := g.now()
	down := now.Before(q.downUntil)
	q.mu.Lock()
	var due []*pendingReceipt
	for _, p := range q.pending {
		if !down && !now.Before(p.next) || !p.alerted && !now.Before(p.deadline) {
			due = append(due, p)
		}
	}
	q.mu.Unlock()
	slices.SortFunc(due, func(a, b *pendingReceipt) int { return a.next.Compare(b.next) })
	if len(due) > maxChecksPerRound {
		due = due[:maxChecksPerRound]
	}
	for _, p := range due {
		if ctx.Err() != nil {
			return
		}
		err := fmt.Errorf("%s cannot be reached", lp.peer.ID)
		if !down {
			err = g.proveReceipt(ctx, lp, p)
			var rej *transfer.Rejection
			switch {
			case err == nil:
				g.receiptProven(lp, p)
				q.downWait = 0
				continue
			case ctx.Err() != nil:
				return
			case errors.As(err, &rej) || errors.Is(err, errBadProof):
				q.downWait = 0
				g.log.Debug("no inclusion proof yet", zap.String("bundle", p.id), zap.String("peer", lp.peer.ID), zap.Error(err))
			default:
				// The peer cannot be reached: its other receipts wait
				// too.
				q.downWait = min(max(2*q.downWait, g.opts.RetryInterval), g.opts.RetryMax)
				q.downUntil = now.Add(q.downWait)
				down = true
			}
			p.next = now.Add(p.wait)
			p.wait = min(2*p.wait, g.inclusionRetryMax())
		}
		var rej *transfer.Rejection
		conflict := errors.As(err, &rej) && rej.Code == transfer.CodeConflict
		if !p.alerted && (conflict || !now.Before(p.deadline)) {
			g.receiptNotIncluded(ctx, lp, p, err)
		}
	}
}

// proveReceipt asks lp to prove that its log includes the entry p's receipt
// promised, checks the proof and stores it. It asks for the proof to lead
// to the checkpoint of lp's log this gateway last cosigned as a witness,
// when that one covers the entry: the proof then shows the entry in the
// history this gateway checked. Otherwise it takes the peer's latest
// checkpoint, checked against the peer's log key: a signed checkpoint
// that includes the entry, kept as evidence.
func (g *Gateway) proveReceipt(ctx context.Context, lp *logPeer, p *pendingReceipt) error {
	req := transfer.ProofRequest{LeafHash: p.leaf[:], LeafIndex: p.log.LeafIndex}
	known, err := g.readWitnessed(ctx, lp)
	if err != nil {
		g.log.Warn("reading the checkpoint of a peer's log last cosigned", zap.String("peer", lp.peer.ID), zap.Error(err))
	} else if known.N > p.log.LeafIndex {
		req.TreeSize = known.N
	}
	resp, err := g.client.Prove(ctx, lp.peer, req)
	if err != nil {
		return err
	}
	_, c, err := openCheckpoint(resp.Checkpoint, lp.peer.ID, lp.logV)
	if err != nil {
		return fmt.Errorf("%w: %v", errBadProof, err)
	}
	if req.TreeSize != 0 && c.Tree != known.Tree {
		return fmt.Errorf("%w: a checkpoint of size %d, not the one of size %d cosigned", errBadProof, c.N, known.N)
	}
	if c.N <= p.log.LeafIndex {
		return fmt.Errorf("%w: a checkpoint of size %d, which cannot include entry %d", errBadProof, c.N, p.log.LeafIndex)
	}
	proof := make(tlog.RecordProof, len(resp.Proof))
	for i, h := range resp.Proof {
		copy(proof[i][:], h)
	}
	if err := tlog.CheckRecord(proof, c.N, c.Hash, p.log.LeafIndex, p.leaf); err != nil {
		return fmt.Errorf("%w: entry %d in the checkpoint of size %d: %v", errBadProof, p.log.LeafIndex, c.N, err)
	}
	rec := includedRecord{Peer: lp.peer.ID, LeafHash: p.log.LeafHash, LeafIndex: p.log.LeafIndex, Checkpoint: resp.Checkpoint,
		Proof: resp.Proof, ProvenAt: g.now().UTC()}
	if err := putJSON(ctx, g.opts.Storage, key(outboxPrefix, p.id, includedFile), rec); err != nil && !errors.Is(err, storage.ErrExist) {
		return fmt.Errorf("storing the inclusion proof: %w", err)
	}
	return nil
}

// receiptProven ends p's check.
func (g *Gateway) receiptProven(lp *logPeer, p *pendingReceipt) {
	lp.incl.remove(p.id)
	if p.alerted {
		g.metrics.receiptsNotIncluded.WithLabelValues(lp.peer.ID).Dec()
		g.log.Warn("peer proved, after the maximum merge delay, that its transfer log includes the delivery it receipted; the security event stands",
			zap.String("bundle", p.id), zap.String("peer", lp.peer.ID))
	} else {
		g.log.Debug("receipt proven included in the peer's transfer log", zap.String("bundle", p.id), zap.String("peer", lp.peer.ID))
	}
	if g.opts.onReceiptProven != nil {
		g.opts.onReceiptProven(p.id)
	}
}

// receiptNotIncluded records the security event of p, whose promised entry
// lp did not prove included in time (or proved that another entry is at
// its index); cause is the last request's failure. If the log cannot
// record it, the next round tries again.
func (g *Gateway) receiptNotIncluded(ctx context.Context, lp *logPeer, p *pendingReceipt, cause error) {
	var rej *transfer.Rejection
	var reason string
	switch {
	case errors.As(cause, &rej) && rej.Code == transfer.CodeConflict:
		reason = "the peer answered that its log holds another entry at the index its receipt promised"
	case errors.Is(cause, errBadProof):
		reason = "the peer's inclusion proof did not verify within the maximum merge delay"
	case errors.As(cause, &rej):
		reason = "the peer did not prove inclusion within the maximum merge delay (refused: " + audit.CleanReason(rej.Code) + ")"
	default:
		reason = "the peer could not be reached for an inclusion proof within the maximum merge delay"
	}
	e := audit.Entry{Event: audit.EventSecurity, Actor: audit.GatewayActor, Kind: audit.KindReceiptNotIncluded,
		BundleID: p.id, Peer: lp.peer.ID, Receipt: p.receipt, Reason: reason}
	if err := g.recordSecurity(ctx, e); err != nil {
		return
	}
	p.alerted = true
	g.metrics.securityEvents.WithLabelValues(string(audit.KindReceiptNotIncluded)).Inc()
	g.metrics.receiptsNotIncluded.WithLabelValues(lp.peer.ID).Inc()
	g.log.Error("peer did not prove that its transfer log includes the delivery it receipted: a broken promise",
		zap.String("bundle", p.id), zap.String("peer", lp.peer.ID), zap.Int64("leaf_index", p.log.LeafIndex),
		zap.Duration("max_merge_delay", g.opts.maxMergeDelay()), zap.String("reason", reason), zap.NamedError("last_error", cause))
	rec := notIncludedRecord{Peer: lp.peer.ID, Deadline: p.deadline.UTC(), RecordedAt: g.now().UTC()}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), securityRecordTimeout)
	defer cancel()
	if err := putJSON(sctx, g.opts.Storage, key(outboxPrefix, p.id, notIncludedFile), rec); err != nil && !errors.Is(err, storage.ErrExist) {
		g.log.Warn("storing that the security event is recorded; a restart records it again", zap.String("bundle", p.id), zap.Error(err))
	}
	if g.opts.onReceiptNotIncluded != nil {
		g.opts.onReceiptNotIncluded(p.id)
	}
}

// Prove implements transfer.LogPeer: the inclusion proof of an entry of
// this gateway's log (protocol.md 4.4). transfer has checked the bounds.
func (g *Gateway) Prove(ctx context.Context, peer string, req *transfer.ProofRequest) (*transfer.ProofResponse, error) {
	resp, err := g.prove(ctx, req)
	if g.opts.proveHook != nil {
		return g.opts.proveHook(req, resp, err)
	}
	return resp, err
}

func (g *Gateway) prove(ctx context.Context, req *transfer.ProofRequest) (*transfer.ProofResponse, error) {
	_, cp, err := g.tlog.Checkpoint(ctx)
	if err != nil {
		return nil, err
	}
	size := req.TreeSize
	switch {
	case size == 0 && req.LeafIndex >= cp.N:
		return nil, transfer.Reject(transfer.CodeUnavailable, "entry %d is not in a checkpoint of gateway %s's log yet", req.LeafIndex, g.opts.ID)
	case size == 0:
		size = cp.N
	case size > cp.N:
		return nil, transfer.Reject(transfer.CodeUnavailable, "gateway %s's log has no checkpoint of size %d yet", g.opts.ID, size)
	}
	signed, err := g.tlog.ReadFile(ctx, "checkpoints/"+strconv.FormatInt(size, 10))
	if errors.Is(err, storage.ErrNotExist) {
		return nil, transfer.Reject(transfer.CodeUnavailable, "gateway %s's log has no checkpoint of size %d", g.opts.ID, size)
	}
	if err != nil {
		g.log.Error("reading a checkpoint to prove inclusion", zap.Int64("size", size), zap.Error(err))
		return nil, transfer.Reject(transfer.CodeUnavailable, "gateway %s cannot read its log; retry later", g.opts.ID)
	}
	// Storage is not trusted: the checkpoint is checked against the log's
	// own key, and the proof against its root.
	_, c, err := openCheckpoint(signed, g.opts.ID, g.ownLogV)
	if err == nil && c.N != size {
		err = fmt.Errorf("it is of size %d", c.N)
	}
	if err != nil {
		return nil, fmt.Errorf("the checkpoint of size %d in storage: %v", size, err)
	}
	proof, err := g.tlog.InclusionProof(ctx, req.LeafIndex, size)
	if err != nil {
		g.log.Error("proving inclusion", zap.Int64("index", req.LeafIndex), zap.Int64("size", size), zap.Error(err))
		return nil, transfer.Reject(transfer.CodeUnavailable, "gateway %s cannot read its log; retry later", g.opts.ID)
	}
	var leaf tlog.Hash
	copy(leaf[:], req.LeafHash)
	if err := tlog.CheckRecord(proof, size, c.Hash, req.LeafIndex, leaf); err != nil {
		return nil, transfer.Reject(transfer.CodeConflict, "gateway %s's log holds another entry at index %d", g.opts.ID, req.LeafIndex)
	}
	resp := &transfer.ProofResponse{Checkpoint: trimNote(signed, transfer.MaxCheckpointSize), LeafIndex: req.LeafIndex,
		Proof: make([][]byte, len(proof))}
	for i := range proof {
		resp.Proof[i] = proof[i][:]
	}
	return resp, nil
}

// trimNote drops signature lines from the end of a signed note until it is
// at most limit bytes: the log's own signature comes first, cosignatures
// after it.
func trimNote(signed []byte, limit int) []byte {
	for len(signed) > limit {
		i := strings.LastIndexByte(string(signed[:len(signed)-1]), '\n')
		if i <= 0 || signed[i-1] == '\n' {
			break // only the text and one signature left
		}
		signed = signed[:i+1]
	}
	return signed
}

// ownLogVerifier returns the verifier of this gateway's checkpoints.
func ownLogVerifier(id string, k *crypto.SigningKey) (note.Verifier, error) {
	return note.NewVerifier(k.CheckpointVerifierKey(crypto.LogOrigin(id)))
}
