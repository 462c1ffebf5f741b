package config

import (
	"errors"
	"evx/api"
	"evx/crypto"
	"evx/storage"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// head is the four required lines; cases about later sections append to it.
const head = `id: DE
listen: {peer: "127.0.0.1:7443", api: "127.0.0.1:8443"}
tls: {ca: ca.pem, cert: gw.pem, key: gw-key.pem}
signing_key: gw.key
`

// The transfer-log keys of FR and NL, as evx log-keys prints them.
const (
	frLogKeys = "log_key: 'evx.transfer-log/FR+d79fd1c5+ARP1sxv7PPUP6vOcBvRl0numpSDis1H2XCSn4peqvu2P', witness_key: 'evx.witness/FR+6a150d81+BPK3AVmSlwM38ORPfg6ibtWhhlEgbe5LjkxvZfVusndy'"
	nlLogKeys = "log_key: 'evx.transfer-log/NL+184698e9+AfqPpFj1m4wOXLWauE0HGXfU5n1rXzJ6dkRgXCA8An5H', witness_key: 'evx.witness/NL+c8721629+BBmTSbL5z7UFzZFAAtzeNc7+Vf0c2jdD1EonjXhTZ02w'"
)

const (
	key1 = "ed25519:M5sEHN2ejoW3a7xbpYq3-HnkTYQFHyIUe_zmLK27PYg"
	key2 = "ed25519:Fu5m9bwxIsnozz5jQvtVpMcTKTHtn5_RgcsCccYLp78"
	// s3ok is a complete s3 section on one line; cases edit copies of it.
	s3ok = "{endpoint: 's3.example.org:9000', bucket: evx-de, access_key_file: ak, secret_key_file: sk}"
)

func peersDoc(items ...string) string {
	return head + "peers:\n" + strings.Join(items, "")
}

const peerFR = "  - {id: FR, address: 'fr.example.org:7443', ca: fr.pem, signing_key: " + key1 + ", " + frLogKeys + "}\n"

// errorCases holds one configuration per kind of error, with where the
// error must point. FuzzLoad seeds its corpus with them.
var errorCases = []struct {
	name  string
	yaml  string
	line  int    // 0: no line
	field string // "": the whole document
	msg   string // in the error's message
	never string // must not appear anywhere in the error (a secret)
}{
	// The document as a whole.
	{name: "syntax error", yaml: "id: DE\nlisten:\n  peer: x\n   api: y\n", line: 4, msg: "invalid YAML: mapping values are not allowed in this context"},
	{name: "unterminated string", yaml: "id: DE\nsigning_key: 'gw.key\n", line: 2, msg: "invalid YAML"},
	{name: "tab indentation", yaml: "id: DE\nlisten:\n\tpeer: x\n", line: 3, msg: "invalid YAML"},
	{name: "empty", yaml: "", msg: "empty configuration"},
	{name: "comments only", yaml: "# nothing here\n", msg: "empty configuration"},
	{name: "null document", yaml: "~\n", line: 1, msg: "empty configuration"},
	{name: "two documents", yaml: head + "---\nid: FR\n", line: 5, msg: "more than one YAML document"},
	{name: "list document", yaml: "- id: DE\n", line: 1, msg: "want a mapping, got a list"},
	{name: "scalar document", yaml: "hello\n", line: 1, msg: `want a mapping, got "hello"`},

	// Keys.
	{name: "unknown top-level key", yaml: head + "policies: []\n", line: 5, field: "policies", msg: "unknown key (expected one of: id, listen, tls, signing_key, storage, limits, log, retention, peers, agreements, users)"},
	{name: "unknown nested key", yaml: "id: DE\nlisten:\n  peer: 127.0.0.1:7443\n  api: 127.0.0.1:8443\n  admin: 127.0.0.1:1\ntls: {ca: a, cert: b, key: c}\nsigning_key: d\n",
		line: 5, field: "listen.admin", msg: "unknown key (expected one of: peer, api, metrics)"},
	{name: "unknown key in list item", yaml: peersDoc("  - id: FR\n    adress: 'fr.example.org:7443'\n"), line: 7, field: "peers[0].adress", msg: "unknown key"},
	{name: "inline secret under unknown key", yaml: head + "storage:\n  s3:\n    endpoint: s3.example.org:9000\n    secret_key: wJalrXUtnFEMIK7MDENG\n",
		line: 8, field: "storage.s3.secret_key", msg: "unknown key", never: "wJalrXUtnFEMIK7MDENG"},
	{name: "duplicate key", yaml: head + "id: FR\n", line: 5, field: "id", msg: "duplicate key (first at line 1)"},
	{name: "duplicate key in flow mapping", yaml: peersDoc("  - {id: FR, ca: a.pem, ca: b.pem}\n"), line: 6, field: "peers[0].ca", msg: "duplicate key"},
	{name: "alias", yaml: peersDoc("  - &fr {id: FR, address: 'fr.example.org:7443', ca: fr.pem, signing_key: "+key1+"}\n", "  - *fr\n"),
		line: 7, field: "peers[1]", msg: "YAML aliases are not accepted"},
	{name: "merge key", yaml: head + "users:\n  - &u {identity: DE/a, role: operator}\n  - <<: *u\n    identity: DE/b\n", line: 7, field: "users[1].<<", msg: "unknown key"},
	{name: "non-string key", yaml: head + "? [a, b]\n: c\n", line: 5, msg: "keys must be plain strings, got a list"},

	// Kinds of values.
	{name: "string for mapping", yaml: "id: DE\nlisten: 127.0.0.1:8443\n", line: 2, field: "listen", msg: `want a mapping, got "127.0.0.1:8443"`},
	{name: "mapping for list", yaml: head + "peers:\n  id: FR\n", line: 6, field: "peers", msg: "want a list, got a mapping"},
	{name: "mapping for string", yaml: "id: {country: DE}\n", line: 1, field: "id", msg: "want a string, got a mapping"},
	{name: "list for string", yaml: head + "users:\n  - identity: [DE/a]\n", line: 6, field: "users[0].identity", msg: "want a string, got a list"},
	{name: "null list item", yaml: head + "users:\n  -\n", line: 6, field: "users[0]", msg: "want a mapping, got nothing"},
	{name: "yes for bool", yaml: head + "storage:\n  s3: {endpoint: 's3.example.org:9000', bucket: evx-de, access_key_file: ak, secret_key_file: sk, tls: yes}\n",
		line: 6, field: "storage.s3.tls", msg: `want true or false, got "yes"`},
	{name: "list for size", yaml: head + "limits:\n  max_bundle_size: [1]\n", line: 6, field: "limits.max_bundle_size", msg: "want a value, got a list"},

	// Missing required fields: reported at the enclosing mapping.
	{name: "missing id", yaml: strings.TrimPrefix(head, "id: DE\n"), line: 1, field: "id", msg: "missing required field"},
	{name: "null id", yaml: "id:\n" + strings.TrimPrefix(head, "id: DE\n"), line: 1, field: "id", msg: "missing required field"},
	{name: "empty id", yaml: `id: ""` + "\n" + strings.TrimPrefix(head, "id: DE\n"), line: 1, field: "id", msg: "missing required field"},
	{name: "missing listen", yaml: "id: DE\ntls: {ca: a, cert: b, key: c}\nsigning_key: d\n", line: 1, field: "listen.peer", msg: "missing required field"},
	{name: "missing listen.api", yaml: "id: DE\nlisten:\n  peer: 127.0.0.1:7443\ntls: {ca: a, cert: b, key: c}\nsigning_key: d\n", line: 2, field: "listen.api", msg: "missing required field"},
	{name: "missing tls.key", yaml: "id: DE\nlisten: {peer: ':7443', api: ':8443'}\ntls:\n  ca: ca.pem\n  cert: gw.pem\nsigning_key: gw.key\n", line: 3, field: "tls.key", msg: "missing required field"},
	{name: "missing tls", yaml: "id: DE\nlisten: {peer: ':7443', api: ':8443'}\nsigning_key: gw.key\n", line: 1, field: "tls.ca", msg: "missing required field"},
	{name: "bad lock mode", yaml: head + "retention: {lock_mode: compliance}\n", line: 5, field: "retention.lock_mode", msg: `bad value "compliance": want COMPLIANCE, or GOVERNANCE for test environments`},
	{name: "reaper interval too short", yaml: head + "retention: {reaper_interval: 500ms}\n", line: 5, field: "retention.reaper_interval", msg: "bad value \"500ms\": want from 1s to 1h"},
	{name: "reaper interval too long", yaml: head + "retention: {reaper_interval: 2h}\n", line: 5, field: "retention.reaper_interval", msg: "bad value \"2h0m0s\": want from 1s to 1h"},
	{name: "negative outbox grace", yaml: head + "retention: {outbox_grace: -1s}\n", line: 5, field: "retention.outbox_grace", msg: "bad value \"-1s\": want from 0s to 30d"},
	{name: "hold unit not a user", yaml: head + "retention: {hold_units: [DE/nobody]}\n", line: 5, field: "retention.hold_units[0]", msg: `bad value "DE/nobody": not a unit in users`},
	{name: "master key inline", yaml: head + "retention: {master_key: 'AGE-SECRET-KEY-PQ-1XYZ'}\n", line: 5, field: "retention.master_key", msg: "want the path of a file, not its contents", never: "XYZ"},
	{name: "missing signing_key", yaml: strings.TrimSuffix(head, "signing_key: gw.key\n"), line: 1, field: "signing_key", msg: "missing required field"},
	{name: "missing peer ca", yaml: peersDoc(peerFR, "  - id: NL\n    address: nl.example.org:7443\n    signing_key: "+key2+"\n"), line: 7, field: "peers[1].ca", msg: "missing required field"},
	{name: "missing peer id", yaml: peersDoc("  - {address: 'fr.example.org:7443', ca: fr.pem, signing_key: " + key1 + "}\n"), line: 6, field: "peers[0].id", msg: "missing required field"},
	{name: "missing peer address", yaml: peersDoc("  - {id: FR, ca: fr.pem, signing_key: " + key1 + "}\n"), line: 6, field: "peers[0].address", msg: "missing required field"},
	{name: "missing peer signing_key", yaml: peersDoc("  - {id: FR, address: 'fr.example.org:7443', ca: fr.pem}\n"), line: 6, field: "peers[0].signing_key", msg: "missing required field"},
	{name: "missing user identity", yaml: head + "users:\n  - role: operator\n", line: 6, field: "users[0].identity", msg: "missing required field"},
	{name: "missing user role", yaml: head + "users:\n  - identity: DE/operator\n", line: 6, field: "users[0].role", msg: "missing required field"},
	{name: "missing submitter key", yaml: head + "users:\n  - identity: DE/auditor\n    role: auditor\n  - identity: DE/forensics\n    role: submitter\n", line: 8, field: "users[1].public_key", msg: "missing required field (a submitter needs a public key)"},
	{name: "missing recipient key", yaml: head + "users:\n  - {identity: DE/prosecutor, role: recipient}\n", line: 6, field: "users[0].public_key", msg: "missing required field (a recipient needs a public key)"},
	{name: "missing s3 endpoint", yaml: head + "storage:\n  s3:\n    bucket: evx-de\n    access_key_file: ak\n    secret_key_file: sk\n", line: 6, field: "storage.s3.endpoint", msg: "missing required field"},
	{name: "missing s3 bucket", yaml: head + "storage:\n  s3:\n    endpoint: s3.example.org:9000\n    access_key_file: ak\n    secret_key_file: sk\n", line: 6, field: "storage.s3.bucket", msg: "missing required field"},
	{name: "missing s3 access key", yaml: head + "storage:\n  s3: {endpoint: 's3.example.org:9000', bucket: evx-de, secret_key_file: sk}\n", line: 6, field: "storage.s3.access_key_file", msg: "missing required field"},
	{name: "missing s3 secret key", yaml: head + "storage:\n  s3: {endpoint: 's3.example.org:9000', bucket: evx-de, access_key_file: ak}\n", line: 6, field: "storage.s3.secret_key_file", msg: "missing required field"},
	{name: "empty s3 region", yaml: head + "storage:\n  s3:\n    endpoint: s3.example.org:9000\n    bucket: evx-de\n    region: ''\n    access_key_file: ak\n    secret_key_file: sk\n", line: 9, field: "storage.s3.region", msg: "missing required field"},

	// Bad values, quoted.
	{name: "lower-case id", yaml: "id: de\n" + strings.TrimPrefix(head, "id: DE\n"), line: 1, field: "id", msg: `bad value "de": want 2 to 16 upper-case letters`},
	{name: "long id", yaml: "id: ABCDEFGHIJKLMNOPQ\n" + strings.TrimPrefix(head, "id: DE\n"), line: 1, field: "id", msg: `bad value "ABCDEFGHIJKLMNOPQ"`},
	{name: "numeric id", yaml: "id: 49\n" + strings.TrimPrefix(head, "id: DE\n"), line: 1, field: "id", msg: `bad value "49"`},
	{name: "listen without port", yaml: "id: DE\nlisten:\n  peer: 127.0.0.1\n  api: 127.0.0.1:8443\n", line: 3, field: "listen.peer", msg: `bad value "127.0.0.1": want host:port`},
	{name: "listen port out of range", yaml: "id: DE\nlisten:\n  peer: 127.0.0.1:7443\n  api: 127.0.0.1:70000\n", line: 4, field: "listen.api", msg: `bad value "127.0.0.1:70000": want a port number from 1 to 65535`},
	{name: "listen port name", yaml: "id: DE\nlisten:\n  peer: 127.0.0.1:7443\n  api: localhost:https\n", line: 4, field: "listen.api", msg: `bad value "localhost:https"`},
	{name: "listen bad host", yaml: "id: DE\nlisten:\n  peer: 127.0.0.1:7443\n  api: bad_host!:8443\n", line: 4, field: "listen.api", msg: `bad value "bad_host!:8443": want host:port, the host being an IP address or a DNS name`},
	{name: "metrics on api address", yaml: "id: DE\nlisten:\n  peer: 127.0.0.1:7443\n  api: 127.0.0.1:8443\n  metrics: 127.0.0.1:8443\n", line: 5, field: "listen.metrics", msg: `bad value "127.0.0.1:8443": listen.api already uses this address`},
	{name: "peer port 0", yaml: peersDoc("  - id: FR\n    address: fr.example.org:0\n"), line: 7, field: "peers[0].address", msg: `bad value "fr.example.org:0": want a port number from 1 to 65535`},
	{name: "peer without host", yaml: peersDoc("  - id: FR\n    address: ':7443'\n"), line: 7, field: "peers[0].address", msg: `bad value ":7443": want host:port, with a host`},
	{name: "peer address with scheme", yaml: peersDoc("  - id: FR\n    address: quic://fr.example.org:7443\n"), line: 7, field: "peers[0].address", msg: `bad value "quic://fr.example.org:7443": want host:port, without a scheme`},
	{name: "s3 endpoint with scheme", yaml: head + "storage:\n  s3:\n    endpoint: http://127.0.0.1:9000\n", line: 7, field: "storage.s3.endpoint", msg: `bad value "http://127.0.0.1:9000": want host:port, without a scheme (tls: false selects plain HTTP)`},
	{name: "s3 bucket name", yaml: head + "storage:\n  s3:\n    endpoint: 127.0.0.1:9000\n    bucket: Evx_DE\n", line: 8, field: "storage.s3.bucket", msg: `bad value "Evx_DE": want an S3 bucket name`},
	{name: "storage dir and s3", yaml: head + "storage:\n  dir: data\n  s3: " + s3ok + "\n", line: 5, field: "storage", msg: "set one of dir and s3, not both"},
	{name: "storage empty", yaml: head + "storage: {}\n", line: 5, field: "storage", msg: "set one of dir and s3"},
	{name: "decimal size unit", yaml: head + "limits:\n  max_bundle_size: 10GB\n", line: 6, field: "limits.max_bundle_size", msg: `bad value "10GB": unknown unit "GB"`},
	{name: "zero size", yaml: head + "limits:\n  max_bundle_size: 0\n", line: 6, field: "limits.max_bundle_size", msg: `bad value "0B": want from 1B to 64GiB`},
	{name: "size above the storage limit", yaml: head + "limits:\n  max_bundle_size: 65GiB\n", line: 6, field: "limits.max_bundle_size", msg: `bad value "65GiB": want from 1B to 64GiB`},
	{name: "no API connections", yaml: head + "limits:\n  api_connections: 0\n", line: 6, field: "limits.api_connections", msg: `bad value "0": want from 1 to 65536`},
	{name: "API connections not a number", yaml: head + "limits:\n  api_connections: many\n", line: 6, field: "limits.api_connections", msg: `want a whole number, got "many"`},
	{name: "more per source than in all", yaml: head + "limits:\n  api_connections: 10\n  api_connections_per_source: 11\n", line: 7, field: "limits.api_connections_per_source", msg: `bad value "11": want from 1 to limits.api_connections (10)`},
	{name: "stall timeout too short", yaml: head + "limits:\n  stall_timeout: 5ms\n", line: 6, field: "limits.stall_timeout", msg: `bad value "5ms": want from 1s to 1h`},
	{name: "stall timeout without unit", yaml: head + "limits:\n  stall_timeout: 30\n", line: 6, field: "limits.stall_timeout", msg: `bad value "30": want a duration such as 30s, 2m or 1h30m`},
	{name: "negative size", yaml: head + "limits:\n  max_bundle_size: -1\n", line: 6, field: "limits.max_bundle_size", msg: `bad value "-1": want a size such as 64GiB`},
	{name: "overflowing size", yaml: head + "limits:\n  max_bundle_size: 99999999999TiB\n", line: 6, field: "limits.max_bundle_size", msg: `bad value "99999999999TiB": size too large`},
	{name: "peer with own id", yaml: peersDoc("  - {id: DE, address: 'de.example.org:7443', ca: de.pem, signing_key: " + key1 + "}\n"), line: 6, field: "peers[0].id", msg: `bad value "DE": that is this gateway's own id`},
	{name: "lower-case peer id", yaml: peersDoc("  - {id: fr, address: 'fr.example.org:7443', ca: fr.pem, signing_key: " + key1 + "}\n"), line: 6, field: "peers[0].id", msg: `bad value "fr"`},
	{name: "duplicate peer id", yaml: peersDoc(peerFR, "  - {id: FR, address: 'fr2.example.org:7443', ca: fr2.pem, signing_key: "+key2+"}\n"), line: 7, field: "peers[1].id", msg: `bad value "FR": peers[0] has the same id`},
	{name: "malformed peer signing key", yaml: peersDoc("  - {id: FR, address: 'fr.example.org:7443', ca: fr.pem, signing_key: 'ed25519:AAAA'}\n"), line: 6, field: "peers[0].signing_key", msg: `bad value "ed25519:AAAA": want ed25519:<base64url of 32 bytes>`},
	{name: "peer signing key without prefix", yaml: peersDoc("  - {id: FR, address: 'fr.example.org:7443', ca: fr.pem, signing_key: 'M5sEHN2ejoW3a7xbpYq3-HnkTYQFHyIUe_zmLK27PYg'}\n"), line: 6, field: "peers[0].signing_key", msg: "bad value"},
	{name: "duplicate peer signing key", yaml: peersDoc(peerFR, "  - {id: NL, address: 'nl.example.org:7443', ca: nl.pem, signing_key: "+key1+"}\n"), line: 7, field: "peers[1].signing_key", msg: `bad value "` + key1 + `": peers[0] has the same key`},
	{name: "malformed identity", yaml: head + "users:\n  - {identity: de/forensics, role: operator}\n", line: 6, field: "users[0].identity", msg: `bad value "de/forensics": want <gateway id>/<name>`},
	{name: "identity of another country", yaml: head + "users:\n  - {identity: FR/prosecutor, role: operator}\n", line: 6, field: "users[0].identity", msg: `bad value "FR/prosecutor": a local user's identity starts with this gateway's id, DE/`},
	{name: "duplicate identity", yaml: head + "users:\n  - {identity: DE/ops, role: operator}\n  - {identity: DE/ops, role: auditor}\n", line: 7, field: "users[1].identity", msg: `bad value "DE/ops": users[0] has the same identity`},
	{name: "unknown role", yaml: head + "users:\n  - identity: DE/ops\n    role: admin\n", line: 7, field: "users[0].role", msg: `bad value "admin": want one of submitter, recipient, auditor, operator`},

	// Secrets inline instead of a path: refused, and never echoed.
	{name: "inline TLS key", yaml: "id: DE\nlisten: {peer: ':7443', api: ':8443'}\ntls:\n  ca: ca.pem\n  cert: gw.pem\n  key: |\n    -----BEGIN PRIVATE KEY-----\n    MIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n    -----END PRIVATE KEY-----\nsigning_key: gw.key\n",
		line: 6, field: "tls.key", msg: "want the path of a file, not its contents", never: "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49"},
	{name: "inline signing key", yaml: strings.TrimSuffix(head, "signing_key: gw.key\n") + "signing_key: AGE-SECRET-KEY-PQ-1QQQQQQQQQQQQQQQ\n",
		line: 4, field: "signing_key", msg: "want the path of a file, not its contents: secrets are given as file paths, never inline", never: "QQQQQQQQQQQQQQQ"},
	{name: "inline credential", yaml: head + "storage:\n  s3:\n    endpoint: s3.example.org:9000\n    bucket: evx-de\n    access_key_file: ak\n    secret_key_file: \"-----BEGIN wJalrXUtnFEMIK7MDENG\"\n",
		line: 10, field: "storage.s3.secret_key_file", msg: "want the path of a file, not its contents", never: "wJalrXUtnFEMIK7MDENG"},
}

func TestParseErrors(t *testing.T) {
	for _, tc := range errorCases {
		t.Run(tc.name, func(t *testing.T) {
			g, err := Parse([]byte(tc.yaml), "/etc/evx")
			if err == nil {
				t.Fatalf("Parse accepted it:\n%s", g)
			}
			var list Errors
			if !errors.As(err, &list) {
				t.Fatalf("error is %T, want Errors: %v", err, err)
			}
			found := false
			for _, e := range list {
				if e.Line == tc.line && e.Field == tc.field && strings.Contains(e.Msg, tc.msg) {
					found = true
				}
			}
			if !found {
				t.Errorf("want an error at line %d, field %q, containing %q; got:\n%v", tc.line, tc.field, tc.msg, err)
			}
			var where string
			switch {
			case tc.line > 0 && tc.field != "":
				where = fmt.Sprintf("line %d: %s: ", tc.line, tc.field)
			case tc.line > 0:
				where = fmt.Sprintf("line %d: ", tc.line)
			default:
				where = tc.field
			}
			if !strings.Contains(err.Error(), where+tc.msg) {
				t.Errorf("error text lacks %q:\n%v", where+tc.msg, err)
			}
			if tc.never != "" && strings.Contains(err.Error(), tc.never) {
				t.Errorf("error text reveals %q:\n%v", tc.never, err)
			}
		})
	}
}

// TestParseReportsEveryProblem checks that one run names every problem, in
// file order, and does not repeat a field that failed to decode as missing.
func TestParseReportsEveryProblem(t *testing.T) {
	doc := `id: de
listen:
  peer: 127.0.0.1
  api: 127.0.0.1:8443
  admin: 127.0.0.1:1
tls: [ca.pem]
signing_key: gw.key
users:
  - {identity: DE/ops, role: boss}
? [a]
: b
`
	_, err := Parse([]byte(doc), "/etc/evx")
	want := []string{
		`line 1: id: bad value "de"`,
		`line 3: listen.peer: bad value "127.0.0.1"`,
		`line 5: listen.admin: unknown key`,
		`line 6: tls: want a mapping, got a list`,
		`line 9: users[0].role: bad value "boss"`,
		`line 10: keys must be plain strings`,
	}
	lines := strings.Split(fmt.Sprint(err), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("error %d is %q, want it to start with %q", i, lines[i], w)
		}
	}
}

