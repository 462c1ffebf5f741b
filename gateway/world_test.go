package gateway

import (
	"strings"
	"testing"

	"evx/crypto"
	"evx/internal/testworld"
	"evx/storage"
	"evx/storage/storagetest"
	"evx/transfer"

	"go.uber.org/zap"
)

// testWorld is DE's and FR's gateways on loopback (see testworld.World),
// as package gateway runs them: its tests may set unexported options.
type testWorld struct{ *testworld.World }

// startWorld runs DE and FR gateways on loopback with storage from newStore.
func startWorld(t *testing.T, newStore func(testing.TB, string) storage.Backend) *testWorld {
	t.Helper()
	tw := newTestWorld(t, newStore, nil)
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	return tw
}

// newTestWorld prepares DE and FR without starting them. modify, if set,
// adjusts a gateway's options each time it starts.
func newTestWorld(tb testing.TB, newStore func(testing.TB, string) storage.Backend, modify func(id string, o *Options)) *testWorld {
	tb.Helper()
	return &testWorld{testworld.New(tb, newStore, func(c testworld.Config) (testworld.Gateway, error) {
		o := devOptions(c.GatewayParts, "127.0.0.1:0", c.Store, c.Logger)
		o.RetryInterval, o.RetryMax, o.DirectConnectTimeout = c.RetryInterval, c.RetryMax, c.DirectConnectTimeout
		if modify != nil {
			modify(c.ID, &o)
		}
		g, err := New(o)
		if err != nil {
			return nil, err
		}
		return g, nil
	})}
}

// gw returns country id's running gateway.
func (tw *testWorld) gw(id string) *Gateway { return tw.Gateway(id).(*Gateway) }

// recipientKey returns the public key of a dev world's user, as sealed to.
func (tw *testWorld) recipientKey(country, user string) crypto.PublicKey {
	u := tw.Dev.Country(country).User(user)
	return crypto.PublicKey{Unit: u.Unit, AgeRecipient: u.Key.Public().AgeRecipient}
}

// peerClient returns a transfer client presenting from's gateway
// certificate, and the peer to for it, as from's gateway would dial it.
func (tw *testWorld) peerClient(t *testing.T, from, to string) (*transfer.Client, transfer.Peer) {
	t.Helper()
	c := transfer.NewClient(from, tw.Dev.Country(from).Cert, zap.NewNop())
	t.Cleanup(func() { c.Close() })
	return c, tw.Peer(to)
}

func diskStore(tb testing.TB, _ string) storage.Backend {
	d, err := storage.NewDisk(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// s3Store returns an S3 backend on a fresh bucket of the test server named
// by the environment that scripts/minio.sh start prints. Without one the
// test skips, except under CI, which must run it. The bucket has Object
// Lock, as a gateway's must, in GOVERNANCE mode, so that the test's
// cleanup can remove what is locked.
func s3Store(tb testing.TB, _ string) storage.Backend {
	tb.Helper()
	cfg := storagetest.S3Env(tb)
	cfg.Bucket = storagetest.NewLockBucket(tb, cfg, "evx-test-")
	cfg.ObjectLock, cfg.LockMode = true, "GOVERNANCE"
	s, err := storage.NewS3(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// backends are the storage backends every end-to-end test runs on.
var backends = []struct {
	name     string
	newStore func(testing.TB, string) storage.Backend
}{
	{"Disk", diskStore},
	{"S3", s3Store},
}

// forEachBackend runs f as a subtest per storage backend.
func forEachBackend(t *testing.T, f func(t *testing.T, newStore func(testing.TB, string) storage.Backend)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { f(t, b.newStore) })
	}
}

// lockingStore is what a gateway's storage is: a backend that locks
// objects. Test stores that wrap one embed it.
type lockingStore interface {
	storage.Backend
	storage.Locker
}

// locking returns b as a lockingStore.
func locking(tb testing.TB, b storage.Backend) lockingStore {
	tb.Helper()
	l, ok := b.(lockingStore)
	if !ok {
		tb.Fatalf("storage %T does not lock objects", b)
	}
	return l
}

// newFaulty wraps b, which must lock objects as a gateway's storage does, to
// inject faults.
func newFaulty(tb testing.TB, b storage.Backend) *storagetest.FaultyLocker {
	tb.Helper()
	return storagetest.NewFaultyLocker(locking(tb, b))
}

// isOuterLayerKey reports whether k is the key of a received payload's
// outer layer (retention.go).
func isOuterLayerKey(k string) bool {
	return strings.HasPrefix(k, inboxPrefix) && strings.Contains(k, "/payload-") && strings.HasSuffix(k, ".age")
}
