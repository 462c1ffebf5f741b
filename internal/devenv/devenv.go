// Package devenv makes complete multi-country set-ups for development, tests
// and the demo: per country a CA, a gateway certificate and signing key, and
// local users with unit keys and client certificates; and it writes them as
// the files a real deployment has (gateway configurations, profiles), so
// that what runs from them runs exactly as in production.
//
// It imports crypto, config, transfer and api, never the gateway daemon.
package devenv

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"evx/agreement"
	"evx/api"
	"evx/config"
	"evx/crypto"
	"evx/transfer"
)

// World is a complete set-up of several countries for development, tests
// and the demo: per country a CA, a gateway certificate and signing key, and
// users with unit keys and client certificates.
type World struct {
	Countries []*Country
}

// Country is one country of a World.
type Country struct {
	ID      string
	CA      *crypto.CA
	Cert    tls.Certificate
	Signing *crypto.UnitKey
	// MasterKey is the gateway's master key file, which wraps the keys of
	// its stored payloads' outer layer.
	MasterKey []byte
	Users     []*User
}

// User is one local user of a Country.
type User struct {
	Name string // forensics, prosecutor, auditor, operator
	Unit string
	Role api.Role
	Key  *crypto.UnitKey
	Cert tls.Certificate
	// Purposes are those a recipient is authorised for (DevPurposes);
	// nil for the other roles.
	Purposes []string
}

// DevPurposes are the purposes of dev-env's agreements, both ways, and
// those its recipients are authorised for: the others are refused, so
// that the refusal paths can be tried at once.
var DevPurposes = []string{"criminal-investigation", "prosecution", "mutual-legal-assistance"}

// DevMaxRetention is dev-env's agreements' longest retention, for every
// purpose they allow.
const DevMaxRetention = 365 * 24 * time.Hour

// DevAgreement is the agreement dev-env writes for gateway self with peer:
// version 1, ref "dev-env", DevPurposes both ways with DevMaxRetention,
// every handling code and TLP label, active, with no end.
func DevAgreement(peer string) *agreement.Agreement {
	a := &agreement.Agreement{Peer: peer, Version: 1, Ref: "dev-env",
		Outbound: slices.Clone(DevPurposes), Inbound: slices.Clone(DevPurposes),
		Handling: slices.Clone(crypto.HandlingCodes), TLP: slices.Clone(crypto.TLPLabels),
		MaxRetention: map[string]time.Duration{}, Status: agreement.Active}
	for _, p := range DevPurposes {
		a.MaxRetention[p] = DevMaxRetention
	}
	return a
}

// devUsers are the users of every country in a World.
var devUsers = []struct {
	name string
	role api.Role
}{
	{"forensics", api.RoleSubmitter},
	{"prosecutor", api.RoleRecipient},
	{"auditor", api.RoleAuditor},
	{"operator", api.RoleOperator},
}

// NewWorld makes the keys and certificates of countries ids.
func New(ids ...string) (*World, error) {
	w := &World{}
	for _, id := range ids {
		c := &Country{ID: id}
		var err error
		if c.CA, err = crypto.NewCA(id, 5*365*24*time.Hour); err != nil {
			return nil, err
		}
		c.Cert, err = c.CA.Issue(crypto.CertRequest{
			CommonName: "evx gateway " + id, URIs: []string{transfer.GatewayURI(id)},
			DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
			Server: true, Client: true,
		})
		if err != nil {
			return nil, err
		}
		if c.Signing, err = crypto.GenerateUnitKey(""); err != nil {
			return nil, err
		}
		var mk bytes.Buffer
		if err := crypto.GenerateMasterKey(&mk); err != nil {
			return nil, err
		}
		c.MasterKey = mk.Bytes()
		for _, du := range devUsers {
			u := &User{Name: du.name, Unit: id + "/" + du.name, Role: du.role}
			if du.role == api.RoleRecipient {
				u.Purposes = slices.Clone(DevPurposes)
			}
			if u.Key, err = crypto.GenerateUnitKey(u.Unit); err != nil {
				return nil, err
			}
			u.Cert, err = c.CA.Issue(crypto.CertRequest{CommonName: u.Unit, URIs: []string{crypto.UnitURI(u.Unit)}, Client: true})
			if err != nil {
				return nil, err
			}
			c.Users = append(c.Users, u)
		}
		w.Countries = append(w.Countries, c)
	}
	return w, nil
}