func TestErrorsAreCapped(t *testing.T) {
	var b strings.Builder
	b.WriteString(head + "users:\n")
	for i := range 30 {
		fmt.Fprintf(&b, "  - {identity: DE/u%d, role: boss}\n", i)
	}
	_, err := Parse([]byte(b.String()), "/etc/evx")
	var list Errors
	if !errors.As(err, &list) || len(list) != 30 {
		t.Fatalf("want 30 errors, got %v", err)
	}
	text := err.Error()
	if n := strings.Count(text, "\n"); n != maxErrors {
		t.Errorf("error text has %d lines, want %d", n+1, maxErrors+1)
	}
	if !strings.HasSuffix(text, "(and 10 more)") {
		t.Errorf("error text does not end by counting the rest:\n%s", text)
	}
}

func TestParseDefaultsAndPaths(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string
		check func(t *testing.T, g *Gateway)
	}{
		{"storage absent", head, func(t *testing.T, g *Gateway) {
			if g.Storage.Dir != "/etc/evx/data" || g.Storage.S3 != nil {
				t.Errorf("storage = %+v, want dir /etc/evx/data", g.Storage)
			}
			if g.Limits.MaxBundleSize != 64*GiB {
				t.Errorf("max_bundle_size = %v, want 64GiB", g.Limits.MaxBundleSize)
			}
			if g.Listen.Metrics != "" {
				t.Errorf("metrics = %q, want none", g.Listen.Metrics)
			}
		}},
		{"storage null", head + "storage:\n", func(t *testing.T, g *Gateway) {
			if g.Storage.Dir != "/etc/evx/data" {
				t.Errorf("storage.dir = %q, want /etc/evx/data", g.Storage.Dir)
			}
		}},
		{"relative and absolute paths", head + "storage:\n  dir: /var/lib//evx/../evx\npeers:\n  - {id: FR, address: 'fr.example.org:7443', ca: ../pki/fr.pem, signing_key: " + key1 + ", " + frLogKeys + "}\n",
			func(t *testing.T, g *Gateway) {
				want := map[string]string{
					g.TLS.CA:           "/etc/evx/ca.pem",
					g.TLS.Key:          "/etc/evx/gw-key.pem",
					g.SigningKey:       "/etc/evx/gw.key",
					g.Storage.Dir:      "/var/lib/evx",
					g.Peers[0].CA:      "/etc/pki/fr.pem",
					g.Peers[0].Address: "fr.example.org:7443",
				}
				for got, w := range want {
					if got != w {
						t.Errorf("got %q, want %q", got, w)
					}
				}
			}},
		{"s3 defaults", head + "storage:\n  s3: " + s3ok + "\n", func(t *testing.T, g *Gateway) {
			s := g.Storage.S3
			if s == nil || s.Region != "us-east-1" || !s.TLS || s.CA != "" || s.AccessKeyFile != "/etc/evx/ak" {
				t.Errorf("s3 = %+v, want region us-east-1, tls true, no ca", s)
			}
			if g.Storage.Dir != "" {
				t.Errorf("storage.dir = %q alongside s3", g.Storage.Dir)
			}
		}},
		{"s3 plain http", head + "storage:\n  s3: {endpoint: '127.0.0.1:9000', bucket: evx-de, region: eu-central-1, access_key_file: ak, secret_key_file: sk, tls: false}\n", func(t *testing.T, g *Gateway) {
			if s := g.Storage.S3; s.TLS || s.Region != "eu-central-1" {
				t.Errorf("s3 = %+v, want tls false, region eu-central-1", s)
			}
		}},
		{"listen on every interface, any port", "id: DE\nlisten: {peer: ':0', api: ':0', metrics: ':0'}\ntls: {ca: a, cert: b, key: c}\nsigning_key: d\n", func(t *testing.T, g *Gateway) {
			if g.Listen.Peer != ":0" || g.Listen.Metrics != ":0" {
				t.Errorf("listen = %+v", g.Listen)
			}
		}},
		{"IPv6 addresses", "id: DE\nlisten: {peer: '[::]:7443', api: '[::1]:8443'}\ntls: {ca: a, cert: b, key: c}\nsigning_key: d\npeers:\n  - {id: FR, address: '[2001:db8::1]:7443', ca: fr.pem, signing_key: " + key1 + ", " + frLogKeys + "}\n", func(t *testing.T, g *Gateway) {
			if g.Peers[0].Address != "[2001:db8::1]:7443" {
				t.Errorf("address = %q", g.Peers[0].Address)
			}
		}},
		{"sizes", head + "limits: {max_bundle_size: 1 KiB}\n", func(t *testing.T, g *Gateway) {
			if g.Limits.MaxBundleSize != 1024 {
				t.Errorf("max_bundle_size = %d, want 1024", g.Limits.MaxBundleSize)
			}
		}},
		{"public keys optional for auditors and operators", head + "users:\n  - {identity: DE/audit, role: auditor}\n  - {identity: DE/ops, role: operator, public_key: ops.pub}\n", func(t *testing.T, g *Gateway) {
			u, ok := g.User("DE/ops")
			if !ok || u.Role != api.RoleOperator || u.PublicKey != "/etc/evx/ops.pub" {
				t.Errorf("User(DE/ops) = %+v, %v", u, ok)
			}
			if _, ok := g.User("DE/nobody"); ok {
				t.Error("User found an unknown identity")
			}
		}},
		{"peer lookup", peersDoc(peerFR), func(t *testing.T, g *Gateway) {
			p, ok := g.Peer("FR")
			if !ok || p.Address != "fr.example.org:7443" {
				t.Fatalf("Peer(FR) = %+v, %v", p, ok)
			}
			pk, err := p.SigningPublicKey()
			if err != nil || len(pk) != 32 {
				t.Errorf("SigningPublicKey = %x, %v", pk, err)
			}
			if _, ok := g.Peer("DE"); ok {
				t.Error("Peer found the gateway itself")
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, err := Parse([]byte(tc.yaml), "/etc/evx")
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, g)
			if err := g.Validate(); err != nil {
				t.Errorf("Validate after Parse: %v", err)
			}
		})
	}
}

