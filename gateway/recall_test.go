package gateway

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"evx/api"
	"evx/client"
	"evx/crypto"
	"evx/internal/evxtest"
	"evx/storage"
	"evx/transfer"
)

// recallWorld runs DE and FR on storage from newStore, FR on a clock the
// test moves on, and returns a function that sends a bundle from
// DE/forensics to FR/prosecutor, delivered.
func recallWorld(t *testing.T, newStore func(testing.TB, string) storage.Backend) (*testWorld, *clock, func() *evxtest.Bundle) {
	t.Helper()
	c := &clock{}
	tw := newTestWorld(t, newStore, func(id string, o *Options) {
		if id == "FR" {
			o.Now = c.now
		}
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	de, deKey := tw.Client("DE", "forensics")
	send := func() *evxtest.Bundle {
		t.Helper()
		b := evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, 1000)
		if _, err := upload(t.Context(), de, b); err != nil {
			t.Fatal(err)
		}
		if _, err := client.WaitDelivered(t.Context(), de, b.Env.BundleID, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		return b
	}
	return tw, c, send
}

// recallEvents returns the recall events of g's transfer log about bundle
// id, each as "event actor peer retain_until code".
func recallEvents(t *testing.T, g *Gateway, id string) []string {
	t.Helper()
	var out []string
	for _, e := range logEntries(t, g) {
		if e.BundleID != id || !strings.HasPrefix(string(e.Event), "recall-") {
			continue
		}
		if e.EnvelopeSHA256 == ([32]byte{}) || e.Purpose == "" {
			t.Errorf("%s entry without the bundle's members: %+v", e.Event, e)
		}
		until := ""
		if !e.RetainUntil.IsZero() {
			until = e.RetainUntil.UTC().Format(time.RFC3339)
		}
		out = append(out, strings.Join([]string{string(e.Event), e.Actor, e.Peer, until, e.Code}, " "))
	}
	return out
}

func wantEvents(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s:\n%s\nwant\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestRecall(t *testing.T) { forEachBackend(t, testRecall) }

// A recall by the bundle's sender is forwarded, applied and acknowledged:
// after it FR's reads answer expired, the ack verifies under FR's key, and
// both transfer logs hold it. A shortening to a later date is applied
// too, and one to a date after it is declined as not shorter.
func testRecall(t *testing.T, newStore func(testing.TB, string) storage.Backend) {
	tw, clk, send := recallWorld(t, newStore)
	ctx := t.Context()
	de, deKey := tw.Client("DE", "forensics")
	fr, _ := tw.Client("FR", "prosecutor")
	frKey := tw.Peer("FR").SigningKey

	t.Run("recall", func(t *testing.T) {
		b := send()
		id := b.Env.BundleID
		if _, err := fr.InboxEntry(ctx, id); err != nil {
			t.Fatal(err)
		}
		a, err := de.Recall(ctx, deKey, id, time.Time{}, "seized in error")
		if err != nil {
			t.Fatal(err)
		}
		if !a.Applied || a.Peer != "FR" || a.Code != "" || a.RetainUntil.After(clk.now().Add(2*time.Second)) {
			t.Errorf("recall answered %+v", a)
		}
		ack, err := crypto.VerifyRecallAck(a.Ack, frKey)
		if err != nil {
			t.Fatal(err)
		}
		r, err := crypto.VerifyRecall(a.Request, b.Env.Sender.Key)
		if err != nil {
			t.Fatal(err)
		}
		if err := ack.CheckRequest(a.Request, r, "FR"); err != nil || !r.IsRecall() || r.Reason != "seized in error" {
			t.Errorf("ack %+v of request %+v: %v", ack, r, err)
		}
		// At its retain-until the bundle can no longer be read.
		clk.advance(2 * time.Second)
		if _, err := fr.InboxEntry(ctx, id); !isAPIError(err, 410, "expired") {
			t.Errorf("inbox entry after the recall: %v, want expired", err)
		}
		if err := fr.Payload(ctx, id, b.Env.PayloadSize, new(bytes.Buffer)); !isAPIError(err, 410, "expired") {
			t.Errorf("payload after the recall: %v, want expired", err)
		}
		until := ack.RetainUntil.UTC().Format(time.RFC3339)
		wantEvents(t, "DE's recall events", recallEvents(t, tw.gw("DE"), id),
			"recall-requested unit:DE/forensics FR "+r.RetainUntil.UTC().Format(time.RFC3339)+" ",
			"recall-acknowledged peer:FR FR "+until+" ")
		wantEvents(t, "FR's recall events", recallEvents(t, tw.gw("FR"), id),
			"recall-applied peer:DE DE "+until+" ")
		// DE keeps the answer with the bundle, and shows it again.
		st, err := de.RecallStatus(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Recalls) != 1 || !bytes.Equal(st.Recalls[0].Ack.Body, a.Ack.Body) || !st.Delivered || !bytes.Equal(st.Envelope, b.EnvJSON) {
			t.Errorf("recall status %+v", st)
		}
		// A recall repeated is answered again: the retention ended.
		a2, err := de.Recall(ctx, deKey, id, time.Time{}, "")
		if err != nil {
			t.Fatal(err)
		}
		if a2.Applied || a2.Code != "expired" || !a2.RetainUntil.Equal(ack.RetainUntil) {
			t.Errorf("a recall of an expired bundle answered %+v", a2)
		}
	})

	t.Run("shortening", func(t *testing.T) {
		b := send()
		id := b.Env.BundleID
		to := clk.now().Add(time.Hour).Truncate(time.Second)
		a, err := de.Recall(ctx, deKey, id, to, "")
		if err != nil {
			t.Fatal(err)
		}
		if !a.Applied || !a.RetainUntil.Equal(to) {
			t.Errorf("shortening to %v answered %+v", to, a)
		}
		e, err := fr.InboxEntry(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if e.Retention.State != api.RetentionKept || !e.Retention.Until.Equal(to) {
			t.Errorf("retention after the shortening: %+v, want kept until %v", e.Retention, to)
		}
		a, err = de.Recall(ctx, deKey, id, to.Add(time.Minute), "")
		if err != nil {
			t.Fatal(err)
		}
		if a.Applied || a.Code != "not-shorter" || !a.RetainUntil.Equal(to) {
			t.Errorf("a longer shortening answered %+v", a)
		}
		// The envelope's retain-until bounds a request before it is made.
		if _, err := de.Recall(ctx, deKey, id, b.Env.RetainUntil.Add(time.Second), ""); err == nil || !strings.Contains(err.Error(), "a recall only shortens") {
			t.Errorf("a lengthening: %v", err)
		}
		wantEvents(t, "FR's recall events", recallEvents(t, tw.gw("FR"), id),
			"recall-applied peer:DE DE "+to.UTC().Format(time.RFC3339)+" ",
			"recall-refused peer:DE DE  not-shorter")
	})
}

func TestRecallHeld(t *testing.T) { forEachBackend(t, testRecallHeld) }

// A recall of a bundle held at FR is declined with the hold's reason, and
// the bundle stays readable.
func testRecallHeld(t *testing.T, newStore func(testing.TB, string) storage.Backend) {
	tw, _, send := recallWorld(t, newStore)
	ctx := t.Context()
	de, deKey := tw.Client("DE", "forensics")
	fr, _ := tw.Client("FR", "prosecutor")
	frOperator, _ := tw.Client("FR", "operator")
	b := send()
	id := b.Env.BundleID
	if _, err := frOperator.PlaceHold(ctx, id, "preserve for the trial", "LG Paris 12/26"); err != nil {
		t.Fatal(err)
	}
	a, err := de.Recall(ctx, deKey, id, time.Time{}, "seized in error")
	if err != nil {
		t.Fatal(err)
	}
	if a.Applied || a.Code != "legal-hold" || a.Reason != "preserve for the trial" || !a.RetainUntil.Equal(b.Env.RetainUntil) {
		t.Errorf("recall of a held bundle answered %+v", a)
	}
	if e, err := fr.InboxEntry(ctx, id); err != nil || e.Retention.State != api.RetentionHeld || !e.Retention.Until.Equal(b.Env.RetainUntil) {
		t.Errorf("the held bundle after the recall: %+v, %v", e, err)
	}
	wantEvents(t, "DE's recall events", recallEvents(t, tw.gw("DE"), id),
		"recall-requested unit:DE/forensics FR "+mustRecall(t, a).RetainUntil.UTC().Format(time.RFC3339)+" ",
		"recall-declined peer:FR FR  legal-hold")
	wantEvents(t, "FR's recall events", recallEvents(t, tw.gw("FR"), id),
		"recall-refused peer:DE DE  legal-hold")
	// Released, the bundle can be recalled.
	if _, err := frOperator.ReleaseHold(ctx, id, "the trial is over"); err != nil {
		t.Fatal(err)
	}
	if a, err := de.Recall(ctx, deKey, id, time.Time{}, ""); err != nil || !a.Applied {
		t.Errorf("recall after the release: %+v, %v", a, err)
	}
}

func mustRecall(t *testing.T, a *api.Recall) *crypto.RecallRequest {
	t.Helper()
	r, err := crypto.ParseRecallBody(a.Request.Body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRecallByOthers refuses recalls by anyone but the bundle's sender:
// at DE, another role, and a request signed with another key; at FR,
// requests that a hostile DE gateway forwards, signed with another key in
// the sender's name or by another unit of DE. FR records what it refuses.
func TestRecallByOthers(t *testing.T) {
	tw, _, send := recallWorld(t, diskStore)
	ctx := t.Context()
	de, deKey := tw.Client("DE", "forensics")
	b := send()
	id := b.Env.BundleID
	other, err := crypto.GenerateUnitKey("DE/forensics")
	if err != nil {
		t.Fatal(err)
	}
	forged := func(k *crypto.UnitKey, unit string) *crypto.Signed {
		t.Helper()
		r, err := crypto.NewRecallRequest(b.Env, time.Now(), time.Now(), "")
		if err != nil {
			t.Fatal(err)
		}
		r.Unit = unit
		s, err := k.SignRecall(r)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	// The unit's own gateway refuses.
	op, _ := tw.Client("DE", "operator")
	if _, err := op.SendRecall(ctx, id, forged(deKey, "DE/forensics")); !isAPIError(err, 403, "forbidden") {
		t.Errorf("a recall by an operator: %v, want forbidden", err)
	}
	if _, err := de.SendRecall(ctx, id, forged(other, "DE/forensics")); !isAPIError(err, 400, "bad-signature") || !strings.Contains(err.Error(), "sign it with the key that signed the bundle's envelope") {
		t.Errorf("a recall signed with another key: %v, want bad-signature", err)
	}
	otherUnit, _ := crypto.GenerateUnitKey("DE/lab")
	anyUnit, _ := crypto.GenerateUnitKey("")
	if _, err := de.SendRecall(ctx, id, forged(otherUnit, "DE/lab")); !isAPIError(err, 403, "forbidden") || !strings.Contains(err.Error(), "a unit recalls only the bundles it sealed") {
		t.Errorf("a recall made by another unit: %v, want forbidden", err)
	}
	if _, err := de.Recall(ctx, other, id, time.Time{}, ""); err == nil || !strings.Contains(err.Error(), "recall it with the key that sealed it") {
		t.Errorf("Recall with another key: %v", err)
	}
	// Another submitter of DE, even with the request of the bundle's.
	lab := User{Unit: "DE/lab", Role: api.RoleSubmitter, Key: otherUnit.Public()}
	var ae *api.Error
	if _, err := tw.gw("DE").RecallBundle(ctx, id, forged(deKey, "DE/forensics"), lab); !errors.As(err, &ae) || ae.Code != api.CodeForbidden ||
		!strings.Contains(err.Error(), "was submitted by DE/forensics: only its submitter may recall it") {
		t.Errorf("a recall by another submitter: %v, want forbidden", err)
	}

	edited := func(change func(*crypto.RecallRequest)) *crypto.Signed {
		t.Helper()
		r, err := crypto.NewRecallRequest(b.Env, time.Now(), time.Now(), "")
		if err != nil {
			t.Fatal(err)
		}
		change(&r)
		s, err := deKey.SignRecall(r)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	// FR refuses what a hostile DE forwards.
	c, fr := tw.peerClient(t, "DE", "FR")
	for _, tt := range []struct {
		name string
		req  *crypto.Signed
		code string
	}{
		{"another key", forged(other, "DE/forensics"), transfer.CodeBadSignature},
		{"another unit", forged(otherUnit, "DE/lab"), transfer.CodeBadSignature},
		{"a unit of FR", forged(anyUnit, "FR/lab"), transfer.CodeSenderMismatch},
		// Signed by the sender, but not for this bundle's envelope, or
		// longer than its retention.
		{"another envelope", edited(func(r *crypto.RecallRequest) { r.EnvelopeSHA256 = strings.Repeat("0", 64) }), transfer.CodeMalformed},
		{"a lengthening", edited(func(r *crypto.RecallRequest) { r.RetainUntil = b.Env.RetainUntil.Add(time.Hour) }), transfer.CodeMalformed},
	} {
		_, err := c.Recall(ctx, fr, tt.req)
		var rej *transfer.Rejection
		if !errors.As(err, &rej) || rej.Code != tt.code {
			t.Errorf("%s: %v, want %s", tt.name, err, tt.code)
		}
	}
	// A bundle FR does not hold from DE: refused without saying more.
	unknown, _ := crypto.NewRecallRequest(b.Env, time.Now(), time.Now(), "")
	unknown.BundleID = crypto.NewBundleID()
	s, _ := deKey.SignRecall(unknown)
	var rej *transfer.Rejection
	if _, err := c.Recall(ctx, fr, s); !errors.As(err, &rej) || rej.Code != transfer.CodeNotAccepted || !strings.Contains(rej.Reason, "holds no bundle") {
		t.Errorf("a recall of an unknown bundle: %v", err)
	}
	wantEvents(t, "FR's recall events", recallEvents(t, tw.gw("FR"), id),
		"recall-refused peer:DE DE  bad-signature",
		"recall-refused peer:DE DE  bad-signature",
		"recall-refused peer:DE DE  malformed",
		"recall-refused peer:DE DE  malformed")
	wantEvents(t, "DE's recall events", recallEvents(t, tw.gw("DE"), id))
	fr2, _ := tw.Client("FR", "prosecutor")
	if _, err := fr2.InboxEntry(ctx, id); err != nil {
		t.Errorf("the bundle after refused recalls: %v", err)
	}
}

// TestRecallPeerDown recalls a bundle while FR is down: DE records the
// request, answers unavailable, and keeps nothing; once FR is back, the
// same recall is applied.
func TestRecallPeerDown(t *testing.T) {
	tw, _, send := recallWorld(t, diskStore)
	ctx := t.Context()
	de, deKey := tw.Client("DE", "forensics")
	b := send()
	id := b.Env.BundleID
	tw.Stop(t, "FR")
	if _, err := de.Recall(ctx, deKey, id, time.Time{}, ""); !isAPIError(err, 503, "unavailable") || !strings.Contains(err.Error(), "FR did not answer the recall") {
		t.Errorf("a recall while FR is down: %v, want unavailable", err)
	}
	if st, err := de.RecallStatus(ctx, id); err != nil || len(st.Recalls) != 0 {
		t.Errorf("recall status after a failed recall: %+v, %v", st, err)
	}
	tw.Start(t, "FR")
	if a, err := de.Recall(ctx, deKey, id, time.Time{}, ""); err != nil || !a.Applied {
		t.Errorf("the recall once FR is back: %+v, %v", a, err)
	}
	// Each request is recorded before it is forwarded, the failed one too.
	var events []string
	for _, e := range recallEvents(t, tw.gw("DE"), id) {
		events = append(events, strings.Fields(e)[0])
	}
	wantEvents(t, "DE's recall events", events, "recall-requested", "recall-requested", "recall-acknowledged")
}
