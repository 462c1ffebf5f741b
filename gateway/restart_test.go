package gateway

import (
	"context"
	"testing"
	"time"

	"evx/client"
	"evx/crypto"
	"evx/internal/evxtest"
	"evx/storage"
)

// TestRestart checks that the outbox survives a peer being down and the
// sending gateway restarting: the queue lives in storage.
func TestRestart(t *testing.T) { forEachBackend(t, testRestart) }

func testRestart(t *testing.T, newStore func(testing.TB, string) storage.Backend) {
	// No periodic rescan of the outbox during the test: a restarted
	// gateway must find the bundle in the scan it makes at start.
	tw := newTestWorld(t, newStore, func(_ string, o *Options) { o.RetryMax = time.Hour })
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	ctx := context.Background()
	_, deKey := tw.Client("DE", "forensics")
	to := []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}
	// DE resolves FR's units while FR is up, and keeps FR's directory, so
	// that its units can submit while FR is down.
	de, _ := tw.Client("DE", "forensics")
	if _, err := de.Lookup(ctx, "FR/prosecutor"); err != nil {
		t.Fatal(err)
	}

	// submitWhileDown submits a bundle while FR is down. DE's attempt to
	// deliver it is under way, and waits for FR to answer.
	submitWhileDown := func(t *testing.T) *evxtest.Bundle {
		t.Helper()
		de, _ := tw.Client("DE", "forensics")
		b := evxtest.Seal(t, deKey, to, 50_000)
		if _, err := upload(ctx, de, b); err != nil {
			t.Fatal(err)
		}
		st, err := de.OutboxStatus(ctx, b.Env.BundleID)
		if err != nil || st.State != "queued" {
			t.Fatalf("outbox status while FR is down: %+v, %v; want queued", st, err)
		}
		return b
	}
	delivered := func(t *testing.T, b *evxtest.Bundle) {
		t.Helper()
		de, _ := tw.Client("DE", "forensics")
		if _, err := client.WaitDelivered(ctx, de, b.Env.BundleID, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		fr, frKey := tw.Client("FR", "prosecutor")
		pulled(t, fr, frKey, b)
	}

	t.Run("peer down", func(t *testing.T) {
		tw.Stop(t, "FR")
		b := submitWhileDown(t)
		tw.Start(t, "FR")
		delivered(t, b)
	})

	t.Run("sender restarted while the peer is down", func(t *testing.T) {
		tw.Stop(t, "FR")
		b := submitWhileDown(t)
		// The new DE gateway knows of the bundle only from storage.
		tw.Stop(t, "DE")
		tw.Start(t, "DE")
		tw.Start(t, "FR")
		delivered(t, b)
	})

	t.Run("both restarted", func(t *testing.T) {
		// Restarted gateways find each other again and keep what they
		// stored: FR still lists the earlier bundles.
		tw.Stop(t, "DE")
		tw.Stop(t, "FR")
		tw.Start(t, "FR")
		tw.Start(t, "DE")
		b := evxtest.Seal(t, deKey, to, 50_000)
		de, _ := tw.Client("DE", "forensics")
		if _, err := upload(ctx, de, b); err != nil {
			t.Fatal(err)
		}
		delivered(t, b)
		fr, _ := tw.Client("FR", "prosecutor")
		list, err := fr.Inbox(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 3 {
			t.Errorf("FR/prosecutor's inbox after restarts has %d bundles, want 3", len(list))
		}
	})
}
