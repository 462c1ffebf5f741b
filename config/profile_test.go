package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goodProfile = `gateway: https://127.0.0.1:8443
ca: ../ca.pem
cert: cert.pem
key: cert-key.pem
unit_key: /keys/unit.key
`

func writeProfile(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "profile.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadProfile(t *testing.T) {
	path := writeProfile(t, goodProfile)
	p, err := LoadProfile(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(path)
	want := Profile{Gateway: "https://127.0.0.1:8443", CA: filepath.Join(filepath.Dir(dir), "ca.pem"),
		Cert: filepath.Join(dir, "cert.pem"), Key: filepath.Join(dir, "cert-key.pem"), UnitKey: "/keys/unit.key"}
	if p.Gateway != want.Gateway || p.CA != want.CA || p.Cert != want.Cert || p.Key != want.Key || p.UnitKey != want.UnitKey {
		t.Errorf("got %+v\nwant %+v", p, want)
	}
	// Errors about the files it names point at the field's line.
	if got := p.FileError("key", p.Key, errors.New("boom")).Error(); got != path+`:4: key: "`+p.Key+`": boom` {
		t.Errorf("FileError: %s", got)
	}
	if got := p.Errorf("unit_key", "exposed").Error(); got != path+":5: unit_key: exposed" {
		t.Errorf("Errorf: %s", got)
	}

	// What dev-env writes loads back.
	data, err := MarshalProfile(&Profile{Gateway: "https://[::1]:8443", CA: "ca.pem", Cert: "c.pem", Key: "k.pem", UnitKey: "u.key"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadProfile(writeProfile(t, string(data))); err != nil {
		t.Errorf("marshalled profile: %v\n%s", err, data)
	}
}

// TestLoadProfileErrors checks that each problem is reported with the
// profile's file, the line and the field, as gateway configuration errors
// are, and every problem at once.
func TestLoadProfileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"missing fields", "gateway: https://gw:8443\nca: ca.pem\n",
			[]string{":1: cert: missing required field", ":1: key: missing required field", ":1: unit_key: missing required field"}},
		{"empty value", "gateway: https://gw:8443\nca: ca.pem\ncert: c.pem\nkey: k.pem\nunit_key:\n",
			[]string{":5: unit_key: missing required field"}},
		{"unknown key", goodProfile + "colour: blue\n",
			[]string{":6: colour: unknown key (expected one of: gateway, ca, cert, key, unit_key)"}},
		{"duplicate key", goodProfile + "ca: other.pem\n",
			[]string{":6: ca: duplicate key (first at line 2)"}},
		{"not https", strings.Replace(goodProfile, "https://127.0.0.1:8443", "http://127.0.0.1:8443", 1),
			[]string{`:1: gateway: bad value "http://127.0.0.1:8443": want https://host:port, such as https://127.0.0.1:8443`}},
		{"no scheme", strings.Replace(goodProfile, "https://127.0.0.1:8443", "127.0.0.1:8443", 1),
			[]string{`:1: gateway: bad value "127.0.0.1:8443": want https://host:port`}},
		{"with path", strings.Replace(goodProfile, "https://127.0.0.1:8443", "https://gw:8443/v1", 1),
			[]string{`:1: gateway: bad value "https://gw:8443/v1": want https://host:port, such as https://127.0.0.1:8443, with no path, query or fragment`}},
		{"with password", strings.Replace(goodProfile, "https://127.0.0.1:8443", "https://u:secret@gw:8443", 1),
			[]string{`:1: gateway: the URL must not carry a user name or password`}},
		{"inline key", strings.Replace(goodProfile, "cert-key.pem", "|\n  -----BEGIN PRIVATE KEY-----\n  MC4CAQAw\n", 1),
			[]string{":4: key: want the path of a file, not its contents"}},
		{"list for a path", strings.Replace(goodProfile, "cert.pem", "[a, b]", 1),
			[]string{":3: cert: want a string, got a list"}},
		{"not a mapping", "- gateway\n", []string{":1: want a mapping, got a list"}},
		{"syntax", "gateway: https://gw:8443\n  ca: x\n", []string{":2: invalid YAML"}},
		{"empty", "", []string{"profile.yaml: empty profile"}},
		{"two documents", goodProfile + "---\n" + goodProfile, []string{":6: more than one YAML document; a profile is one"}},
		{"alias", "gateway: &g https://gw:8443\nca: *g\ncert: c\nkey: k\nunit_key: u\n",
			[]string{":2: ca: YAML aliases are not accepted"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeProfile(t, tc.yaml)
			_, err := LoadProfile(path)
			var list Errors
			if !errors.As(err, &list) {
				t.Fatalf("error %v (%T) is not an Errors list", err, err)
			}
			if len(list) != len(tc.want) {
				t.Errorf("%d errors, want %d:\n%v", len(list), len(tc.want), err)
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, path+w) && !strings.Contains(msg, w) {
					t.Errorf("error lacks %q:\n%s", w, msg)
				}
				if !strings.HasPrefix(msg, path) {
					t.Errorf("error does not start with the file name:\n%s", msg)
				}
			}
			if strings.Contains(msg, "MC4CAQAw") || strings.Contains(msg, "secret") {
				t.Errorf("error quotes a secret:\n%s", msg)
			}
		})
	}
}

func TestLoadProfileFile(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadProfile(filepath.Join(dir, "nope.yaml")); err == nil || !strings.Contains(err.Error(), "no such file or directory") {
		t.Errorf("missing file: %v", err)
	}
	if _, err := LoadProfile(dir); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("directory: %v", err)
	}
}
