package gateway

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"evx/agreement"
	"evx/api"
	"evx/audit"
	"evx/crypto"
	"evx/internal/evxtest"
	"evx/storage"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// midwayStore pauses the first payload written under prefix once at bytes
// of it have been read, until release is closed: a test then acts while
// the transfer is in flight, as deterministically as it needs.
type midwayStore struct {
	storage.Backend
	prefix  string
	at      int64
	once    sync.Once
	reached chan struct{}
	release chan struct{}
}

func newMidwayStore(b storage.Backend, prefix string, at int64) *midwayStore {
	return &midwayStore{Backend: b, prefix: prefix, at: at, reached: make(chan struct{}), release: make(chan struct{})}
}

func (m *midwayStore) Create(ctx context.Context, key string, r io.Reader, size int64) error {
	if strings.HasPrefix(key, m.prefix) && strings.HasSuffix(key, "/"+payloadFile) {
		r = &midwayReader{m: m, r: r}
	}
	return m.Backend.Create(ctx, key, r, size)
}

type midwayReader struct {
	m    *midwayStore
	r    io.Reader
	read int64
}

func (mr *midwayReader) Read(p []byte) (int, error) {
	if mr.read >= mr.m.at {
		mr.m.once.Do(func() { close(mr.m.reached) })
		<-mr.m.release
	}
	n, err := mr.r.Read(p)
	mr.read += int64(n)
	return n, err
}

// TestSuspendDuringTransfer suspends cooperation while a 256 MiB bundle
// flows from DE to FR, at either end: the transfer stops with
// agreement-suspended, FR stores nothing of it, DE holds it queued (not
// failed), the other side learns of the suspension from the signed notice
// and refuses new uploads at pre-flight, and after resume the bundle is
// delivered whole, its hash verified.
func TestSuspendDuringTransfer(t *testing.T) {
	for _, side := range []string{"FR", "DE"} {
		t.Run("suspended by "+side, func(t *testing.T) { testSuspendDuringTransfer(t, side) })
	}
}

