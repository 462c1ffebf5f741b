package transfer

import (
	"context"
	"errors"
	"fmt"

	"github.com/quic-go/quic-go"
	"go.uber.org/zap"
)

// The exchanges of the transfer log (docs/protocol.md sections 4.3 and
// 4.4) carry checkpoints, proofs and cosignatures as opaque bytes: their
// meaning is the log's (package audit), their bounds are transfer's, so
// that nothing a peer sends reaches the log unbounded.
const (
	// MaxCheckpointSize bounds a signed checkpoint note: its three
	// lines and the log's signature take some 250 bytes, and the rest
	// leaves room for the cosignatures of some fifty witnesses.
	MaxCheckpointSize = 8 << 10
	// MaxProofHashes bounds an inclusion or consistency proof: 64
	// hashes prove anything in a tree of up to 2^63 entries.
	MaxProofHashes = 64
	// HashSize is the size of a tree hash (SHA-256, RFC 6962).
	HashSize = 32
	// MaxCosignatureSize bounds a witness's cosignature: a C2SP
	// cosignature line takes some 150 bytes.
	MaxCosignatureSize = 1 << 10
)

// WitnessRequest is the body of a WITNESS_REQUEST: the owner of a log asks
// a peer to check that Checkpoint extends the last checkpoint of that log
// the peer cosigned, whose size the owner believes is OldSize, and to
// cosign it.
type WitnessRequest struct {
	// Checkpoint is the log's signed checkpoint note (C2SP
	// tlog-checkpoint, signed-note), at most MaxCheckpointSize bytes.
	Checkpoint []byte `json:"checkpoint"`
	// OldSize is the size of the last checkpoint the witness cosigned,
	// 0 if none.
	OldSize int64 `json:"old_size"`
	// Consistency is the consistency proof from the tree of OldSize to
	// the checkpoint's: at most MaxProofHashes hashes of HashSize bytes,
	// none when OldSize is 0 or the checkpoint's size.
	Consistency [][]byte `json:"consistency"`
}

func (r *WitnessRequest) check() error {
	if err := checkCheckpoint(r.Checkpoint); err != nil {
		return err
	}
	if r.OldSize < 0 {
		return fmt.Errorf("old_size %d is negative", r.OldSize)
	}
	return checkHashes("consistency", r.Consistency)
}

// WitnessResponse is the body of a WITNESS: the witness's cosignature of
// the checkpoint, at most MaxCosignatureSize bytes (a C2SP cosignature
// line, for the log to keep beside its checkpoint).
type WitnessResponse struct {
	Cosignature []byte `json:"cosignature"`
}

func (r *WitnessResponse) check() error {
	if len(r.Cosignature) == 0 || len(r.Cosignature) > MaxCosignatureSize {
		return fmt.Errorf("cosignature of %d bytes, want 1 to %d", len(r.Cosignature), MaxCosignatureSize)
	}
	return nil
}

// ProofRequest is the body of a PROOF_REQUEST: a gateway holding a
// receipt from a peer asks it to prove that the entry the receipt
// promised is in its log.
type ProofRequest struct {
	// LeafHash is the entry's leaf hash (RFC 6962), from the receipt.
	LeafHash []byte `json:"leaf_hash"`
	// LeafIndex is the entry's index, from the receipt.
	LeafIndex int64 `json:"leaf_index"`
	// TreeSize is the size of a checkpoint the peer published, which the
	// proof is to lead to; 0 asks for its latest checkpoint.
	TreeSize int64 `json:"tree_size"`
}

func (r *ProofRequest) check() error {
	if len(r.LeafHash) != HashSize {
		return fmt.Errorf("leaf_hash of %d bytes, want %d", len(r.LeafHash), HashSize)
	}
	if r.TreeSize < 0 {
		return fmt.Errorf("tree_size %d is negative", r.TreeSize)
	}
	if r.LeafIndex < 0 || r.TreeSize > 0 && r.LeafIndex >= r.TreeSize {
		return fmt.Errorf("leaf_index %d is outside a tree of size %d", r.LeafIndex, r.TreeSize)
	}
	return nil
}

// ProofResponse is the body of a PROOF: the inclusion proof of the entry
// at LeafIndex in the tree of Checkpoint.
type ProofResponse struct {
	// Checkpoint is the signed checkpoint note the proof leads to, at
	// most MaxCheckpointSize bytes; cosignatures may be attached.
	Checkpoint []byte `json:"checkpoint"`
	// LeafIndex is the index of the entry proved, the one asked for.
	LeafIndex int64 `json:"leaf_index"`
	// Proof is the inclusion proof (RFC 6962): at most MaxProofHashes
	// hashes of HashSize bytes.
	Proof [][]byte `json:"proof"`
}

