package crypto

import (
	"archive/zip"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// testReceiptLog is a log position for test receipts.
func testReceiptLog() ReceiptLog {
	h := sha256.Sum256([]byte("\x00entry"))
	return ReceiptLog{LeafHash: hex.EncodeToString(h[:]), LeafIndex: 41, TreeSize: 40}
}

func mustReceipt(t testing.TB, env *Envelope, sender, receiver string, at time.Time) Receipt {
	t.Helper()
	r, err := NewReceipt(env, sender, receiver, at, testReceiptLog())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestReceiptSignVerify(t *testing.T) {
	k, err := GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := GenerateSigningKey()
	env := testEnvelope(t)
	r := mustReceipt(t, env, "DE", "FR", time.Date(2026, 11, 27, 12, 0, 0, 5, time.UTC))
	if r.Format != "evx-receipt/2" || r.Version() != 2 {
		t.Errorf("NewReceipt made format %q, version %d", r.Format, r.Version())
	}
	if want := sha256.Sum256(mustMarshal(t, env)); r.EnvelopeSHA256 != hex.EncodeToString(want[:]) {
		t.Errorf("envelope_sha256 %s, want the SHA-256 of the canonical envelope %x", r.EnvelopeSHA256, want)
	}
	s, err := k.SignReceipt(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifyReceipt(s, k.Public())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*got, r) || got.Version() != 2 {
		t.Errorf("verified receipt %+v (version %d), want %+v", got, got.Version(), r)
	}
	if err := got.CheckDelivery(env, "DE", "FR"); err != nil {
		t.Errorf("CheckDelivery of the receipted delivery: %v", err)
	}
	if _, err := VerifyReceipt(s, other.Public()); !errors.Is(err, ErrBadSignature) {
		t.Errorf("receipt verified with another gateway's key: %v", err)
	}
	tampered := &Signed{Body: bytes.Replace(s.Body, []byte(`"FR"`), []byte(`"XX"`), 1), Signature: s.Signature}
	if _, err := VerifyReceipt(tampered, k.Public()); !errors.Is(err, ErrBadSignature) {
		t.Errorf("tampered receipt: %v", err)
	}
	// A directory signature must never pass as a receipt, even over the
	// same bytes: the contexts differ.
	d, err := k.SignDirectory(Directory{Format: DirectoryFormat, Gateway: "FR"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyReceipt(&Signed{Body: d.Body, Signature: d.Signature}, k.Public()); !errors.Is(err, ErrBadSignature) {
		t.Errorf("directory signature accepted as a receipt: %v", err)
	}
	// The body is what protocol.md 7.2 shows: canonical JSON, members in
	// this order.
	want := `{"bundle_id":"0123456789abcdef0123456789abcdef","envelope_sha256":"` + r.EnvelopeSHA256 +
		`","format":"evx-receipt/2","log":{"leaf_hash":"` + testReceiptLog().LeafHash + `","leaf_index":41,"tree_size":40},` +
		`"payload_sha256":"` + r.PayloadSHA256 + `","received_at":"2026-11-27T12:00:00.000000005Z","receiver":"FR","sender":"DE"}`
	if string(s.Body) != want {
		t.Errorf("receipt body\n%s\nwant\n%s", s.Body, want)
	}
}

// v1ReceiptBody is a receipt body as gateways before receipts version 2
// signed it (protocol.md 7.2 showed it).
const v1ReceiptBody = `{"bundle_id":"09038080fe5f290bffa3b504aaa4c609","format":"evx-receipt/1","payload_sha256":"1d43b015847f2999d4aac199357c58d7b6129fccec3052647cb06639424b2612","received_at":"2026-12-03T12:25:20.454798095Z","receiver":"FR","sender":"DE"}`

func TestReceiptV1StillVerifies(t *testing.T) {
	k := testSigningKey()
	r, err := VerifyReceipt(signRaw(k, receiptContext, v1ReceiptBody), k.Public())
	if err != nil {
		t.Fatal(err)
	}
	if r.Version() != 1 || r.EnvelopeSHA256 != "" || r.Log != nil || r.BundleID != "09038080fe5f290bffa3b504aaa4c609" {
		t.Errorf("version 1 receipt read as %+v, version %d", r, r.Version())
	}
	if p, err := ParseReceiptBody([]byte(v1ReceiptBody)); err != nil || !reflect.DeepEqual(p, r) {
		t.Errorf("ParseReceiptBody = %+v, %v; want %+v", p, err, r)
	}
	env := testEnvelope(t)
	env.BundleID = r.BundleID
	hex.Decode(env.PayloadSHA256[:], []byte(r.PayloadSHA256))
	if err := r.CheckDelivery(env, "DE", "FR"); err != nil {
		t.Errorf("a version 1 receipt of the delivery: %v", err)
	}
	// The gateway no longer issues version 1.
	if _, err := k.SignReceipt(*r); err == nil || !strings.Contains(err.Error(), `issues only "evx-receipt/2"`) {
		t.Errorf("SignReceipt of a version 1 receipt: %v", err)
	}
}

func TestReceiptInvalid(t *testing.T) {
	k := testSigningKey()
	env := testEnvelope(t)
	good := mustReceipt(t, env, "DE", "FR", fixedNow())
	for name, tt := range map[string]struct {
		change func(r *Receipt)
		want   string
	}{
		"no log":              {func(r *Receipt) { r.Log = nil }, "log is missing"},
		"leaf hash in base64": {func(r *Receipt) { r.Log.LeafHash = "Nn7r8Szz3gJdzZ7r8Szz3gJdzZ7r8Szz3gJdzZ7r8Sw=" }, "log leaf_hash: malformed digest"},
		"upper-case hex":      {func(r *Receipt) { r.Log.LeafHash = strings.ToUpper(r.Log.LeafHash) }, "log leaf_hash: malformed digest"},
		"negative index":      {func(r *Receipt) { r.Log.LeafIndex = -1 }, "leaf_index -1 out of range"},
		"huge tree size":      {func(r *Receipt) { r.Log.TreeSize = 1<<53 + 1 }, "tree_size 9007199254740993 out of range"},
		"no envelope digest":  {func(r *Receipt) { r.EnvelopeSHA256 = "" }, "envelope_sha256: malformed digest"},
		"bad sender":          {func(r *Receipt) { r.Sender = "de" }, `malformed sender gateway id "de"`},
		"local time":          {func(r *Receipt) { r.ReceivedAt = "2026-11-27T13:00:00+01:00" }, "malformed received_at"},
		"v1 with a log":       {func(r *Receipt) { r.Format = ReceiptFormatV1 }, "issues only"},
		"unknown format":      {func(r *Receipt) { r.Format = "evx-receipt/3" }, "issues only"},
	} {
		t.Run(name, func(t *testing.T) {
			r := good
			l := *good.Log
			r.Log = &l
			tt.change(&r)
			if _, err := k.SignReceipt(r); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("SignReceipt: %v, want an error containing %q", err, tt.want)
			}
			// Signed anyway, by a broken or hostile gateway: refused.
			body, err := canonicalJSON(r)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := VerifyReceipt(signRaw(k, receiptContext, string(body)), k.Public()); err == nil {
				t.Fatal("VerifyReceipt accepted it")
			}
		})
	}
	if _, err := NewReceipt(&Envelope{BundleID: NewBundleID()}, "DE", "FR", fixedNow(), testReceiptLog()); err == nil {
		t.Error("NewReceipt of an invalid envelope succeeded")
	}
}

func TestVerifyReceiptV2OneEncoding(t *testing.T) {
	k := testSigningKey()
	s, err := k.SignReceipt(mustReceipt(t, testEnvelope(t), "DE", "FR", fixedNow()))
	if err != nil {
		t.Fatal(err)
	}
	body := string(s.Body)
	for name, bad := range map[string]string{
		"white space":       strings.Replace(body, `,"format"`, `, "format"`, 1),
		"members reordered": `{"format":"evx-receipt/2",` + strings.Replace(body[1:], `"format":"evx-receipt/2",`, "", 1),
		"escaped character": strings.Replace(body, `"FR"`, `"\u0046R"`, 1),
		"unknown member":    strings.Replace(body, `"tree_size"`, `"extra":1,"tree_size"`, 1),
		"log in a v1":       strings.Replace(body, `evx-receipt/2`, `evx-receipt/1`, 1),
		"too large":         strings.Replace(body, `"format"`, `"`+strings.Repeat("x", MaxReceiptBodySize)+`":1,"format"`, 1),
		"repeated member":   strings.Replace(body, `"leaf_index":41`, `"leaf_index":41,"leaf_index":7`, 1),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := VerifyReceipt(signRaw(k, receiptContext, bad), k.Public()); err == nil || !strings.HasPrefix(err.Error(), "receipt: ") {
				t.Errorf("VerifyReceipt: %v, want a refusal", err)
			}
			if _, err := ParseReceiptBody([]byte(bad)); err == nil {
				t.Error("ParseReceiptBody accepted it")
			}
		})
	}
}

func TestReceiptCheckDelivery(t *testing.T) {
	env := testEnvelope(t)
	r := mustReceipt(t, env, "DE", "FR", fixedNow())
	if err := r.CheckDelivery(env, "DE", "FR"); err != nil {
		t.Fatal(err)
	}
	// The re-offer that version 2 stops: the same id and payload under
	// other legal metadata is not what this receipt receipts.
	reoffer := *env
	reoffer.LegalBasis = "another legal basis"
	otherPayload := *env
	otherPayload.PayloadSHA256[0] ^= 1
	otherID := *env
	otherID.BundleID = NewBundleID()
	for name, tt := range map[string]struct {
		env              *Envelope
		sender, receiver string
		want             string
	}{
		"other legal basis": {&reoffer, "DE", "FR", "is for envelope SHA-256"},
		"other payload":     {&otherPayload, "DE", "FR", "is for payload SHA-256"},
		"other bundle":      {&otherID, "DE", "FR", "is for bundle"},
		"other sender":      {env, "AT", "FR", `is for sender "DE", not "AT"`},
		"other receiver":    {env, "DE", "NL", `receipt from NL is for receiver "FR", not "NL"`},
	} {
		if err := r.CheckDelivery(tt.env, tt.sender, tt.receiver); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, tt.want)
		}
	}
}