func testSuspendDuringTransfer(t *testing.T, side string) {
	const size = 256 << 20
	var mid *midwayStore
	views := map[string]chan *agreement.Agreement{"DE": make(chan *agreement.Agreement, 64), "FR": make(chan *agreement.Agreement, 64)}
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		if id == "FR" {
			mid = newMidwayStore(o.Storage, inboxPrefix, 8<<20)
			o.Storage = mid
		}
		o.onPeerView = func(peer string, a *agreement.Agreement) { views[id] <- a }
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	ctx := t.Context()
	other := map[string]string{"DE": "FR", "FR": "DE"}[side]
	// Each side has the other's summary: active.
	for _, id := range []string{"DE", "FR"} {
		waitView(t, views[id], func(a *agreement.Agreement) bool { return a != nil && a.Status == agreement.Active })
	}
	forensics, deKey := tw.Client("DE", "forensics")
	prosecutor, _ := tw.Client("FR", "prosecutor")
	b := evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, size)
	st, err := upload(ctx, forensics, b)
	if err != nil || st.State != api.StateQueued {
		t.Fatalf("upload: %+v, %v", st, err)
	}
	select {
	case <-mid.reached:
	case <-ctx.Done():
		t.Fatal("the transfer never reached FR's storage")
	}

	op, _ := tw.Client(side, "operator")
	r, err := op.SuspendAgreement(ctx, other, "audit of case 2026/77")
	if err != nil || !r.Changed || !strings.Contains(strings.Join(r.Changes, "\n"), "1 transfers in flight") {
		t.Fatalf("suspend: %+v, %v; want one transfer stopped", r, err)
	}
	close(mid.release)
	// The other side is told, signed, over the peer connection.
	waitView(t, views[other], func(a *agreement.Agreement) bool {
		return a != nil && a.Status == agreement.Suspended && strings.Contains(a.StatusReason, "audit of case 2026/77")
	})
	if got := testutil.ToFloat64(tw.gw(other).metrics.peerAgreement.WithLabelValues(side, "suspended")); got != 1 {
		t.Errorf("%s's evx_agreement_peer_status{%s,suspended} = %v, want 1", other, side, got)
	}
	// Held, not failed: DE keeps it queued.
	if st, err := forensics.OutboxStatus(ctx, b.Env.BundleID); err != nil || st.State != api.StateQueued {
		t.Fatalf("status while suspended: %+v, %v; want queued", st, err)
	}
	// FR stored nothing of it, not even part.
	if keys := inboxKeys(t, tw, "FR", b.Env.BundleID); len(keys) != 0 {
		t.Fatalf("FR stored %q of a stopped transfer", keys)
	}
	// DE's units see the suspension at pre-flight, whichever side made it.
	_, err = forensics.Preflight(ctx, preflightOf(b))
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeAgreementSuspended || !strings.Contains(ae.Message, "audit of case 2026/77") {
		t.Fatalf("pre-flight while suspended: %v, want agreement-suspended with the reason", err)
	}
	// Both sides logged it: the operator's side as a unit's act, the other
	// as the peer's notice.
	wantSuspendedEntry(t, tw.gw(side), other, audit.UnitActor(side+"/operator"))
	wantSuspendedEntry(t, tw.gw(other), side, audit.PeerActor(side))

	if _, err := op.ResumeAgreement(ctx, other); err != nil {
		t.Fatal(err)
	}
	st, err = waitDelivered(ctx, forensics, b.Env.BundleID)
	if err != nil || st.State != api.StateDelivered {
		t.Fatalf("after resume: %+v, %v; want delivered", st, err)
	}
	h := sha256.New()
	if err := prosecutor.Payload(ctx, b.Env.BundleID, b.Env.PayloadSize, h); err != nil {
		t.Fatal(err)
	}
	if got := [32]byte(h.Sum(nil)); got != b.Env.PayloadSHA256 {
		t.Fatalf("delivered payload's SHA-256 %x, want %x", got, b.Env.PayloadSHA256)
	}
}

// waitView waits until a gateway keeps a view of its peer's agreement
// that matches: views that do not are skipped.
func waitView(t *testing.T, c chan *agreement.Agreement, match func(*agreement.Agreement) bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case a := <-c:
			if match(a) {
				return
			}
		case <-deadline:
			t.Fatal("no matching agreement summary from the peer within 30 s")
		}
	}
}

// waitDelivered waits until bundle id is delivered or refused.
func waitDelivered(ctx context.Context, c interface {
	OutboxStatusWait(context.Context, string, time.Duration) (*api.OutboxStatus, error)
}, id string) (*api.OutboxStatus, error) {
	for {
		st, err := c.OutboxStatusWait(ctx, id, api.MaxStatusWait)
		if err != nil || st.State != api.StateQueued {
			return st, err
		}
	}
}

func wantSuspendedEntry(t *testing.T, g *Gateway, peer, actor string) {
	t.Helper()
	for _, e := range logEntries(t, g) {
		if e.Event == audit.EventAgreementSuspended && e.Peer == peer && e.Actor == actor && strings.Contains(e.Reason, "audit of case 2026/77") {
			return
		}
	}
	t.Errorf("%s logged no agreement-suspended about %s by %s with the reason", g.opts.ID, peer, actor)
}

// preflightOf is the pre-flight of bundle b.
func preflightOf(b *evxtest.Bundle) api.PreflightRequest {
	var to []string
	for _, r := range b.Env.Recipients {
		to = append(to, r.Unit)
	}
	ru := b.Env.RetainUntil
	return api.PreflightRequest{Recipients: to, Purpose: b.Env.Purpose, Handling: b.Env.Handling, TLP: b.Env.TLP,
		RetainUntil: &ru, Size: b.Env.PayloadSize}
}
