package gateway

import (
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"evx/agreement"
	"evx/api"
	"evx/crypto"
	"evx/transfer"
)

// TestPeerViewHostile sends FR summaries as a hostile or confused DE
// would, over DE's own authenticated connection: each that FR must not
// keep is refused with its code, or ignored, and FR's view stays the last
// good one.
func TestPeerViewHostile(t *testing.T) {
	c := &clock{}
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		o.Now = c.now
		if id == "DE" {
			// The test speaks for DE: DE's own exchanges would race it.
			o.withoutPeerViews = true
		}
	})
	tw.Start(t, "FR")
	ctx := t.Context()
	fr := tw.gw("FR")
	de := tw.Dev.Country("DE")
	cl, peer := tw.peerClient(t, "DE", "FR")
	seq := uint64(time.Now().UnixMicro())
	sign := func(key *crypto.SigningKey, s agreement.Summary) *crypto.Signed {
		t.Helper()
		body, err := s.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		signed, err := key.SignAgreementSummary(body)
		if err != nil {
			t.Fatal(err)
		}
		return signed
	}
	summary := func(status agreement.Status, reason string) agreement.Summary {
		seq++
		a := agreementWith("FR", func(a *agreement.Agreement) { a.Status, a.StatusReason = status, reason })
		return agreement.Summary{Gateway: "DE", Peer: "FR", Issued: time.Now(), Sequence: seq, Agreement: a}
	}
	wantCode := func(what string, err error, code string) {
		t.Helper()
		var rej *transfer.Rejection
		if !errors.As(err, &rej) || rej.Code != code {
			t.Fatalf("%s: %v, want %s", what, err, code)
		}
	}
	viewStatus := func() agreement.Status {
		pv, ok := fr.peerViews.get("DE")
		if !ok {
			return ""
		}
		return pv.agreement.Status
	}

	if _, err := cl.ExchangeAgreements(ctx, peer, sign(de.Signing.Signer(), summary(agreement.Active, ""))); err != nil {
		t.Fatalf("a good summary: %v", err)
	}
	if viewStatus() != agreement.Active {
		t.Fatalf("FR's view of DE: %q, want active", viewStatus())
	}
	c.advance(2 * minPeerViewInterval)

	other, err := crypto.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	_, err = cl.ExchangeAgreements(ctx, peer, sign(other, summary(agreement.Suspended, "forged")))
	wantCode("a summary signed by another key", err, transfer.CodeBadSignature)

	forIT := summary(agreement.Suspended, "for another peer")
	forIT.Peer, forIT.Agreement.Peer = "IT", "IT"
	_, err = cl.ExchangeAgreements(ctx, peer, sign(de.Signing.Signer(), forIT))
	wantCode("a summary meant for another peer", err, transfer.CodeMalformed)

	stale := summary(agreement.Suspended, "replayed")
	stale.Sequence = 1
	if _, err := cl.ExchangeAgreements(ctx, peer, sign(de.Signing.Signer(), stale)); err != nil {
		t.Fatalf("an older summary: %v, want it answered and ignored", err)
	}
	if viewStatus() != agreement.Active {
		t.Fatalf("FR's view of DE after bad summaries: %q, want active still", viewStatus())
	}

	// A newer one is kept; another within a second is refused for now,
	// so that a peer cannot have FR write without bound.
	if _, err := cl.ExchangeAgreements(ctx, peer, sign(de.Signing.Signer(), summary(agreement.Suspended, "audit"))); err != nil {
		t.Fatal(err)
	}
	if viewStatus() != agreement.Suspended {
		t.Fatalf("FR's view of DE: %q, want suspended", viewStatus())
	}
	_, err = cl.ExchangeAgreements(ctx, peer, sign(de.Signing.Signer(), summary(agreement.Active, "")))
	wantCode("a second summary within a second", err, transfer.CodeUnavailable)
	c.advance(2 * minPeerViewInterval)
	if _, err := cl.ExchangeAgreements(ctx, peer, sign(de.Signing.Signer(), summary(agreement.Active, ""))); err != nil {
		t.Fatal(err)
	}
	if viewStatus() != agreement.Active {
		t.Fatalf("FR's view of DE: %q, want active again", viewStatus())
	}

	// FR's operator sees DE's view, and the two sides agree.
	op, _ := tw.Client("FR", "operator")
	p, err := op.Agreement(ctx, "DE")
	if err != nil || p.Theirs == nil || p.Theirs.Status != "active" || p.Theirs.Gateway != "DE" {
		t.Fatalf("FR's pair with DE: %+v, %v", p, err)
	}
	d, err := op.AgreementDiff(ctx, "DE")
	if err != nil || d.Unknown || len(d.Mismatches) != 0 {
		t.Fatalf("diff of mirrored agreements: %+v, %v", d, err)
	}
	if _, err := op.Agreement(ctx, "IT"); !isAPIError(err, 404, string(api.CodeUnknownPeer)) {
		t.Fatalf("pair with a stranger: %v, want 404 unknown-peer", err)
	}
}

