package main

import (
	"crypto/tls"
	"errors"
	"fmt"

	"evx/client"
	"evx/config"
	"evx/crypto"
)

// loadProfile reads a profile and returns an API client and the unit key.
func loadProfile(path string) (*client.Client, *crypto.UnitKey, error) {
	if path == "" {
		return nil, nil, errors.New("--profile is required")
	}
	p, err := config.LoadProfile(path)
	if err != nil {
		return nil, nil, err
	}
	cert, err := tls.LoadX509KeyPair(p.Cert, p.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("profile %s: client certificate: %w", path, err)
	}
	roots, err := crypto.ReadCertPool(p.CA)
	if err != nil {
		return nil, nil, fmt.Errorf("profile %s: %w", path, err)
	}
	key, err := crypto.ReadUnitKeyFile(p.UnitKey)
	if err != nil {
		return nil, nil, err
	}
	return client.New(p.Gateway, cert, &tls.Config{RootCAs: roots}), key, nil
}
