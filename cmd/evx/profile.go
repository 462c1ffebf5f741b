package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"evx/client"
	"evx/config"
	"evx/crypto"
	"evx/internal/keyfile"
)

// profileEnv names the environment variable that gives the profile when
// --profile does not.
const profileEnv = "EVX_PROFILE"

// profilePath returns the profile a command uses, and where that choice
// came from: the --profile flag, else $EVX_PROFILE, else
// $XDG_CONFIG_HOME/evx/profile.yaml (~/.config/evx/profile.yaml when
// XDG_CONFIG_HOME is unset), if that file exists. getenv reads the
// environment.
func profilePath(flag string, getenv func(string) string) (path, from string, err error) {
	if flag != "" {
		return flag, "--profile", nil
	}
	if p := getenv(profileEnv); p != "" {
		return p, profileEnv, nil
	}
	def := defaultProfilePath(getenv)
	if def != "" {
		if _, err := os.Stat(def); err == nil {
			return def, "", nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", "", fmt.Errorf("profile %s: %w", def, err)
		}
	} else {
		def = "$XDG_CONFIG_HOME/evx/profile.yaml (neither XDG_CONFIG_HOME nor HOME is set)"
	}
	return "", "", usagef("no profile: give --profile FILE, or set %s=FILE, or write the profile at %s", profileEnv, def)
}

// defaultProfilePath returns where the profile is looked for when neither
// --profile nor EVX_PROFILE gives it, following the XDG base directory
// specification, or "" when the environment names no such place.
func defaultProfilePath(getenv func(string) string) string {
	// The specification says to ignore a relative XDG_CONFIG_HOME.
	if dir := getenv("XDG_CONFIG_HOME"); filepath.IsAbs(dir) {
		return filepath.Join(dir, "evx", "profile.yaml")
	}
	if home := getenv("HOME"); home != "" {
		return filepath.Join(home, ".config", "evx", "profile.yaml")
	}
	return ""
}

// maxPEMSize bounds the client certificate and key files a profile names.
const maxPEMSize = 1 << 20

// loadProfile reads a profile and returns an API client and the unit key.
// An empty path chooses the profile as profilePath does. Problems with the
// files the profile names are reported at the profile's line that names
// them. The client certificate's key and the unit key are refused if group
// or others may read or write them.
func loadProfile(path string) (*client.Client, *crypto.UnitKey, error) {
	return loadProfileFrom(path, false, io.Discard)
}

// loadProfileFrom is loadProfile for a command with --allow-exposed-key
// (registerAllowExposed): when allowExposed, an exposed key gets a warning
// on stderr instead of an error.
func loadProfileFrom(path string, allowExposed bool, stderr io.Writer) (*client.Client, *crypto.UnitKey, error) {
	path, from, err := profilePath(path, os.Getenv)
	if err != nil {
		return nil, nil, err
	}
	c, key, err := readProfile(path, allowExposed, stderr)
	if err != nil && from == profileEnv {
		err = fmt.Errorf("%s: %w", profileEnv, err)
	}
	return c, key, err
}

func readProfile(path string, allowExposed bool, stderr io.Writer) (*client.Client, *crypto.UnitKey, error) {
	p, err := config.LoadProfile(path)
	if err != nil {
		return nil, nil, err
	}
	key, err := readUnitKey(p.UnitKey, "unit_key", allowExposed, stderr)
	if err != nil {
		return nil, nil, profileFileError(p, "unit_key", p.UnitKey, err)
	}
	if err := checkKeyFile(p.Key, allowExposed, stderr); err != nil {
		return nil, nil, profileFileError(p, "key", p.Key, err)
	}
	certPEM, err := crypto.ReadFileLimit(p.Cert, maxPEMSize)
	if err != nil {
		return nil, nil, p.FileError("cert", p.Cert, err)
	}
	keyPEM, err := crypto.ReadFileLimit(p.Key, maxPEMSize)
	if err != nil {
		return nil, nil, p.FileError("key", p.Key, err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The message says whether the certificate or the key is at fault.
		field, msg := "key", strings.TrimPrefix(err.Error(), "tls: ")
		if strings.Contains(msg, "certificate") && !strings.Contains(msg, "private key") {
			field = "cert"
		}
		return nil, nil, p.Errorf(field, "client certificate %q and key %q: %s", p.Cert, p.Key, msg)
	}
	roots, err := crypto.ReadCertPool(p.CA)
	if err != nil {
		return nil, nil, profileFileError(p, "ca", p.CA, err)
	}
	// The client's errors name the files, such as the certificate a
	// gateway refuses.
	return client.New(p.Gateway, cert, &tls.Config{RootCAs: roots}).WithFiles(p.Cert, p.CA), key, nil
}

// profileFileError locates err, about the file at path that field of p
// names, at the profile's line, quoting the path once.
func profileFileError(p *config.Profile, field, path string, err error) error {
	var (
		pe      *fs.PathError
		exposed *keyfile.ExposedError
	)
	if errors.As(err, &pe) || errors.As(err, &exposed) {
		return p.FileError(field, path, err)
	}
	return p.Errorf(field, "%v", err)
}
