package gateway

import (
	"bytes"
	"context"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"evx/api"
	"evx/client"
	"evx/crypto"
	"evx/internal/evxtest"
	"evx/storage"
	"evx/storage/storagetest"
)

func TestDirectDelivery(t *testing.T) { forEachBackend(t, testDirectDelivery) }

func testDirectDelivery(t *testing.T, newStore func(testing.TB, string) storage.Backend) {
	faulty := map[string]*storagetest.FaultyLocker{}
	tw := newTestWorld(t, func(t testing.TB, id string) storage.Backend {
		f := newFaulty(t, newStore(t, id))
		faulty[id] = f
		return f
	}, func(id string, o *Options) {
		if id == "FR" {
			o.MaxBundleSize = 200_000
		}
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	ctx := context.Background()
	de, deKey := tw.Client("DE", "forensics")
	prosecutor := []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}

	t.Run("delivered without a copy at the sending gateway", func(t *testing.T) {
		b := evxtest.Seal(t, deKey, prosecutor, 100_000)
		st, err := uploadMode(ctx, de, b, api.Direct)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != "delivered" || st.Peer != "FR" || st.Receipt == nil || st.Delivered == nil {
			t.Fatalf("answer %+v, want delivered to FR with a receipt", st)
		}
		r, err := crypto.VerifyReceipt(st.Receipt, crypto.FormatSigningKey(tw.Dev.Country("FR").Signing.SigningPublicKey()))
		if err != nil || r.BundleID != b.Env.BundleID {
			t.Fatalf("receipt %+v: %v", r, err)
		}
		id := b.Env.BundleID
		wantKeys(t, tw.Stores["DE"], outboxPrefix+id+"/", recordFile, receiptFile)
		wantKeys(t, tw.Stores["FR"], inboxPrefix+id+"/", "key-*.wrapped", "payload-*.age", recordFile)
		if st, err := de.OutboxStatus(ctx, id); err != nil || st.State != "delivered" {
			t.Errorf("outbox status %+v, %v: want delivered", st, err)
		}
		if _, err := uploadMode(ctx, de, b, api.Direct); !isAPIError(err, 409, "duplicate") {
			t.Errorf("the same bundle again: %v, want 409 duplicate", err)
		}
		if _, err := uploadMode(ctx, de, b, "later"); !isAPIError(err, 400, "bad-deliver") {
			t.Errorf("deliver=later: %v, want 400 bad-deliver", err)
		}
	})

	t.Run("already held by the peer", func(t *testing.T) {
		b := evxtest.Seal(t, deKey, prosecutor, 1000)
		c, fr := tw.peerClient(t, "DE", "FR")
		first, err := c.Send(ctx, fr, b.EnvJSON, b.Sig, bytes.NewReader(b.Payload))
		if err != nil {
			t.Fatal(err)
		}
		st, err := uploadMode(ctx, de, b, api.Direct)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != "delivered" || string(st.Receipt.Body) != string(first.Receipt.Body) {
			t.Errorf("answer %+v, want delivered with FR's original receipt", st)
		}
		wantKeys(t, tw.Stores["DE"], outboxPrefix+b.Env.BundleID+"/", recordFile, receiptFile)
	})

	t.Run("refused by the peer", func(t *testing.T) {
		// DE takes up to its own limit; FR's is lower.
		before := objects(t, tw.Stores["FR"])
		b := evxtest.Seal(t, deKey, prosecutor, 300_000)
		st, err := uploadMode(ctx, de, b, api.Direct)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != "refused" || st.Refusal == nil || st.Refusal.Code != "too-large" {
			t.Fatalf("answer %+v, want refused as too-large", st)
		}
		wantKeys(t, tw.Stores["DE"], outboxPrefix+b.Env.BundleID+"/", recordFile, refusalFile)
		wantUnchanged(t, "FR's storage", before, objects(t, tw.Stores["FR"]))
		if st, err := de.OutboxStatus(ctx, b.Env.BundleID); err != nil || st.State != "refused" || st.Refusal.Code != "too-large" {
			t.Errorf("outbox status %+v, %v: want refused as too-large", st, err)
		}
		wantLogged(t, tw.Logs["DE"], "delivery refused by peer", "too-large")
	})

	t.Run("interrupted, then pushed again", func(t *testing.T) {
		// FR fails to store the first attempt and asks to be tried
		// later; Push uploads again and the second attempt is delivered.
		deBefore := len(objects(t, tw.Stores["DE"]))
		faulty["FR"].InjectUnder(storagetest.OpCreate, inboxPrefix, storagetest.BeforePersist)
		res, err := client.Push(ctx, de, client.PushRequest{Key: deKey, To: []string{"FR/prosecutor"}, Files: evxtest.Evidence(t, 50_000),
			Seal: evxtest.SealOptions(), TempDir: t.TempDir(), Wait: 20 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status.State != "delivered" || faulty["FR"].Pending() != 0 {
			t.Fatalf("status %+v, %d faults pending: want delivered after the fault", res.Status, faulty["FR"].Pending())
		}
		if tw.Logs["DE"].FilterMessage("direct delivery interrupted").Len() == 0 {
			t.Error("the interrupted delivery was not logged")
		}
		// The record, the receipt and the reaper's entry, nothing of
		// the failed attempt.
		if n := len(objects(t, tw.Stores["DE"])); n != deBefore+3 {
			t.Errorf("DE stores %d objects more, want 3", n-deBefore)
		}
	})

	t.Run("peer down: stored and delivered later", func(t *testing.T) {
		tw.Stop(t, "FR")
		b := evxtest.Seal(t, deKey, prosecutor, 20_000)
		st, err := uploadMode(ctx, de, b, api.Direct)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != "queued" {
			t.Fatalf("answer %+v, want queued", st)
		}
		wantKeys(t, tw.Stores["DE"], outboxPrefix+b.Env.BundleID+"/", payloadFile, recordFile)
		tw.Start(t, "FR")
		st, err = client.WaitDelivered(ctx, de, b.Env.BundleID, 20*time.Second)
		if err != nil || st.State != "delivered" {
			t.Fatalf("after FR is back: %+v, %v", st, err)
		}
	})
}

// wantKeys checks that the objects under prefix are exactly names.
// wantKeys checks the names of the objects under prefix, each matched by
// one of patterns (path.Match), in order.
func wantKeys(t *testing.T, st storage.Backend, prefix string, patterns ...string) {
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
	slices.Sort(patterns)
	if !slices.EqualFunc(got, patterns, func(name, pattern string) bool {
		ok, _ := path.Match(pattern, name)
		return ok
	}) {
		t.Errorf("objects under %s: %v, want %v", prefix, got, patterns)
	}
}
