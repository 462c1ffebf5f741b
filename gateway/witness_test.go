package gateway

import (
	"bytes"
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
	"evx/storage"
	"evx/transfer"

	"filippo.io/torchwood"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/mod/sumdb/note"
)

func TestWitnessing(t *testing.T) { forEachBackend(t, testWitnessing) }

// After a push from DE to FR, each gateway's latest checkpoint is cosigned
// by the other; the cosignature is kept beside the checkpoint, where an
// auditor who pins the peer's witness key finds it and verifies it; the
// witness keeps the checkpoint it cosigned.
func testWitnessing(t *testing.T, newStore func(testing.TB, string) storage.Backend) {
	h := newHookLog()
	tw := newTestWorld(t, newStore, h.install)
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	ctx := t.Context()
	pushPulled(t, tw)

	for _, c := range []struct{ owner, witness string }{{"DE", "FR"}, {"FR", "DE"}} {
		g := tw.gw(c.owner)
		_, cp, err := g.tlog.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ev := h.waitFor(t, fmt.Sprintf("%s's checkpoint of size %d cosigned by %s", c.owner, cp.N, c.witness), func(e hookEvent) bool {
			return e.what == "cosigned" && e.gateway == c.owner && e.peer == c.witness && e.size >= cp.N
		})
		if ev.size != cp.N {
			t.Fatalf("%s's log grew to %d after the push and pull, from %d: nothing should have been logged", c.owner, ev.size, cp.N)
		}

		// The cosignature is stored with the checkpoint...
		stored := fmt.Sprintf("log/cosignatures/%020d/%s", cp.N, crypto.WitnessName(c.witness))
		if _, err := tw.Stores[c.owner].Stat(ctx, stored); err != nil {
			t.Errorf("%s's cosignature of %s's checkpoint: %v", c.witness, c.owner, err)
		}
		// ...and an auditor pinning the witness's key verifies it.
		opts := tw.logVerifyOptions(t, c.owner)
		opts.Witnesses = []note.Verifier{tw.witnessVerifier(t, c.witness)}
		r, err := audit.Verify(ctx, g.tlog, opts)
		if err != nil {
			t.Fatalf("verifying %s's log with %s as its witness: %v", c.owner, c.witness, err)
		}
		if r.N != cp.N || !slices.Equal(r.Cosigners, []string{crypto.WitnessName(c.witness)}) {
			t.Errorf("verified %s's log of size %d cosigned by %q; want size %d cosigned by %s", c.owner, r.N, r.Cosigners, cp.N, crypto.WitnessName(c.witness))
		}
		// A witness that did not cosign is missed: the check above is one.
		opts.Witnesses = []note.Verifier{tw.witnessVerifier(t, c.owner)}
		if _, err := audit.Verify(ctx, g.tlog, opts); !errors.Is(err, audit.ErrMissingCosignature) {
			t.Errorf("verifying %s's log requiring its own witness key: %v, want %v", c.owner, err, audit.ErrMissingCosignature)
		}

		// The witness keeps the checkpoint it cosigned, as the owner
		// signed it.
		kept, _, err := tw.Stores[c.witness].ReadVersion(ctx, witnessKey(c.owner), transfer.MaxCheckpointSize)
		if err != nil {
			t.Fatal(err)
		}
		signed, err := g.tlog.ReadFile(ctx, fmt.Sprintf("checkpoints/%d", cp.N))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(signed, kept) {
			t.Errorf("%s keeps as the last checkpoint of %s's log it cosigned:\n%s\nwant:\n%s", c.witness, c.owner, kept, signed)
		}
	}
}

// racingStore is a gateway's storage on which, once armed, another process
// of the same gateway replaces key just before this one does.
type racingStore struct {
	lockingStore
	key string

	mu   sync.Mutex
	race func(storage.Backend)
}

func (s *racingStore) arm(race func(storage.Backend)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.race = race
}

