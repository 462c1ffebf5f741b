package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"evx/audit"
	"evx/crypto"
	"evx/transfer"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Helpers of the tests of witnessing, inclusion checks and refusal
// summaries: they wait on the gateways' hooks, never on time or log text.

// hookEvent is one call of a gateway's test hook.
type hookEvent struct {
	what    string // cosigned, witness-failed, proven, not-included, refusals-logged
	gateway string // whose hook it is
	peer    string
	// id is the bundle id (proven, not-included) or the reason
	// (witness-failed).
	id        string
	old, size int64 // cosigned
	n         int   // refusals-logged: entries
}

func (e hookEvent) String() string {
	return fmt.Sprintf("%s at %s: peer %q id %q old %d size %d n %d", e.what, e.gateway, e.peer, e.id, e.old, e.size, e.n)
}

// hookLog records the hook calls of the gateways of a test world, across
// restarts, for the test to wait on.
type hookLog struct {
	mu      sync.Mutex
	events  []hookEvent
	changed chan struct{}
}

func newHookLog() *hookLog { return &hookLog{changed: make(chan struct{})} }

func (h *hookLog) add(e hookEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, e)
	close(h.changed)
	h.changed = make(chan struct{})
}

// install sets gateway id's hooks of the transfer log to record here.
func (h *hookLog) install(id string, o *Options) {
	o.onCosigned = func(peer string, old, size int64) {
		h.add(hookEvent{what: "cosigned", gateway: id, peer: peer, old: old, size: size})
	}
	o.onWitnessFailed = func(peer, reason string) {
		h.add(hookEvent{what: "witness-failed", gateway: id, peer: peer, id: reason})
	}
	o.onReceiptProven = func(bundle string) { h.add(hookEvent{what: "proven", gateway: id, id: bundle}) }
	o.onReceiptNotIncluded = func(bundle string) { h.add(hookEvent{what: "not-included", gateway: id, id: bundle}) }
	o.onRefusalsLogged = func(n int) { h.add(hookEvent{what: "refusals-logged", gateway: id, n: n}) }
}

// peerDown makes a gateway's requests to peer fail at once, as if nothing
// answered at its address: tests where the peer does not run use it, so
// that the gateway does not wait for handshakes to time out.
func peerDown(o *Options, peer string) {
	o.Peers = slices.Clone(o.Peers)
	o.Peers[slices.IndexFunc(o.Peers, func(p transfer.Peer) bool { return p.ID == peer })].Address = "127.0.0.1:0"
}

// count returns how many events so far match.
func (h *hookLog) count(match func(hookEvent) bool) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, e := range h.events {
		if match(e) {
			n++
		}
	}
	return n
}

// hookWait bounds a wait for a hook: far beyond what any of them takes,
// so that a broken gateway fails the test instead of hanging it.
const hookWait = time.Minute

// waitCount waits until n events match, and returns the last of them.
func (h *hookLog) waitCount(t *testing.T, what string, n int, match func(hookEvent) bool) hookEvent {
	t.Helper()
	timeout := time.NewTimer(hookWait)
	defer timeout.Stop()
	for {
		h.mu.Lock()
		var found []hookEvent
		for _, e := range h.events {
			if match(e) {
				found = append(found, e)
			}
		}
		changed := h.changed
		h.mu.Unlock()
		if len(found) >= n {
			return found[len(found)-1]
		}
		select {
		case <-changed:
		case <-timeout.C:
			t.Fatalf("%s: seen %d times, want %d; hooks called:\n%s", what, len(found), n, h)
		}
	}
}

// waitFor waits until an event matches, and returns the first that does.
func (h *hookLog) waitFor(t *testing.T, what string, match func(hookEvent) bool) hookEvent {
	t.Helper()
	h.waitCount(t, what, 1, match)
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range h.events {
		if match(e) {
			return e
		}
	}
	panic("unreachable")
}

func (h *hookLog) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var b strings.Builder
	for _, e := range h.events {
		fmt.Fprintf(&b, "  %s\n", e)
	}
	return b.String()
}

