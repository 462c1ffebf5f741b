package config

import (
	"bytes"

	"go.yaml.in/yaml/v3"
)

// RestartNeeded names the sections of the configuration that differ
// between g, the one a gateway started with, and next, a reloaded one, and
// that a reload does not apply: the gateway's id, its listening addresses,
// TLS files, signing key, storage, limits and log settings take effect only
// when it starts. Peers, agreements and users are what a reload applies.
func (g *Gateway) RestartNeeded(next *Gateway) []string {
	var out []string
	for _, s := range []struct {
		name      string
		old, next any
	}{
		{"id", g.ID, next.ID},
		{"listen", g.Listen, next.Listen},
		{"tls", g.TLS, next.TLS},
		{"signing_key", g.SigningKey, next.SigningKey},
		{"storage", g.Storage, next.Storage},
		{"limits", g.Limits, next.Limits},
		{"log", g.Log, next.Log},
	} {
		if !sameYAML(s.old, s.next) {
			out = append(out, s.name)
		}
	}
	return out
}

// sameYAML reports whether a and b encode alike: the sections hold
// pointers and secrets, which the encoding shows as the file states them.
func sameYAML(a, b any) bool {
	ea, erra := yaml.Marshal(a)
	eb, errb := yaml.Marshal(b)
	return erra == nil && errb == nil && bytes.Equal(ea, eb)
}
