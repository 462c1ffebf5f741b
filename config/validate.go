package config

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"evx/api"
	"evx/crypto"

	"golang.org/x/mod/sumdb/note"
)

var (
	dnsNamePattern = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$`)
	// bucketPattern follows S3's bucket naming rules.
	bucketPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
)

// MaxBundleSizeLimit is the largest limits.max_bundle_size accepted: the
// largest object evx's storage backends store (storage.MaxObjectSize, which
// a test keeps equal), below the bundle format's own limit of 1 TiB.
const MaxBundleSizeLimit = 64 * GiB

const (
	idHint   = "want 2 to 16 upper-case letters or digits, starting with a letter, such as DE"
	unitHint = "want <gateway id>/<name>, such as DE/forensics, the name being 1 to 63 of a-z, 0-9, '.', '_', '-' and starting with a letter or digit"
)

// fileKind says what a path field refers to, and so how CheckFiles checks it.
type fileKind int

const (
	caFile         fileKind = iota // PEM CA certificates that anchor trust
	rootsFile                      // PEM certificates to trust (a server's own, or a CA)
	certFile                       // PEM certificate chain
	tlsKeyFile                     // PEM private key of the certificate
	signingKeyFile                 // gateway signing key or evx keygen key file
	masterKeyFile                  // gateway master key (evx keygen --master)
	publicKeyFile                  // evx keygen -y output
	secretFile                     // one-line secret, such as an S3 access key
	dirPath                        // directory, created if absent
)

// pathField is a field of the configuration that holds a path.
type pathField struct {
	field string
	path  *string
	kind  fileKind
	user  *User // the user of a public key file
}

// pathFields lists the fields of g that hold paths, in file order.
func (g *Gateway) pathFields() []pathField {
	fs := []pathField{
		{"tls.ca", &g.TLS.CA, caFile, nil},
		{"tls.cert", &g.TLS.Cert, certFile, nil},
		{"tls.key", &g.TLS.Key, tlsKeyFile, nil},
		{"signing_key", &g.SigningKey, signingKeyFile, nil},
		{"retention.master_key", &g.Retention.MasterKey, masterKeyFile, nil},
		{"storage.dir", &g.Storage.Dir, dirPath, nil},
	}
	if s := g.Storage.S3; s != nil {
		fs = append(fs,
			pathField{"storage.s3.access_key_file", &s.AccessKeyFile, secretFile, nil},
			pathField{"storage.s3.secret_key_file", &s.SecretKeyFile, secretFile, nil},
			pathField{"storage.s3.ca", &s.CA, rootsFile, nil},
		)
	}
	for i := range g.Peers {
		fs = append(fs, pathField{index("peers", i) + ".ca", &g.Peers[i].CA, caFile, nil})
	}
	for i := range g.Users {
		u := &g.Users[i]
		fs = append(fs, pathField{index("users", i) + ".public_key", &u.PublicKey, publicKeyFile, u})
	}
	return fs
}

// checkPath refuses a path field that holds what looks like a secret
// itself: the value would then be printed, logged and versioned with the
// configuration. The value is not quoted in the error for that reason.
func (g *Gateway) checkPath(f pathField) *Error {
	p := *f.path
	if strings.ContainsAny(p, "\n\r\x00") || strings.HasPrefix(p, "-----BEGIN") ||
		strings.HasPrefix(p, "AGE-SECRET-KEY-") {
		return g.errorf(f.field, "want the path of a file, not its contents: secrets are given as file paths, never inline")
	}
	return nil
}

// validate checks every field's value and the rules between fields.
func (g *Gateway) validate() Errors {
	var errs Errors
	add := func(e *Error) {
		if e != nil {
			errs = append(errs, e)
		}
	}
	idOK := false
	switch {
	case g.ID == "":
		add(g.missing("id"))
	case !crypto.ValidGatewayID(g.ID):
		add(g.badValue("id", g.ID, idHint))
	default:
		idOK = true
	}

	add(g.checkAddr("listen.peer", g.Listen.Peer, true, true))
	add(g.checkAddr("listen.api", g.Listen.API, true, true))
	add(g.checkAddr("listen.metrics", g.Listen.Metrics, false, true))
	if g.Listen.Metrics != "" && g.Listen.Metrics == g.Listen.API && !strings.HasSuffix(g.Listen.API, ":0") {
		add(g.badValue("listen.metrics", g.Listen.Metrics, "listen.api already uses this address"))
	}

	for _, f := range []struct{ field, value string }{
		{"tls.ca", g.TLS.CA},
		{"tls.cert", g.TLS.Cert},
		{"tls.key", g.TLS.Key},
		{"signing_key", g.SigningKey},
	} {
		if f.value == "" {
			add(g.missing(f.field))
		}
	}

	switch s := g.Storage; {
	case s.Dir != "" && s.S3 != nil:
		add(g.errorf("storage", "set one of dir and s3, not both"))
	case s.Dir == "" && s.S3 == nil:
		add(g.errorf("storage", "set one of dir and s3"))
	case s.S3 != nil:
		errs = append(errs, g.validateS3(s.S3)...)
	}

	if n := g.Limits.MaxBundleSize; n <= 0 || n > MaxBundleSizeLimit {
		add(g.badValue("limits.max_bundle_size", n.String(), "want from 1B to %v", Size(MaxBundleSizeLimit)))
	}
	if n := g.Limits.APIConnections; n < 1 || n > 65536 {
		add(g.badValue("limits.api_connections", strconv.Itoa(n), "want from 1 to 65536"))
	}
	if n := g.Limits.APIConnectionsPerSource; n < 1 || n > g.Limits.APIConnections {
		add(g.badValue("limits.api_connections_per_source", strconv.Itoa(n), "want from 1 to limits.api_connections (%d)", g.Limits.APIConnections))
	}
	if d := g.Limits.StallTimeout; d < Duration(time.Second) || d > Duration(time.Hour) {
		add(g.badValue("limits.stall_timeout", d.String(), "want from 1s to 1h"))
	}
	errs = append(errs, g.validateRetention()...)

	peerIDs := make(map[string]string)
	peerKeys := make(map[string]string)
	for i, p := range g.Peers {
		f := index("peers", i)
		switch {
		case p.ID == "":
			add(g.missing(f + ".id"))
		case !crypto.ValidGatewayID(p.ID):
			add(g.badValue(f+".id", p.ID, idHint))
		case p.ID == g.ID:
			add(g.badValue(f+".id", p.ID, "that is this gateway's own id"))
		case peerIDs[p.ID] != "":
			add(g.badValue(f+".id", p.ID, "%s has the same id", peerIDs[p.ID]))
		default:
			peerIDs[p.ID] = f
		}
		add(g.checkAddr(f+".address", p.Address, true, false))
		if p.CA == "" {
			add(g.missing(f + ".ca"))
		}
		switch {
		case p.SigningKey == "":
			add(g.missing(f + ".signing_key"))
		case !validSigningKey(p.SigningKey):
			add(g.badValue(f+".signing_key", p.SigningKey, "want ed25519:<base64url of 32 bytes>, as printed by evx keygen -y"))
		case peerKeys[p.SigningKey] != "":
			add(g.badValue(f+".signing_key", p.SigningKey, "%s has the same key", peerKeys[p.SigningKey]))
		default:
			peerKeys[p.SigningKey] = f
		}
		switch {
		case p.LogKey == "":
			add(g.missing(f + ".log_key"))
		case crypto.ValidGatewayID(p.ID) && checkLogKey(p.LogKey, crypto.LogOrigin(p.ID)) != nil:
			add(g.badValue(f+".log_key", p.LogKey, "%v", checkLogKey(p.LogKey, crypto.LogOrigin(p.ID))))
		}
		switch {
		case p.WitnessKey == "":
			add(g.missing(f + ".witness_key"))
		case crypto.ValidGatewayID(p.ID) && checkWitnessKey(p.WitnessKey, crypto.WitnessName(p.ID)) != nil:
			add(g.badValue(f+".witness_key", p.WitnessKey, "%v", checkWitnessKey(p.WitnessKey, crypto.WitnessName(p.ID))))
		}
	}
	if d := g.Log.MaxMergeDelay; d < Duration(time.Second) || d > Duration(24*time.Hour) {
		add(g.badValue("log.max_merge_delay", d.String(), "want from 1s to 24h"))
	}

	identities := make(map[string]string)
	for i, u := range g.Users {
		f := index("users", i)
		switch {
		case u.Identity == "":
			add(g.missing(f + ".identity"))
		case !crypto.ValidUnitID(u.Identity):
			add(g.badValue(f+".identity", u.Identity, unitHint))
		case idOK && !strings.HasPrefix(u.Identity, g.ID+"/"):
			add(g.badValue(f+".identity", u.Identity, "a local user's identity starts with this gateway's id, %s/", g.ID))
		case identities[u.Identity] != "":
			add(g.badValue(f+".identity", u.Identity, "%s has the same identity", identities[u.Identity]))
		default:
			identities[u.Identity] = f
		}
		switch {
		case u.Role == "":
			add(g.missing(f + ".role"))
		case !slices.Contains(api.Roles(), u.Role):
			add(g.badValue(f+".role", string(u.Role), "want one of submitter, recipient, auditor, operator"))
		case u.PublicKey == "" && (u.Role == api.RoleSubmitter || u.Role == api.RoleRecipient):
			add(g.errorf(f+".public_key", "missing required field (a %s needs a public key)", u.Role))
		}
	}
	errs = append(errs, g.validateAgreements()...)
	return errs
}

func (g *Gateway) validateS3(s *S3) Errors {
	var errs Errors
	add := func(e *Error) {
		if e != nil {
			errs = append(errs, e)
		}
	}
	add(g.checkAddr("storage.s3.endpoint", s.Endpoint, true, false))
	switch {
	case s.Bucket == "":
		add(g.missing("storage.s3.bucket"))
	case !bucketPattern.MatchString(s.Bucket) || strings.Contains(s.Bucket, ".."):
		add(g.badValue("storage.s3.bucket", s.Bucket, "want an S3 bucket name: 3 to 63 of a-z, 0-9, '.', '-', starting and ending with a letter or digit"))
	}
	if s.Region == "" {
		add(g.missing("storage.s3.region"))
	}
	if s.AccessKeyFile == "" {
		add(g.missing("storage.s3.access_key_file"))
	}
	if s.SecretKeyFile == "" {
		add(g.missing("storage.s3.secret_key_file"))
	}
	return errs
}

// checkAddr checks a host:port address. A listening address may leave the
// host empty (every interface) and use port 0 (any free port); an address
// to connect to may not.
func (g *Gateway) checkAddr(field, addr string, required, listen bool) *Error {
	if addr == "" {
		if required {
			return g.missing(field)
		}
		return nil
	}
	if strings.Contains(addr, "://") {
		hint := "want host:port, without a scheme"
		if strings.HasPrefix(field, "storage.s3.") {
			hint += " (tls: false selects plain HTTP)"
		}
		return g.badValue(field, addr, "%s", hint)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return g.badValue(field, addr, "want host:port")
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 && !listen {
		return g.badValue(field, addr, "want a port number from 1 to 65535")
	}
	if host == "" {
		if listen {
			return nil
		}
		return g.badValue(field, addr, "want host:port, with a host")
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if len(host) > 253 || !dnsNamePattern.MatchString(host) {
		return g.badValue(field, addr, "want host:port, the host being an IP address or a DNS name")
	}
	return nil
}

func validSigningKey(s string) bool {
	_, err := crypto.ParseSigningKey(s)
	return err == nil
}

// checkLogKey checks a peer's checkpoint verifier key: a signed-note key
// named origin.
func checkLogKey(vkey, origin string) error {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return fmt.Errorf("want the peer's checkpoint key as evx log-keys prints it (%s+<hash>+<key>): %v", origin, err)
	}
	if v.Name() != origin {
		return fmt.Errorf("the key is named %q; this peer's is named %q", v.Name(), origin)
	}
	return nil
}

// checkWitnessKey checks a peer's witness verifier key: a cosignature key
// named name.
func checkWitnessKey(vkey, name string) error {
	v, err := crypto.ParseWitnessVerifierKey(vkey)
	if err != nil {
		return fmt.Errorf("want the peer's witness key as evx log-keys prints it (%s+<hash>+<key>): %v", name, err)
	}
	if v.Name() != name {
		return fmt.Errorf("the key is named %q; this peer's is named %q", v.Name(), name)
	}
	return nil
}
