package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/json"
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
	"evx/transfer"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// midwayStore pauses the first payload written under prefix once at bytes
// of it have been read, until release is closed: a test then acts while
// the transfer is in flight, as deterministically as it needs.
type midwayStore struct {
	lockingStore
	prefix  string
	at      int64
	once    sync.Once
	reached chan struct{}
	release chan struct{}
}

func newMidwayStore(b lockingStore, prefix string, at int64) *midwayStore {
	return &midwayStore{lockingStore: b, prefix: prefix, at: at, reached: make(chan struct{}), release: make(chan struct{})}
}

func (m *midwayStore) Create(ctx context.Context, key string, r io.Reader, size int64) error {
	if strings.HasPrefix(key, m.prefix) && strings.HasSuffix(key, "/"+payloadFile) {
		r = &midwayReader{m: m, r: r}
	}
	return m.lockingStore.Create(ctx, key, r, size)
}

func (m *midwayStore) CreateLocked(ctx context.Context, key string, r io.Reader, size int64, until time.Time) error {
	if strings.HasPrefix(key, m.prefix) && isOuterLayerKey(key) {
		r = &midwayReader{m: m, r: r}
	}
	return m.lockingStore.CreateLocked(ctx, key, r, size, until)
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
	// The receiver's stop is the one the issue asks of 256 MiB; the
	// sender's stops the same stream from the other end, and a smaller
	// bundle keeps the race detector's run short.
	for _, tc := range []struct {
		side string
		size int
	}{{"FR", 256 << 20}, {"DE", 32 << 20}} {
		t.Run("suspended by "+tc.side, func(t *testing.T) { testSuspendDuringTransfer(t, tc.side, tc.size) })
	}
}