// logEntries returns every entry of g's transfer log, once all it has
// acknowledged is in a checkpoint.
func logEntries(t *testing.T, g *Gateway) []*audit.Entry {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := g.tlog.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	return checkpointEntries(t, g.tlog)
}

// checkpointEntries returns the entries in l's latest checkpoint.
func checkpointEntries(t *testing.T, l *audit.Log) []*audit.Entry {
	t.Helper()
	ctx := t.Context()
	_, cp, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := l.Entries(ctx, 0, cp.N)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*audit.Entry, len(raw))
	for i, data := range raw {
		if out[i], err = audit.ParseEntry(data); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
	return out
}

// securityEntries returns the entries of the security events of kind.
func securityEntries(entries []*audit.Entry, kind audit.SecurityKind) []*audit.Entry {
	var out []*audit.Entry
	for _, e := range entries {
		if e.Event == audit.EventSecurity && e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// witnessVerifier returns the verifier of country id's cosignatures, as
// its peers and auditors pin it.
func (tw *testWorld) witnessVerifier(t *testing.T, id string) *torchwood.CosignatureVerifier {
	t.Helper()
	_, witnessKey := tw.Dev.Country(id).Signing.Signer().LogVerifierKeys(id)
	v, err := crypto.ParseWitnessVerifierKey(witnessKey)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// mustCheckpointSigner returns the signer of country id's checkpoints.
func mustCheckpointSigner(t *testing.T, tw *testWorld, id string) note.Signer {
	t.Helper()
	s, err := tw.Dev.Country(id).Signing.Signer().CheckpointSigner(crypto.LogOrigin(id))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// signCheckpoint signs a checkpoint of country id's log for tree with the
// country's checkpoint key, as its gateway would: a test makes up the
// checkpoints of a peer's log with it.
func (tw *testWorld) signCheckpoint(t *testing.T, id string, tree tlog.Tree) []byte {
	t.Helper()
	signed, err := note.Sign(&note.Note{Text: torchwood.Checkpoint{Origin: crypto.LogOrigin(id), Tree: tree}.String()}, mustCheckpointSigner(t, tw, id))
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// handTree is a Merkle tree (RFC 6962) of made-up entries, built in
// memory: the history of a log a test presents as a peer's.
type handTree struct {
	hashes []tlog.Hash // stored hashes, as tlog.StoredHashes lays them out
	n      int64
}

// newHandTree returns a tree of n entries, each named after prefix and
// its index: trees of different prefixes differ in every entry.
func newHandTree(t *testing.T, prefix string, n int64) *handTree {
	t.Helper()
	h := &handTree{}
	for ; h.n < n; h.n++ {
		stored, err := tlog.StoredHashes(h.n, fmt.Appendf(nil, "%s %d", prefix, h.n), h)
		if err != nil {
			t.Fatal(err)
		}
		h.hashes = append(h.hashes, stored...)
	}
	return h
}

func (h *handTree) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(h.hashes)) {
			return nil, fmt.Errorf("no stored hash %d", x)
		}
		out[i] = h.hashes[x]
	}
	return out, nil
}

// tree returns the tree of the first n entries.
func (h *handTree) tree(t *testing.T, n int64) tlog.Tree {
	t.Helper()
	root, err := tlog.TreeHash(n, h)
	if err != nil {
		t.Fatal(err)
	}
	return tlog.Tree{N: n, Hash: root}
}

// consistency returns the proof that the tree of the first old entries is
// a prefix of the tree of the first n, as a witness request carries it.
func (h *handTree) consistency(t *testing.T, old, n int64) [][]byte {
	t.Helper()
	out := [][]byte{}
	if old == 0 || old == n {
		return out
	}
	p, err := tlog.ProveTree(n, old, h)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range p {
		out = append(out, x[:])
	}
	return out
}

// wantRejection checks that err is a refusal with code.
func wantRejection(t *testing.T, what string, err error, code string) *transfer.Rejection {
	t.Helper()
	var rej *transfer.Rejection
	if !errors.As(err, &rej) || rej.Code != code {
		t.Fatalf("%s: %v, want a refusal with code %s", what, err, code)
	}
	return rej
}
