package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"unicode"

	"evx/api"
	"evx/crypto"
	"evx/internal/keyfile"
)

// Bounds on the files CheckFiles reads: far above real ones, low enough
// that a wrong path cannot exhaust memory.
const (
	maxPEMSize    = 1 << 20
	maxKeySize    = 64 << 10
	maxSecretSize = 4 << 10
)

// CheckFiles checks that every file g refers to exists, is readable and
// holds what its field says: CA certificates, a certificate and the private
// key that matches it, a signing key file, units' public keys (with a signing
// key for submitters and naming the user's identity, if they name one),
// one-line credential files. storage.dir may be absent (the gateway creates
// it) but must otherwise be a directory. Errors are of type [Errors] and
// name the field, its line and the path; they never quote file contents.
func (g *Gateway) CheckFiles() error {
	var errs Errors
	var certPEM []byte
	for _, f := range g.pathFields() {
		p := *f.path
		if p == "" {
			continue
		}
		var err error
		switch f.kind {
		case caFile, rootsFile:
			_, err = readCerts(p, f.kind == caFile)
		case certFile:
			if _, err = readCerts(p, false); err == nil {
				certPEM, _ = crypto.ReadFileLimit(p, maxPEMSize)
			}
		case tlsKeyFile:
			if err = keyfile.Check(p); err == nil {
				err = checkKeyPair(p, certPEM)
			}
		case signingKeyFile:
			if err = keyfile.Check(p); err == nil {
				err = checkSigningKey(p)
			}
		case masterKeyFile:
			if _, serr := os.Stat(p); errors.Is(serr, fs.ErrNotExist) && g.Retention.masterKeyDefault {
				break // created at the first start
			}
			if err = keyfile.Check(p); err == nil {
				_, err = crypto.ReadMasterKeyFile(p)
			}
		case publicKeyFile:
			err = checkPublicKey(p, f.user)
		case secretFile:
			// The access key id names an account; the secret key is
			// the password.
			if f.field != "storage.s3.secret_key_file" {
				_, err = readSecret(p)
			} else if err = keyfile.Check(p); err == nil {
				_, err = readSecret(p)
			}
		case dirPath:
			err = checkDir(p)
		}
		if err != nil {
			errs = append(errs, g.errorf(f.field, "%s", fileError(p, err)))
		}
	}
	if len(errs) > 0 {
		return errs.sorted()
	}
	return nil
}

// fileError formats a problem with the file at p, without repeating the
// path that an *fs.PathError or a *keyfile.ExposedError carries.
func fileError(p string, err error) string {
	var (
		pe      *fs.PathError
		exposed *keyfile.ExposedError
	)
	switch {
	case errors.As(err, &exposed):
		return fmt.Sprintf("%q: %s", p, exposed.Reason())
	case errors.As(err, &pe):
		err = pe.Err
	}
	return fmt.Sprintf("%q: %v", p, err)
}

func readCerts(p string, wantCA bool) ([]*x509.Certificate, error) {
	data, err := crypto.ReadFileLimit(p, maxPEMSize)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("holds a PEM %q block; want only certificates", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("malformed certificate: %v", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate in file")
	}
	if wantCA && !certs[0].IsCA {
		return nil, errors.New("not a CA certificate (its basic constraints do not say CA)")
	}
	return certs, nil
}

// checkKeyPair checks the private key file at p, and that it matches the
// certificate when that could be read.
func checkKeyPair(p string, certPEM []byte) error {
	keyPEM, err := crypto.ReadFileLimit(p, maxKeySize)
	if err != nil {
		return err
	}
	if certPEM == nil {
		if block, _ := pem.Decode(keyPEM); block == nil || !strings.HasSuffix(block.Type, "PRIVATE KEY") {
			return errors.New("no PEM private key in file")
		}
		return nil
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		msg := strings.TrimPrefix(err.Error(), "tls: ")
		if strings.Contains(msg, "does not match") {
			return errors.New("private key does not match the certificate of tls.cert")
		}
		return errors.New(msg)
	}
	return nil
}

func checkSigningKey(p string) error {
	data, err := crypto.ReadFileLimit(p, maxKeySize)
	if err != nil {
		return err
	}
	if _, err := crypto.ParseSigningKeyFile(data); err != nil {
		return fmt.Errorf("not an evx signing key or unit key file (made by evx keygen): %v", err)
	}
	return nil
}

func checkPublicKey(p string, u *User) error {
	data, err := crypto.ReadFileLimit(p, maxKeySize)
	if err != nil {
		return err
	}
	pk, err := crypto.ParsePublicKey(data)
	if err != nil {
		return fmt.Errorf("not a unit public key (made by evx keygen -y): %v", err)
	}
	if pk.Unit != "" && u.Identity != "" && pk.Unit != u.Identity {
		return fmt.Errorf("is the key of unit %q, not of %q", pk.Unit, u.Identity)
	}
	if u.Role == api.RoleSubmitter && pk.SigningKey == "" {
		return errors.New("has no signing key, which a submitter needs (write it with evx keygen -y)")
	}
	return nil
}

func checkDir(p string) error {
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return errors.New("not a directory")
	}
	return nil
}

// redacted is how a Secret prints.
const redacted = "[redacted]"

// Secret is a value read from a secret file, such as an S3 secret key. It
// prints as [redacted] with every fmt verb, in JSON, YAML and slog; only
// Reveal returns it. The value is held behind a pointer so that even a
// Secret in an unexported field, which fmt prints without calling its
// methods, shows as an address.
type Secret struct{ v *string }

// Reveal returns the secret value.
func (s Secret) Reveal() string {
	if s.v == nil {
		return ""
	}
	return *s.v
}

// String returns "[redacted]".
func (s Secret) String() string { return redacted }

// Format implements [fmt.Formatter]: every verb prints "[redacted]".
func (s Secret) Format(f fmt.State, verb rune) { io.WriteString(f, redacted) }

// MarshalText implements [encoding.TextMarshaler] with "[redacted]".
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// LogValue implements [slog.LogValuer] with "[redacted]".
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// readSecret reads a one-line secret file. Errors never include the
// contents.
func readSecret(p string) (Secret, error) {
	data, err := crypto.ReadFileLimit(p, maxSecretSize)
	if err != nil {
		return Secret{}, err
	}
	v := strings.TrimSpace(string(data))
	switch {
	case v == "":
		return Secret{}, errors.New("empty file")
	case strings.IndexFunc(v, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return Secret{}, errors.New("want one line holding the secret alone (no spaces)")
	}
	return Secret{&v}, nil
}

// Credentials reads the access key id and the secret access key from
// AccessKeyFile and SecretKeyFile. They are returned as Secrets so that
// logging them by mistake prints nothing.
func (s *S3) Credentials() (accessKey, secretKey Secret, err error) {
	accessKey, err = readSecret(s.AccessKeyFile)
	if err != nil {
		return Secret{}, Secret{}, fmt.Errorf("storage.s3.access_key_file: %s", fileError(s.AccessKeyFile, err))
	}
	secretKey, err = readSecret(s.SecretKeyFile)
	if err != nil {
		return Secret{}, Secret{}, fmt.Errorf("storage.s3.secret_key_file: %s", fileError(s.SecretKeyFile, err))
	}
	return accessKey, secretKey, nil
}
