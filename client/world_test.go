package client_test

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"evx/client"
	"evx/crypto"
	"evx/gateway"
	"evx/internal/devenv"
	"evx/storage"

	"go.uber.org/zap"
)

// world runs DE's and FR's gateways on loopback, from a devenv world, for
// the client to talk to as it would in production.
type world struct {
	// modify, if set, adjusts a gateway's options each time it starts.
	modify func(id string, o *gateway.Options)
	dev    *devenv.World
	addrs  map[string]string // peer (UDP) addresses, fixed across restarts
	store  map[string]storage.Backend
	gws    map[string]*gateway.Gateway
	stops  map[string]func()
}

func startWorld(t *testing.T) *world {
	t.Helper()
	return startWorldWith(t, nil)
}

// startWorldWith is startWorld with gateway options adjusted by modify.
func startWorldWith(t *testing.T, modify func(id string, o *gateway.Options)) *world {
	t.Helper()
	dev, err := devenv.New("DE", "FR")
	if err != nil {
		t.Fatal(err)
	}
	w := &world{modify: modify, dev: dev, addrs: map[string]string{}, store: map[string]storage.Backend{},
		gws: map[string]*gateway.Gateway{}, stops: map[string]func(){}}
	for _, id := range []string{"DE", "FR"} {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		w.addrs[id] = c.LocalAddr().String()
		c.Close()
		if w.store[id], err = storage.NewDisk(t.TempDir()); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for id := range w.stops {
			w.stop(id)
		}
	})
	w.start(t, "DE")
	w.start(t, "FR")
	return w
}

// start runs country id's gateway until stop or the end of the test.
func (w *world) start(t *testing.T, id string) {
	t.Helper()
	c := w.dev.Country(id)
	opts := gateway.Options{
		ID: id, PeerAddr: w.addrs[id], APIAddr: "127.0.0.1:0",
		Certificate: c.Cert, LocalCA: c.CAPool(), SigningKey: c.Signing.Signer(),
		Storage: w.store[id], Logger: zap.NewNop(),
		RetryInterval: 50 * time.Millisecond, RetryMax: 500 * time.Millisecond,
		DirectConnectTimeout: time.Second,
	}
	for _, p := range w.dev.Countries {
		if p.ID != id {
			opts.Peers = append(opts.Peers, w.dev.Peer(p.ID, w.addrs[p.ID]))
		}
	}
	for _, u := range c.Users {
		opts.Users = append(opts.Users, gateway.User{Unit: u.Unit, Role: u.Role, Key: u.Key.Public()})
	}
	if w.modify != nil {
		w.modify(id, &opts)
	}
	g, err := gateway.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	w.gws[id] = g
	w.stops[id] = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway %s: %v", id, err)
		}
	}
}

func (w *world) stop(id string) {
	stop := w.stops[id]
	delete(w.stops, id)
	stop()
}

func (w *world) url(country string) string { return "https://" + w.gws[country].APIAddr() }

// client returns a client of country's gateway for one of its users, and
// the user's unit key.
func (w *world) client(country, user string) (*client.Client, *crypto.UnitKey) {
	c := w.dev.Country(country)
	u := c.User(user)
	return client.New(w.url(country), u.Cert, &tls.Config{RootCAs: c.CAPool()}), u.Key
}

// files writes a user's client certificate and key and the country's CA
// into a directory, as a profile names them, and returns their paths.
func (w *world) files(t *testing.T, country string, cert tls.Certificate) (certFile, keyFile, caFile string) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile, caFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "cert-key.pem"), filepath.Join(dir, "ca.pem")
	if err := crypto.WriteCertFiles(cert, certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, crypto.CertPEM(w.dev.Country(country).CA.Cert), 0o644); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, caFile
}

// evidence writes a file of size bytes into a new directory and returns it
// ready to seal.
func evidence(t *testing.T, size int) []crypto.SourceFile {
	t.Helper()
	dir := t.TempDir()
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7)
	}
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
