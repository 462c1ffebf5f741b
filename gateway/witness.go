package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"evx/audit"
	"evx/crypto"
	"evx/storage"
	"evx/transfer"

	"filippo.io/torchwood"
	"go.uber.org/zap"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Peers witness each other's transfer logs (docs/audit.md, protocol.md
// 4.3), as C2SP tlog-witness describes. As a witness, this gateway keeps
// for each peer the last checkpoint of the peer's log it cosigned, and
// cosigns a new one only if a consistency proof shows that it extends that
// one: a peer that shows it a rewritten or forked history is refused, and
// the refusal is a security event in this gateway's own log. As the owner
// of its log, it sends each new checkpoint to each peer and keeps the
// cosignatures beside its checkpoints, where auditors find them.

var _ transfer.LogPeer = (*Gateway)(nil)

// witnessPrefix is where the witness keeps, per peer, the last checkpoint
// of the peer's log it cosigned: witness/<peer>, written only with
// storage.Replace, so that two processes of this gateway on one storage
// never both cosign diverging checkpoints.
const witnessPrefix = "witness/"

func witnessKey(peer string) string { return witnessPrefix + peer }

const (
	// witnessPoll is how often the gateway looks for a new checkpoint of
	// its log to send to its witnesses: every checkpoint is published
	// within a second of its entries, and the look is in memory.
	witnessPoll = time.Second
	// witnessRefresh is how often the latest checkpoint is sent again
	// when the log does not grow, by the gateway's clock: a fresh
	// cosignature shows that the witness is there and still sees this
	// history.
	witnessRefresh = time.Minute
	// maxConflictRetries bounds the requests of one round that a witness
	// answers with conflict: one is routine, after a restart or a lost
	// answer; more means that the size is moving under it.
	maxConflictRetries = 3
	// maxReplaceRetries bounds how often the witness re-reads its state
	// when another process of this gateway changed it meanwhile.
	maxReplaceRetries = 3
)

// Reasons of witnessing failures, the values of the metric's reason label.
const (
	witnessUnreachable    = "unreachable"     // the peer could not be reached, or did not answer
	witnessRefused        = "refused"         // the peer refused the request
	witnessInconsistent   = "inconsistent"    // the peer found the checkpoint inconsistent with one it cosigned
	witnessConflict       = "conflict"        // the peer's size kept changing
	witnessBadCosignature = "bad-cosignature" // the cosignature does not verify under the peer's witness key
	witnessUnknownSize    = "unknown-size"    // the peer cosigned a checkpoint this log never published
	witnessLog            = "log"             // this gateway's log failed: proof, storage
)

var witnessReasons = []string{witnessUnreachable, witnessRefused, witnessInconsistent, witnessConflict,
	witnessBadCosignature, witnessUnknownSize, witnessLog}

// logPeer is a peer's part in the transfer logs: the keys of its log and
// the checks this gateway makes of it.
type logPeer struct {
	peer transfer.Peer
	// logV verifies the peer's checkpoints; nil if none is configured:
	// this gateway then neither witnesses the peer's log nor checks its
	// receipts' promises.
	logV note.Verifier
	// witV verifies the peer's cosignatures of this gateway's log; nil if
	// none is configured: the peer is then not asked to witness.
	witV *torchwood.CosignatureVerifier

	// cosignedAt is when the peer last cosigned this gateway's log, in
	// Unix nanoseconds by the gateway's clock, or when witnessing began.
	cosignedAt atomic.Int64
	// news wakes the witnessing loop, every witnessPoll, to look for a
	// new checkpoint or a refresh that is due.
	news chan struct{}

	// mu guards inconsistentAt, when an inconsistent checkpoint of the
	// peer was last recorded: a peer cannot fill the log with them.
	mu             sync.Mutex
	inconsistentAt time.Time

	incl inclusionQueue // see inclusion.go
}

