package config

import (
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"evx/crypto"
)

var update = flag.Bool("update", false, "rewrite the fixtures and golden files under testdata")

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestGolden loads the committed valid configuration with its files and
// compares its summary with the committed one. Its signing_key is a unit
// key file (as evx keygen writes); the fixtures of the other tests use a
// gateway signing key file, so both forms are accepted.
func TestGolden(t *testing.T) {
	path := filepath.Join("testdata", "valid", "gateway.yaml")
	if *update {
		g, err := Parse(readTestdata(t, "valid/gateway.yaml"), filepath.Dir(path))
		if err != nil {
			t.Fatal(err)
		}
		writeFixtures(t, g)
		k, err := crypto.GenerateUnitKey("")
		if err != nil {
			t.Fatal(err)
		}
		text, _ := k.MarshalText()
		if err := os.WriteFile(g.SigningKey, text, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Git keeps no permission bits but the executable one: the keys are
	// loaded from a copy that only their owner may read, as Load demands.
	dir := copyPrivate(t, filepath.Dir(path))
	g, err := Load(filepath.Join(dir, "gateway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	summary := strings.ReplaceAll(g.Summary(), dir, "$DIR")
	golden := filepath.Join("testdata", "valid", "summary.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(summary), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if want := string(readTestdata(t, "valid/summary.golden")); summary != want {
		t.Errorf("summary:\n%s\nwant:\n%s", summary, want)
	}
	s := g.Storage.S3
	if s == nil || s.TLS || s.Region != DefaultRegion || s.CA != filepath.Join(dir, "s3/ca.pem") {
		t.Errorf("storage.s3 = %+v", s)
	}
	if g.Limits.MaxBundleSize != 512*MiB || len(g.Peers) != 2 || len(g.Users) != 4 {
		t.Errorf("limits %v, %d peers, %d users", g.Limits.MaxBundleSize, len(g.Peers), len(g.Users))
	}
}

// copyPrivate copies the files of the tree at src into a new temporary
// directory, each with mode 0600, and returns the directory.
func copyPrivate(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestExample loads example.yaml with real files at the paths it names.
func TestExample(t *testing.T) {
	dir := t.TempDir()
	g, err := Parse(Example(), dir)
	if err != nil {
		t.Fatal(err)
	}
	writeFixtures(t, g)
	path := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(path, Example(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err != nil {
		t.Fatal(err)
	}
	onDisk, err := os.ReadFile("example.yaml")
	if err != nil || string(onDisk) != string(Example()) {
		t.Fatalf("Example() differs from example.yaml (%v)", err)
	}
}

// TestExampleDocumentsEveryKey checks that every key of the configuration
// appears in example.yaml, at least in a comment, so that the example stays
// the complete reference operators read.
func TestExampleDocumentsEveryKey(t *testing.T) {
	var keys []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				keys = append(keys, k)
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	// The golden configuration sets every key; the example must name them.
	var doc map[string]any
	if err := yaml.Unmarshal(readTestdata(t, "valid/gateway.yaml"), &doc); err != nil {
		t.Fatal(err)
	}
	walk(doc)
	for _, k := range append(keys, "dir", "region") {
		if !strings.Contains(string(Example()), k+":") {
			t.Errorf("example.yaml does not mention %q", k)
		}
	}
}

// fixture returns a valid configuration file in a temporary directory
// with all its files, using every kind of file.
func fixture(t *testing.T) (path string, g *Gateway) {
	t.Helper()
	dir := t.TempDir()
	data := readTestdata(t, "valid/gateway.yaml")
	g, err := Parse(data, dir)
	if err != nil {
		t.Fatal(err)
	}
	writeFixtures(t, g)
	path = filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, g
}

func TestCheckFilesErrors(t *testing.T) {
	otherCert := func(t *testing.T, dir string) []byte {
		_, _, der := newCert(t, "other", nil, nil, nil)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	unitPublic := func(unit string, bare bool) func(*testing.T, string) []byte {
		return func(t *testing.T, _ string) []byte {
			k, err := crypto.GenerateUnitKey(unit)
			if err != nil {
				t.Fatal(err)
			}
			if bare {
				return []byte(k.Recipient().String() + "\n")
			}
			text, _ := k.Public().MarshalText()
			return text
		}
	}
	tests := []struct {
		name  string
		file  string // relative to the configuration
		data  func(t *testing.T, dir string) []byte
		mkdir bool        // make a directory at file instead
		mode  fs.FileMode // keep file, with these permission bits
		line  int
		field string
		msg   string
	}{
		{name: "missing CA", file: "pki/ca.pem", line: 9, field: "tls.ca", msg: "no such file or directory"},
		{name: "CA is a directory", file: "pki/ca.pem", mkdir: true, line: 9, field: "tls.ca", msg: "is a directory"},
		{name: "CA not PEM", file: "pki/ca.pem", data: fixed("hello\n"), line: 9, field: "tls.ca", msg: "no PEM certificate in file"},
		{name: "CA is a leaf", file: "pki/ca.pem", data: func(t *testing.T, dir string) []byte {
			return readFileT(t, filepath.Join(dir, "pki/gateway.pem"))
		}, line: 9, field: "tls.ca", msg: "not a CA certificate"},
		{name: "CA holds a key", file: "pki/ca.pem", data: func(t *testing.T, dir string) []byte {
			return readFileT(t, filepath.Join(dir, "pki/gateway-key.pem"))
		}, line: 9, field: "tls.ca", msg: `holds a PEM "PRIVATE KEY" block`},
		{name: "peer CA missing", file: "peers/NL-ca.pem", line: 32, field: "peers[1].ca", msg: "no such file"},
		{name: "certificate garbage", file: "pki/gateway.pem", data: fixed("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), line: 10, field: "tls.cert", msg: "malformed certificate"},
		{name: "key of another certificate", file: "pki/gateway.pem", data: otherCert, line: 11, field: "tls.key", msg: "private key does not match the certificate of tls.cert"},
		{name: "key missing", file: "pki/gateway-key.pem", line: 11, field: "tls.key", msg: "no such file"},
		{name: "key not PEM", file: "pki/gateway-key.pem", data: fixed("secret\n"), line: 11, field: "tls.key", msg: "failed to find any PEM data in key input"},
		{name: "signing key not an evx key", file: "gateway.key", data: func(t *testing.T, dir string) []byte {
			return readFileT(t, filepath.Join(dir, "pki/gateway-key.pem"))
		}, line: 12, field: "signing_key", msg: "not an evx signing key or unit key file (made by evx keygen)"},
		{name: "signing key is a public key", file: "gateway.key", data: unitPublic("", false), line: 12, field: "signing_key", msg: "not an evx signing key or unit key file"},
		{name: "S3 secret key empty", file: "s3/secret-key", data: fixed("\n"), line: 18, field: "storage.s3.secret_key_file", msg: "empty file"},
		{name: "S3 access key two lines", file: "s3/access-key", data: fixed("AKIAEXAMPLE\nwJalrXUtnFEMIK7MDENG\n"), line: 17, field: "storage.s3.access_key_file", msg: "want one line"},
		{name: "S3 CA not PEM", file: "s3/ca.pem", data: fixed("x"), line: 20, field: "storage.s3.ca", msg: "no PEM certificate"},
		{name: "public key of another unit", file: "users/forensics.pub", data: unitPublic("DE/someone", false), line: 39, field: "users[0].public_key", msg: `is the key of unit "DE/someone", not of "DE/forensics"`},
		{name: "submitter without signing key", file: "users/forensics.pub", data: unitPublic("", true), line: 39, field: "users[0].public_key", msg: "has no signing key"},
		{name: "public key garbage", file: "users/prosecutor.pub", data: fixed("age1notakey\n"), line: 42, field: "users[1].public_key", msg: "not a unit public key (made by evx keygen -y)"},
		{name: "public key missing", file: "users/prosecutor.pub", line: 42, field: "users[1].public_key", msg: "no such file"},
		{name: "TLS key readable by others", file: "pki/gateway-key.pem", mode: 0o644, line: 11, field: "tls.key", msg: "has mode 0644: group or others may read it; make it private with: chmod 600 "},
		{name: "signing key readable by group", file: "gateway.key", mode: 0o640, line: 12, field: "signing_key", msg: "has mode 0640: group or others may read it; make it private with: chmod 600 "},
		{name: "signing key writable by others", file: "gateway.key", mode: 0o602, line: 12, field: "signing_key", msg: "has mode 0602: group or others may write it"},
		{name: "S3 secret key readable by others", file: "s3/secret-key", mode: 0o604, line: 18, field: "storage.s3.secret_key_file", msg: "has mode 0604: group or others may read it; make it private with: chmod 600 "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path, _ := fixture(t)
			dir := filepath.Dir(path)
			target := filepath.Join(dir, tc.file)
			if tc.mode != 0 {
				if err := os.Chmod(target, tc.mode); err != nil {
					t.Fatal(err)
				}
			} else if err := os.RemoveAll(target); err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.mkdir:
				if err := os.Mkdir(target, 0o755); err != nil {
					t.Fatal(err)
				}
			case tc.data != nil:
				if err := os.WriteFile(target, tc.data(t, dir), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, err := Load(path)
			if err == nil {
				t.Fatal("Load accepted it")
			}
			// The field's own file is named, quoted, in the error.
			want := fmt.Sprintf("%s:%d: %s: ", path, tc.line, tc.field)
			named := fmt.Sprintf("%q: ", target)
			if tc.field == "tls.key" && tc.file != "pki/gateway-key.pem" {
				named = fmt.Sprintf("%q: ", filepath.Join(dir, "pki/gateway-key.pem"))
			}
			if !strings.Contains(err.Error(), want+named) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error lacks %q or %q:\n%v", want+named, tc.msg, err)
			}
			if strings.Contains(err.Error(), "wJalrXUtnFEMIK7MDENG") {
				t.Errorf("error reveals a secret:\n%v", err)
			}
			var e *Error
			if !errors.As(err, &e) || e.File != path || e.Line != tc.line || e.Field != tc.field {
				t.Errorf("errors.As gives %+v", e)
			}
		})
	}
}

// TestCheckFilesPublicParts checks that the files that hold no secret
// may be readable by all: certificates, public keys, the S3 access key id.
func TestCheckFilesPublicParts(t *testing.T) {
	path, g := fixture(t)
	for _, p := range []string{g.TLS.CA, g.TLS.Cert, g.Storage.S3.AccessKeyFile, g.Storage.S3.CA, g.Users[0].PublicKey, g.Peers[0].CA} {
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Load(path); err != nil {
		t.Fatal(err)
	}
}

func fixed(s string) func(*testing.T, string) []byte {
	return func(*testing.T, string) []byte { return []byte(s) }
}

func readFileT(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestCheckFilesStorageDir(t *testing.T) {
	dir := t.TempDir()
	g, err := Parse([]byte(head), dir)
	if err != nil {
		t.Fatal(err)
	}
	writeFixtures(t, g)
	// An absent directory is created by the gateway; a file is an error.
	if err := os.Remove(g.Storage.Dir); err != nil {
		t.Fatal(err)
	}
	if err := g.CheckFiles(); err != nil {
		t.Fatalf("absent storage.dir: %v", err)
	}
	if err := os.WriteFile(g.Storage.Dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err = g.CheckFiles()
	if want := fmt.Sprintf("storage.dir: %q: not a directory", g.Storage.Dir); !strings.Contains(fmt.Sprint(err), want) {
		t.Errorf("error %v lacks %q", err, want)
	}
}

// TestParseReadsNoFile checks that structure is validated alone: paths
// that name nothing are fine until CheckFiles.
func TestParseReadsNoFile(t *testing.T) {
	g, err := Parse(readTestdata(t, "valid/gateway.yaml"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	err = g.CheckFiles()
	var list Errors
	if !errors.As(err, &list) {
		t.Fatalf("CheckFiles: %v", err)
	}
	// Every file is missing and each is reported, but for the default
	// master key, which the gateway creates.
	n := 0
	for _, f := range g.pathFields() {
		if *f.path != "" && (f.kind != masterKeyFile || !g.Retention.MasterKeyCreatable()) {
			n++
		}
	}
	if len(list) != n || n < 10 {
		t.Errorf("%d errors, want %d:\n%v", len(list), n, err)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "nope.yaml")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("directory: %v", err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte(head+"#"+strings.Repeat("x", maxConfigSize)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "larger than 1MiB") {
		t.Errorf("huge file: %v", err)
	}
	bad := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(bad, []byte(head+"policies: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(bad)
	if want := bad + ":5: policies: unknown key"; !strings.Contains(fmt.Sprint(err), want) {
		t.Errorf("error %v lacks %q", err, want)
	}
}

// TestSecretsNeverPrinted loads a configuration with S3 credential files
// and checks that no way of printing it, or its credentials, reveals them.
func TestSecretsNeverPrinted(t *testing.T) {
	path, _ := fixture(t)
	dir := filepath.Dir(path)
	const access, secret = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"
	for name, v := range map[string]string{"s3/access-key": access, "s3/secret-key": secret} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	g, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ak, sk, err := g.Storage.S3.Credentials()
	if err != nil {
		t.Fatal(err)
	}
	if ak.Reveal() != access || sk.Reveal() != secret {
		t.Fatalf("Credentials = %q, %q", ak.Reveal(), sk.Reveal())
	}
	creds := struct {
		Access Secret
		secret Secret
	}{ak, sk}
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("creds", "access", ak, "secret", sk, "all", creds)
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("creds", "access", ak, "secret", &sk)
	js, _ := json.Marshal(creds)
	ys, _ := yaml.Marshal(creds)
	outputs := []string{
		g.String(), g.Summary(),
		fmt.Sprintf("%v %+v %#v %s", g, g, g, g),
		fmt.Sprintf("%v %+v %#v %s %q %x %d", sk, sk, sk, sk, sk, sk, sk),
		fmt.Sprintf("%v %+v %#v", creds, creds, &creds),
		fmt.Sprint(ak, &sk), sk.String(),
		logged.String(), string(js), string(ys),
	}
	for _, out := range outputs {
		if strings.Contains(out, access) || strings.Contains(out, secret) ||
			strings.Contains(out, fmt.Sprintf("%x", secret)) {
			t.Errorf("output reveals a credential:\n%s", out)
		}
	}
	if !strings.Contains(outputs[3], redacted) || !strings.Contains(outputs[4], redacted) {
		t.Errorf("secrets do not print as %s: %s / %s", redacted, outputs[3], outputs[4])
	}
	if s := g.Summary(); !strings.Contains(s, filepath.Join(dir, "s3/secret-key")) {
		t.Errorf("summary does not name the secret key file:\n%s", s)
	}
}

func TestCredentialsErrors(t *testing.T) {
	dir := t.TempDir()
	s := &S3{AccessKeyFile: filepath.Join(dir, "ak"), SecretKeyFile: filepath.Join(dir, "sk")}
	if err := os.WriteFile(s.AccessKeyFile, []byte("AKIAEXAMPLE\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := s.Credentials()
	if want := fmt.Sprintf("storage.s3.secret_key_file: %q: no such file", s.SecretKeyFile); !strings.Contains(fmt.Sprint(err), want) {
		t.Errorf("error %v lacks %q", err, want)
	}
}
