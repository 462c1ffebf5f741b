package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"evx/crypto"
	"evx/internal/keyfile"

	"github.com/spf13/pflag"
)

// allowExposedHelp is the help of --allow-exposed-key, for every command
// that reads a private key.
const allowExposedHelp = "use a private key file that group or others may read or write, with a warning (refused otherwise)"

// checkKeyFile refuses a private key file that is not a regular file or
// that group or others may read or write, as ssh does, unless
// allowExposed: then an exposed key only gets a warning on stderr.
func checkKeyFile(path string, allowExposed bool, stderr io.Writer) error {
	err := keyfile.Check(path)
	var exposed *keyfile.ExposedError
	if allowExposed && errors.As(err, &exposed) {
		fmt.Fprintf(stderr, "evx: warning: %v (used anyway: --allow-exposed-key)\n", exposed)
		return nil
	}
	return err
}

// readUnitKey reads the unit key file at path, which the flag or field
// named by what gives, with checkKeyFile's checks. A public key given
// instead (the output of keygen -y) is named as such.
func readUnitKey(path, what string, allowExposed bool, stderr io.Writer) (*crypto.UnitKey, error) {
	// The mode is judged only once the file is known to be a key: a
	// public key readable by all is not exposed, it is the wrong file.
	err := keyfile.Check(path)
	var exposed *keyfile.ExposedError
	if err != nil && !errors.As(err, &exposed) {
		return nil, err
	}
	k, err := crypto.ReadUnitKeyFile(path)
	if err != nil {
		if isPublicKeyFile(path) {
			return nil, fmt.Errorf("%s is a public key (keygen -y output); %s needs the unit key file written by evx keygen", path, what)
		}
		return nil, err
	}
	if exposed != nil {
		if err := checkKeyFile(path, allowExposed, stderr); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// isPublicKeyFile reports whether the file at path holds a unit's public
// key and no secret one.
func isPublicKeyFile(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPublicKeySize))
	if err != nil || bytes.Contains(data, []byte("SECRET")) {
		return false
	}
	_, err = crypto.ParsePublicKey(data)
	return err == nil
}

// maxPublicKeySize bounds what isPublicKeyFile reads: a public key with a
// post-quantum recipient is about 2 KiB.
const maxPublicKeySize = 64 << 10

// registerAllowExposed adds --allow-exposed-key to a command's flags.
func registerAllowExposed(f *pflag.FlagSet, v *bool) {
	f.BoolVar(v, "allow-exposed-key", false, allowExposedHelp)
}