// initLogPeers parses the peers' log keys and derives the witness key.
func (g *Gateway) initLogPeers() error {
	var err error
	if g.witness, err = g.opts.SigningKey.WitnessSigner(crypto.WitnessName(g.opts.ID)); err != nil {
		return fmt.Errorf("witness key: %w", err)
	}
	if g.ownLogV, err = ownLogVerifier(g.opts.ID, g.opts.SigningKey); err != nil {
		return fmt.Errorf("log key: %w", err)
	}
	g.logPeers = map[string]*logPeer{}
	for _, p := range g.opts.Peers {
		lp := &logPeer{peer: p, news: make(chan struct{}, 1)}
		lp.incl.init()
		if p.LogKey != "" {
			if lp.logV, err = note.NewVerifier(p.LogKey); err != nil {
				return fmt.Errorf("peer %s: log key %q: %w", p.ID, p.LogKey, err)
			}
			if want := crypto.LogOrigin(p.ID); lp.logV.Name() != want {
				return fmt.Errorf("peer %s: log key %q is named %s, want %s", p.ID, p.LogKey, lp.logV.Name(), want)
			}
		}
		if p.WitnessKey != "" {
			if lp.witV, err = crypto.ParseWitnessVerifierKey(p.WitnessKey); err != nil {
				return fmt.Errorf("peer %s: witness key %q: %w", p.ID, p.WitnessKey, err)
			}
			if want := crypto.WitnessName(p.ID); lp.witV.Name() != want {
				return fmt.Errorf("peer %s: witness key %q is named %s, want %s", p.ID, p.WitnessKey, lp.witV.Name(), want)
			}
		}
		g.logPeers[p.ID] = lp
	}
	return nil
}

// witnessed is the last checkpoint of a peer's log this gateway cosigned.
type witnessed struct {
	torchwood.Checkpoint
	// signed is the checkpoint as stored: its text and the peer's
	// signature.
	signed []byte
	// version is the stored object's, for storage.Replace; "" if none.
	version string
}

// readWitnessed reads the last checkpoint of lp's log this gateway
// cosigned, checked again against the peer's log key, since storage is not
// trusted; the zero checkpoint (size 0) if it cosigned none.
func (g *Gateway) readWitnessed(ctx context.Context, lp *logPeer) (witnessed, error) {
	data, version, err := g.opts.Storage.ReadVersion(ctx, witnessKey(lp.peer.ID), transfer.MaxCheckpointSize)
	if errors.Is(err, storage.ErrNotExist) {
		return witnessed{}, nil
	}
	if err != nil {
		return witnessed{}, err
	}
	_, c, err := openCheckpoint(data, lp.peer.ID, lp.logV)
	if err != nil {
		return witnessed{}, fmt.Errorf("the checkpoint of %s's log kept at %s: %v (if %s's log key changed, the operator removes it)",
			lp.peer.ID, witnessKey(lp.peer.ID), err, lp.peer.ID)
	}
	return witnessed{Checkpoint: c, signed: data, version: version}, nil
}

// openCheckpoint checks that signed is a checkpoint of peer's log signed
// with its log key (other signatures are ignored), and returns its note
// and checkpoint. Its errors are the rejections of protocol.md 4.3, checks
// 3 and 4.
func openCheckpoint(signed []byte, peer string, logV note.Verifier) (*note.Note, torchwood.Checkpoint, error) {
	n, err := note.Open(signed, note.VerifierList(logV))
	var unverified *note.UnverifiedNoteError
	var invalid *note.InvalidSignatureError
	switch {
	case errors.As(err, &unverified):
		return nil, torchwood.Checkpoint{}, transfer.Reject(transfer.CodeBadSignature, "the checkpoint is not signed with %s's log key", peer)
	case errors.As(err, &invalid):
		return nil, torchwood.Checkpoint{}, transfer.Reject(transfer.CodeBadSignature, "the checkpoint's signature by %s does not verify", invalid.Name)
	case err != nil:
		return nil, torchwood.Checkpoint{}, transfer.Reject(transfer.CodeMalformed, "the checkpoint is not a signed note: %v", err)
	}
	c, err := torchwood.ParseCheckpoint(n.Text)
	if err != nil {
		return nil, torchwood.Checkpoint{}, transfer.Reject(transfer.CodeMalformed, "the signed note is not a checkpoint: %v", err)
	}
	if (torchwood.Checkpoint{Origin: c.Origin, Tree: c.Tree}).String() != n.Text {
		// Extension lines, or a root hash in another base64 form: evx
		// logs write neither (docs/audit.md 4.1). Refused, so that what
		// is kept as evidence is some two hundred bytes, not whatever
		// fits in a request.
		return nil, torchwood.Checkpoint{}, transfer.Reject(transfer.CodeMalformed, "the checkpoint is not in the form evx logs write: three lines, no extension lines")
	}
	if want := crypto.LogOrigin(peer); c.Origin != want {
		return nil, torchwood.Checkpoint{}, transfer.Reject(transfer.CodeBadSignature, "a checkpoint of %q, not of %s", c.Origin, want)
	}
	return n, c, nil
}