func (r *ProofResponse) check() error {
	if err := checkCheckpoint(r.Checkpoint); err != nil {
		return err
	}
	if r.LeafIndex < 0 {
		return fmt.Errorf("leaf_index %d is negative", r.LeafIndex)
	}
	return checkHashes("proof", r.Proof)
}

// answers reports whether r can answer req: it proves the entry asked for.
// Whether the proof holds is for the log to check, against the entry's
// hash and the checkpoint.
func (r *ProofResponse) answers(req *ProofRequest) error {
	if r.LeafIndex != req.LeafIndex {
		return fmt.Errorf("a proof for leaf_index %d, asked for %d", r.LeafIndex, req.LeafIndex)
	}
	return nil
}

func checkCheckpoint(c []byte) error {
	if len(c) == 0 || len(c) > MaxCheckpointSize {
		return fmt.Errorf("checkpoint of %d bytes, want 1 to %d", len(c), MaxCheckpointSize)
	}
	return nil
}

// checkHashes checks a proof: present (an empty array, not null, when it
// has no hash), at most MaxProofHashes hashes of HashSize bytes.
func checkHashes(name string, hashes [][]byte) error {
	if hashes == nil {
		return fmt.Errorf("%s missing", name)
	}
	if len(hashes) > MaxProofHashes {
		return fmt.Errorf("%s of %d hashes, at most %d allowed", name, len(hashes), MaxProofHashes)
	}
	for i, h := range hashes {
		if len(h) != HashSize {
			return fmt.Errorf("%s hash %d of %d bytes, want %d", name, i, len(h), HashSize)
		}
	}
	return nil
}

// LogPeer is what a Receiver implements, besides Receiver, to take part in
// its peers' transfer logs. A server whose Receiver does not implement it
// refuses witness and proof requests with not-accepted. Both methods get a
// request whose members are within the bounds above, and a context that
// ends when the peer can no longer be answered; an error that is not a
// *Rejection is answered as internal.
type LogPeer interface {
	// Cosign witnesses the log of peer: it checks req.Checkpoint
	// against the log key configured for peer and for consistency with
	// the last checkpoint of that log it cosigned, records it, and
	// returns its cosignature. To refuse it returns a *Rejection:
	// WitnessConflict if req.OldSize is not the size it holds, or the
	// codes of docs/protocol.md section 4.3.
	Cosign(ctx context.Context, peer string, req *WitnessRequest) ([]byte, error)
	// Prove returns the inclusion proof of an entry of this gateway's
	// log, or a *Rejection (docs/protocol.md section 4.4).
	Prove(ctx context.Context, peer string, req *ProofRequest) (*ProofResponse, error)
}

// Witness asks peer to cosign this gateway's checkpoint. A refusal is a
// *Rejection; a conflict carries KnownSize, the size of this log the peer
// last cosigned, from which the caller may prove consistency and ask again.
// The cosignature is returned as received: the caller verifies it against
// the peer's witness key.
func (c *Client) Witness(ctx context.Context, p Peer, req WitnessRequest) (*WitnessResponse, error) {
	if req.Consistency == nil {
		req.Consistency = [][]byte{}
	}
	if err := req.check(); err != nil {
		return nil, fmt.Errorf("witness request for %s: %w", p.ID, err)
	}
	var resp WitnessResponse
	err := c.exchange(ctx, p, "cosignature", frameWitnessRequest, &req, frameWitness, &resp)
	var rej *Rejection
	if errors.As(err, &rej) && rej.KnownSize != nil && *rej.KnownSize == req.OldSize {
		// A conflict is a size other than the one sent: taken at its
		// word, it would have the caller ask again with the same.
		return nil, fmt.Errorf("cosignature of %s: %w: a conflict naming the old size %d that was sent", p.ID, errMalformedFrame, req.OldSize)
	}
	if err != nil {
		return nil, refusedByPeer(p.ID, err)
	}
	return &resp, nil
}

// Prove asks peer for the inclusion proof of an entry of its log. A refusal
// is a *Rejection. The proof is returned as received, once checked to name
// the entry asked for: the caller verifies it against the leaf hash and
// the checkpoint, and the checkpoint against the peer's log key.
func (c *Client) Prove(ctx context.Context, p Peer, req ProofRequest) (*ProofResponse, error) {
	if err := req.check(); err != nil {
		return nil, fmt.Errorf("proof request for %s: %w", p.ID, err)
	}
	var resp ProofResponse
	if err := c.exchange(ctx, p, "inclusion proof", frameProofRequest, &req, frameProof, &resp); err != nil {
		return nil, refusedByPeer(p.ID, err)
	}
	if err := resp.answers(&req); err != nil {
		return nil, fmt.Errorf("inclusion proof of %s: %w: %v", p.ID, errMalformedFrame, err)
	}
	return &resp, nil
}