func testSuspendDuringTransfer(t *testing.T, side string, size int) {
	var mid *midwayStore
	views := map[string]chan *agreement.Agreement{"DE": make(chan *agreement.Agreement, 64), "FR": make(chan *agreement.Agreement, 64)}
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		if id == "FR" {
			mid = newMidwayStore(locking(t, o.Storage), inboxPrefix, 8<<20)
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

// TestSuspensionHoldsQueued: a bundle queued for FR while FR is down is
// held once DE's operator suspends cooperation, across a restart of DE
// (the suspension is kept in storage), and delivered after resume; an
// upload while suspended is refused at once. On both backends.
func TestSuspensionHoldsQueued(t *testing.T) {
	forEachBackend(t, func(t *testing.T, newStore func(testing.TB, string) storage.Backend) {
		held := make(chan error, 100)
		tw := newTestWorld(t, newStore, func(id string, o *Options) {
			if id == "DE" {
				o.onDeliveryFailed = func(_ string, err error) { held <- err }
			}
		})
		tw.Start(t, "DE")
		ctx := t.Context()
		forensics, deKey := tw.Client("DE", "forensics")
		op, _ := tw.Client("DE", "operator")
		fr := []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}
		// FR is down: DE looks its recipient up while it is up, once.
		tw.Start(t, "FR")
		b := evxtest.Seal(t, deKey, fr, 1000)
		if _, err := forensics.Preflight(ctx, preflightOf(b)); err != nil {
			t.Fatal(err)
		}
		tw.Stop(t, "FR")
		if st, err := upload(ctx, forensics, b); err != nil || st.State != api.StateQueued {
			t.Fatalf("upload: %+v, %v", st, err)
		}
		if _, err := op.SuspendAgreement(ctx, "FR", "audit of case 2026/77"); err != nil {
			t.Fatal(err)
		}
		if _, err := op.SuspendAgreement(ctx, "FR", "again"); !isAPIError(err, 409, string(api.CodeAlreadySuspended)) {
			t.Fatalf("a second suspension: %v, want 409 already-suspended", err)
		}
		tw.Stop(t, "DE")
		tw.Start(t, "DE")
		tw.Start(t, "FR")
		forensics, _ = tw.Client("DE", "forensics") // at DE's new address
		op, _ = tw.Client("DE", "operator")
		// Held at DE by its own suspension, which the restart kept.
		for {
			var rej *transfer.Rejection
			if err := <-held; errors.As(err, &rej) && rej.Code == string(agreement.CodeSuspended) {
				break
			}
		}
		if st, err := forensics.OutboxStatus(ctx, b.Env.BundleID); err != nil || st.State != api.StateQueued {
			t.Fatalf("held bundle: %+v, %v; want queued", st, err)
		}
		_, err := upload(ctx, forensics, evxtest.Seal(t, deKey, fr, 1000))
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != api.CodeAgreementSuspended || !strings.Contains(ae.Message, "audit of case 2026/77") {
			t.Fatalf("upload while suspended: %v, want agreement-suspended", err)
		}
		pair, err := op.Agreement(ctx, "FR")
		if err != nil || pair.Suspension == nil || pair.Suspension.Reason != "audit of case 2026/77" || pair.Suspension.By != "DE/operator" || pair.Ours.State != "suspended" {
			t.Fatalf("DE's pair with FR while suspended: %+v, %v", pair, err)
		}
		if _, err := op.ResumeAgreement(ctx, "FR"); err != nil {
			t.Fatal(err)
		}
		if _, err := op.ResumeAgreement(ctx, "FR"); !isAPIError(err, 409, string(api.CodeNotSuspended)) {
			t.Fatalf("a second resume: %v, want 409 not-suspended", err)
		}
		if st, err := waitDelivered(ctx, forensics, b.Env.BundleID); err != nil || st.State != api.StateDelivered {
			t.Fatalf("after resume: %+v, %v", st, err)
		}
	})
}

// TestSuspendBadInput: a suspension needs a peer and a reason, and only
// operators suspend.
func TestSuspendBadInput(t *testing.T) {
	tw := startWorld(t, diskStore)
	ctx := t.Context()
	op, _ := tw.Client("DE", "operator")
	for _, tc := range []struct {
		peer, reason string
		status       int
		code         api.Code
	}{
		{"FR", "", 400, api.CodeBadReason},
		{"FR", strings.Repeat("x", api.MaxSuspendReason+1), 400, api.CodeBadReason},
		{"FR", "two\nlines", 400, api.CodeBadReason},
		{"IT", "audit", 404, api.CodeUnknownPeer},
	} {
		if _, err := op.SuspendAgreement(ctx, tc.peer, tc.reason); !isAPIError(err, tc.status, string(tc.code)) {
			t.Errorf("suspend %s %q: %v, want %d %s", tc.peer, tc.reason, err, tc.status, tc.code)
		}
	}
	forensics, _ := tw.Client("DE", "forensics")
	if _, err := forensics.SuspendAgreement(ctx, "FR", "audit"); !isAPIError(err, 403, string(api.CodeForbidden)) {
		t.Errorf("suspension by a submitter: %v, want 403", err)
	}
	if pair, err := op.Agreement(ctx, "FR"); err != nil || pair.Suspension != nil {
		t.Errorf("after refused suspensions: %+v, %v; want none", pair, err)
	}
}

// TestSuspensionFromAnotherProcess: a suspension that another process of
// DE stored on the same storage decides here once DE reads the
// suspensions again, as it does every minute.
func TestSuspensionFromAnotherProcess(t *testing.T) {
	tw := startWorld(t, diskStore)
	ctx := t.Context()
	de := tw.gw("DE")
	forensics, deKey := tw.Client("DE", "forensics")
	b := evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, 1000)
	// Answered once DE runs: it has read the suspensions at its start.
	if _, err := forensics.Preflight(ctx, preflightOf(b)); err != nil {
		t.Fatal(err)
	}
	doc := suspensionsDoc{Format: suspensionsFormat, Suspensions: map[string]api.Suspension{
		"FR": {Reason: "set by the other replica", By: "DE/operator", At: time.Now().UTC()}}}
	data, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Stores["DE"].Replace(ctx, suspensionsKey, data, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := forensics.Preflight(ctx, preflightOf(b)); err != nil {
		t.Fatalf("pre-flight before DE read the suspension: %v", err)
	}
	de.refreshSuspensions(ctx)
	_, err = forensics.Preflight(ctx, preflightOf(b))
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeAgreementSuspended || !strings.Contains(ae.Message, "set by the other replica") {
		t.Fatalf("pre-flight after: %v, want agreement-suspended", err)
	}
}

// TestSuspendWithoutAgreement: cooperation with a peer without an
// agreement can be suspended too (nothing flows anyway), and resume says
// that nothing will flow until one is configured.
func TestSuspendWithoutAgreement(t *testing.T) {
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		if id == "DE" {
			o.Agreements = nil
		}
	})
	tw.Start(t, "DE")
	ctx := t.Context()
	op, _ := tw.Client("DE", "operator")
	if r, err := op.SuspendAgreement(ctx, "FR", "audit"); err != nil || !r.Changed {
		t.Fatalf("suspend: %+v, %v", r, err)
	}
	r, err := op.ResumeAgreement(ctx, "FR")
	if err != nil || !strings.Contains(strings.Join(r.Changes, "\n"), "there is no agreement with FR") {
		t.Fatalf("resume: %+v, %v", r, err)
	}
}
