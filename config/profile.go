package config

import (
	"errors"
	"evx/crypto"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
	"golang.org/x/mod/sumdb/note"
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

	// LogKey is the verifier key of the gateway's transfer-log
	// checkpoints, as evx log-keys prints it
	// (evx.transfer-log/<id>+<hash>+<key>): an auditor pins it to verify
	// the log (docs/audit.md section 5). Optional; evx audit needs it.
	LogKey string `yaml:"log_key,omitempty"`
	// WitnessKeys are the verifier keys of the witnesses (peer gateways,
	// evx.witness/<id>+<hash>+<key>) whose cosignatures an auditor
	// requires on the checkpoints it verifies. Optional.
	WitnessKeys []string `yaml:"witness_keys,omitempty"`
	// ReportThreshold is the smallest count the auditor's transparency
	// reports (evx report) show as it is; smaller counts are shown as
	// "<N", so that single cases cannot be singled out. Optional; 0 means
	// the default of 5; else from 2 to 1000 (MinReportThreshold,
	// MaxReportThreshold).
	ReportThreshold int `yaml:"report_threshold,omitempty"`

	// file and lines locate the profile's fields, for errors about the
	// files they name (see Errorf). Empty for a Profile built in code.
	file  string
	lines map[string]int
}

// Bounds of a profile's report_threshold, the same as evx report's
// --threshold.
const (
	MinReportThreshold = 2
	MaxReportThreshold = 1000
)

// LoadProfile reads and checks the profile at path: every field is
// present, the gateway is an https:// URL, and the other fields are paths,
// which it resolves against the profile's directory. It does not read the
// files they name. Errors are of type [Errors] and name the file, line and
// field, as the gateway configuration's do.
func LoadProfile(path string) (*Profile, error) {
	data, err := crypto.ReadFileLimit(path, maxConfigSize)
	if err != nil {
		return nil, fmt.Errorf("reading profile: %w", err)
	}
	p, errs := parseProfile(data, filepath.Dir(path))
	if len(errs) > 0 {
		errs.setFile(path)
		return nil, errs.sorted()
	}
	p.file = path
	return p, nil
}

// parseProfile decodes and checks a profile with the decoder of gateway
// configurations, so that its errors are alike.
func parseProfile(data []byte, base string) (*Profile, Errors) {
	p := &Profile{}
	d, ok := decodeDocument(data, "profile", p)
	p.lines = d.lines
	if !ok {
		return nil, d.errs
	}
	errs := d.errs
	add := func(field, format string, args ...any) {
		if !below(field, d.errs) {
			errs = append(errs, p.Errorf(field, format, args...))
		}
	}
	for _, f := range []struct {
		name string
		v    *string
	}{{"gateway", &p.Gateway}, {"ca", &p.CA}, {"cert", &p.Cert}, {"key", &p.Key}, {"unit_key", &p.UnitKey}} {
		switch {
		case *f.v == "":
			add(f.name, "missing required field")
		case f.name == "gateway":
			if u, err := url.Parse(*f.v); err == nil && u.User != nil {
				// Not quoted: it holds a password, perhaps.
				add(f.name, "the URL must not carry a user name or password")
			} else if why := checkGatewayURL(*f.v); why != "" {
				add(f.name, "bad value %s: %s", quote(*f.v), why)
			}
		case strings.ContainsAny(*f.v, "\n\r\x00") || strings.HasPrefix(*f.v, "-----BEGIN") ||
			strings.HasPrefix(*f.v, "AGE-SECRET-KEY-"):
			// Not quoted: it may be a secret.
			add(f.name, "want the path of a file, not its contents: keys are given as file paths, never inline")
		default:
			*f.v = resolve(base, *f.v)
		}
	}
	if p.LogKey != "" {
		if err := checkProfileLogKey(p.LogKey); err != nil {
			add("log_key", "bad value %s: %v", quote(p.LogKey), err)
		}
	}
	if n := p.ReportThreshold; n != 0 && (n < MinReportThreshold || n > MaxReportThreshold) {
		add("report_threshold", "bad value %d: want from %d to %d (a threshold of 1 would single out cases)", n, MinReportThreshold, MaxReportThreshold)
	}
	seen := map[string]int{}
	for i, k := range p.WitnessKeys {
		f := index("witness_keys", i)
		v, err := crypto.ParseWitnessVerifierKey(k)
		switch {
		case err != nil:
			add(f, "bad value %s: want a witness key as evx log-keys prints it (evx.witness/<id>+<hash>+<key>): %v", quote(k), err)
		case !strings.HasPrefix(v.Name(), crypto.WitnessName("")) || !crypto.ValidGatewayID(strings.TrimPrefix(v.Name(), crypto.WitnessName(""))):
			add(f, "bad value %s: the key is named %q; a gateway's witness key is named evx.witness/<gateway id>", quote(k), v.Name())
		default:
			if j, dup := seen[v.Name()]; dup {
				add(f, "a second key of witness %s (the first is witness_keys[%d]): pin one key per witness", v.Name(), j)
			}
			seen[v.Name()] = i
		}
	}
	return p, errs
}

// checkProfileLogKey checks a gateway's checkpoint verifier key: a
// signed-note key named evx.transfer-log/<gateway id>.
func checkProfileLogKey(vkey string) error {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return fmt.Errorf("want the gateway's log key as evx log-keys prints it (evx.transfer-log/<id>+<hash>+<key>): %v", err)
	}
	if id, ok := strings.CutPrefix(v.Name(), crypto.LogOrigin("")); !ok || !crypto.ValidGatewayID(id) {
		return fmt.Errorf("the key is named %q; a gateway's log key is named evx.transfer-log/<gateway id>", v.Name())
	}
	return nil
}

// AuditStateDir returns the directory beside the profile where evx audit
// keeps what it must remember between verifications: the checkpoint it
// verified last, per log. It is "" for a profile built in code.
func (p *Profile) AuditStateDir() string {
	if p.file == "" {
		return ""
	}
	return filepath.Join(filepath.Dir(p.file), "audit-state")
}

// checkGatewayURL returns why s is not the base URL of a gateway's API, or
// "" if it is one.
func checkGatewayURL(s string) string {
	const want = "want https://host:port, such as https://127.0.0.1:8443"
	u, err := url.Parse(s)
	switch {
	case err != nil, u.Scheme != "https", u.Host == "", u.Opaque != "":
		return want
	case u.User != nil:
		return "want no user name or password in the URL"
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "":
		return want + ", with no path, query or fragment"
	}
	return ""
}

// Errorf returns an error about field of the profile, located at the line
// that set it in the profile's file: for problems found in the files the
// profile names, such as a key that cannot be read.
func (p *Profile) Errorf(field, format string, args ...any) *Error {
	line, ok := p.lines[field]
	if !ok {
		line = p.lines[""]
	}
	return &Error{File: p.file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// FileError returns an error about the file that field names, as
// [Profile.Errorf] locates it, quoting the path once.
func (p *Profile) FileError(field, path string, err error) *Error {
	return p.Errorf(field, "%s", fileError(path, err))
}

// MarshalProfile returns the YAML form of p.
func MarshalProfile(p *Profile) ([]byte, error) {
	if p == nil {
		return nil, errors.New("nil profile")
	}
	return yaml.Marshal(p)
}
