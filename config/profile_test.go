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
			[]string{":6: colour: unknown key (expected one of: gateway, ca, cert, key, unit_key, log_key, witness_keys, report_threshold)"}},
		{"report threshold of 1", goodProfile + "report_threshold: 1\n",
			[]string{":6: report_threshold: bad value 1: want from 2 to 1000 (a threshold of 1 would single out cases)"}},
		{"report threshold too big", goodProfile + "report_threshold: 1001\n",
			[]string{":6: report_threshold: bad value 1001: want from 2 to 1000"}},
		{"log key of a witness", goodProfile + "log_key: " + deWitnessKey + "\n",
			[]string{`:6: log_key: bad value "` + deWitnessKey + `": want the gateway's log key as evx log-keys prints it`}},
		{"log key of another log", goodProfile + "log_key: other.example/log+562e3855+AayROGdZs4TMpQy8RnVk9IRRuUg9Olzwj5kNRgSb1CwK\n",
			[]string{`:6: log_key: bad value "other.example/log+562e3855+AayROGdZs4TMpQy8RnVk9IRRuUg9Olzwj5kNRgSb1CwK": want the gateway's log key`}},
		{"log key with another name", goodProfile + "log_key: other+a158e087+AayROGdZs4TMpQy8RnVk9IRRuUg9Olzwj5kNRgSb1CwK\n",
			[]string{`:6: log_key: bad value "other+a158e087+AayROGdZs4TMpQy8RnVk9IRRuUg9Olzwj5kNRgSb1CwK": the key is named "other"; a gateway's log key is named evx.transfer-log/<gateway id>`}},
		{"witness keys", goodProfile + "witness_keys:\n  - " + deWitnessKey + "\n  - " + deLogKey + "\n  - " + deWitnessKey + "\n",
			[]string{`:8: witness_keys[1]: bad value "` + deLogKey + `": want a witness key as evx log-keys prints it`,
				`:9: witness_keys[2]: a second key of witness evx.witness/DE (the first is witness_keys[0]): pin one key per witness`}},
		{"witness keys not a list", goodProfile + "witness_keys: " + deWitnessKey + "\n",
			[]string{`:6: witness_keys: want a list, got "` + deWitnessKey + `"`}},
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

// The keys of the test vector of docs/audit.md section 5.
const (
	deLogKey     = "evx.transfer-log/DE+562e3855+AayROGdZs4TMpQy8RnVk9IRRuUg9Olzwj5kNRgSb1CwK"
	deWitnessKey = "evx.witness/DE+62daa3bc+BILpfY39NH+WZstpVi3T6k4S95bnraolqb3IraWcowQF"
)

func TestLoadProfileLogKeys(t *testing.T) {
	p, err := LoadProfile(writeProfile(t, goodProfile+"log_key: "+deLogKey+"\nwitness_keys: ["+deWitnessKey+"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.LogKey != deLogKey || len(p.WitnessKeys) != 1 || p.WitnessKeys[0] != deWitnessKey {
		t.Errorf("keys %q %q", p.LogKey, p.WitnessKeys)
	}
	// The state is kept beside the profile.
	if want := filepath.Join(filepath.Dir(p.file), "audit-state"); p.AuditStateDir() != want {
		t.Errorf("AuditStateDir %q, want %q", p.AuditStateDir(), want)
	}
	if (&Profile{}).AuditStateDir() != "" {
		t.Error("a profile built in code has a state directory")
	}
	// Marshalled with the keys, it loads back; without them, the keys are
	// left out.
	data, err := MarshalProfile(&Profile{Gateway: "https://[::1]:8443", CA: "ca.pem", Cert: "c.pem", Key: "k.pem", UnitKey: "u.key",
		LogKey: deLogKey, WitnessKeys: []string{deWitnessKey}})
	if err != nil {
		t.Fatal(err)
	}
	q, err := LoadProfile(writeProfile(t, string(data)))
	if err != nil || q.LogKey != deLogKey || len(q.WitnessKeys) != 1 {
		t.Errorf("marshalled profile: %v\n%s", err, data)
	}
	data, _ = MarshalProfile(&Profile{Gateway: "https://[::1]:8443", CA: "ca.pem", Cert: "c.pem", Key: "k.pem", UnitKey: "u.key"})
	if strings.Contains(string(data), "log_key") || strings.Contains(string(data), "witness_keys") {
		t.Errorf("a profile without keys marshals them:\n%s", data)
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