// evidence returns n's text with only its verified signatures: a signed
// checkpoint of a few hundred bytes, whatever else the note carried.
func evidence(n *note.Note) []byte {
	var b bytes.Buffer
	b.WriteString(n.Text)
	b.WriteString("\n")
	for _, s := range n.Sigs {
		fmt.Fprintf(&b, "— %s %s\n", s.Name, s.Base64)
	}
	return b.Bytes()
}

// Cosign implements transfer.LogPeer: this gateway witnesses peer's log
// (protocol.md 4.3). transfer has checked the request's bounds (check 1).
func (g *Gateway) Cosign(ctx context.Context, peer string, req *transfer.WitnessRequest) ([]byte, error) {
	lp := g.logPeers[peer]
	if lp == nil || lp.logV == nil {
		return nil, transfer.Reject(transfer.CodeNotAccepted, "gateway %s does not witness %s's transfer log: it has no log key for it", g.opts.ID, peer)
	}
	n, c, err := openCheckpoint(req.Checkpoint, peer, lp.logV)
	if err != nil {
		return nil, err
	}
	if req.OldSize > c.N {
		return nil, transfer.Reject(transfer.CodeMalformed, "old_size %d is larger than the checkpoint's size %d", req.OldSize, c.N)
	}
	for attempt := 1; ; attempt++ {
		known, err := g.readWitnessed(ctx, lp)
		if err != nil {
			g.log.Error("reading the checkpoint of a peer's log last cosigned", zap.String("peer", peer), zap.Error(err))
			return nil, transfer.Reject(transfer.CodeUnavailable, "gateway %s cannot read its witness state; retry later", g.opts.ID)
		}
		if req.OldSize != known.N {
			return nil, transfer.WitnessConflict(known.N, "gateway %s last cosigned %s's checkpoint of size %d", g.opts.ID, peer, known.N)
		}
		if rej := checkConsistency(known.Checkpoint, c, req.Consistency); rej != nil {
			if rej.Code == transfer.CodeInconsistent {
				g.inconsistentCheckpoint(ctx, lp, n, known.Checkpoint, c)
			}
			return nil, rej
		}
		if c.N == known.N {
			break // the same tree: nothing to record
		}
		_, err = g.opts.Storage.Replace(ctx, witnessKey(peer), evidence(n), known.version)
		if errors.Is(err, storage.ErrVersionMismatch) && attempt < maxReplaceRetries {
			continue // another process of this gateway witnessed meanwhile: check against its checkpoint
		}
		if err != nil {
			g.log.Error("recording a peer's checkpoint as witnessed", zap.String("peer", peer), zap.Error(err))
			return nil, transfer.Reject(transfer.CodeUnavailable, "gateway %s cannot record the checkpoint; retry later", g.opts.ID)
		}
		break
	}
	signed, err := note.Sign(&note.Note{Text: n.Text}, g.witness)
	if err != nil {
		return nil, fmt.Errorf("cosigning %s's checkpoint of size %d: %w", peer, c.N, err)
	}
	g.log.Info("peer's checkpoint cosigned", zap.String("peer", peer), zap.Int64("old_size", req.OldSize), zap.Int64("size", c.N))
	return signed[len(n.Text)+1:], nil
}

// checkConsistency checks proof that c extends known (protocol.md 4.3,
// check 7): a rejection, inconsistent if c does not.
func checkConsistency(known, c torchwood.Checkpoint, proof [][]byte) *transfer.Rejection {
	switch {
	case known.N == 0 || known.N == c.N:
		if len(proof) != 0 {
			return transfer.Reject(transfer.CodeMalformed, "a consistency proof from size %d to %d must be empty", known.N, c.N)
		}
		if known.N == c.N && known.Hash != c.Hash {
			return transfer.Reject(transfer.CodeInconsistent, "the checkpoint of size %d has another root hash than the one cosigned before", c.N)
		}
		return nil
	}
	p := make(tlog.TreeProof, len(proof))
	for i, h := range proof {
		copy(p[i][:], h) // transfer checked the sizes
	}
	if err := tlog.CheckTree(p, c.N, c.Hash, known.N, known.Hash); err != nil {
		return transfer.Reject(transfer.CodeInconsistent, "the checkpoint of size %d does not extend the one of size %d cosigned before", c.N, known.N)
	}
	return nil
}

