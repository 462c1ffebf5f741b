package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"evx/crypto"
	"evx/storage"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

type testWorld struct {
	world    *DevWorld
	gateways map[string]*Gateway
	stores   map[string]storage.Backend
}

// startWorld runs DE and FR gateways on loopback with storage from newStore.
func startWorld(t *testing.T, newStore func(t *testing.T, country string) storage.Backend) *testWorld {
	t.Helper()
	w, err := NewDevWorld("DE", "FR")
	if err != nil {
		t.Fatal(err)
	}
	tw := &testWorld{world: w, gateways: map[string]*Gateway{}, stores: map[string]storage.Backend{}}
	addrs := map[string]string{}
	for _, id := range []string{"DE", "FR"} {
		a, err := freeAddr("udp")
		if err != nil {
			t.Fatal(err)
		}
		addrs[id] = a
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	for _, id := range []string{"DE", "FR"} {
		tw.stores[id] = newStore(t, id)
		opts := w.Options(id, addrs, "127.0.0.1:0", tw.stores[id], zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Named(id))
		opts.RetryInterval = 50 * time.Millisecond
		g, err := New(opts)
		if err != nil {
			t.Fatal(err)
		}
		tw.gateways[id] = g
		go func() { done <- g.Run(ctx) }()
	}
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("gateway: %v", err)
			}
		}
	})
	return tw
}

func (tw *testWorld) client(t *testing.T, country, user string) (*Client, *crypto.UnitKey) {
	c := tw.world.Country(country)
	u := c.User(user)
	return NewClient("https://"+tw.gateways[country].APIAddr(), u.Cert, &tls.Config{RootCAs: pool(c.CA.Cert)}), u.Key
}

func diskStore(t *testing.T, _ string) storage.Backend {
	d, err := storage.NewDisk(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func evidence(t *testing.T, size int) []crypto.SourceFile {
	t.Helper()
	dir := t.TempDir()
	data := bytes.Repeat([]byte{0xe5, 'v', 'x'}, size/3+1)[:size]
	if err := os.WriteFile(filepath.Join(dir, "image.raw"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	files, err := crypto.CollectFiles([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func sealOpts() crypto.SealOptions {
	return crypto.SealOptions{Purpose: "mutual-legal-assistance", Handling: "H2", TLP: "TLP:RED",
		LegalBasis: "EIO 2026/17", Retain: 24 * time.Hour}
}

func TestPushPullDisk(t *testing.T) { testPushPull(t, diskStore) }

func testPushPull(t *testing.T, newStore func(*testing.T, string) storage.Backend) {
	tw := startWorld(t, newStore)
	ctx := context.Background()
	de, deKey := tw.client(t, "DE", "forensics")
	res, err := Push(ctx, de, PushRequest{Key: deKey, To: []string{"FR/prosecutor"}, Files: evidence(t, 300_000),
		Seal: sealOpts(), TempDir: t.TempDir(), Wait: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status.State != "delivered" || res.Status.Receipt == nil {
		t.Fatalf("status %+v, want delivered with a receipt", res.Status)
	}
	fr, frKey := tw.client(t, "FR", "prosecutor")
	list, err := fr.Inbox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].BundleID != res.Envelope.BundleID || list[0].Sender != "DE/forensics" || list[0].Acknowledged {
		t.Fatalf("inbox %+v", list)
	}
	out := filepath.Join(t.TempDir(), "out")
	pr, err := Pull(ctx, fr, frKey, res.Envelope.BundleID, out, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !pr.Open.PayloadVerified || len(pr.Open.Files) != 1 {
		t.Errorf("open result %+v", pr.Open)
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
	other, otherKey := tw.client(t, "FR", "auditor")
	if _, err := Pull(ctx, other, otherKey, res.Envelope.BundleID, filepath.Join(t.TempDir(), "x"), "", nil); !isAPIError(err, 403, "forbidden") {
		t.Errorf("auditor pulling: %v", err)
	}
}

func isAPIError(err error, status int, code string) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == status && ae.Code == code
}