func TestDirectorySignVerify(t *testing.T) {
	k, _ := GenerateSigningKey()
	d := Directory{Format: DirectoryFormat, Gateway: "FR", Issued: "2026-11-27T12:00:00Z",
		Units: []DirectoryEntry{{Unit: "FR/prosecutor", Role: "recipient", AgeRecipient: "age1pq1x"}}}
	s, err := k.SignDirectory(d)
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifyDirectory(s, k.Public(), "FR")
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := got.Lookup("FR/prosecutor"); !ok || e.AgeRecipient != "age1pq1x" {
		t.Errorf("lookup after verify: %+v %v", e, ok)
	}
	if _, ok := got.Lookup("FR/judge"); ok {
		t.Error("lookup of an absent unit succeeded")
	}
	if _, err := VerifyDirectory(s, k.Public(), "DE"); err == nil || !strings.Contains(err.Error(), `issued by "FR"`) {
		t.Errorf("directory of FR accepted as DE's: %v", err)
	}
}

func TestSigningKeyFile(t *testing.T) {
	k, _ := GenerateSigningKey()
	text, _ := k.MarshalText()
	back, err := ParseSigningKeyFile(text)
	if err != nil {
		t.Fatal(err)
	}
	if back.Public() != k.Public() {
		t.Error("signing key changed in a round trip")
	}
	// A unit key file (evx keygen) serves as a gateway signing key too.
	uk, _ := GenerateUnitKey("")
	ukText, _ := uk.MarshalText()
	fromUnit, err := ParseSigningKeyFile(ukText)
	if err != nil {
		t.Fatal(err)
	}
	if fromUnit.Public() != FormatSigningKey(uk.SigningPublicKey()) {
		t.Error("signing key taken from a unit key file differs")
	}
	for name, bad := range map[string]string{
		"empty":     "",
		"two keys":  string(text) + string(text),
		"garbage":   "hello\n",
		"bad value": "evx-signing-secret-key: ed25519:AAAA\n",
	} {
		if _, err := ParseSigningKeyFile([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestPKIIdentities(t *testing.T) {
	ca, err := NewCA("DE", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.Issue(CertRequest{CommonName: "DE/forensics", URIs: []string{UnitURI("DE/forensics")}, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	if u, err := UnitFromCert(c.Leaf); err != nil || u != "DE/forensics" {
		t.Errorf("UnitFromCert = %q, %v", u, err)
	}
	g, err := ca.Issue(CertRequest{URIs: []string{"evx://gateway/DE"}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := UnitFromCert(g.Leaf); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("gateway certificate as a unit: %v", err)
	}
	bad, err := ca.Issue(CertRequest{URIs: []string{UnitURI("../etc")}, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := UnitFromCert(bad.Leaf); err == nil {
		t.Error("malformed unit id accepted")
	}
	if _, err := c.Leaf.Verify(x509VerifyOptions(ca)); err != nil {
		t.Errorf("issued certificate does not chain to its CA: %v", err)
	}
}

func x509VerifyOptions(ca *CA) x509.VerifyOptions {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return x509.VerifyOptions{Roots: p, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
}

// signRaw signs body as it is, as a hostile or broken gateway could.
func signRaw(k *SigningKey, context string, body string) *Signed {
	return &Signed{Body: []byte(body), Signature: ed25519.Sign(k.key, append([]byte(context), body...))}
}

func TestSignedDocumentErrorsNameTheDocument(t *testing.T) {
	k, _ := GenerateSigningKey()
	other, _ := GenerateSigningKey()
	r, err := k.SignReceipt(mustReceipt(t, testEnvelope(t), "DE", "FR", time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	d, err := k.SignDirectory(Directory{Format: DirectoryFormat, Gateway: "FR"})
	if err != nil {
		t.Fatal(err)
	}
	short := &Signed{Body: r.Body, Signature: r.Signature[:10]}
	tests := []struct {
		name   string
		verify func() error
		want   string
		bad    bool // errors.Is(err, ErrBadSignature)
	}{
		{"receipt under another key", func() error { _, err := VerifyReceipt(r, other.Public()); return err },
			"receipt: signature does not verify under " + other.Public(), true},
		{"truncated receipt signature", func() error { _, err := VerifyReceipt(short, k.Public()); return err },
			"receipt: signature of 10 bytes, want 64, cannot verify under " + k.Public(), true},
		{"directory under another key", func() error { _, err := VerifyDirectory(d, other.Public(), "FR"); return err },
			"unit directory of FR: signature does not verify under " + other.Public(), true},
		{"directory signature as a receipt", func() error { _, err := VerifyReceipt(d, k.Public()); return err },
			"receipt: signature does not verify under " + k.Public(), true},
		{"missing receipt", func() error { _, err := VerifyReceipt(nil, k.Public()); return err },
			"receipt: missing", false},
		{"missing directory", func() error { _, err := VerifyDirectory(nil, k.Public(), "DE"); return err },
			"unit directory of DE: missing", false},
		{"malformed signer key", func() error { _, err := VerifyDirectory(d, "ed25519:AAAA", "FR"); return err },
			`unit directory of FR: malformed signing key "ed25519:AAAA"`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.verify()
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to start with %q", err, tt.want)
			}
			if errors.Is(err, ErrBadSignature) != tt.bad {
				t.Errorf("errors.Is(%v, ErrBadSignature) = %v, want %v", err, !tt.bad, tt.bad)
			}
		})
	}
}

func TestSignedDocumentsWithRepeatedMembers(t *testing.T) {
	k, _ := GenerateSigningKey()
	id := NewBundleID()
	receipt := `"format":"evx-receipt/1","payload_sha256":"00","received_at":"2026-11-27T12:00:00Z","receiver":"FR","sender":"DE"`
	for name, body := range map[string]string{
		"repeated bundle id":    `{"bundle_id":"` + id + `",` + receipt + `,"bundle_id":"` + NewBundleID() + `"}`,
		"name in another case":  `{"bundle_id":"` + id + `",` + receipt + `,"Receiver":"XX"}`,
		"escaped repeated name": `{"bundle_id":"` + id + `",` + receipt + `,"\u0072eceiver":"XX"}`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := VerifyReceipt(signRaw(k, receiptContext, body), k.Public())
			if err == nil || !strings.Contains(err.Error(), "receipt: malformed body: member") {
				t.Fatalf("err = %v, want a refusal of the repeated member", err)
			}
		})
	}
	good := `{"bundle_id":"` + id + `",` + receipt + `}`
	if _, err := VerifyReceipt(signRaw(k, receiptContext, good), k.Public()); err != nil {
		t.Fatalf("receipt without repeated members: %v", err)
	}
	dir := `{"format":"evx-directory/1","gateway":"FR","issued":"2026-11-27T12:00:00Z","units":[` +
		`{"unit":"FR/prosecutor","role":"recipient","age_recipient":"age1pq1a","age_recipient":"age1pq1b"}]}`
	if _, err := VerifyDirectory(signRaw(k, directoryContext, dir), k.Public(), "FR"); err == nil || !strings.Contains(err.Error(), `unit directory of FR: malformed body: member "age_recipient"`) {
		t.Fatalf("directory with an entry repeating a member: %v", err)
	}
}

func TestCheckUniqueMembers(t *testing.T) {
	for _, ok := range []string{
		`{}`, `[]`, `"x"`, `1e999`, `{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]}`,
		`{"a":{"b":1},"b":{"b":1}}`, `[{"a":1},{"a":1}]`, `{"a":"a","b":"a"}`, `{"":1,"x":{"":2}}`,
	} {
		if err := CheckUniqueMembers([]byte(ok)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{
		`{"a":1,"a":1}`, `{"a":1,"b":2,"a":3}`, `{"x":{"a":1,"a":2}}`, `[1,{"a":[{"b":1,"b":2}]}]`,
		`{"a":1,"A":2}`, `{"k":1,"\u212a":2}`, `{"s":1,"\u017f":2}`, `{"a":1,"\u0061":2}`, `{"":1,"":2}`,
		`{"a":{},"a":[]}`,
		// Invalid JSON is refused too.
		`{"a":1`, `{"a" 1}`, `{1:2}`, `[1,]`,
	} {
		if err := CheckUniqueMembers([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

// TestReceiptRecipe runs the standard-tools recipe of protocol.md 7.2 on a
// version 2 receipt: the OpenSSL signature check, and the comparison of
// envelope_sha256 with the bundle's envelope.json.
func TestReceiptRecipe(t *testing.T) {
	for _, tool := range []string{"bash", "openssl", "jq", "basenc", "xxd", "unzip", "sha256sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	doc, err := os.ReadFile("../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(doc)
	section = section[strings.Index(section, "### 7.2 Receipt"):]
	section = section[:strings.Index(section, "### 7.3")]
	var blocks []string
	for rest := section; ; {
		_, after, ok := strings.Cut(rest, "```sh\n")
		if !ok {
			break
		}
		block, after, _ := strings.Cut(after, "```")
		blocks = append(blocks, block)
		rest = after
	}
	if len(blocks) != 2 {
		t.Fatalf("found %d sh blocks in protocol.md 7.2, want 2 (signature, envelope)", len(blocks))
	}

	k := testSigningKey()
	env := testEnvelope(t)
	s, err := k.SignReceipt(mustReceipt(t, env, "DE", "FR", fixedNow()))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	stored, _ := json.Marshal(map[string]any{"peer": "FR", "receipt": s})
	if err := os.WriteFile(filepath.Join(dir, "receipt.json"), stored, 0o600); err != nil {
		t.Fatal(err)
	}
	var zb bytes.Buffer
	zw := zip.NewWriter(&zb)
	w, _ := zw.Create("envelope.json")
	w.Write(mustMarshal(t, env))
	zw.Close()
	if err := os.WriteFile(filepath.Join(dir, "bundle.evx"), zb.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	runErr := func(script string) (string, error) {
		cmd := exec.Command("bash", "-e", "-o", "pipefail", "-c", script)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	run := func(script string) string {
		t.Helper()
		out, err := runErr(script)
		if err != nil {
			t.Fatalf("%v\n%s\n%s", err, script, out)
		}
		return out
	}
	keyLine := regexp.MustCompile(`(?m)^key=.*$`)
	if !keyLine.MatchString(blocks[0]) {
		t.Fatal("the signature recipe sets no key=")
	}
	verify := keyLine.ReplaceAllLiteralString(blocks[0], "key="+k.Public())
	if out := run(verify); !strings.Contains(out, "Signature Verified Successfully") {
		t.Errorf("the OpenSSL recipe does not verify a version 2 receipt:\n%s", out)
	}
	other, _ := GenerateSigningKey()
	if out, err := runErr(keyLine.ReplaceAllLiteralString(blocks[0], "key="+other.Public())); err == nil || !strings.Contains(out, "Signature Verification Failure") {
		t.Errorf("the OpenSSL recipe under another key: %v\n%s", err, out)
	}
	lines := strings.Fields(run(blocks[1]))
	if len(lines) < 2 || lines[0] != lines[1] {
		t.Errorf("envelope recipe printed %q, want the same digest twice", lines)
	}
}