func (s *racingStore) Replace(ctx context.Context, key string, data []byte, ifVersion string) (string, error) {
	if key == s.key {
		s.mu.Lock()
		race := s.race
		s.race = nil
		s.mu.Unlock()
		if race != nil {
			race(s.lockingStore)
		}
	}
	return s.lockingStore.Replace(ctx, key, data, ifVersion)
}

// A peer that presents a checkpoint inconsistent with one it presented
// before, a fork of the same or a larger size, is refused as inconsistent;
// each time is counted, and recorded as a security event in the witness's
// own log at most once a minute; the checkpoint the witness keeps is not
// replaced, by the fork nor by a stale request, nor by this gateway's
// write that another process of it overtook. FR's part is played by the
// test, with FR's certificate and log key, over real QUIC.
func TestWitnessRefusesFork(t *testing.T) {
	clock := newTestClock()
	h := newHookLog()
	var deStore *racingStore
	tw := newTestWorld(t, func(tb testing.TB, id string) storage.Backend {
		st := diskStore(tb, id)
		if id == "DE" {
			deStore = &racingStore{lockingStore: locking(tb, st), key: witnessKey("FR")}
			return deStore
		}
		return st
	}, func(id string, o *Options) {
		h.install(id, o)
		o.Now = clock.Now
		peerDown(o, "FR") // FR does not run
	})
	tw.Start(t, "DE")
	h.waitFor(t, "DE running: its witness loop tried FR", func(e hookEvent) bool { return e.what == "witness-failed" })
	ctx := t.Context()
	fr, de := tw.peerClient(t, "FR", "DE")
	deWitness := tw.witnessVerifier(t, "DE")
	honest := newHandTree(t, "FR's history", 12)
	fork := newHandTree(t, "FR's other history", 12)

	ask := func(tree *handTree, old, n int64) (signed, cosig []byte, err error) {
		signed = tw.signCheckpoint(t, "FR", tree.tree(t, n))
		resp, err := fr.Witness(ctx, de, transfer.WitnessRequest{Checkpoint: signed, OldSize: old, Consistency: tree.consistency(t, old, n)})
		if err != nil {
			return signed, nil, err
		}
		return signed, resp.Cosignature, nil
	}
	cosigned := func(tree *handTree, old, n int64) []byte {
		t.Helper()
		signed, cosig, err := ask(tree, old, n)
		if err != nil {
			t.Fatalf("asking DE to cosign size %d from %d: %v", n, old, err)
		}
		nt, err := note.Open(append(bytes.Clone(signed), cosig...), note.VerifierList(deWitness))
		if err != nil || len(nt.Sigs) != 1 {
			t.Fatalf("DE's cosignature %q of FR's checkpoint of size %d does not verify under DE's witness key: %v", cosig, n, err)
		}
		return signed
	}
	kept := func() []byte {
		t.Helper()
		data, _, err := deStore.ReadVersion(ctx, witnessKey("FR"), transfer.MaxCheckpointSize)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	wantKept := func(what string, want []byte) {
		t.Helper()
		if got := kept(); !bytes.Equal(got, want) {
			t.Fatalf("%s: DE keeps as FR's last cosigned checkpoint\n%s\nwant\n%s", what, got, want)
		}
	}
	securityEvents := func() float64 {
		return testutil.ToFloat64(tw.gw("DE").metrics.securityEvents.WithLabelValues(string(audit.KindInconsistentCheckpoint)))
	}
	logged := func() []*audit.Entry {
		return securityEntries(logEntries(t, tw.gw("DE")), audit.KindInconsistentCheckpoint)
	}

	cosigned(honest, 0, 3)
	last := cosigned(honest, 3, 5)
	wantKept("after the honest history", last)
	if securityEvents() != 0 || len(logged()) != 0 {
		t.Fatal("a security event before any fork")
	}

	// A checkpoint with extension lines is not one of an evx log: refused
	// before it is checked, kept or quoted in DE's log, however it is
	// signed.
	text := torchwood.Checkpoint{Origin: crypto.LogOrigin("FR"), Tree: honest.tree(t, 6), Extension: strings.Repeat("x", 6000) + "\n"}.String()
	extended, err := note.Sign(&note.Note{Text: text}, mustCheckpointSigner(t, tw, "FR"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = fr.Witness(ctx, de, transfer.WitnessRequest{Checkpoint: extended, OldSize: 5, Consistency: honest.consistency(t, 5, 6)})
	wantRejection(t, "a checkpoint with an extension line", err, transfer.CodeMalformed)
	wantKept("after a checkpoint with extension lines", last)

	// Forks of the same and of a larger size.
	forkSame, _, err := ask(fork, 5, 5)
	wantRejection(t, "a fork of the same size", err, transfer.CodeInconsistent)
	_, _, err = ask(fork, 5, 8)
	wantRejection(t, "a fork of a larger size", err, transfer.CodeInconsistent)
	wantKept("after the forks", last)
	if got := securityEvents(); got != 2 {
		t.Errorf(`evx_security_events_total{kind="inconsistent-checkpoint"} = %v, want 2`, got)
	}
	entries := logged()
	if len(entries) != 1 {
		t.Fatalf("%d inconsistent-checkpoint entries in DE's log within a minute, want 1: %+v", len(entries), entries)
	}
	if e := entries[0]; e.Peer != "FR" || e.Actor != audit.GatewayActor || !bytes.Equal(e.Checkpoint, forkSame) {
		t.Errorf("DE's security entry: peer %q, actor %q, checkpoint\n%s\nwant peer FR, actor gateway and the fork's checkpoint\n%s", e.Peer, e.Actor, e.Checkpoint, forkSame)
	}
	// A minute later the next one is recorded too.
	clock.Add(time.Minute)
	forkLater, _, err := ask(fork, 5, 9)
	wantRejection(t, "a fork a minute later", err, transfer.CodeInconsistent)
	if entries = logged(); len(entries) != 2 || !bytes.Equal(entries[1].Checkpoint, forkLater) {
		t.Fatalf("DE's inconsistent-checkpoint entries a minute later: %+v, want a second one with the fork of size 9", entries)
	}
	if got := securityEvents(); got != 3 {
		t.Errorf(`evx_security_events_total{kind="inconsistent-checkpoint"} = %v, want 3`, got)
	}
	if got := testutil.ToFloat64(tw.gw("DE").metrics.refusals.WithLabelValues("peer-witness", transfer.CodeInconsistent)); got != 3 {
		t.Errorf(`evx_refusals_total{where="peer-witness",code="inconsistent"} = %v, want 3`, got)
	}

	// A process of FR that knows only an older size is told the size DE
	// holds, and changes nothing.
	_, _, err = ask(honest, 3, 4)
	if rej := wantRejection(t, "a stale request", err, transfer.CodeConflict); rej.KnownSize == nil || *rej.KnownSize != 5 {
		t.Fatalf("conflict naming size %v, want 5", rej.KnownSize)
	}
	wantKept("after a stale request", last)

	// Another process of DE records FR's checkpoint of size 8 between
	// this one's read and its write of size 7: the write fails, and the
	// larger checkpoint stays.
	racing := tw.signCheckpoint(t, "FR", honest.tree(t, 8))
	deStore.arm(func(st storage.Backend) {
		_, version, err := st.ReadVersion(ctx, witnessKey("FR"), transfer.MaxCheckpointSize)
		if err == nil {
			_, err = st.Replace(ctx, witnessKey("FR"), racing, version)
		}
		if err != nil {
			t.Errorf("the other process's write: %v", err)
		}
	})
	_, _, err = ask(honest, 5, 7)
	if rej := wantRejection(t, "a request overtaken by another process", err, transfer.CodeConflict); rej.KnownSize == nil || *rej.KnownSize != 8 {
		t.Fatalf("conflict naming size %v, want 8", rej.KnownSize)
	}
	wantKept("after the race", racing)

	// The honest history goes on from there.
	wantKept("after the history went on", cosigned(honest, 8, 12))
}

// A failed round of witnessing is counted under its reason, and logged.
func TestWitnessFailures(t *testing.T) {
	// forkedCheckpoint is a checkpoint of DE's log, signed with DE's key,
	// of a history DE never had: what FR holds as the last it cosigned.
	forkedCheckpoint := func(t *testing.T, tw *testWorld, n int64) []byte {
		return tw.signCheckpoint(t, "DE", newHandTree(t, "DE's other history", n).tree(t, n))
	}
	setFR := func(t *testing.T, tw *testWorld, data []byte) {
		if _, err := tw.Stores["FR"].Replace(t.Context(), witnessKey("DE"), data, ""); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		reason string
		noFR   bool // FR does not run
		// setup prepares the world before the gateways start; modify
		// adjusts a gateway's options; after checks what follows.
		setup  func(t *testing.T, tw *testWorld)
		modify func(tw *testWorld, id string, o *Options)
		after  func(t *testing.T, tw *testWorld, h *hookLog)
	}{
		{
			reason: witnessUnreachable, noFR: true,
			modify: func(tw *testWorld, id string, o *Options) { peerDown(o, "FR") },
		},
		{
			reason: witnessRefused,
			// FR does not witness DE: it has no log key for it.
			modify: func(tw *testWorld, id string, o *Options) {
				if id == "FR" {
					o.Peers = slices.Clone(o.Peers)
					o.Peers[slices.IndexFunc(o.Peers, func(p transfer.Peer) bool { return p.ID == "DE" })].LogKey = ""
				}
			},
			after: func(t *testing.T, tw *testWorld, h *hookLog) {
				if got := testutil.ToFloat64(tw.gw("FR").metrics.refusals.WithLabelValues("peer-witness", transfer.CodeNotAccepted)); got < 1 {
					t.Errorf(`FR's evx_refusals_total{where="peer-witness",code="not-accepted"} = %v, want at least 1`, got)
				}
			},
		},
		{
			reason: witnessBadCosignature,
			// DE pins another key as FR's witness key, under FR's name.
			modify: func(tw *testWorld, id string, o *Options) {
				if id == "DE" {
					o.Peers = slices.Clone(o.Peers)
					i := slices.IndexFunc(o.Peers, func(p transfer.Peer) bool { return p.ID == "FR" })
					o.Peers[i].WitnessKey = tw.Dev.Country("DE").Signing.Signer().WitnessVerifierKey(crypto.WitnessName("FR"))
				}
			},
			after: func(t *testing.T, tw *testWorld, h *hookLog) {
				if keys := storedKeys(t, tw.Stores["DE"], "log/cosignatures/"); len(keys) != 0 {
					t.Errorf("DE stored cosignatures that do not verify: %q", keys)
				}
			},
		},
		{
			reason: witnessInconsistent,
			setup:  func(t *testing.T, tw *testWorld) { setFR(t, tw, forkedCheckpoint(t, tw, 1)) },
			after: func(t *testing.T, tw *testWorld, h *hookLog) {
				// FR, the witness, records the security event.
				entries := securityEntries(logEntries(t, tw.gw("FR")), audit.KindInconsistentCheckpoint)
				if len(entries) != 1 || entries[0].Peer != "DE" {
					t.Errorf("FR's inconsistent-checkpoint entries: %+v, want one about DE", entries)
				}
				if got := testutil.ToFloat64(tw.gw("FR").metrics.securityEvents.WithLabelValues(string(audit.KindInconsistentCheckpoint))); got < 1 {
					t.Errorf(`FR's evx_security_events_total{kind="inconsistent-checkpoint"} = %v, want at least 1`, got)
				}
			},
		},
		{
			reason: witnessUnknownSize,
			setup:  func(t *testing.T, tw *testWorld) { setFR(t, tw, forkedCheckpoint(t, tw, 1000)) },
			after: func(t *testing.T, tw *testWorld, h *hookLog) {
				// Once FR's operator removes what FR holds, DE asks
				// again from scratch and is cosigned.
				if err := tw.Stores["FR"].Delete(t.Context(), witnessKey("DE")); err != nil {
					t.Fatal(err)
				}
				h.waitFor(t, "DE's checkpoint cosigned by FR from size 0", func(e hookEvent) bool {
					return e.what == "cosigned" && e.gateway == "DE" && e.peer == "FR" && e.old == 0
				})
			},
		},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			h := newHookLog()
			var tw *testWorld
			tw = newTestWorld(t, diskStore, func(id string, o *Options) {
				h.install(id, o)
				if tc.modify != nil {
					tc.modify(tw, id, o)
				}
			})
			if tc.setup != nil {
				tc.setup(t, tw)
			}
			tw.Start(t, "DE")
			if !tc.noFR {
				tw.Start(t, "FR")
			}
			h.waitFor(t, "a witnessing round of DE failed with reason "+tc.reason, func(e hookEvent) bool {
				return e.what == "witness-failed" && e.gateway == "DE" && e.peer == "FR" && e.id == tc.reason
			})
			m := tw.gw("DE").metrics.witnessFailures
			if got := testutil.ToFloat64(m.WithLabelValues("FR", tc.reason)); got < 1 {
				t.Errorf(`evx_witness_failures_total{peer="FR",reason=%q} = %v, want at least 1`, tc.reason, got)
			}
			for _, r := range witnessReasons {
				if got := testutil.ToFloat64(m.WithLabelValues("FR", r)); r != tc.reason && got != 0 {
					t.Errorf(`evx_witness_failures_total{peer="FR",reason=%q} = %v, want 0`, r, got)
				}
			}
			wantLoggedMatch(t, tw.Logs["DE"], "the failed witnessing round", func(e observer.LoggedEntry) bool {
				return e.Message == "witnessing of the transfer log failed" && e.ContextMap()["reason"] == tc.reason
			})
			if tc.after != nil {
				tc.after(t, tw, h)
			}
		})
	}
}

// When the log does not grow, its latest checkpoint is sent again once the
// last cosignature is a minute old by the gateway's clock; a refresh that
// fails is retried as a refresh, not dropped until the next minute.
func TestWitnessRefresh(t *testing.T) {
	clock := newTestClock()
	h := newHookLog()
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		h.install(id, o)
		if id == "DE" {
			o.Now = clock.Now
		}
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	ctx := t.Context()
	first := h.waitFor(t, "DE's first checkpoint cosigned by FR", func(e hookEvent) bool {
		return e.what == "cosigned" && e.gateway == "DE" && e.peer == "FR"
	})
	if _, cp, _ := tw.gw("DE").tlog.Checkpoint(ctx); cp.N != first.size {
		t.Fatalf("DE's log grew to %d after its start, from %d", cp.N, first.size)
	}
	refreshed := func(e hookEvent) bool {
		return e.what == "cosigned" && e.gateway == "DE" && e.peer == "FR" && e.old == first.size && e.size == first.size
	}
	if n := h.count(refreshed); n != 0 {
		t.Fatalf("DE's checkpoint cosigned again %d times before a minute passed", n)
	}

	// FR cannot read what it holds of DE's log, for a while: it refuses.
	held, version, err := tw.Stores["FR"].ReadVersion(ctx, witnessKey("DE"), transfer.MaxCheckpointSize)
	if err != nil {
		t.Fatal(err)
	}
	if version, err = tw.Stores["FR"].Replace(ctx, witnessKey("DE"), []byte("unreadable"), version); err != nil {
		t.Fatal(err)
	}
	clock.Add(witnessRefresh)
	h.waitFor(t, "DE's refresh refused by FR", func(e hookEvent) bool {
		return e.what == "witness-failed" && e.gateway == "DE" && e.id == witnessRefused
	})
	if _, err := tw.Stores["FR"].Replace(ctx, witnessKey("DE"), held, version); err != nil {
		t.Fatal(err)
	}
	// The retry is a refresh too, with the clock where it is.
	h.waitFor(t, "DE's checkpoint cosigned again by FR", refreshed)
}