// inconsistentCheckpoint records that lp presented c, which is not
// consistent with known, a checkpoint of its log it presented before: a
// security event. Each is counted and logged; the transfer log records at
// most one a minute per peer, the signed checkpoint being evidence enough.
func (g *Gateway) inconsistentCheckpoint(ctx context.Context, lp *logPeer, n *note.Note, known, c torchwood.Checkpoint) {
	g.metrics.securityEvents.WithLabelValues(string(audit.KindInconsistentCheckpoint)).Inc()
	g.log.Error("peer presented a checkpoint of its transfer log that is inconsistent with one it presented before: its log was forked or rewritten",
		zap.String("peer", lp.peer.ID), zap.Int64("size", c.N), zap.Int64("cosigned_size", known.N))
	now := g.now()
	lp.mu.Lock()
	due := lp.inconsistentAt.IsZero() || now.Sub(lp.inconsistentAt) >= refusalLogInterval
	if due {
		lp.inconsistentAt = now
	}
	lp.mu.Unlock()
	if !due {
		return
	}
	e := audit.Entry{Event: audit.EventSecurity, Actor: audit.GatewayActor, Kind: audit.KindInconsistentCheckpoint,
		Peer: lp.peer.ID, Checkpoint: evidence(n),
		Reason: fmt.Sprintf("checkpoint of size %d inconsistent with the one of size %d cosigned before", c.N, known.N)}
	if err := g.recordSecurity(ctx, e); err != nil {
		// Not recorded: the next one may try.
		lp.mu.Lock()
		if lp.inconsistentAt.Equal(now) {
			lp.inconsistentAt = time.Time{}
		}
		lp.mu.Unlock()
	}
}

// securityRecordTimeout bounds the recording of a security event.
const securityRecordTimeout = 30 * time.Second

// recordSecurity records a security event: even when the peer that caused
// it has gone (ctx is done), but not for longer than
// securityRecordTimeout. A failure is logged here.
func (g *Gateway) recordSecurity(ctx context.Context, e audit.Entry) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), securityRecordTimeout)
	defer cancel()
	_, err := g.record(ctx, e)
	if err != nil {
		g.log.Error("transfer log", zap.String("event", string(e.Event)), zap.String("kind", string(e.Kind)), zap.Error(err))
	}
	return err
}