func TestParseRelativeBaseDir(t *testing.T) {
	g, err := Parse([]byte(head), "conf")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := filepath.Abs(filepath.Join("conf", "ca.pem"))
	if g.TLS.CA != want {
		t.Errorf("tls.ca = %q, want %q", g.TLS.CA, want)
	}
}

// TestStringRoundTrip checks that the printed configuration parses back to
// itself, so that it can be used as a configuration.
func TestStringRoundTrip(t *testing.T) {
	for _, doc := range [][]byte{Example(), readTestdata(t, "valid/gateway.yaml")} {
		g, err := Parse(doc, "/etc/evx")
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse([]byte(g.String()), "/elsewhere")
		if err != nil {
			t.Fatalf("String output does not parse: %v\n%s", err, g)
		}
		if again.String() != g.String() {
			t.Errorf("round trip changed the configuration:\n%s\nthen:\n%s", g, again)
		}
	}
}

func TestValidateBuiltInCode(t *testing.T) {
	g := &Gateway{
		ID:         "DE",
		Listen:     Listen{Peer: ":7443", API: ":8443"},
		TLS:        TLS{CA: "/a", Cert: "/b", Key: "/c"},
		SigningKey: "/d",
		Storage:    Storage{Dir: "/data"},
		Limits: Limits{MaxBundleSize: GiB, APIConnections: DefaultAPIConnections,
			APIConnectionsPerSource: DefaultAPIConnectionsPerSource, StallTimeout: DefaultStallTimeout},
		Log: Log{MaxMergeDelay: DefaultMaxMergeDelay},
	}
	if err := g.Validate(); err != nil {
		t.Fatal(err)
	}
	g.Users = []User{{Identity: "DE/x", Role: "boss"}}
	g.Limits.MaxBundleSize = 0
	err := g.Validate()
	// Without a file there are no lines: errors name the field alone.
	for _, w := range []string{"limits.max_bundle_size: bad value", "users[0].role: bad value \"boss\""} {
		if !strings.Contains(fmt.Sprint(err), w) || strings.Contains(fmt.Sprint(err), "line ") {
			t.Errorf("Validate error %q lacks %q or has a line", err, w)
		}
	}
}

// The largest bundle size the configuration accepts is what storage holds,
// and no more than the bundle format allows.
func TestMaxBundleSizeLimit(t *testing.T) {
	if MaxBundleSizeLimit != storage.MaxObjectSize || int64(MaxBundleSizeLimit) > crypto.MaxPayloadSize {
		t.Errorf("MaxBundleSizeLimit %v; storage holds %d bytes, the format allows %d", Size(MaxBundleSizeLimit), int64(storage.MaxObjectSize), int64(crypto.MaxPayloadSize))
	}
}
