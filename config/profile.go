package config

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"

	"go.yaml.in/yaml/v3"
)

// Profile is a local user's client configuration: how the evx command line
// reaches its gateway's API and which keys it uses. evx dev-env writes one
// per user; relative paths are resolved against the profile's directory.
type Profile struct {
	// Gateway is the base URL of the gateway's API, such as
	// https://127.0.0.1:8443. Required.
	Gateway string `yaml:"gateway"`
	// CA is the path of this country's CA certificate, which issued the
	// gateway's certificate. Required.
	CA string `yaml:"ca"`
	// Cert and Key are the paths of the user's client certificate and its
	// private key. Required.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// UnitKey is the path of the user's unit key file (evx keygen): it
	// signs what a submitter seals and opens what a recipient pulls.
	// Required.
	UnitKey string `yaml:"unit_key"`
}

// LoadProfile reads and checks the profile at path.
func LoadProfile(path string) (*Profile, error) {
	data, err := readFile(path, maxConfigSize)
	if err != nil {
		return nil, fmt.Errorf("reading profile: %w", err)
	}
	var p Profile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("profile %s: %w", path, err)
	}
	base := filepath.Dir(path)
	for _, f := range []struct {
		name string
		v    *string
	}{{"gateway", &p.Gateway}, {"ca", &p.CA}, {"cert", &p.Cert}, {"key", &p.Key}, {"unit_key", &p.UnitKey}} {
		if *f.v == "" {
			return nil, fmt.Errorf("profile %s: missing required field %q", path, f.name)
		}
		if f.name != "gateway" {
			*f.v = resolve(base, *f.v)
		}
	}
	return &p, nil
}

// MarshalProfile returns the YAML form of p.
func MarshalProfile(p *Profile) ([]byte, error) {
	if p == nil {
		return nil, errors.New("nil profile")
	}
	return yaml.Marshal(p)
}
