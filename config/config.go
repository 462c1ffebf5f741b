// Package config loads and validates the YAML configuration of an evx
// gateway.
//
// The [Gateway] type is the reference of the configuration file: every key
// is a field documented there, and example.yaml is a commented example. A
// configuration is decoded strictly: an unknown or duplicate key, a missing
// required field or a bad value is an error that names the field path (such
// as peers[1].ca) and the line. Secrets (private keys, storage credentials)
// are never written in the file, only the paths of the files that hold them,
// so that the configuration can be printed, reviewed and versioned; relative
// paths are resolved against the directory of the configuration file.
//
// [Load] reads a file, [Parse] checks its structure and values, and
// [Gateway.CheckFiles] checks that the files it refers to exist and hold
// what they should.
package config

import (
	_ "embed"
	"errors"
	"evx/api"
	"evx/crypto"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// Gateway is the configuration of one country's gateway. Its yaml tags are
// the keys of the configuration file.
type Gateway struct {
	// ID is the gateway's id, usually its country code, such as DE. Units of
	// this country are named <ID>/<unit>, and peers authenticate this
	// gateway as evx://gateway/<ID>. Required; 2 to 16 upper-case letters or
	// digits, starting with a letter.
	ID string `yaml:"id"`

	// Listen holds the addresses the gateway listens on. Required.
	Listen Listen `yaml:"listen"`

	// TLS holds this country's CA and the gateway's own certificate. Required.
	TLS TLS `yaml:"tls"`

	// SigningKey is the path of the gateway's Ed25519 signing key: a
	// gateway signing key file, or a unit key file written by evx keygen
	// whose signing key is taken. It signs receipts and the directory of
	// local units; peers list its public half (evx keygen -y) as their
	// peers[].signing_key. Required.
	SigningKey string `yaml:"signing_key"`

	// Storage says where received bundles are stored. Optional: when the key
	// is absent, bundles are stored on local disk in the directory "data"
	// beside the configuration file.
	Storage Storage `yaml:"storage"`

	// Limits bound what the gateway accepts. Optional; every limit has a
	// default.
	Limits Limits `yaml:"limits"`

	// Log configures the transfer log (docs/audit.md). Optional; every
	// setting has a default.
	Log Log `yaml:"log"`

	// Retention configures how retention is enforced (docs/retention.md).
	// Required: its master_key.
	Retention RetentionSettings `yaml:"retention"`

	// Peers are the other countries' gateways this gateway exchanges bundles
	// with. Optional; ids are unique and differ from the gateway's own id.
	Peers []Peer `yaml:"peers,omitempty"`

	// Agreements are this country's cooperation agreements, one per peer
	// (docs/agreements.md). Optional, but nothing flows with a peer that
	// has none: evx config check warns of each.
	Agreements []Agreement `yaml:"agreements,omitempty"`

	// Users are the local users of the API, identified by their client
	// certificates, each with one role. Optional; identities are unique.
	Users []User `yaml:"users,omitempty"`

	// lines maps field paths (such as "peers[1].ca") to the line that set
	// them, for errors found after decoding. Nil for a Gateway built in code.
	lines map[string]int
}

// Listen holds the addresses the gateway listens on, each as host:port. An
// empty host listens on every interface; port 0 picks a free port, which is
// useful in tests only.
type Listen struct {
	// Peer is the QUIC (UDP) address for peer gateways, such as
	// 0.0.0.0:7443. Required.
	Peer string `yaml:"peer"`

	// API is the HTTPS (TCP) address for local users, such as
	// 127.0.0.1:8443. Required.
	API string `yaml:"api"`

	// Metrics is the HTTP (TCP) address that serves metrics, such as
	// 127.0.0.1:9464. Optional: when absent, no metrics are served.
	Metrics string `yaml:"metrics,omitempty"`
}

// TLS holds the paths of this country's certificate authority and of the
// gateway's own certificate and key, all PEM.
type TLS struct {
	// CA is the path of this country's CA certificate. It issues the
	// gateway's certificate and the client certificates of local users, and
	// is the trust anchor peers pin for this gateway. Required.
	CA string `yaml:"ca"`

	// Cert is the path of the gateway's certificate chain, issued by CA,
	// used both towards peers and towards local users. Required.
	Cert string `yaml:"cert"`

	// Key is the path of the private key of Cert. Required.
	Key string `yaml:"key"`
}

// Storage selects the storage backend: exactly one of Dir and S3.
type Storage struct {
	// Dir is the directory of the local-disk backend. It is created when
	// the gateway starts if it does not exist.
	Dir string `yaml:"dir,omitempty"`

	// S3 selects an S3-compatible object store.
	S3 *S3 `yaml:"s3,omitempty"`
}

// S3 configures the S3-compatible storage backend.
type S3 struct {
	// Endpoint is the host:port of the S3 service, without a scheme.
	// Required.
	Endpoint string `yaml:"endpoint"`

	// Bucket is the bucket that holds this gateway's bundles; the gateway
	// creates it at start if it does not exist. Required.
	Bucket string `yaml:"bucket"`

	// Region is the bucket's region. Optional; default us-east-1.
	Region string `yaml:"region"`

	// AccessKeyFile is the path of a file that holds the access key id, on
	// one line. Required.
	AccessKeyFile string `yaml:"access_key_file"`

	// SecretKeyFile is the path of a file that holds the secret access key,
	// on one line. Required.
	SecretKeyFile string `yaml:"secret_key_file"`

	// TLS says whether to speak HTTPS (true) or plain HTTP (false) to the
	// endpoint. Optional; default true. Set false only on loopback or a
	// network that is otherwise protected.
	TLS bool `yaml:"tls"`

	// CA is the path of a PEM file of certificates to trust for the
	// endpoint instead of the system's roots. Optional.
	CA string `yaml:"ca,omitempty"`
}

// Limits bound what the gateway accepts.
type Limits struct {
	// MaxBundleSize is the largest bundle (payload) the gateway accepts,
	// from local users and from peers, as a size with a binary unit: B,
	// KiB, MiB, GiB or TiB, such as 64GiB. Optional; default 64GiB, at most
	// 5TiB (the largest object S3 stores).
	MaxBundleSize Size `yaml:"max_bundle_size"`

	// APIConnections and APIConnectionsPerSource bound the local API's
	// open connections, in total and from one source (an IPv4 address, or
	// the /64 of an IPv6 address); a connection over either is closed at
	// once. Optional; default 1024 and 64. Raise the second for many
	// units behind one address (NAT).
	APIConnections          int `yaml:"api_connections"`
	APIConnectionsPerSource int `yaml:"api_connections_per_source"`

	// StallTimeout ends an upload whose body brings no byte for that long,
	// and a download its recipient stops reading for that long, however
	// long either takes as a whole: a duration such as 30s or 2m.
	// Optional; default 30s, from 1s to 1h.
	StallTimeout Duration `yaml:"stall_timeout"`
}

// Log configures the transfer log.
type Log struct {
	// MaxMergeDelay is how long a peer may take to include the delivery of
	// a bundle in its log after its receipt promised it: a receipt whose
	// entry is not provably included by then is a security event. A
	// duration such as 1m. Optional; default 1m, from 1s to 24h.
	MaxMergeDelay Duration `yaml:"max_merge_delay"`
}

// RetentionSettings configures the enforcement of retention: the outer layer of
// stored payloads, the storage locks and the reaper.
type RetentionSettings struct {
	// MasterKey is the path of the gateway's master key file, written by
	// evx keygen --master: it wraps the per-bundle keys of the outer layer
	// of received payloads, so that destroying a bundle's wrapped key at
	// expiry makes every copy of its payload unreadable. A secret: keep
	// it readable by the gateway's user only, and back it up apart from
	// the bucket: without it nothing stored can be read. Optional; default
	// master.key beside the configuration file, which evx gateway creates
	// on its first start if it does not exist. A master key named here
	// must exist.
	MasterKey string `yaml:"master_key"`

	// LockMode is the S3 Object Lock mode of stored objects: COMPLIANCE,
	// which nobody can lift before the date, or GOVERNANCE, which a user
	// with the right permission can, for test environments only.
	// Optional; default COMPLIANCE. Ignored for disk storage.
	LockMode string `yaml:"lock_mode"`

	// ReaperInterval is how often the gateway looks for bundles whose
	// retention has ended, to make them unreadable and delete them: the
	// most a bundle outlives its retain-until. Optional; default 1m, from
	// 1s to 1h.
	ReaperInterval Duration `yaml:"reaper_interval"`

	// OutboxGrace is how long the sending gateway keeps its copy of a
	// delivered bundle's payload after the peer's receipt is stored; its
	// record and the receipt stay until retain-until. Optional; default
	// 1h, from 0s to 30d.
	OutboxGrace Duration `yaml:"outbox_grace"`

	// HoldUnits are the local units (ids such as DE/operator, listed in
	// users) that may place and release legal holds. Optional; default
	// none.
	HoldUnits []string `yaml:"hold_units,omitempty"`

	// masterKeyDefault says that MasterKey is the default, not configured:
	// a file that does not exist yet is created at the first start.
	masterKeyDefault bool
}

// MasterKeyCreatable reports whether the master key is the default one,
// which evx gateway creates if it does not exist: a configured master key
// must exist.
func (r RetentionSettings) MasterKeyCreatable() bool { return r.masterKeyDefault }

// Peer is another country's gateway.
type Peer struct {
	// ID is the peer's gateway id, such as FR. Its certificate must carry
	// the URI SAN evx://gateway/<ID>. Required.
	ID string `yaml:"id"`

	// Address is the peer's QUIC address, host:port. Required.
	Address string `yaml:"address"`

	// CA is the path of the certificate of the CA that issues the peer's
	// certificates (PEM). The peer is pinned to it: a certificate from any
	// other CA is refused. Required.
	CA string `yaml:"ca"`

	// SigningKey is the peer gateway's public signing key,
	// "ed25519:<base64url>" as printed by evx keygen -y on its key file. It
	// verifies the peer's receipts and its directory of units. Required.
	SigningKey string `yaml:"signing_key"`

	// LogKey is the verifier key of the peer's transfer-log checkpoints,
	// "evx.transfer-log/<ID>+<hash>+<key>" as evx log-keys prints it on the
	// peer's configuration. It checks the checkpoints the peer asks this
	// gateway to witness and the inclusion proofs of its receipts.
	// Required.
	LogKey string `yaml:"log_key"`

	// WitnessKey is the verifier key of the cosignatures the peer makes
	// as a witness of this gateway's log, "evx.witness/<ID>+<hash>+<key>"
	// as evx log-keys prints it. Required.
	WitnessKey string `yaml:"witness_key"`
}

// User is a local user of the gateway's API.
type User struct {
	// Identity is the user's unit id, <gateway id>/<name>, such as
	// DE/forensics; its client certificate, issued by tls.ca, carries it.
	// Required; the name is 1 to 63 characters of a-z, 0-9, '.', '_', '-',
	// starting with a letter or digit.
	Identity string `yaml:"identity"`

	// Role is one of submitter, recipient, auditor and operator. Required.
	Role api.Role `yaml:"role"`

	// PublicKey is the path of the unit's public key file, as written by
	// evx keygen -y. The gateway publishes it in its signed directory:
	// recipients' age keys so bundles can be sealed to them, submitters'
	// signing keys so peers can check who sealed a bundle. Required for
	// submitters and recipients.
	PublicKey string `yaml:"public_key,omitempty"`

	// Purposes are those a recipient is authorised for, from the purpose
	// vocabulary: a bundle may be addressed to it only for one of them.
	// Optional, for recipients only; left out, it is authorised for none.
	Purposes []string `yaml:"purposes,omitempty"`
}

// DefaultStorageDir is the local-disk storage directory used when the
// configuration has no storage key, relative to the configuration file.
const DefaultStorageDir = "data"

// DefaultRegion is the S3 region used when none is configured.
const DefaultRegion = "us-east-1"

// Defaults of limits.api_connections, limits.api_connections_per_source
// and limits.stall_timeout.
const (
	DefaultAPIConnections          = 1024
	DefaultAPIConnectionsPerSource = 64
	DefaultStallTimeout            = Duration(30 * time.Second)
)

// The defaults of the retention settings.
const (
	DefaultMasterKey      = "master.key"
	DefaultLockMode       = "COMPLIANCE"
	DefaultReaperInterval = Duration(time.Minute)
	DefaultOutboxGrace    = Duration(time.Hour)
)

// DefaultMaxMergeDelay is the default of log.max_merge_delay.
const DefaultMaxMergeDelay = Duration(time.Minute)

// DefaultMaxBundleSize is limits.max_bundle_size when it is not configured.
const DefaultMaxBundleSize = 64 * GiB

// maxConfigSize bounds what Load reads: a real configuration is a few KiB.
const maxConfigSize = 1 << 20

//go:embed example.yaml
var example string

// Example returns a commented example configuration. Its relative paths
// name the files evx dev-env writes beside a gateway's configuration.
func Example() []byte { return []byte(example) }

// Load reads the configuration file at path, checks it with [Parse] and then
// checks the files it refers to with [Gateway.CheckFiles]. Relative paths in
// it are resolved against the directory that holds it. Errors are of type
// [Errors] and name the file, line and field.
func Load(path string) (*Gateway, error) {
	data, err := crypto.ReadFileLimit(path, maxConfigSize)
	if err != nil {
		return nil, fmt.Errorf("reading configuration: %w", err)
	}
	g, err := Parse(data, filepath.Dir(path))
	if err == nil {
		err = g.CheckFiles()
	}
	if err != nil {
		var list Errors
		if errors.As(err, &list) {
			list.setFile(path)
			return nil, list
		}
		return nil, err
	}
	return g, nil
}

// Parse decodes and validates a configuration, without reading the files it
// refers to. Relative paths are resolved against baseDir (itself made
// absolute against the working directory). Errors are of type [Errors].
func Parse(data []byte, baseDir string) (*Gateway, error) {
	base, err := filepath.Abs(baseDir)
	if err != nil {
		return nil, err
	}
	g := &Gateway{
		Limits: Limits{MaxBundleSize: DefaultMaxBundleSize, APIConnections: DefaultAPIConnections,
			APIConnectionsPerSource: DefaultAPIConnectionsPerSource, StallTimeout: DefaultStallTimeout},
		Log: Log{MaxMergeDelay: DefaultMaxMergeDelay},
		Retention: RetentionSettings{LockMode: DefaultLockMode, ReaperInterval: DefaultReaperInterval,
			OutboxGrace: DefaultOutboxGrace},
	}
	d, ok := decodeDocument(data, "configuration", g)
	g.lines = d.lines
	decodeErrs := d.errs
	if !ok {
		return nil, decodeErrs
	}
	if g.Storage.Dir == "" && g.Storage.S3 == nil {
		if _, set := g.lines["storage"]; !set || d.nulls["storage"] {
			g.Storage.Dir = DefaultStorageDir
		}
	}
	if _, set := g.lines["retention.master_key"]; !set {
		g.Retention.MasterKey = DefaultMasterKey
		g.Retention.masterKeyDefault = true
	}
	var errs Errors
	for _, f := range g.pathFields() {
		if e := g.checkPath(f); e != nil {
			errs = append(errs, e)
			continue
		}
		if *f.path != "" {
			*f.path = resolve(base, *f.path)
		}
	}
	errs = append(errs, g.validate()...)
	// A field that could not be decoded is reported once, not again as
	// missing or bad.
	for _, e := range errs {
		if !below(e.Field, decodeErrs) {
			decodeErrs = append(decodeErrs, e)
		}
	}
	if len(decodeErrs) > 0 {
		return nil, decodeErrs.sorted()
	}
	return g, nil
}

// below reports whether field is, or is within, a field of errs.
func below(field string, errs Errors) bool {
	for _, e := range errs {
		if field == e.Field ||
			strings.HasPrefix(field, e.Field+".") || strings.HasPrefix(field, e.Field+"[") {
			return true
		}
	}
	return false
}

// Validate checks the structure and values of g, as [Parse] does after
// decoding; it is for a Gateway built in code. It reads no file.
func (g *Gateway) Validate() error {
	var errs Errors
	for _, f := range g.pathFields() {
		if e := g.checkPath(f); e != nil {
			errs = append(errs, e)
		}
	}
	errs = append(errs, g.validate()...)
	if len(errs) > 0 {
		return errs.sorted()
	}
	return nil
}

func resolve(base, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(base, p)
}
