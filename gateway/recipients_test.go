package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"evx/agreement"
	"evx/api"
	"evx/audit"
	"evx/client"
	"evx/crypto"
	"evx/internal/devenv"
	"evx/internal/evxtest"
	"evx/transfer"
)

// notAuthorised is the sentence of both gateways' refusal of FR/prosecutor,
// authorised for prosecution only, for the tests' bundles
// (mutual-legal-assistance).
const notAuthorised = `recipient FR/prosecutor is not authorised for purpose "mutual-legal-assistance"; it is for: prosecution`

// prosecutionOnly authorises FR/prosecutor for prosecution only.
func prosecutionOnly(id string, o *Options) {
	if id != "FR" {
		return
	}
	for i := range o.Users {
		if o.Users[i].Unit == "FR/prosecutor" {
			o.Users[i].Purposes = []string{"prosecution"}
		}
	}
}

// peerViewSeen returns a hook for Options.onPeerView, and a channel that
// receives the peers whose summaries it saw.
func peerViewSeen() (func(string, *agreement.Agreement), <-chan string) {
	seen := make(chan string, 64)
	return func(peer string, _ *agreement.Agreement) {
		select {
		case seen <- peer:
		default:
		}
	}, seen
}

// waitPeerView waits until seen receives peer.
func waitPeerView(t *testing.T, seen <-chan string, peer string) {
	t.Helper()
	for {
		select {
		case p := <-seen:
			if p == peer {
				return
			}
		case <-t.Context().Done():
			t.Fatalf("no agreement summary of %s arrived", peer)
		}
	}
}

// FR's signed directory lists FR/prosecutor's purposes for DE, which
// exchanged agreement summaries with it, and DE refuses a pre-flight and an
// upload (both modes) to it for another purpose with FR's code and
// sentence, before anything is stored or sent: FR hears of no offer. The
// upload's refusals are agreement decisions in DE's log, with the
// agreement's version; the pre-flight records nothing.
func TestRecipientNotAuthorisedAtSender(t *testing.T) {
	hook, seen := peerViewSeen()
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		prosecutionOnly(id, o)
		if id == "FR" {
			o.onPeerView = hook
		}
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	waitPeerView(t, seen, "DE")
	ctx := t.Context()
	de, deKey := tw.Client("DE", "forensics")

	e, err := de.Lookup(ctx, "FR/prosecutor")
	if err != nil || !slices.Equal(e.Purposes, []string{"prosecution"}) {
		t.Fatalf("DE's lookup of FR/prosecutor: %+v, %v; want its purposes from FR's directory", e, err)
	}

	b := evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, 1000)
	wantRefusal := func(what string, err error) {
		t.Helper()
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != api.CodeRecipientNotAuthorised || ae.HTTPStatus != 403 || ae.Message != notAuthorised {
			t.Fatalf("%s: %v, want 403 %s: %s", what, err, api.CodeRecipientNotAuthorised, notAuthorised)
		}
	}
	deLog, frLog := logSize(t, tw.gw("DE")), logSize(t, tw.gw("FR"))
	_, err = de.Preflight(ctx, preflightFor(b))
	wantRefusal("pre-flight", err)
	if n := logSize(t, tw.gw("DE")); n != deLog {
		t.Errorf("the pre-flight added %d entries to DE's log, want none", n-deLog)
	}
	// Another purpose the recipient is authorised for passes.
	ok := preflightFor(b)
	ok.Purpose = "prosecution"
	if _, err := de.Preflight(ctx, ok); err != nil {
		t.Fatalf("pre-flight for prosecution: %v", err)
	}

	for _, mode := range []api.DeliveryMode{api.Queue, api.Direct} {
		deBefore, frBefore := bundleObjects(t, tw, "DE"), bundleObjects(t, tw, "FR")
		_, err := uploadMode(ctx, de, b, mode)
		wantRefusal(string(mode)+" upload", err)
		wantUnchanged(t, "DE's storage", deBefore, bundleObjects(t, tw, "DE"))
		wantUnchanged(t, "FR's storage", frBefore, bundleObjects(t, tw, "FR"))
	}
	wantDecisions(t, tw.gw("DE"), b.Env.BundleID, string(api.CodeRecipientNotAuthorised), audit.Outbound, 2)
	for _, e := range decisions(t, tw.gw("DE"), b.Env.BundleID) {
		if e.Reason != notAuthorised || e.Actor != audit.UnitActor("DE/forensics") {
			t.Errorf("DE's decision: actor %s, reason %q", e.Actor, e.Reason)
		}
	}
	for _, e := range logEntries(t, tw.gw("FR"))[frLog:] {
		if e.BundleID == b.Env.BundleID {
			t.Errorf("FR's log has %s about a bundle DE refused", e.Event)
		}
	}
}

