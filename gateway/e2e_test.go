package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"evx/api"
	"evx/client"
	"evx/crypto"
	"evx/internal/devenv"
	"evx/storage"
	"evx/storage/storagetest"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// testWorld is DE and FR gateways on loopback, which tests can stop and
// start again on the same storage and peer addresses.
type testWorld struct {
	world    *devenv.World
	addrs    map[string]string // peer (UDP) addresses, fixed across restarts
	gateways map[string]*Gateway
	stores   map[string]storage.Backend
	// logs observe each country's gateway at Info level and above, across
	// restarts, so that tests can assert what was logged.
	logs   map[string]*observer.ObservedLogs
	cores  map[string]zapcore.Core
	modify func(id string, o *Options)
	stops  map[string]func(*testing.T)
}

// startWorld runs DE and FR gateways on loopback with storage from newStore.
func startWorld(t *testing.T, newStore func(t *testing.T, country string) storage.Backend) *testWorld {
	t.Helper()
	tw := newTestWorld(t, newStore, nil)
	tw.start(t, "DE")
	tw.start(t, "FR")
	return tw
}

// newTestWorld prepares DE and FR without starting them. modify, if set,
// adjusts a gateway's options each time it starts.
func newTestWorld(t *testing.T, newStore func(t *testing.T, country string) storage.Backend, modify func(id string, o *Options)) *testWorld {
	t.Helper()
	w, err := devenv.New("DE", "FR")
	if err != nil {
		t.Fatal(err)
	}
	tw := &testWorld{world: w, addrs: map[string]string{}, gateways: map[string]*Gateway{},
		stores: map[string]storage.Backend{}, logs: map[string]*observer.ObservedLogs{},
		cores: map[string]zapcore.Core{}, modify: modify, stops: map[string]func(*testing.T){}}
	// Registered first, so it runs last: gateways log while they stop, but
	// a goroutine that outlives them must not log through t afterwards.
	tl := &testLog{t: t}
	t.Cleanup(tl.close)
	for _, id := range []string{"DE", "FR"} {
		a, err := freeAddr("udp")
		if err != nil {
			t.Fatal(err)
		}
		tw.addrs[id] = a
		obs, logs := observer.New(zap.InfoLevel)
		text := zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()), zapcore.AddSync(tl), zap.WarnLevel)
		tw.logs[id], tw.cores[id] = logs, zapcore.NewTee(obs, text)
	}
	for _, id := range []string{"DE", "FR"} {
		tw.stores[id] = newStore(t, id)
	}
	t.Cleanup(func() {
		for _, id := range []string{"DE", "FR"} {
			if tw.stops[id] != nil {
				tw.stop(t, id)
			}
		}
	})
	return tw
}

// start runs country id's gateway on its storage and peer address.
func (tw *testWorld) start(t *testing.T, id string) {
	t.Helper()
	if tw.stops[id] != nil {
		t.Fatalf("gateway %s is already running", id)
	}
	opts := devOptions(tw.world, id, tw.addrs, "127.0.0.1:0", tw.stores[id], zap.New(tw.cores[id]).Named(id))
	opts.RetryInterval = 50 * time.Millisecond
	opts.RetryMax = 500 * time.Millisecond
	opts.DirectConnectTimeout = time.Second
	if tw.modify != nil {
		tw.modify(id, &opts)
	}
	g, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	tw.gateways[id] = g
	tw.stops[id] = func(t *testing.T) {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway %s: %v", id, err)
		}
	}
}

// stop shuts country id's gateway down and waits until it has stopped.
func (tw *testWorld) stop(t *testing.T, id string) {
	t.Helper()
	stop := tw.stops[id]
	if stop == nil {
		t.Fatalf("gateway %s is not running", id)
	}
	delete(tw.stops, id)
	stop(t)
}

// testLog passes log lines to t until the test is over.
type testLog struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (l *testLog) Sync() error { return nil }

func (l *testLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done = true
}

func (tw *testWorld) client(t *testing.T, country, user string) (*client.Client, *crypto.UnitKey) {
	c := tw.world.Country(country)
	u := c.User(user)
	return tw.clientWithCert(country, u.Cert), u.Key
}