// runWitnessing has the peers witness this gateway's log until ctx is
// done: every witnessPoll it wakes each peer's loop, which sends a new
// checkpoint, or the latest again once witnessRefresh has passed by the
// gateway's clock, and it keeps the age of each peer's last cosignature.
func (g *Gateway) runWitnessing(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	var witnesses []*logPeer
	for _, lp := range g.logPeers {
		if lp.witV == nil {
			g.log.Warn("peer does not witness this gateway's transfer log: no witness key is configured for it", zap.String("peer", lp.peer.ID))
			continue
		}
		witnesses = append(witnesses, lp)
		for _, r := range witnessReasons {
			g.metrics.witnessFailures.WithLabelValues(lp.peer.ID, r) // at zero from the start
		}
		lp.cosignedAt.Store(g.now().UnixNano())
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.witnessLoop(ctx, lp)
		}()
	}
	if len(witnesses) == 0 {
		return nil
	}
	t := time.NewTicker(witnessPoll)
	defer t.Stop()
	for {
		now := g.now()
		for _, lp := range witnesses {
			age := now.Sub(time.Unix(0, lp.cosignedAt.Load()))
			g.metrics.cosignatureAge.WithLabelValues(lp.peer.ID).Set(max(age, 0).Seconds())
			select {
			case lp.news <- struct{}{}:
			default:
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// witnessLoop asks lp to witness each new checkpoint, and the latest again
// when its last cosignature is witnessRefresh old, until ctx is done; it
// looks each time runWitnessing wakes it. A failed round is retried after
// a wait that doubles from RetryInterval up to RetryMax, a refresh
// included: the last cosignature is as old as it was.
func (g *Gateway) witnessLoop(ctx context.Context, lp *logPeer) {
	var w witnessState
	wait := g.opts.RetryInterval
	for {
		reason, err := g.witnessRound(ctx, lp, &w)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			wait = g.opts.RetryInterval
			select {
			case <-ctx.Done():
				return
			case <-lp.news:
			}
			continue
		}
		g.witnessFailed(lp, reason, wait, err)
		retry := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			retry.Stop()
			return
		case <-retry.C:
		}
		wait = min(2*wait, g.opts.RetryMax)
	}
}

// witnessState is what a witnessing loop knows of its peer.
type witnessState struct {
	// cosigned is the size of this log the peer last cosigned, as far as
	// this process knows: 0 at first, which a conflict corrects.
	cosigned int64
}

// witnessRound sends lp the latest checkpoint, if it has not cosigned it
// yet or its last cosignature is witnessRefresh old, and stores its
// cosignature. On failure it returns the reason, a value of the metric's
// label.
func (g *Gateway) witnessRound(ctx context.Context, lp *logPeer, w *witnessState) (string, error) {
	signed, cp, err := g.tlog.Checkpoint(ctx)
	if err != nil {
		return witnessLog, err
	}
	fresh := g.now().Sub(time.Unix(0, lp.cosignedAt.Load())) < witnessRefresh
	if cp.N == 0 || cp.N == w.cosigned && fresh {
		return "", nil
	}
	for try := 1; ; try++ {
		old := w.cosigned
		if old > cp.N {
			// The peer cosigned a larger checkpoint than this process
			// knows: one another process of this gateway published
			// (then this one catches up within a second), or one this
			// log never published.
			if _, err := g.tlog.ReadFile(ctx, "checkpoints/"+strconv.FormatInt(old, 10)); err == nil {
				return "", nil
			} else if !errors.Is(err, storage.ErrNotExist) {
				return witnessLog, err
			}
			// The next round asks afresh: the witness names its size
			// again, and a glitch of one answer does not stick.
			w.cosigned = 0
			return witnessUnknownSize, fmt.Errorf("%s cosigned a checkpoint of size %d, which this log never published (it is of size %d): its storage lost checkpoints, or someone else signs with its key", lp.peer.ID, old, cp.N)
		}
		proof, err := g.tlog.ConsistencyProof(ctx, old, cp.N)
		if err != nil {
			return witnessLog, err
		}
		req := transfer.WitnessRequest{Checkpoint: signed, OldSize: old, Consistency: make([][]byte, len(proof))}
		for i := range proof {
			req.Consistency[i] = proof[i][:]
		}
		resp, err := g.client.Witness(ctx, lp.peer, req)
		var rej *transfer.Rejection
		switch {
		case errors.As(err, &rej) && rej.Code == transfer.CodeConflict && rej.KnownSize != nil && *rej.KnownSize >= 0:
			// Routine after a restart or a lost answer: ask again from
			// the size the witness holds.
			w.cosigned = *rej.KnownSize
			if try < maxConflictRetries {
				continue
			}
			return witnessConflict, err
		case errors.As(err, &rej) && rej.Code == transfer.CodeInconsistent:
			return witnessInconsistent, err
		case errors.As(err, &rej):
			return witnessRefused, err
		case err != nil:
			return witnessUnreachable, err
		}
		if err := verifyCosignature(signed, resp.Cosignature, lp.witV); err != nil {
			return witnessBadCosignature, fmt.Errorf("cosignature of %s: %w", lp.peer.ID, err)
		}
		if err := g.tlog.AddCosignature(ctx, cp.N, resp.Cosignature); err != nil && !errors.Is(err, storage.ErrExist) {
			// ErrExist: a cosignature of this checkpoint by the peer is
			// kept already, an earlier one.
			return witnessLog, err
		}
		w.cosigned = cp.N
		lp.cosignedAt.Store(g.now().UnixNano())
		g.metrics.cosignatureAge.WithLabelValues(lp.peer.ID).Set(0)
		if g.opts.onCosigned != nil {
			g.opts.onCosigned(lp.peer.ID, old, cp.N)
		}
		return "", nil
	}
}

// verifyCosignature checks that cosig is one signature line, a cosignature
// of signed's checkpoint under v.
func verifyCosignature(signed, cosig []byte, v *torchwood.CosignatureVerifier) error {
	if !bytes.HasPrefix(cosig, []byte("— ")) || bytes.IndexByte(cosig, '\n') != len(cosig)-1 {
		return errors.New("not one signature line")
	}
	n, err := note.Open(append(bytes.Clone(signed), cosig...), note.VerifierList(v))
	if err != nil {
		return err
	}
	for _, s := range n.Sigs {
		if s.Name == v.Name() && s.Hash == v.KeyHash() {
			return nil
		}
	}
	return errors.New("no cosignature by the witness key")
}

// witnessFailed counts and logs a failed witnessing round.
func (g *Gateway) witnessFailed(lp *logPeer, reason string, wait time.Duration, err error) {
	g.metrics.witnessFailures.WithLabelValues(lp.peer.ID, reason).Inc()
	fields := []zap.Field{zap.String("peer", lp.peer.ID), zap.String("reason", reason), zap.Duration("retry_in", wait), zap.Error(err)}
	switch reason {
	case witnessInconsistent, witnessBadCosignature, witnessUnknownSize:
		g.log.Error("witnessing of the transfer log failed", fields...)
	default:
		g.log.Warn("witnessing of the transfer log failed", fields...)
	}
	if g.opts.onWitnessFailed != nil {
		g.opts.onWitnessFailed(lp.peer.ID, reason)
	}
}
