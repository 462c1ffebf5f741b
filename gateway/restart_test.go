package gateway

import (
	"context"
	"testing"
	"time"

	"evx/client"
	"evx/crypto"
	"evx/storage"
)

// TestRestart checks that the outbox survives a peer being down and the
// sending gateway restarting: the queue lives in storage.
func TestRestart(t *testing.T) { forEachBackend(t, testRestart) }

func testRestart(t *testing.T, newStore func(*testing.T, string) storage.Backend) {
	// No periodic rescan of the outbox during the test: a restarted
	// gateway must find the bundle in the scan it makes at start.
	tw := newTestWorld(t, newStore, func(_ string, o *Options) { o.RetryMax = time.Hour })
	tw.start(t, "DE")
	tw.start(t, "FR")
	ctx := context.Background()
	_, deKey := tw.client(t, "DE", "forensics")
	to := []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}
	// DE resolves FR's units while FR is up, and keeps FR's directory, so
	// that its units can submit while FR is down.
	de, _ := tw.client(t, "DE", "forensics")
	if _, err := de.Lookup(ctx, "FR/prosecutor"); err != nil {
		t.Fatal(err)
	}

	// submitWhileDown submits a bundle while FR is down. DE's attempt to
	// deliver it is under way, and waits for FR to answer.
	submitWhileDown := func(t *testing.T) *sealedBundle {
		t.Helper()
		de, _ := tw.client(t, "DE", "forensics")
		b := seal(t, deKey, to, 50_000)
		if _, err := b.upload(ctx, de); err != nil {
			t.Fatal(err)
		}
		st, err := de.OutboxStatus(ctx, b.env.BundleID)
		if err != nil || st.State != "queued" {
			t.Fatalf("outbox status while FR is down: %+v, %v; want queued", st, err)
		}
		return b
	}
	delivered := func(t *testing.T, b *sealedBundle) {
		t.Helper()
		de, _ := tw.client(t, "DE", "forensics")
		if _, err := client.WaitDelivered(ctx, de, b.env.BundleID, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		fr, frKey := tw.client(t, "FR", "prosecutor")
		pulled(t, fr, frKey, b)
	}

	t.Run("peer down", func(t *testing.T) {
		tw.stop(t, "FR")
		b := submitWhileDown(t)
		tw.start(t, "FR")
		delivered(t, b)
	})

	t.Run("sender restarted while the peer is down", func(t *testing.T) {
		tw.stop(t, "FR")
		b := submitWhileDown(t)
		// The new DE gateway knows of the bundle only from storage.
		tw.stop(t, "DE")
		tw.start(t, "DE")
		tw.start(t, "FR")
		delivered(t, b)
	})

	t.Run("both restarted", func(t *testing.T) {
		// Restarted gateways find each other again and keep what they
		// stored: FR still lists the earlier bundles.
		tw.stop(t, "DE")
		tw.stop(t, "FR")
		tw.start(t, "FR")
		tw.start(t, "DE")
		b := seal(t, deKey, to, 50_000)
		de, _ := tw.client(t, "DE", "forensics")
		if _, err := b.upload(ctx, de); err != nil {
			t.Fatal(err)
		}
		delivered(t, b)
		fr, _ := tw.client(t, "FR", "prosecutor")
		list, err := fr.Inbox(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 3 {
			t.Errorf("FR/prosecutor's inbox after restarts has %d bundles, want 3", len(list))
		}
	})
}
