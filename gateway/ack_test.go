package gateway

import (
	"context"
	"testing"

	"evx/api"
	"evx/crypto"
	"evx/internal/evxtest"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A repeated acknowledgement is answered alike, but counted once.
func TestAckCountedOnce(t *testing.T) {
	tw := startWorld(t, diskStore)
	ctx := context.Background()
	de, deKey := tw.Client("DE", "forensics")
	b := evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, 1000)
	if _, err := uploadMode(ctx, de, b, api.Direct); err != nil {
		t.Fatal(err)
	}
	fr, _ := tw.Client("FR", "prosecutor")
	for range 3 {
		if err := fr.Ack(ctx, b.Env.BundleID); err != nil {
			t.Fatal(err)
		}
	}
	if n := testutil.ToFloat64(tw.gw("FR").metrics.bundles.WithLabelValues("retrieved")); n != 1 {
		t.Errorf("three acknowledgements of one bundle counted %v times, want 1", n)
	}
}
