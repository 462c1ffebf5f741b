package gateway

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"evx/api"
	"evx/client"
	"evx/crypto"
	"evx/storage"
	"evx/storage/storagetest"
)

func TestDirectDelivery(t *testing.T) { forEachBackend(t, testDirectDelivery) }

func testDirectDelivery(t *testing.T, newStore func(*testing.T, string) storage.Backend) {
	faulty := map[string]*storagetest.Faulty{}
	tw := newTestWorld(t, func(t *testing.T, id string) storage.Backend {
		f := storagetest.NewFaulty(newStore(t, id))
		faulty[id] = f
		return f
	}, func(id string, o *Options) {
		if id == "FR" {
			o.MaxBundleSize = 200_000
		}
	})
	tw.start(t, "DE")
	tw.start(t, "FR")
	ctx := context.Background()
	de, deKey := tw.client(t, "DE", "forensics")
	prosecutor := []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}

	t.Run("delivered without a copy at the sending gateway", func(t *testing.T) {
		b := seal(t, deKey, prosecutor, 100_000)
		st, err := b.uploadMode(ctx, de, api.Direct)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != "delivered" || st.Peer != "FR" || st.Receipt == nil || st.Delivered == nil {
			t.Fatalf("answer %+v, want delivered to FR with a receipt", st)
		}
		r, err := crypto.VerifyReceipt(st.Receipt, crypto.FormatSigningKey(tw.world.Country("FR").Signing.SigningPublicKey()))
		if err != nil || r.BundleID != b.env.BundleID {
			t.Fatalf("receipt %+v: %v", r, err)
		}
		id := b.env.BundleID
		wantKeys(t, tw.stores["DE"], outboxPrefix+id+"/", recordFile, receiptFile)
		wantKeys(t, tw.stores["FR"], inboxPrefix+id+"/", payloadFile, recordFile)
		if st, err := de.OutboxStatus(ctx, id); err != nil || st.State != "delivered" {
			t.Errorf("outbox status %+v, %v: want delivered", st, err)
		}
		if _, err := b.uploadMode(ctx, de, api.Direct); !isAPIError(err, 409, "duplicate") {
			t.Errorf("the same bundle again: %v, want 409 duplicate", err)
		}
		if _, err := b.uploadMode(ctx, de, "later"); !isAPIError(err, 400, "bad-deliver") {
			t.Errorf("deliver=later: %v, want 400 bad-deliver", err)
		}
	})

	t.Run("already held by the peer", func(t *testing.T) {
		b := seal(t, deKey, prosecutor, 1000)
		c, fr := tw.peerClient(t, "DE", "FR")
		first, err := c.Send(ctx, fr, b.envJSON, b.sig, bytes.NewReader(b.payload))
		if err != nil {
			t.Fatal(err)
		}
		st, err := b.uploadMode(ctx, de, api.Direct)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != "delivered" || string(st.Receipt.Body) != string(first.Receipt.Body) {
			t.Errorf("answer %+v, want delivered with FR's original receipt", st)
		}
		wantKeys(t, tw.stores["DE"], outboxPrefix+b.env.BundleID+"/", recordFile, receiptFile)
	})

	t.Run("refused by the peer", func(t *testing.T) {
		// DE takes up to its own limit; FR's is lower.
		before := objects(t, tw.stores["FR"])
		b := seal(t, deKey, prosecutor, 300_000)
		st, err := b.uploadMode(ctx, de, api.Direct)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != "refused" || st.Refusal == nil || st.Refusal.Code != "too-large" {
			t.Fatalf("answer %+v, want refused as too-large", st)
		}
		wantKeys(t, tw.stores["DE"], outboxPrefix+b.env.BundleID+"/", recordFile, refusalFile)
		wantUnchanged(t, "FR's storage", before, objects(t, tw.stores["FR"]))
		if st, err := de.OutboxStatus(ctx, b.env.BundleID); err != nil || st.State != "refused" || st.Refusal.Code != "too-large" {
			t.Errorf("outbox status %+v, %v: want refused as too-large", st, err)
		}
		wantLogged(t, tw.logs["DE"], "delivery refused by peer", "too-large")
	})

	t.Run("interrupted, then pushed again", func(t *testing.T) {
		// FR fails to store the first attempt and asks to be tried
		// later; Push uploads again and the second attempt is delivered.
		deBefore := len(objects(t, tw.stores["DE"]))
		faulty["FR"].Inject(storagetest.OpCreate, "", storagetest.BeforePersist)
		res, err := client.Push(ctx, de, client.PushRequest{Key: deKey, To: []string{"FR/prosecutor"}, Files: evidence(t, 50_000),
			Seal: sealOpts(), TempDir: t.TempDir(), Wait: 20 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status.State != "delivered" || faulty["FR"].Pending() != 0 {
			t.Fatalf("status %+v, %d faults pending: want delivered after the fault", res.Status, faulty["FR"].Pending())
		}
		if tw.logs["DE"].FilterMessage("direct delivery interrupted").Len() == 0 {
			t.Error("the interrupted delivery was not logged")
		}
		// The record and the receipt, nothing of the failed attempt.
		if n := len(objects(t, tw.stores["DE"])); n != deBefore+2 {
			t.Errorf("DE stores %d objects more, want 2", n-deBefore)
		}
	})

	t.Run("peer down: stored and delivered later", func(t *testing.T) {
		tw.stop(t, "FR")
		b := seal(t, deKey, prosecutor, 20_000)
		st, err := b.uploadMode(ctx, de, api.Direct)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != "queued" {
			t.Fatalf("answer %+v, want queued", st)
		}
		wantKeys(t, tw.stores["DE"], outboxPrefix+b.env.BundleID+"/", payloadFile, recordFile)
		tw.start(t, "FR")
		st, err = client.WaitDelivered(ctx, de, b.env.BundleID, 20*time.Second)
		if err != nil || st.State != "delivered" {
			t.Fatalf("after FR is back: %+v, %v", st, err)
		}
	})
}

// wantKeys checks that the objects under prefix are exactly names.
func wantKeys(t *testing.T, st storage.Backend, prefix string, names ...string) {
	t.Helper()
	infos, err := st.List(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, in := range infos {
		got = append(got, strings.TrimPrefix(in.Key, prefix))
	}
	slices.Sort(got)
	slices.Sort(names)
	if !slices.Equal(got, names) {
		t.Errorf("objects under %s: %v, want %v", prefix, got, names)
	}
}
