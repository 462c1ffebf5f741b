package gateway

import (
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"

	"evx/agreement"
	"evx/audit"
	"evx/transfer"
)

// settings are the parts of the configuration that a reload replaces
// (docs/agreements.md 7): the peers, the local users and the agreements.
// They are never changed in place: a reload builds new settings and swaps
// the pointer, so that each request decides under one consistent set,
// the one in force when it asked, and the next request sees the new one.
type settings struct {
	peers map[string]transfer.Peer
	users map[string]User
	// userList holds the users in the configuration's order, which the
	// signed unit directory keeps.
	userList   []User
	agreements map[string]*agreement.Agreement
	// configSHA256 is the digest of the configuration they came from.
	configSHA256 [32]byte
}

// Settings are what a reload gives the gateway: the peers, users and
// agreements of the configuration file, read and checked again, and its
// digest. RestartNeeded names the settings that changed in the file but
// apply only when the gateway starts again (listening addresses, storage,
// certificates), for the operator to read.
type Settings struct {
	Peers         []transfer.Peer
	Users         []User
	Agreements    []*agreement.Agreement
	ConfigSHA256  [32]byte
	RestartNeeded []string
}

// settings returns the settings in force.
func (g *Gateway) settings() *settings { return g.set.Load() }

// newSettings checks and indexes s for gateway self: every user belongs to
// it, every agreement is with a peer, at most one per peer. The peers'
// log keys are checked where the log reads them (witness.go).
func newSettings(self string, s Settings) (*settings, error) {
	if s.ConfigSHA256 == ([32]byte{}) {
		return nil, errors.New("no configuration digest: the transfer log records it")
	}
	out := &settings{
		peers:        map[string]transfer.Peer{},
		users:        map[string]User{},
		agreements:   map[string]*agreement.Agreement{},
		configSHA256: s.ConfigSHA256,
	}
	for _, p := range s.Peers {
		if p.ID == "" || p.ID == self {
			return nil, fmt.Errorf("peer %q: not a peer of gateway %s", p.ID, self)
		}
		if _, ok := out.peers[p.ID]; ok {
			return nil, fmt.Errorf("two peers %s", p.ID)
		}
		out.peers[p.ID] = p
	}
	for _, u := range s.Users {
		if country, _, _ := strings.Cut(u.Unit, "/"); country != self {
			return nil, fmt.Errorf("user %q does not belong to gateway %s", u.Unit, self)
		}
		if _, ok := out.users[u.Unit]; ok {
			return nil, fmt.Errorf("two users %s", u.Unit)
		}
		out.users[u.Unit] = u
		out.userList = append(out.userList, u)
	}
	for _, a := range s.Agreements {
		if a == nil {
			return nil, errors.New("a nil agreement")
		}
		if _, ok := out.peers[a.Peer]; !ok {
			return nil, fmt.Errorf("agreement with %q, which is not a peer", a.Peer)
		}
		// Each decision is recorded with the agreement's version and
		// reference: one the log refuses would refuse every bundle.
		if a.Version < 1 || a.Version > 1<<31-1 {
			return nil, fmt.Errorf("agreement with %s: version %d is not from 1 to %d", a.Peer, a.Version, 1<<31-1)
		}
		if err := audit.CheckAgreementRef(a.Ref); err != nil {
			return nil, fmt.Errorf("agreement with %s: %w", a.Peer, err)
		}
		if out.agreements[a.Peer] != nil {
			return nil, fmt.Errorf("two agreements with %s", a.Peer)
		}
		out.agreements[a.Peer] = a
	}
	return out, nil
}

// peerIDs returns the peers' ids, sorted.
func (s *settings) peerIDs() []string {
	ids := make([]string, 0, len(s.peers))
	for id := range s.peers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// peerCAs returns the pool of each peer's CA, by peer, for the peer
// listener's handshakes.
func (s *settings) peerCAs() map[string]*x509.CertPool {
	cas := make(map[string]*x509.CertPool, len(s.peers))
	for id, p := range s.peers {
		cas[id] = p.CA
	}
	return cas
}
