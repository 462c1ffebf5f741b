// Package testworld runs DE's and FR's gateways on loopback for tests and
// benchmarks: from a devenv world, on storage the test chooses, at peer
// addresses that stay the same when a gateway restarts, with each
// country's log observed.
//
// It does not import the gateway: the test supplies the function that
// starts one, so that the gateway's own tests, which set its unexported
// options, can use this package too.
package testworld

import (
	"context"
	"crypto/tls"
	"strings"
	"sync"
	"testing"
	"time"

	"evx/client"
	"evx/crypto"
	"evx/internal/devenv"
	"evx/storage"
	"evx/transfer"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// countries are the countries of a World, in the order they start.
var countries = []string{"DE", "FR"}

// Gateway is a gateway as a World runs it.
type Gateway interface {
	APIAddr() string
	PeerAddr() string
	Run(ctx context.Context) error
}

// Config is what a World gives the function that makes a gateway: the
// parts of a devenv country (listening on GatewayParts.PeerAddr), the
// storage and the logger, and timings short enough for tests. The API
// listens on any free loopback port.
type Config struct {
	devenv.GatewayParts
	Store  storage.Backend
	Logger *zap.Logger
	// A failed delivery is retried after RetryInterval, doubling up to
	// RetryMax; DirectConnectTimeout bounds reaching a peer directly.
	RetryInterval, RetryMax, DirectConnectTimeout time.Duration
}

// World is DE's and FR's gateways on loopback. Tests stop and start them
// again on the same storage and addresses. Its methods are for the test's
// goroutine.
type World struct {
	Dev *devenv.World
	// Addrs are the peer (UDP) addresses, fixed across restarts.
	Addrs  map[string]string
	Stores map[string]storage.Backend
	// Logs observe each country's gateway at Info level and above,
	// across restarts; warnings and errors go to the test's log too.
	Logs map[string]*observer.ObservedLogs

	newGateway func(Config) (Gateway, error)
	cores      map[string]zapcore.Core
	running    map[string]*running
}

type running struct {
	g      Gateway
	cancel context.CancelFunc
	done   chan error // Run's result
}

// New prepares DE and FR with storage from newStore, without starting
// them; newGateway makes a gateway each time one starts. The gateways still
// running when tb ends are stopped.
func New(tb testing.TB, newStore func(tb testing.TB, country string) storage.Backend, newGateway func(Config) (Gateway, error)) *World {
	tb.Helper()
	dev, err := devenv.New(countries...)
	if err != nil {
		tb.Fatal(err)
	}
	w := &World{Dev: dev, Addrs: map[string]string{}, Stores: map[string]storage.Backend{},
		Logs: map[string]*observer.ObservedLogs{}, newGateway: newGateway,
		cores: map[string]zapcore.Core{}, running: map[string]*running{}}
	// Registered first, so it runs last: gateways log while they stop, but
	// a goroutine that outlives them must not log through tb afterwards.
	tl := &testLog{tb: tb}
	tb.Cleanup(tl.close)
	for _, id := range countries {
		if w.Addrs[id], err = devenv.FreeAddr("udp"); err != nil {
			tb.Fatal(err)
		}
		obs, logs := observer.New(zap.InfoLevel)
		text := zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()), zapcore.AddSync(tl), zap.WarnLevel)
		w.Logs[id], w.cores[id] = logs, zapcore.NewTee(obs, text)
	}
	for _, id := range countries {
		w.Stores[id] = newStore(tb, id)
	}
	tb.Cleanup(func() {
		for _, id := range countries {
			if w.running[id] != nil {
				w.Stop(tb, id)
			}
		}
	})
	return w
}

// Start runs country id's gateway on its storage and peer address until
// Stop or the end of the test.
func (w *World) Start(tb testing.TB, id string) {
	tb.Helper()
	if w.running[id] != nil {
		tb.Fatalf("gateway %s is already running", id)
	}
	g, err := w.newGateway(Config{
		GatewayParts: w.Dev.GatewayParts(id, w.Addrs), Store: w.Stores[id],
		Logger:        zap.New(w.cores[id]).Named(id),
		RetryInterval: 50 * time.Millisecond, RetryMax: 500 * time.Millisecond, DirectConnectTimeout: time.Second,
	})
	if err != nil {
		tb.Fatalf("gateway %s: %v", id, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{g: g, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- g.Run(ctx) }()
	w.running[id] = r
}

// Stop shuts country id's gateway down, waits until Run has returned and
// reports its error.
func (w *World) Stop(tb testing.TB, id string) {
	tb.Helper()
	r := w.running[id]
	if r == nil {
		tb.Fatalf("gateway %s is not running", id)
	}
	delete(w.running, id)
	r.cancel()
	if err := <-r.done; err != nil {
		tb.Errorf("gateway %s: %v", id, err)
	}
}

// Gateway returns country id's running gateway, or nil.
func (w *World) Gateway(id string) Gateway {
	if r := w.running[id]; r != nil {
		return r.g
	}
	return nil
}

// URL returns the address of country's running API.
func (w *World) URL(country string) string { return "https://" + w.running[country].g.APIAddr() }

// Client returns a client of country's running API for one of its users,
// and the user's unit key.
func (w *World) Client(country, user string) (*client.Client, *crypto.UnitKey) {
	u := w.Dev.Country(country).User(user)
	return w.ClientWithCert(country, u.Cert), u.Key
}

// ClientWithCert returns a client of country's running API presenting cert.
func (w *World) ClientWithCert(country string, cert tls.Certificate) *client.Client {
	return client.New(w.URL(country), cert, &tls.Config{RootCAs: w.Dev.Country(country).CAPool()})
}

// Peer returns country id as its peers know it, for a transfer.Client
// presenting another country's gateway certificate.
func (w *World) Peer(id string) transfer.Peer { return w.Dev.Peer(id, w.Addrs[id]) }

// testLog passes log lines to tb until the test is over.
type testLog struct {
	mu   sync.Mutex
	tb   testing.TB
	done bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.tb.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (l *testLog) Sync() error { return nil }

func (l *testLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done = true
}
