package gateway

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"evx/audit"
	"evx/client"
	"evx/crypto"
	"evx/internal/evxtest"
	"evx/storage"
	"evx/transfer"

	"filippo.io/torchwood"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// proofMode is how the test's FR answers DE's request for the inclusion
// proof of one entry.
type proofMode int

const (
	proveHonestly proofMode = iota
	withholdProof           // unavailable, as if the entry were not in a checkpoint
	lieInProof              // a proof whose first hash is wrong
)

// proofPeer plays FR's answers to proof requests, per leaf hash, and
// counts the requests.
type proofPeer struct {
	mu    sync.Mutex
	modes map[string]proofMode // by hex leaf hash
	asked map[string]int
	h     *hookLog
}

func (p *proofPeer) set(leaf string, m proofMode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.modes[leaf] = m
}

func (p *proofPeer) setAll(m proofMode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for leaf := range p.modes {
		p.modes[leaf] = m
	}
}

func (p *proofPeer) hook(req *transfer.ProofRequest, resp *transfer.ProofResponse, err error) (*transfer.ProofResponse, error) {
	leaf := hex.EncodeToString(req.LeafHash)
	p.mu.Lock()
	m := p.modes[leaf]
	p.asked[leaf]++
	p.mu.Unlock()
	defer p.h.add(hookEvent{what: "asked", gateway: "FR", id: leaf})
	switch {
	case err != nil || m == proveHonestly:
		return resp, err
	case m == withholdProof:
		return nil, transfer.Reject(transfer.CodeUnavailable, "entry %d is not in a checkpoint yet", req.LeafIndex)
	}
	lie := *resp
	lie.Proof = slices.Clone(resp.Proof)
	lie.Proof[0] = bytes.Clone(resp.Proof[0])
	lie.Proof[0][0] ^= 1
	return &lie, nil
}

