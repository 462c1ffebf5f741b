package client_test

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"

	"evx/crypto"
	"evx/gateway"
	"evx/internal/testworld"
	"evx/storage"
)

// world runs DE's and FR's gateways on loopback (see testworld.World), for
// the client to talk to as it would in production.
type world struct{ *testworld.World }

func startWorld(t *testing.T) *world {
	t.Helper()
	return startWorldWith(t, nil)
}

// startWorldWith is startWorld with gateway options adjusted by modify
// each time a gateway starts.
func startWorldWith(t *testing.T, modify func(id string, o *gateway.Options)) *world {
	t.Helper()
	w := &world{testworld.New(t, diskStore, func(c testworld.Config) (testworld.Gateway, error) {
		o := gateway.Options{ID: c.ID, PeerAddr: c.PeerAddr, APIAddr: "127.0.0.1:0",
			Certificate: c.Certificate, LocalCA: c.LocalCA, SigningKey: c.SigningKey, Peers: c.Peers,
			Storage: c.Store, Logger: c.Logger, ConfigSHA256: c.ConfigSHA256, Agreements: c.Agreements,
			RetryInterval: c.RetryInterval, RetryMax: c.RetryMax, DirectConnectTimeout: c.DirectConnectTimeout,
			MasterKey: c.MasterKey, HoldUnits: c.HoldUnits}
		for _, u := range c.Users {
			o.Users = append(o.Users, gateway.User{Unit: u.Unit, Role: u.Role, Key: u.Key.Public(), Purposes: u.Purposes})
		}
		if modify != nil {
			modify(c.ID, &o)
		}
		g, err := gateway.New(o)
		if err != nil {
			return nil, err
		}
		return g, nil
	})}
	w.Start(t, "DE")
	w.Start(t, "FR")
	return w
}

func diskStore(tb testing.TB, _ string) storage.Backend {
	d, err := storage.NewDisk(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	return d
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
	if err := os.WriteFile(caFile, crypto.CertPEM(w.Dev.Country(country).CA.Cert), 0o644); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, caFile
}
