package gateway

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"evx/agreement"
	"evx/crypto"
	"evx/internal/evxtest"
	"evx/transfer"
)

// envelopeInputs are the inputs of an envelope that an agreement speaks
// of, as indexes into the vocabularies, hours and bytes.
type envelopeInputs struct {
	purpose, handling, tlp uint8
	retainHours            uint16
	createdShift           int16 // hours
	size                   uint16
}

// datedAhead is a bundle dated two days ahead so that its retention seems
// to fit the cap: the gateway counts it from its own time.
var datedAhead = envelopeInputs{2, 1, 0, 24 * 7, 48, 1000}

// TestReceiveRefusedNotStored drives FR's Receive with envelopes from DE's
// submitter made of combinations of purpose, handling code, TLP label,
// retention, creation time and size, against an agreement and a recipient
// that allow only some of each: whenever the receiver's agreement refuses
// the bundle, the offer is rejected, no payload byte is asked for and
// nothing of the bundle is stored. The cases are the chosen ones below and
// random ones from a fixed seed (-agreement-cases sets how many).
// (A Go fuzz target cannot run the test world, which logs through the
// test.)
func TestReceiveRefusedNotStored(t *testing.T) {
	// Purposes: 0 criminal-investigation (accepted, but not the
	// recipient's), 1 prosecution (the recipient's, not accepted), 2
	// mutual-legal-assistance (both); handling 1 and 2, TLP 0 and 2 are
	// accepted.
	cases := []envelopeInputs{
		{2, 1, 0, 24, 0, 1000},     // allowed
		{2, 2, 2, 1, 0, 1},         // allowed
		{1, 1, 0, 24, 0, 1000},     // purpose
		{0, 1, 0, 24, 0, 1000},     // recipient
		{2, 1, 0, 24 * 8, 0, 1000}, // over the cap
		datedAhead,
		{2, 1, 0, 24 * 7, -48, 1000}, // dated back
		{2, 0, 0, 24, 0, 1000},       // handling
		{2, 1, 4, 24, 0, 1000},       // TLP
		{2, 1, 0, 24, 0, 7000},       // size
	}
	rnd := rand.New(rand.NewPCG(9, 2026))
	for range *agreementCases {
		cases = append(cases, envelopeInputs{uint8(rnd.UintN(256)), uint8(rnd.UintN(256)), uint8(rnd.UintN(256)),
			uint16(rnd.UintN(24 * 400)), int16(rnd.IntN(24*30) - 24*15), uint16(rnd.UintN(9000))})
	}
	fr := agreementWith("DE", func(a *agreement.Agreement) {
		a.Inbound = []string{"criminal-investigation", "mutual-legal-assistance"}
		a.Handling, a.TLP = []string{"H1", "H2"}, []string{"TLP:AMBER", "TLP:RED"}
		a.MaxRetention = map[string]time.Duration{"criminal-investigation": 30 * 24 * time.Hour, "mutual-legal-assistance": 7 * 24 * time.Hour}
		a.MaxBundleSize = 8000 // of ciphertext: 1,000 bytes of evidence seal to about 3,300
	})
	prosecutorPurposes := []string{"mutual-legal-assistance", "prosecution"}
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		if id != "FR" {
			// A sender that knows nothing of FR's agreement offers
			// whatever its own allows: FR's checks alone decide.
			o.withoutPeerViews = true
			return
		}
		o.Agreements = []*agreement.Agreement{fr}
		for i := range o.Users {
			if o.Users[i].Unit == "FR/prosecutor" {
				o.Users[i].Purposes = prosecutorPurposes
			}
		}
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	deKey := tw.Dev.Country("DE").User("forensics").Key
	g := tw.gw("FR")
	var refused, stored int
	for _, in := range cases {
		purpose, handling, tlp, retainHours, createdShift, size := in.purpose, in.handling, in.tlp, in.retainHours, in.createdShift, in.size
		b := evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, int(size%9000)+1)
		b = resign(t, b, deKey, func(e *crypto.Envelope) {
			e.Purpose = crypto.Purposes[int(purpose)%len(crypto.Purposes)]
			e.Handling = crypto.HandlingCodes[int(handling)%len(crypto.HandlingCodes)]
			e.TLP = crypto.TLPLabels[int(tlp)%len(crypto.TLPLabels)]
			e.Created = e.Created.Add(time.Duration(createdShift) * time.Hour)
			e.RetainUntil = e.Created.Add(time.Duration(max(retainHours%(24*400), 1)) * time.Hour)
		})
		env, err := crypto.ParseEnvelope(b.EnvJSON)
		if err != nil {
			continue // not an envelope a peer could offer
		}
		// The decision as the agreement states it, from the envelope's
		// own creation time: the gateway is at least as strict.
		d := agreement.Decide("FR", fr, time.Now(), agreement.Request{Peer: "DE", Direction: agreement.Inbound,
			Purpose: env.Purpose, Handling: env.Handling, TLP: env.TLP, Retention: env.RetainUntil.Sub(env.Created),
			Size: env.PayloadSize, Recipients: []agreement.Recipient{{Unit: "FR/prosecutor", Purposes: prosecutorPurposes}}})
		asked := false
		accept := func(int64) (io.Reader, error) {
			asked = true
			return bytes.NewReader(b.Payload), nil
		}
		_, err = g.Receive(t.Context(), "DE", &transfer.Offer{Envelope: env, EnvelopeJSON: b.EnvJSON, Signature: b.Sig}, accept)
		if in == datedAhead && err == nil {
			t.Errorf("%+v: a bundle dated ahead to fit the retention cap was stored", in)
		}
		if d.Allowed() {
			if err == nil {
				stored++
			}
			continue
		}
		refused++
		var rej *transfer.Rejection
		if !errors.As(err, &rej) || rej.Temporary() {
			t.Fatalf("%+v: the agreement refuses (%s), Receive answered %v", in, d.Code, err)
		}
		if asked {
			t.Errorf("the agreement refuses (%s), and Receive asked for the payload", d.Code)
		}
		if keys := inboxKeys(t, tw, "FR", env.BundleID); len(keys) != 0 {
			t.Errorf("the agreement refuses (%s), and FR stored %q", d.Code, keys)
		}
	}
	// The cases reach the agreement both ways, not just a check before.
	if refused == 0 || stored == 0 {
		t.Errorf("of %d cases, %d were refused by the agreement and %d stored; want some of each", len(cases), refused, stored)
	}
	t.Logf("%d cases: %d refused by the agreement, %d stored", len(cases), refused, stored)
}

var agreementCases = flag.Int("agreement-cases", 40, "random cases of TestReceiveRefusedNotStored")