// Stages of the server's refusals, as OnRefuse reports them.
const (
	stageHandshake = "handshake"
	stageOffer     = "offer"
	stageWitness   = "witness"
	stageProof     = "proof"
)

// stageOf returns the stage of an exchange that began with a frame of type
// typ: anything but the log's requests counts as an offer, as before they
// existed.
func stageOf(typ byte) string {
	switch typ {
	case frameWitnessRequest:
		return stageWitness
	case frameProofRequest:
		return stageProof
	}
	return stageOffer
}

func (s *Server) serveWitness(ctx context.Context, peer string, str *quic.Stream, body []byte, log *zap.Logger) {
	var req WitnessRequest
	if err := unmarshalStrict(body, &req); err != nil {
		s.reject(str, log, stageWitness, Reject(CodeMalformed, "witness request: %v", err))
		return
	}
	lp, ok := s.cfg.Receiver.(LogPeer)
	if !ok {
		s.reject(str, log, stageWitness, Reject(CodeNotAccepted, "gateway %s witnesses no logs", s.cfg.ID))
		return
	}
	ctx, cancel := context.WithTimeout(ctx, logAnswerTimeout)
	defer cancel()
	cosig, err := lp.Cosign(ctx, peer, &req)
	if err != nil {
		s.reject(str, log, stageWitness, witnessRejection(log, err, req.OldSize))
		return
	}
	resp := WitnessResponse{Cosignature: cosig}
	if err := resp.check(); err != nil {
		log.Error("witnessing", zap.Error(err))
		s.reject(str, log, stageWitness, Reject(CodeInternal, "gateway %s failed to cosign; it has been logged there", s.cfg.ID))
		return
	}
	if err := writeFrame(stallWriter{str, stallTimeout}, frameWitness, &resp); err != nil {
		log.Warn("sending cosignature", zap.Error(err))
		return
	}
	log.Info("checkpoint cosigned", zap.Int64("old_size", req.OldSize))
}

func (s *Server) serveProof(ctx context.Context, peer string, str *quic.Stream, body []byte, log *zap.Logger) {
	var req ProofRequest
	if err := unmarshalStrict(body, &req); err != nil {
		s.reject(str, log, stageProof, Reject(CodeMalformed, "proof request: %v", err))
		return
	}
	lp, ok := s.cfg.Receiver.(LogPeer)
	if !ok {
		s.reject(str, log, stageProof, Reject(CodeNotAccepted, "gateway %s keeps no log", s.cfg.ID))
		return
	}
	ctx, cancel := context.WithTimeout(ctx, logAnswerTimeout)
	defer cancel()
	got, err := lp.Prove(ctx, peer, &req)
	if err == nil && got == nil {
		err = errors.New("no proof and no error")
	}
	if err != nil {
		s.reject(str, log, stageProof, logRejection(log, "proving", err))
		return
	}
	resp := *got
	if resp.Proof == nil {
		// The proof of the only entry of a tree has no hash.
		resp.Proof = [][]byte{}
	}
	err = resp.check()
	if err == nil {
		err = resp.answers(&req)
	}
	if err != nil {
		log.Error("proving", zap.Error(err))
		s.reject(str, log, stageProof, Reject(CodeInternal, "gateway %s failed to prove inclusion; it has been logged there", s.cfg.ID))
		return
	}
	if err := writeFrame(stallWriter{str, stallTimeout}, frameProof, &resp); err != nil {
		log.Warn("sending inclusion proof", zap.Error(err))
	}
}

// logRejection turns what a LogPeer returned into the rejection to send:
// an error that is no *Rejection is internal, and logged here, since
// nobody else may have.
func logRejection(log *zap.Logger, doing string, err error) *Rejection {
	var rej *Rejection
	if errors.As(err, &rej) {
		return rej
	}
	log.Error(doing, zap.Error(err))
	return Reject(CodeInternal, "the peer gateway failed at %s; it has been logged there", doing)
}

// witnessRejection is logRejection for Cosign, whose conflict must name the
// size the witness holds, which is not the old size sent.
func witnessRejection(log *zap.Logger, err error, oldSize int64) *Rejection {
	rej := logRejection(log, "witnessing", err)
	if rej.Code != CodeConflict {
		return rej
	}
	switch k := rej.KnownSize; {
	case k == nil:
		err = errors.New("a conflict that names no size")
	case *k < 0 || *k == oldSize:
		err = fmt.Errorf("a conflict naming size %d, with old size %d sent", *k, oldSize)
	default:
		return rej
	}
	return logRejection(log, "witnessing", err)
}

// logAnswerTimeout bounds a LogPeer's answer: the client gives the whole
// exchange the stall timeout.
const logAnswerTimeout = stallTimeout