// A peer directory whose entries list no purposes, as a gateway that
// predates them signs it, is not checked by the sender: DE takes the
// upload, and FR refuses the offer itself, storing nothing. Here DE reads
// FR's directory from the copy it keeps, signed by FR without purposes,
// because FR's directory cannot be fetched now.
func TestRecipientPurposesUnknownToSender(t *testing.T) {
	lg := newLiveGateways()
	lg.setUnreachable("FR", true)
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		prosecutionOnly(id, o)
		o.directoryFault = lg.fault
	})
	tw.Start(t, "FR")
	old := tw.gw("FR").localDirectory()
	for i := range old.Units {
		old.Units[i].Purposes = nil
	}
	signed, err := tw.Dev.Country("FR").Signing.Signer().SignDirectory(old)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(signed.Body), "purposes") {
		t.Fatalf("FR's directory without purposes: %s", signed.Body)
	}
	if err := putJSON(t.Context(), tw.Stores["DE"], directoryKey("FR", signed, time.Now()), signed); err != nil {
		t.Fatal(err)
	}
	tw.Start(t, "DE")
	ctx := t.Context()
	de, deKey := tw.Client("DE", "forensics")

	b := evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, 1000)
	if _, err := de.Preflight(ctx, preflightFor(b)); err != nil {
		t.Fatalf("pre-flight: %v, want it allowed: DE does not know the recipient's purposes", err)
	}
	if _, err := uploadMode(ctx, de, b, api.Queue); err != nil {
		t.Fatalf("upload: %v, want it taken", err)
	}
	_, err = client.WaitDelivered(ctx, de, b.Env.BundleID, 20*time.Second)
	var refused *client.RefusedError
	if !errors.As(err, &refused) || refused.RefusalCode() != transfer.CodeRecipientNotAuth || refused.Refusal.Reason != notAuthorised {
		t.Fatalf("delivery: %v, want FR's refusal %s: %s", err, transfer.CodeRecipientNotAuth, notAuthorised)
	}
	if keys := inboxKeys(t, tw, "FR", b.Env.BundleID); len(keys) != 0 {
		t.Errorf("FR stored %q of a bundle it refused", keys)
	}
	wantDecisions(t, tw.gw("FR"), b.Env.BundleID, transfer.CodeRecipientNotAuth, audit.Inbound, 1)
}

// FR lists its recipients' purposes only in a directory for a peer known
// to read them, one that sent it a signed agreement summary lately: a
// gateway older than purposes, which sends none, gets the directory it can
// verify, every member known to it; so does a peer whose last summary is
// older than peerPurposesFresh, as one gone back to older code.
func TestDirectoryPurposesForPeersThatReadThem(t *testing.T) {
	c := &clock{}
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		prosecutionOnly(id, o)
		o.Now = c.now
	})
	// DE is down: FR exchanges no summary with it.
	tw.Start(t, "FR")
	ctx := t.Context()
	tc, fr := tw.peerClient(t, "DE", "FR")
	frKey := crypto.FormatSigningKey(tw.Dev.Country("FR").Signing.SigningPublicKey())
	purposes := func(what string) []string {
		t.Helper()
		signed, d, err := tc.FetchSignedDirectory(ctx, fr)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if _, err := crypto.VerifyDirectory(signed, frKey, "FR"); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		e, ok := d.Lookup("FR/prosecutor")
		if !ok {
			t.Fatalf("%s: FR/prosecutor is not listed", what)
		}
		if e.Purposes == nil {
			// What a verifier before purposes reads: nothing unknown.
			var old struct {
				Format, Gateway, Issued string
				Units                   []struct {
					Unit, Role   string
					AgeRecipient string `json:"age_recipient"`
					SigningKey   string `json:"signing_key"`
				}
			}
			dec := json.NewDecoder(bytes.NewReader(signed.Body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&old); err != nil {
				t.Errorf("%s: a verifier before purposes refuses it: %v", what, err)
			}
		}
		return e.Purposes
	}
	if p := purposes("before DE's summary"); p != nil {
		t.Errorf("before DE's summary, FR lists purposes %q for it", p)
	}

	s := agreement.Summary{Gateway: "DE", Peer: "FR", Issued: c.now().UTC(), Sequence: agreement.NextSequence(0, c.now()),
		Agreement: devenv.DevAgreement("FR")}
	body, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	mine, err := tw.Dev.Country("DE").Signing.Signer().SignAgreementSummary(body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tc.ExchangeAgreements(ctx, fr, mine); err != nil {
		t.Fatal(err)
	}
	if p := purposes("after DE's summary"); !slices.Equal(p, []string{"prosecution"}) {
		t.Errorf("after DE's summary, FR lists purposes %q for FR/prosecutor, want [prosecution]", p)
	}

	c.advance(peerPurposesFresh)
	if p := purposes("once DE's summary is old"); p != nil {
		t.Errorf("once DE's summary is old, FR lists purposes %q for it", p)
	}
}
