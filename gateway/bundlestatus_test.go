package gateway

import (
	"testing"
	"time"

	"evx/api"
	"evx/client"
	"evx/crypto"
	"evx/internal/evxtest"
	"evx/storage"
)

// GET /v1/bundles/{id} shows each one what it may see of a bundle: its
// submitter and DE's operator the sending side, with the retention of the
// sender's records and whether the sender's copy of the payload is left;
// the recipient it is addressed to its inbox entry, without the envelope;
// FR's operator only the metadata of that entry; anyone else nothing, as
// for a bundle that is not there. A legal hold shows, and a bundle past
// its retain-until shows as expired while its reads answer expired. The
// gateways' clocks are moved on by the test; the storage's own clocks keep
// the records locked, and so stored.
func TestBundleState(t *testing.T) {
	forEachBackend(t, func(t *testing.T, newStore func(testing.TB, string) storage.Backend) {
		clk := &clock{}
		runs := map[string]reapResults{"DE": make(reapResults, 64), "FR": make(reapResults, 64)}
		tw := newTestWorld(t, newStore, func(id string, o *Options) {
			o.Now = clk.now
			o.HoldUnits = []string{id + "/operator"}
			// The reaper runs at start and when the test wakes it.
			o.ReaperInterval = time.Hour
			o.OutboxGrace = time.Hour
			o.onReaped = func(r reapResult) {
				select {
				case runs[id] <- r:
				default: // a test that stopped reading
				}
			}
		})
		tw.Start(t, "DE")
		tw.Start(t, "FR")
		ctx := t.Context()
		de, deKey := tw.Client("DE", "forensics")
		deOp, _ := tw.Client("DE", "operator")
		dePros, _ := tw.Client("DE", "prosecutor")
		deAud, _ := tw.Client("DE", "auditor")
		fr, _ := tw.Client("FR", "prosecutor")
		frOp, _ := tw.Client("FR", "operator")
		frFor, _ := tw.Client("FR", "forensics")
		b := evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, 1000)
		id := b.Env.BundleID
		if _, err := upload(ctx, de, b); err != nil {
			t.Fatal(err)
		}
		if _, err := client.WaitDelivered(ctx, de, id, 30*time.Second); err != nil {
			t.Fatal(err)
		}

		// The sending side, to its submitter and DE's operator.
		for _, c := range []*client.Client{de, deOp} {
			st, err := c.BundleState(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			o := st.Outbox
			switch {
			case st.Gateway != "DE" || st.Inbox != nil || st.Hold != nil || o == nil:
				t.Fatalf("state at DE: %+v", st)
			case o.State != api.StateDelivered || o.Peer != "FR" || o.SubmittedBy != "DE/forensics" || o.Receipt == nil || o.Delivered == nil:
				t.Errorf("delivery at DE: %+v", o.OutboxStatus)
			case o.Retention != (api.Retention{State: api.RetentionKept, Until: b.Env.RetainUntil.UTC()}):
				t.Errorf("retention at DE: %+v, want kept until %v", o.Retention, b.Env.RetainUntil)
			case !o.PayloadStored:
				t.Error("the sender's copy is gone before the grace has passed")
			}
		}

		// The receiving side, to the recipient, whole but for the
		// envelope; to FR's operator, its metadata only.
		st, err := fr.BundleState(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		e := st.Inbox
		switch {
		case st.Gateway != "FR" || st.Outbox != nil || st.Hold != nil || e == nil:
			t.Fatalf("state at FR: %+v", st)
		case e.From != "DE" || e.Sender != "DE/forensics" || e.LegalBasis != b.Env.LegalBasis || e.Handling != b.Env.Handling ||
			e.TLP != b.Env.TLP || e.SenderCheck == "" || e.Size != b.Env.PayloadSize || e.ReceivedAt.IsZero():
			t.Errorf("the recipient's entry: %+v", e)
		case e.Envelope != nil || e.Signature != nil || e.SenderDirectory != nil:
			t.Error("the recipient's state holds the envelope")
		case e.Retention != (api.Retention{State: api.RetentionKept, Until: b.Env.RetainUntil.UTC()}):
			t.Errorf("retention at FR: %+v", e.Retention)
		}
		st, err = frOp.BundleState(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		want := api.InboxEntry{BundleID: id, From: "DE", Sender: "DE/forensics", Purpose: b.Env.Purpose, Size: b.Env.PayloadSize,
			ReceivedAt: e.ReceivedAt, RetainUntil: b.Env.RetainUntil, Retention: e.Retention}
		if st.Outbox != nil || st.Inbox == nil || !equalEntries(*st.Inbox, want) {
			t.Errorf("the operator's state at FR: %+v\nwant inbox %+v", st, want)
		}

		// Anyone else: not-found, as for a bundle that is not there.
		for _, tc := range []struct {
			name string
			c    *client.Client
			id   string
		}{
			{"DE/prosecutor at DE", dePros, id},
			{"FR/forensics at FR", frFor, id},
			{"a bundle not there", deOp, "0123456789abcdef0123456789abcdef"},
			{"a bundle not there, recipient", fr, "0123456789abcdef0123456789abcdef"},
		} {
			if _, err := tc.c.BundleState(ctx, tc.id); !isAPIError(err, 404, string(api.CodeNotFound)) {
				t.Errorf("%s: %v, want 404 not-found", tc.name, err)
			}
		}
		if _, err := deAud.BundleState(ctx, id); !isAPIError(err, 403, string(api.CodeForbidden)) {
			t.Errorf("auditor: %v, want 403 forbidden", err)
		}

		// A legal hold shows, to each side.
		if _, err := frOp.PlaceHold(ctx, id, "preserve for the trial", "LG Berlin 12 O 34/26"); err != nil {
			t.Fatal(err)
		}
		st, err = fr.BundleState(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if st.Hold == nil || st.Hold.Reference != "LG Berlin 12 O 34/26" || st.Hold.Reason != "preserve for the trial" ||
			st.Inbox.Retention.State != api.RetentionHeld || !st.Inbox.Retention.Held {
			t.Errorf("held at FR: %+v, hold %+v", st.Inbox.Retention, st.Hold)
		}
		if st, err := de.BundleState(ctx, id); err != nil || st.Hold != nil || st.Outbox.Retention.State != api.RetentionKept {
			t.Errorf("at DE, with a hold at FR only: %+v, %v", st, err)
		}
		if _, err := frOp.ReleaseHold(ctx, id, "judgment final"); err != nil {
			t.Fatal(err)
		}
		if st, err := fr.BundleState(ctx, id); err != nil || st.Hold != nil || st.Inbox.Retention.State != api.RetentionKept {
			t.Errorf("released at FR: %+v, %v", st, err)
		}

		// Past the grace: the reaper removes the sender's copy.
		clk.advance(2 * time.Hour)
		tw.gw("DE").reaperWake()
		runs["DE"].waitRun(t, "that removes the sender's copy", func(r reapResult) bool { return r.Done[dueSent] == 1 })
		st, err = de.BundleState(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if st.Outbox.PayloadStored || st.Outbox.State != api.StateDelivered || st.Outbox.Retention.State != api.RetentionKept {
			t.Errorf("after the grace: %+v", st.Outbox)
		}

		// Past its retain-until: expired on both sides, while the reads
		// of the recipient answer expired; and still once the reaper has
		// destroyed the key at FR, as long as the locks keep the record.
		clk.advance(b.Env.RetainUntil.Sub(clk.now()) + time.Minute)
		wantExpired := api.Retention{State: api.RetentionExpired, Until: b.Env.RetainUntil.UTC()}
		if st, err := de.BundleState(ctx, id); err != nil || st.Outbox.Retention != wantExpired {
			t.Errorf("expired at DE: %+v, %v", st, err)
		}
		if _, err := fr.InboxEntry(ctx, id); !isAPIError(err, 410, string(api.CodeExpired)) {
			t.Errorf("read of the expired bundle: %v, want 410 expired", err)
		}
		for _, c := range []*client.Client{fr, frOp} {
			if st, err := c.BundleState(ctx, id); err != nil || st.Inbox.Retention != wantExpired {
				t.Errorf("expired at FR: %+v, %v", st, err)
			}
		}
		tw.gw("FR").reaperWake()
		r := runs["FR"].waitRun(t, "that ends the bundle", func(r reapResult) bool {
			return r.Waiting[dueInbox]+r.Done[dueInbox] == 1
		})
		st, err = fr.BundleState(ctx, id)
		switch {
		case r.Done[dueInbox] == 1:
			// Purged: the storage's locks allowed it.
			if !isAPIError(err, 404, string(api.CodeNotFound)) {
				t.Errorf("state of the purged bundle: %v, want 404 not-found", err)
			}
		case err != nil || st.Inbox.Retention != wantExpired:
			t.Errorf("state of the shredded bundle: %+v, %v", st, err)
		}
	})
}

// equalEntries compares inbox entries, their times by instant.
func equalEntries(a, b api.InboxEntry) bool {
	if !a.ReceivedAt.Equal(b.ReceivedAt) || !a.RetainUntil.Equal(b.RetainUntil) || !a.Retention.Until.Equal(b.Retention.Until) {
		return false
	}
	a.ReceivedAt, a.RetainUntil, a.Retention.Until = b.ReceivedAt, b.RetainUntil, b.Retention.Until
	return a.BundleID == b.BundleID && a.From == b.From && a.Sender == b.Sender && a.Purpose == b.Purpose &&
		a.LegalBasis == b.LegalBasis && a.Case == b.Case && a.Handling == b.Handling && a.TLP == b.TLP && a.Size == b.Size &&
		a.SenderCheck == b.SenderCheck && a.Acknowledged == b.Acknowledged && a.Retention == b.Retention &&
		a.Envelope == nil && a.Signature == nil && a.SenderDirectory == nil && b.SenderDirectory == nil
}
