package gateway

import (
	"evx/internal/devenv"
	"evx/storage"

	"go.uber.org/zap"
)

// devOptions returns the options of the gateway whose parts p are, with
// its API at apiAddr, on storage st.
func devOptions(p devenv.GatewayParts, apiAddr string, st storage.Backend, log *zap.Logger) Options {
	o := Options{ID: p.ID, PeerAddr: p.PeerAddr, APIAddr: apiAddr, Certificate: p.Certificate, LocalCA: p.LocalCA,
		SigningKey: p.SigningKey, Peers: p.Peers, Storage: st, Logger: log, ConfigSHA256: p.ConfigSHA256,
		Agreements: p.Agreements, MasterKey: p.MasterKey, HoldUnits: p.HoldUnits}
	for _, u := range p.Users {
		o.Users = append(o.Users, User{Unit: u.Unit, Role: u.Role, Key: u.Key.Public(), Purposes: u.Purposes})
	}
	return o
}
