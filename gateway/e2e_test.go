package gateway

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"evx/api"
	"evx/client"
	"evx/crypto"
	"evx/internal/evxtest"
	"evx/storage"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestPushPullDisk(t *testing.T) { testPushPull(t, diskStore) }
func TestPushPullS3(t *testing.T)   { testPushPull(t, s3Store) }

func testPushPull(t *testing.T, newStore func(testing.TB, string) storage.Backend) {
	tw := startWorld(t, newStore)
	ctx := context.Background()
	de, deKey := tw.Client("DE", "forensics")
	files := evxtest.Evidence(t, 300_000)
	res, err := client.Push(ctx, de, client.PushRequest{Key: deKey, To: []string{"FR/prosecutor"}, Files: files,
		Seal: evxtest.SealOptions(), TempDir: t.TempDir(), Wait: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status.State != "delivered" || res.Status.Receipt == nil {
		t.Fatalf("status %+v, want delivered with a receipt", res.Status)
	}
	// The receipt is FR's, signed with its gateway key, for this bundle.
	r, err := crypto.VerifyReceipt(res.Status.Receipt, crypto.FormatSigningKey(tw.Dev.Country("FR").Signing.SigningPublicKey()))
	if err != nil {
		t.Fatal(err)
	}
	if r.BundleID != res.Envelope.BundleID || r.PayloadSHA256 != hex.EncodeToString(res.Envelope.PayloadSHA256[:]) || r.Sender != "DE" || r.Receiver != "FR" {
		t.Errorf("receipt %+v does not match the bundle %s", r, res.Envelope.BundleID)
	}
	fr, frKey := tw.Client("FR", "prosecutor")
	list, err := fr.Inbox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].BundleID != res.Envelope.BundleID || list[0].Sender != "DE/forensics" || list[0].Acknowledged {
		t.Fatalf("inbox %+v", list)
	}
	out := filepath.Join(t.TempDir(), "out")
	pr, err := client.Pull(ctx, fr, frKey, res.Envelope.BundleID, out, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !pr.Open.PayloadVerified || len(pr.Open.Files) != 1 {
		t.Fatalf("open result %+v", pr.Open)
	}
	got, err := os.ReadFile(filepath.Join(out, filepath.FromSlash(pr.Open.Files[0].Path)))
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(files[0].OSPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("pulled file differs from the one pushed (%d bytes, want %d)", len(got), len(want))
	}
	if pr.Entry.SenderCheck == "" {
		t.Error("no record of the sender check")
	}
	list, _ = fr.Inbox(ctx)
	if !list[0].Acknowledged {
		t.Error("retrieval not acknowledged")
	}

	// Refusals: a submitter pulling, a recipient of another bundle, no role.
	if _, err := de.Inbox(ctx); !isAPIError(err, 403, "forbidden") {
		t.Errorf("submitter listing an inbox: %v", err)
	}
	other, otherKey := tw.Client("FR", "auditor")
	if _, err := client.Pull(ctx, other, otherKey, res.Envelope.BundleID, filepath.Join(t.TempDir(), "x"), "", nil); !isAPIError(err, 403, "forbidden") {
		t.Errorf("auditor pulling: %v", err)
	}
	if !pr.SenderPinned {
		t.Error("pull did not check the sender against the directory itself")
	}

	// Metrics count what happened, from fixed label values.
	for _, m := range []struct {
		gw, event string
	}{{"DE", "submitted"}, {"DE", "delivered"}, {"FR", "received"}, {"FR", "retrieved"}} {
		if got := testutil.ToFloat64(tw.gw(m.gw).metrics.bundles.WithLabelValues(m.event)); got != 1 {
			t.Errorf("%s evx_bundles_total{event=%q} = %v, want 1", m.gw, m.event, got)
		}
	}
	if got := testutil.ToFloat64(tw.gw("DE").metrics.refusals.WithLabelValues("api", "forbidden")); got != 1 {
		t.Errorf(`DE evx_refusals_total{where="api",code="forbidden"} = %v, want 1`, got)
	}
}

func isAPIError(err error, status int, code string) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.HTTPStatus == status && ae.Code == api.Code(code)
}