// TestAgreementDiffBetweenGateways: FR does not accept prosecution from
// DE, which DE's agreement allows. Once they exchanged summaries, DE's
// operator sees the mismatch, and DE refuses such a bundle at pre-flight
// with FR's code, before anything is sealed or sent.
func TestAgreementDiffBetweenGateways(t *testing.T) {
	views := make(chan *agreement.Agreement, 64)
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		if id == "FR" {
			o.Agreements = []*agreement.Agreement{agreementWith("DE", func(a *agreement.Agreement) {
				a.Inbound = []string{"criminal-investigation", "mutual-legal-assistance"}
			})}
			return
		}
		o.onPeerView = func(_ string, a *agreement.Agreement) { views <- a }
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	ctx := t.Context()
	waitView(t, views, func(a *agreement.Agreement) bool { return a != nil && len(a.Inbound) == 2 })
	op, _ := tw.Client("DE", "operator")
	d, err := op.AgreementDiff(ctx, "FR")
	want := `DE allows "prosecution" outbound; FR does not accept it inbound`
	if err != nil || d.Unknown || len(d.Mismatches) != 1 || d.Mismatches[0] != want {
		t.Fatalf("DE's diff with FR: %+v, %v; want %q", d, err, want)
	}
	forensics, _ := tw.Client("DE", "forensics")
	req := api.PreflightRequest{Recipients: []string{"FR/prosecutor"}, Purpose: "prosecution", Handling: "H2", TLP: "TLP:RED",
		Retention: "90d", Size: 1000}
	_, err = forensics.Preflight(ctx, req)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodePurposeNotAccepted || !strings.Contains(ae.Message, "FR's own agreement refuses") {
		t.Fatalf("pre-flight of a purpose FR does not accept: %v, want purpose-not-accepted naming FR's agreement", err)
	}
}

// TestExchangeNotHeldUpByDeadPeer: DE has a third peer, IT, whose address
// takes packets and never answers, so that DE's exchange with IT hangs
// until the handshake times out. A suspension of cooperation with FR
// still reaches FR at once, while DE is still trying IT.
func TestExchangeNotHeldUpByDeadPeer(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	trying := make(chan struct{})
	go func() {
		buf := make([]byte, 2048)
		if _, _, err := silent.ReadFrom(buf); err == nil {
			close(trying)
		}
		for {
			if _, _, err := silent.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	views := make(chan *agreement.Agreement, 64)
	itEnded := make(chan error, 16)
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		if id == "DE" {
			o.Peers = append(o.Peers, transfer.Peer{ID: "IT", Address: silent.LocalAddr().String(), CA: x509.NewCertPool(),
				SigningKey: o.Peers[0].SigningKey})
			o.onExchanged = func(peer string, err error) {
				if peer == "IT" {
					itEnded <- err
				}
			}
			return
		}
		o.onPeerView = func(_ string, a *agreement.Agreement) { views <- a }
	})
	tw.Start(t, "FR")
	tw.Start(t, "DE")
	ctx := t.Context()
	waitView(t, views, func(a *agreement.Agreement) bool { return a != nil && a.Status == agreement.Active })
	<-trying
	op, _ := tw.Client("DE", "operator")
	if _, err := op.SuspendAgreement(ctx, "FR", "audit"); err != nil {
		t.Fatal(err)
	}
	waitView(t, views, func(a *agreement.Agreement) bool { return a != nil && a.Status == agreement.Suspended })
	select {
	case err := <-itEnded:
		t.Fatalf("DE's exchange with IT ended (%v) before FR learned of the suspension: it held the notice up", err)
	default:
	}
}