// Country returns the country with the given id, or nil.
func (w *World) Country(id string) *Country {
	for _, c := range w.Countries {
		if c.ID == id {
			return c
		}
	}
	return nil
}

// User returns the user with the given name, or nil.
func (c *Country) User(name string) *User {
	for _, u := range c.Users {
		if u.Name == name {
			return u
		}
	}
	return nil
}

// CAPool returns a pool holding the country's CA certificate.
func (c *Country) CAPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.CA.Cert)
	return p
}

// Peer returns country id as a peer of the others: its CA pool and public
// signing key, at address.
func (w *World) Peer(id, address string) transfer.Peer {
	c := w.Country(id)
	logKey, witnessKey := c.Signing.Signer().LogVerifierKeys(id)
	return transfer.Peer{ID: id, Address: address, CA: c.CAPool(),
		SigningKey: crypto.FormatSigningKey(c.Signing.SigningPublicKey()), LogKey: logKey, WitnessKey: witnessKey}
}

// GatewayParts are what a World holds for one country's gateway: its
// identity, certificates and keys, its peers and its users. Tests build
// gateway options from them.
type GatewayParts struct {
	ID string
	// PeerAddr is the gateway's own UDP address.
	PeerAddr    string
	Certificate tls.Certificate
	LocalCA     *x509.CertPool
	SigningKey  *crypto.SigningKey
	Peers       []transfer.Peer
	Users       []*User
	// ConfigSHA256 stands for the digest of the gateway's configuration,
	// which a gateway built from parts, not from a file, does not have.
	ConfigSHA256 [32]byte
	// Agreements are the gateway's agreements, DevAgreement with each
	// peer.
	Agreements []*agreement.Agreement
	// MasterKey is the gateway's master key; HoldUnits its units that may
	// place legal holds: its operator.
	MasterKey *crypto.MasterKey
	HoldUnits []string
}

// GatewayParts returns the parts of country id's gateway, with each country
// at the UDP address peerAddrs gives it.
func (w *World) GatewayParts(id string, peerAddrs map[string]string) GatewayParts {
	c := w.Country(id)
	p := GatewayParts{ID: id, PeerAddr: peerAddrs[id], Certificate: c.Cert, LocalCA: c.CAPool(),
		SigningKey: c.Signing.Signer(), Users: c.Users,
		ConfigSHA256: sha256.Sum256([]byte("evx dev-env gateway " + id)), HoldUnits: []string{id + "/operator"}}
	mk, err := crypto.ParseMasterKey(c.MasterKey)
	if err != nil {
		panic(err) // made by New
	}
	p.MasterKey = mk
	for _, o := range w.Countries {
		if o.ID != id {
			p.Peers = append(p.Peers, w.Peer(o.ID, peerAddrs[o.ID]))
			p.Agreements = append(p.Agreements, DevAgreement(o.ID))
		}
	}
	return p
}

// S3 configures dev-env to use an S3 endpoint, one bucket per country.
type S3 struct {
	Endpoint  string // host:port
	TLS       bool
	AccessKey string
	SecretKey string
}

