package gateway

import (
	"net"

	"evx/internal/devenv"
	"evx/storage"

	"go.uber.org/zap"
)

// devOptions returns gateway options for country id of a dev world,
// listening on loopback: peerAddrs maps each country to its UDP address
// (the own entry is the listening address).
func devOptions(w *devenv.World, id string, peerAddrs map[string]string, apiAddr string, st storage.Backend, log *zap.Logger) Options {
	c := w.Country(id)
	o := Options{
		ID: id, PeerAddr: peerAddrs[id], APIAddr: apiAddr,
		Certificate: c.Cert, LocalCA: c.CAPool(), SigningKey: c.Signing.Signer(),
		Storage: st, Logger: log,
	}
	for _, p := range w.Countries {
		if p.ID != id {
			o.Peers = append(o.Peers, w.Peer(p.ID, peerAddrs[p.ID]))
		}
	}
	for _, u := range c.Users {
		o.Users = append(o.Users, User{Unit: u.Unit, Role: u.Role, Key: u.Key.Public()})
	}
	return o
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(network string) (string, error) {
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		defer c.Close()
		return c.LocalAddr().String(), nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