// A receipt's promise is held: the sender proves each delivery's entry in
// the receiver's log; a receiver that withholds the proof or lies in it
// past the maximum merge delay is a security event in the sender's own log
// and a gauge that a later honest proof brings back down; a restart of the
// sender keeps its pending checks and what it recorded. DE's clock stands
// still but where the test moves it.
func TestReceiptInclusion(t *testing.T) {
	clock := newTestClock()
	h := newHookLog()
	fr := &proofPeer{modes: map[string]proofMode{}, asked: map[string]int{}, h: h}
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		h.install(id, o)
		switch id {
		case "DE":
			o.Now = clock.Now
		case "FR":
			o.proveHook = fr.hook
		}
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	ctx := t.Context()
	frSigning := crypto.FormatSigningKey(tw.Dev.Country("FR").Signing.SigningPublicKey())
	frLogKey, _ := tw.Dev.Country("FR").Signing.Signer().LogVerifierKeys("FR")
	frLog, err := note.NewVerifier(frLogKey)
	if err != nil {
		t.Fatal(err)
	}

	type delivery struct {
		id      string
		receipt *crypto.Signed
		log     crypto.ReceiptLog
	}
	// push delivers a bundle from DE to FR with FR answering mode, and
	// waits until FR's log has the entry the receipt promises in a
	// checkpoint: DE then asks once the test moves its clock.
	push := func(mode proofMode) delivery {
		t.Helper()
		de, deKey := tw.Client("DE", "forensics")
		res, err := client.Push(ctx, de, client.PushRequest{Key: deKey, To: []string{"FR/prosecutor"}, Files: evxtest.Evidence(t, 1000),
			Seal: evxtest.SealOptions(), TempDir: t.TempDir(), Wait: 20 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		r, err := crypto.VerifyReceipt(res.Status.Receipt, frSigning)
		if err != nil || r.Log == nil {
			t.Fatalf("receipt %+v, %v: want a version 2 receipt", r, err)
		}
		fr.set(r.Log.LeafHash, mode)
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := tw.gw("FR").tlog.Sync(sctx); err != nil {
			t.Fatal(err)
		}
		return delivery{id: res.Envelope.BundleID, receipt: res.Status.Receipt, log: *r.Log}
	}
	asked := func(d delivery) int {
		return h.count(func(e hookEvent) bool { return e.what == "asked" && e.id == d.log.LeafHash })
	}
	// waitAsked waits until FR was asked for d's proof n times in all.
	waitAsked := func(d delivery, n int) {
		t.Helper()
		h.waitCount(t, "FR asked for the proof of bundle "+d.id, n, func(e hookEvent) bool { return e.what == "asked" && e.id == d.log.LeafHash })
	}
	waitHook := func(what string, d delivery, n int) {
		t.Helper()
		h.waitCount(t, what+" "+d.id, n, func(e hookEvent) bool { return e.what == what && e.gateway == "DE" && e.id == d.id })
	}
	gauge := func() float64 {
		return testutil.ToFloat64(tw.gw("DE").metrics.receiptsNotIncluded.WithLabelValues("FR"))
	}
	securityEvents := func() float64 {
		return testutil.ToFloat64(tw.gw("DE").metrics.securityEvents.WithLabelValues(string(audit.KindReceiptNotIncluded)))
	}
	stored := func(d delivery, file string) bool {
		_, err := tw.Stores["DE"].Stat(ctx, key(outboxPrefix, d.id, file))
		if err != nil && !errors.Is(err, storage.ErrNotExist) {
			t.Fatal(err)
		}
		return err == nil
	}

	// An honest peer's proof is checked and kept beside the receipt.
	honest := push(proveHonestly)
	clock.Add(inclusionFirstWait)
	waitHook("proven", honest, 1)
	var rec includedRecord
	if err := getJSON(ctx, tw.Stores["DE"], key(outboxPrefix, honest.id, includedFile), &rec); err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(rec.Checkpoint, note.VerifierList(frLog))
	if err != nil {
		t.Fatalf("the kept proof's checkpoint does not verify under FR's log key: %v", err)
	}
	cp, err := torchwood.ParseCheckpoint(n.Text)
	if err != nil {
		t.Fatal(err)
	}
	proof := make(tlog.RecordProof, len(rec.Proof))
	for i := range rec.Proof {
		copy(proof[i][:], rec.Proof[i])
	}
	var leaf tlog.Hash
	if _, err := hex.Decode(leaf[:], []byte(honest.log.LeafHash)); err != nil {
		t.Fatal(err)
	}
	if err := tlog.CheckRecord(proof, cp.N, cp.Hash, honest.log.LeafIndex, leaf); err != nil || rec.LeafIndex != honest.log.LeafIndex {
		t.Fatalf("the kept proof does not prove entry %d: %v", honest.log.LeafIndex, err)
	}

	// A peer that withholds the proof, and one that lies in it: no event
	// while the merge delay runs.
	withheld, lied := push(withholdProof), push(lieInProof)
	clock.Add(inclusionFirstWait)
	waitAsked(withheld, 1)
	waitAsked(lied, 1)
	clock.Add(2 * inclusionFirstWait)
	waitAsked(withheld, 2)
	waitAsked(lied, 2)
	if got := gauge(); got != 0 || stored(withheld, notIncludedFile) || stored(lied, notIncludedFile) {
		t.Fatalf("a security event before the maximum merge delay passed (evx_receipts_not_included %v)", got)
	}

	// A delivery still pending when DE restarts is checked after it.
	pending := push(withholdProof)
	clock.Add(inclusionFirstWait)
	waitAsked(pending, 1)
	tw.Stop(t, "DE")
	tw.Start(t, "DE")
	if got := gauge(); got != 0 {
		t.Fatalf("evx_receipts_not_included = %v after a restart before the merge delay passed", got)
	}

	// Past the merge delay of all three.
	clock.Add(defaultMaxMergeDelay)
	for _, d := range []delivery{withheld, lied, pending} {
		waitHook("not-included", d, 1)
	}
	if got := gauge(); got != 3 {
		t.Errorf("evx_receipts_not_included = %v, want 3", got)
	}
	if got := securityEvents(); got != 3 {
		t.Errorf(`evx_security_events_total{kind="receipt-not-included"} = %v, want 3`, got)
	}
	checkEntries := func(when string) {
		t.Helper()
		entries := securityEntries(logEntries(t, tw.gw("DE")), audit.KindReceiptNotIncluded)
		byID := map[string]*audit.Entry{}
		for _, e := range entries {
			if byID[e.BundleID] != nil {
				t.Errorf("%s: receipt-not-included recorded twice for bundle %s", when, e.BundleID)
			}
			byID[e.BundleID] = e
		}
		if len(byID) != 3 {
			t.Fatalf("%s: receipt-not-included entries about %d bundles, want 3: %+v", when, len(byID), entries)
		}
		for _, c := range []struct {
			d      delivery
			reason string
		}{{withheld, "refused: unavailable"}, {lied, "did not verify"}, {pending, "refused: unavailable"}} {
			e := byID[c.d.id]
			if e == nil {
				t.Fatalf("%s: no receipt-not-included entry for bundle %s", when, c.d.id)
			}
			if e.Peer != "FR" || e.Actor != audit.GatewayActor || !strings.Contains(e.Reason, c.reason) ||
				!bytes.Equal(e.Receipt.Body, c.d.receipt.Body) || !bytes.Equal(e.Receipt.Signature, c.d.receipt.Signature) {
				t.Errorf("%s: entry %+v; want peer FR, actor gateway, the bundle's receipt and a reason saying %q", when, e, c.reason)
			}
		}
	}
	checkEntries("past the merge delay")

	// Restarted again, DE knows what it recorded: it counts the receipts
	// still unproven, and records nothing twice.
	before := map[string]int{}
	for _, d := range []delivery{withheld, lied, pending} {
		before[d.id] = asked(d)
	}
	tw.Stop(t, "DE")
	tw.Start(t, "DE")
	for _, d := range []delivery{withheld, lied, pending} {
		waitAsked(d, before[d.id]+1) // queued again, and asked
	}
	if got := gauge(); got != 3 {
		t.Errorf("evx_receipts_not_included = %v after a restart, want 3", got)
	}
	// A rescan of the outbox, as after an overflow, finds them queued
	// and counts none twice.
	if err := tw.gw("DE").scanReceipts(ctx); err != nil {
		t.Fatal(err)
	}
	if got := gauge(); got != 3 {
		t.Errorf("evx_receipts_not_included = %v after a rescan, want 3", got)
	}

	// Honest proofs, however late, bring the gauge back to zero; the
	// events stay in the log.
	fr.setAll(proveHonestly)
	clock.Add(time.Minute)
	for _, d := range []delivery{withheld, lied, pending} {
		waitHook("proven", d, 1)
		if !stored(d, includedFile) {
			t.Errorf("no proof kept for bundle %s", d.id)
		}
	}
	if got := gauge(); got != 0 {
		t.Errorf("evx_receipts_not_included = %v once proven, want 0", got)
	}
	checkEntries("once proven")
	for _, d := range []delivery{withheld, lied, pending} {
		var ni notIncludedRecord
		if err := getJSON(ctx, tw.Stores["DE"], key(outboxPrefix, d.id, notIncludedFile), &ni); err != nil || ni.Peer != "FR" {
			t.Errorf("bundle %s: %s %+v, %v", d.id, notIncludedFile, ni, err)
		}
	}
}

// A gateway proves the entries of its log to a peer against a checkpoint
// signed with its log key, and refuses what it cannot prove: another
// entry at the index asked for, or a checkpoint not yet published.
func TestProveForPeers(t *testing.T) {
	h := newHookLog()
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		h.install(id, o)
		peerDown(o, "FR") // FR's part is played by the test
	})
	tw.Start(t, "DE")
	h.waitFor(t, "DE running: its witness loop tried FR", func(e hookEvent) bool { return e.what == "witness-failed" })
	ctx := t.Context()
	fr, de := tw.peerClient(t, "FR", "DE")
	entries := logEntries(t, tw.gw("DE"))
	_, cp, err := tw.gw("DE").tlog.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first, err := entries[0].MarshalCanonical()
	if err != nil {
		t.Fatal(err)
	}
	leaf := tlog.RecordHash(first)
	deLogKey, _ := tw.Dev.Country("DE").Signing.Signer().LogVerifierKeys("DE")
	deLog, err := note.NewVerifier(deLogKey)
	if err != nil {
		t.Fatal(err)
	}

	for _, size := range []int64{0, cp.N} {
		resp, err := fr.Prove(ctx, de, transfer.ProofRequest{LeafHash: leaf[:], LeafIndex: 0, TreeSize: size})
		if err != nil {
			t.Fatalf("proof of entry 0 in the tree of size %d: %v", size, err)
		}
		n, err := note.Open(resp.Checkpoint, note.VerifierList(deLog))
		if err != nil {
			t.Fatalf("the proof's checkpoint does not verify under DE's log key: %v", err)
		}
		c, err := torchwood.ParseCheckpoint(n.Text)
		if err != nil {
			t.Fatal(err)
		}
		proof := make(tlog.RecordProof, len(resp.Proof))
		for i := range resp.Proof {
			copy(proof[i][:], resp.Proof[i])
		}
		if err := tlog.CheckRecord(proof, c.N, c.Hash, 0, leaf); err != nil || size != 0 && c.N != size {
			t.Errorf("proof of entry 0 asked in the tree of size %d: a checkpoint of size %d, %v", size, c.N, err)
		}
	}

	other := tlog.RecordHash([]byte("another entry"))
	_, err = fr.Prove(ctx, de, transfer.ProofRequest{LeafHash: other[:], LeafIndex: 0})
	if rej := wantRejection(t, "a proof of another entry at index 0", err, transfer.CodeConflict); rej.KnownSize != nil {
		t.Errorf("a conflict naming a known size %d", *rej.KnownSize)
	}
	_, err = fr.Prove(ctx, de, transfer.ProofRequest{LeafHash: leaf[:], LeafIndex: 0, TreeSize: cp.N + 100})
	wantRejection(t, "a proof in a tree larger than the log's", err, transfer.CodeUnavailable)
	_, err = fr.Prove(ctx, de, transfer.ProofRequest{LeafHash: leaf[:], LeafIndex: cp.N + 100})
	wantRejection(t, "a proof of an entry not yet in a checkpoint", err, transfer.CodeUnavailable)
}