// WriteFiles writes the set-up under dir: for each country ID, dir/ID/ holds
// ca.pem (and ca-key.pem), the gateway's certificate, key and signing key,
// gateway.yaml, and one folder per user with its unit key, public key,
// client certificate and profile.yaml. Ports are picked free on loopback.
func (w *World) WriteFiles(dir string, s3 *S3) error {
	peerAddrs, apiAddrs, metricsAddrs := map[string]string{}, map[string]string{}, map[string]string{}
	// A port is free again as soon as FreeAddr returns, and the system may
	// hand it out twice: each address must be another port.
	used := map[string]bool{}
	pick := func(network string) (string, error) {
		for range 100 {
			a, err := FreeAddr(network)
			if err != nil {
				return "", err
			}
			_, port, _ := net.SplitHostPort(a)
			if !used[port] {
				used[port] = true
				return a, nil
			}
		}
		return "", errors.New("no free port on loopback that is not already taken by the set-up")
	}
	for _, c := range w.Countries {
		var err error
		if peerAddrs[c.ID], err = pick("udp"); err != nil {
			return err
		}
		if apiAddrs[c.ID], err = pick("tcp"); err != nil {
			return err
		}
		if metricsAddrs[c.ID], err = pick("tcp"); err != nil {
			return err
		}
	}
	for _, c := range w.Countries {
		cdir := filepath.Join(dir, c.ID)
		if err := os.MkdirAll(cdir, 0o700); err != nil {
			return err
		}
		if err := c.CA.WriteFiles(filepath.Join(cdir, "ca.pem"), filepath.Join(cdir, "ca-key.pem")); err != nil {
			return err
		}
		if err := crypto.WriteCertFiles(c.Cert, filepath.Join(cdir, "gateway.pem"), filepath.Join(cdir, "gateway-key.pem")); err != nil {
			return err
		}
		if err := writeKey(filepath.Join(cdir, "gateway-signing.key"), c.Signing); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(cdir, "master.key"), c.MasterKey, 0o600); err != nil {
			return err
		}
		var peers, users, agreements strings.Builder
		// An auditor pins its gateway's log key and the peers' witness
		// keys, as the operators would hand them over.
		ownLogKey, _ := c.Signing.Signer().LogVerifierKeys(c.ID)
		var peerWitnessKeys []string
		for _, p := range w.Countries {
			if p.ID == c.ID {
				continue
			}
			logKey, witnessKey := p.Signing.Signer().LogVerifierKeys(p.ID)
			peerWitnessKeys = append(peerWitnessKeys, witnessKey)
			fmt.Fprintf(&peers, "  - id: %s\n    address: %s\n    ca: ../%s/ca.pem\n    signing_key: %s\n    log_key: %s\n    witness_key: %s\n",
				p.ID, peerAddrs[p.ID], p.ID, crypto.FormatSigningKey(p.Signing.SigningPublicKey()), logKey, witnessKey)
			writeAgreement(&agreements, DevAgreement(p.ID))
		}
		for _, u := range c.Users {
			udir := filepath.Join(cdir, u.Name)
			if err := os.MkdirAll(udir, 0o700); err != nil {
				return err
			}
			if err := writeKey(filepath.Join(udir, "unit.key"), u.Key); err != nil {
				return err
			}
			pub, _ := u.Key.Public().MarshalText()
			if err := os.WriteFile(filepath.Join(udir, "unit.pub"), pub, 0o644); err != nil {
				return err
			}
			if err := crypto.WriteCertFiles(u.Cert, filepath.Join(udir, "cert.pem"), filepath.Join(udir, "cert-key.pem")); err != nil {
				return err
			}
			profile := &config.Profile{
				Gateway: "https://" + apiAddrs[c.ID], CA: "../ca.pem", Cert: "cert.pem", Key: "cert-key.pem", UnitKey: "unit.key",
			}
			if u.Role == api.RoleAuditor {
				profile.LogKey, profile.WitnessKeys = ownLogKey, peerWitnessKeys
			}
			prof, err := config.MarshalProfile(profile)
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(udir, "profile.yaml"), prof, 0o600); err != nil {
				return err
			}
			fmt.Fprintf(&users, "  - identity: %s\n    role: %s\n", u.Unit, u.Role)
			if u.Role == api.RoleSubmitter || u.Role == api.RoleRecipient {
				fmt.Fprintf(&users, "    public_key: %s/unit.pub\n", u.Name)
			}
			if len(u.Purposes) > 0 {
				fmt.Fprintf(&users, "    purposes: %s\n", yamlList(u.Purposes))
			}
		}
		storageYAML := "storage:\n  dir: data\n"
		if s3 != nil {
			for name, v := range map[string]string{"s3-access-key": s3.AccessKey, "s3-secret-key": s3.SecretKey} {
				if err := os.WriteFile(filepath.Join(cdir, name), []byte(v+"\n"), 0o600); err != nil {
					return err
				}
			}
			storageYAML = fmt.Sprintf("storage:\n  s3:\n    endpoint: %s\n    bucket: evx-%s\n    region: us-east-1\n    access_key_file: s3-access-key\n    secret_key_file: s3-secret-key\n    tls: %v\n",
				s3.Endpoint, strings.ToLower(c.ID), s3.TLS)
		}
		cfg := fmt.Sprintf(`# Gateway of %[1]s, written by evx dev-env for development only.
id: %[1]s
listen:
  peer: %[2]s
  api: %[3]s
  metrics: %[4]s
tls:
  ca: ca.pem
  cert: gateway.pem
  key: gateway-key.pem
signing_key: gateway-signing.key
%[5]s# Retention (docs/retention.md): expired bundles are looked for every 10
# seconds, so that a bundle pushed with --retain 30s can be seen to expire.
retention:
  master_key: master.key
  reaper_interval: 10s
  outbox_grace: 1m
  hold_units: [%[1]s/operator]
peers:
%[6]s# Each peer's agreement (docs/agreements.md): three purposes both ways,
# kept at most 365 days; the other purposes are refused.
agreements:
%[8]susers:
%[7]s`, c.ID, peerAddrs[c.ID], apiAddrs[c.ID], metricsAddrs[c.ID], storageYAML, peers.String(), users.String(), agreements.String())
		if err := os.WriteFile(filepath.Join(cdir, "gateway.yaml"), []byte(cfg), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// writeAgreement writes a as an item of a configuration's agreements.
func writeAgreement(b *strings.Builder, a *agreement.Agreement) {
	fmt.Fprintf(b, "  - peer: %s\n    version: %d\n    ref: %s\n    status: %s\n", a.Peer, a.Version, strconv.Quote(a.Ref), a.Status)
	if a.StatusReason != "" {
		fmt.Fprintf(b, "    reason: %s\n", strconv.Quote(a.StatusReason))
	}
	fmt.Fprintf(b, "    outbound: %s\n    inbound: %s\n    handling: %s\n    tlp: %s\n",
		yamlList(a.Outbound), yamlList(a.Inbound), yamlList(a.Handling), yamlList(a.TLP))
	if len(a.MaxRetention) > 0 {
		b.WriteString("    max_retention:\n")
		purposes := slices.Sorted(maps.Keys(a.MaxRetention))
		for _, p := range purposes {
			fmt.Fprintf(b, "      %s: %s\n", p, config.Retention(a.MaxRetention[p]))
		}
	}
	if a.MaxBundleSize > 0 {
		fmt.Fprintf(b, "    max_bundle_size: %s\n", config.Size(a.MaxBundleSize))
	}
	if a.RateBundles > 0 || a.RateBytes > 0 {
		b.WriteString("    rate:\n")
		if a.RateBundles > 0 {
			fmt.Fprintf(b, "      bundles_per_hour: %d\n", a.RateBundles)
		}
		if a.RateBytes > 0 {
			fmt.Fprintf(b, "      bytes_per_hour: %s\n", config.Size(a.RateBytes))
		}
	}
	if !a.ValidFrom.IsZero() {
		fmt.Fprintf(b, "    valid_from: %s\n", a.ValidFrom.Format(time.RFC3339Nano))
	}
	if !a.ValidUntil.IsZero() {
		fmt.Fprintf(b, "    valid_until: %s\n", a.ValidUntil.Format(time.RFC3339Nano))
	}
}

// yamlList writes a list of words as a YAML flow sequence of quoted
// strings.
func yamlList(vs []string) string {
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = strconv.Quote(v)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func writeKey(path string, k *crypto.UnitKey) error {
	text, err := k.MarshalText()
	if err != nil {
		return err
	}
	return os.WriteFile(path, text, 0o600)
}

// FreeAddr returns a loopback address with a port that was free a moment
// ago, for network "udp" or "tcp". It picks the port below the system's
// range of ephemeral ports, so that the outgoing connections of other
// programs, and of the gateways it is meant for, cannot take it before
// the gateway that is to listen on it starts; if none is free there, any.
func FreeAddr(network string) (string, error) {
	low := ephemeralLow()
	for range 64 {
		port := minListenPort + rand.IntN(low-minListenPort)
		if a, err := listenOnce(network, fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			return a, nil
		}
	}
	return listenOnce(network, "127.0.0.1:0")
}

// minListenPort is the lowest port FreeAddr picks: below it are the ports
// of well-known services.
const minListenPort = 10000

// ephemeralLow returns the first port of the system's ephemeral range, or
// 32768 (Linux's default) if it cannot be read or leaves no room below.
func ephemeralLow() int {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	var low, high int
	if _, err := fmt.Sscan(string(data), &low, &high); err != nil || low <= minListenPort+1000 {
		return 32768
	}
	return low
}

// listenOnce listens on addr and closes at once, returning the address.
func listenOnce(network, addr string) (string, error) {
	if network == "udp" {
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			return "", err
		}
		defer c.Close()
		return c.LocalAddr().String(), nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