// clientWithCert returns a client of country's API presenting cert.
func (tw *testWorld) clientWithCert(country string, cert tls.Certificate) *client.Client {
	c := tw.world.Country(country)
	return client.New("https://"+tw.gateways[country].APIAddr(), cert, &tls.Config{RootCAs: c.CAPool()})
}

func diskStore(t *testing.T, _ string) storage.Backend {
	d, err := storage.NewDisk(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// s3Store returns an S3 backend on a fresh bucket of the test server named
// by the environment that scripts/minio.sh start prints. Without one the
// test skips, except under CI, which must run it.
func s3Store(t *testing.T, _ string) storage.Backend {
	t.Helper()
	cfg := storagetest.S3Env(t)
	cfg.Bucket = storagetest.NewBucket(t, cfg, "evx-test-")
	s, err := storage.NewS3(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// backends are the storage backends every end-to-end test runs on.
var backends = []struct {
	name     string
	newStore func(*testing.T, string) storage.Backend
}{
	{"Disk", diskStore},
	{"S3", s3Store},
}

// forEachBackend runs f as a subtest per storage backend.
func forEachBackend(t *testing.T, f func(t *testing.T, newStore func(*testing.T, string) storage.Backend)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { f(t, b.newStore) })
	}
}

func evidence(t *testing.T, size int) []crypto.SourceFile {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "image.raw"), evidenceData(size), 0o644); err != nil {
		t.Fatal(err)
	}
	files, err := crypto.CollectFiles([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// evidenceData is the content of the file evidence writes.
func evidenceData(size int) []byte { return bytes.Repeat([]byte{0xe5, 'v', 'x'}, size/3+1)[:size] }

func sealOpts() crypto.SealOptions {
	return crypto.SealOptions{Purpose: "mutual-legal-assistance", Handling: "H2", TLP: "TLP:RED",
		LegalBasis: "EIO 2026/17", Retain: 24 * time.Hour}
}

func TestPushPullDisk(t *testing.T) { testPushPull(t, diskStore) }
func TestPushPullS3(t *testing.T)   { testPushPull(t, s3Store) }

func testPushPull(t *testing.T, newStore func(*testing.T, string) storage.Backend) {
	tw := startWorld(t, newStore)
	ctx := context.Background()
	de, deKey := tw.client(t, "DE", "forensics")
	res, err := client.Push(ctx, de, client.PushRequest{Key: deKey, To: []string{"FR/prosecutor"}, Files: evidence(t, 300_000),
		Seal: sealOpts(), TempDir: t.TempDir(), Wait: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status.State != "delivered" || res.Status.Receipt == nil {
		t.Fatalf("status %+v, want delivered with a receipt", res.Status)
	}
	// The receipt is FR's, signed with its gateway key, for this bundle.
	r, err := crypto.VerifyReceipt(res.Status.Receipt, crypto.FormatSigningKey(tw.world.Country("FR").Signing.SigningPublicKey()))
	if err != nil {
		t.Fatal(err)
	}
	if r.BundleID != res.Envelope.BundleID || r.PayloadSHA256 != hex.EncodeToString(res.Envelope.PayloadSHA256[:]) || r.Sender != "DE" || r.Receiver != "FR" {
		t.Errorf("receipt %+v does not match the bundle %s", r, res.Envelope.BundleID)
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
	if want := evidenceData(300_000); !bytes.Equal(got, want) {
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
	other, otherKey := tw.client(t, "FR", "auditor")
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
		if got := testutil.ToFloat64(tw.gateways[m.gw].metrics.bundles.WithLabelValues(m.event)); got != 1 {
			t.Errorf("%s evx_bundles_total{event=%q} = %v, want 1", m.gw, m.event, got)
		}
	}
	if got := testutil.ToFloat64(tw.gateways["DE"].metrics.refusals.WithLabelValues("api", "forbidden")); got != 1 {
		t.Errorf(`DE evx_refusals_total{where="api",code="forbidden"} = %v, want 1`, got)
	}
}

func isAPIError(err error, status int, code string) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.HTTPStatus == status && ae.Code == api.Code(code)
}
