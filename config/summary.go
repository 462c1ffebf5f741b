package config

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"strings"
	"text/tabwriter"

	"evx/crypto"

	"go.yaml.in/yaml/v3"
)

// String returns the effective configuration as YAML: defaults filled in
// and paths absolute. Parse accepts it and yields the same configuration.
// A Gateway holds no secret, only the paths of secret files, so printing it
// reveals none.
func (g *Gateway) String() string {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(g); err != nil {
		// Only a type yaml cannot encode fails, and Gateway has none.
		return "# " + err.Error() + "\n"
	}
	enc.Close()
	return b.String()
}

// Summary returns a human-readable description of the configuration, as
// evx config check prints it: what the gateway listens on, which files it
// uses, where it stores bundles, its peers and users. Like String, it shows
// paths and never the contents of secret files.
func (g *Gateway) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "gateway %s\n", g.ID)
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	row := func(cells ...string) { fmt.Fprintln(tw, strings.Join(cells, "\t")) }

	metrics := "off"
	if g.Listen.Metrics != "" {
		metrics = g.Listen.Metrics + " (HTTP)"
	}
	row("  peers listen on", g.Listen.Peer+" (QUIC, UDP)")
	row("  users listen on", g.Listen.API+" (HTTPS)")
	row("  metrics", metrics)
	row("  CA", g.TLS.CA)
	row("  certificate", g.TLS.Cert)
	row("  certificate key", g.TLS.Key)
	row("  signing key", g.SigningKey)
	if s := g.Storage.S3; s != nil {
		scheme := "https"
		if !s.TLS {
			scheme = "http"
		}
		row("  storage", fmt.Sprintf("S3 %s://%s, bucket %s, region %s", scheme, s.Endpoint, s.Bucket, s.Region))
		row("  S3 access key file", s.AccessKeyFile)
		row("  S3 secret key file", s.SecretKeyFile)
		if s.CA != "" {
			row("  S3 CA", s.CA)
		}
	} else {
		row("  storage", "local disk, "+g.Storage.Dir)
	}
	row("  max bundle size", g.Limits.MaxBundleSize.String())
	row("  API connections", fmt.Sprintf("%d, %d per source", g.Limits.APIConnections, g.Limits.APIConnectionsPerSource))
	row("  stall timeout", g.Limits.StallTimeout.String())
	row("  log", fmt.Sprintf("max merge delay %v", g.Log.MaxMergeDelay))
	row("  retention", fmt.Sprintf("reaper every %v, outbox grace %v, lock mode %s", g.Retention.ReaperInterval, g.Retention.OutboxGrace, g.Retention.LockMode))
	tw.Flush()

	fmt.Fprintf(&b, "peers: %d\n", len(g.Peers))
	for _, p := range g.Peers {
		row("  "+p.ID, p.Address, p.SigningKey)
		row("", "CA "+p.CA)
	}
	tw.Flush()
	fmt.Fprintf(&b, "users: %d\n", len(g.Users))
	for _, u := range g.Users {
		key := u.PublicKey
		if key == "" {
			key = "(no public key)"
		}
		row("  "+u.Identity, string(u.Role), key)
		if len(u.Purposes) > 0 {
			row("", "purposes: "+strings.Join(u.Purposes, ", "))
		}
	}
	tw.Flush()
	fmt.Fprintf(&b, "agreements: %d\n", len(g.Agreements))
	for _, a := range g.Agreements {
		status := string(a.Status)
		if a.Reason != "" {
			status += ": " + a.Reason
		}
		row("  "+a.Peer, fmt.Sprintf("v%d (ref %s)", a.Version, a.Ref), status, "valid "+a.Validity())
		row("", "out: "+listOrNone(a.Outbound))
		row("", "in: "+listOrNone(a.Inbound))
	}
	tw.Flush()
	return b.String()
}

// Validity says when the agreement applies, such as "from 2026-01-01
// until 2027-01-01" or "without end".
func (a *Agreement) Validity() string {
	switch {
	case a.ValidFrom.IsZero() && a.ValidUntil.IsZero():
		return "without end"
	case a.ValidFrom.IsZero():
		return "until " + a.ValidUntil.String()
	case a.ValidUntil.IsZero():
		return "from " + a.ValidFrom.String() + ", without end"
	}
	return "from " + a.ValidFrom.String() + " until " + a.ValidUntil.String()
}

func listOrNone(vs []string) string {
	if len(vs) == 0 {
		return "none"
	}
	return strings.Join(vs, ", ")
}

// Peer returns the peer with the given id.
func (g *Gateway) Peer(id string) (Peer, bool) {
	for _, p := range g.Peers {
		if p.ID == id {
			return p, true
		}
	}
	return Peer{}, false
}

// User returns the local user with the given identity.
func (g *Gateway) User(identity string) (User, bool) {
	for _, u := range g.Users {
		if u.Identity == identity {
			return u, true
		}
	}
	return User{}, false
}

// SigningPublicKey returns the peer's parsed signing key.
func (p Peer) SigningPublicKey() (ed25519.PublicKey, error) {
	return crypto.ParseSigningKey(p.SigningKey)
}
