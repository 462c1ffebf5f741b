package crypto

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
)

func TestUnitKeyRoundTrip(t *testing.T) {
	for _, unit := range []string{"DE/forensics", ""} {
		k := newTestKey(t, unit)
		text, err := k.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		for _, form := range []string{"lf", "crlf"} {
			in := text
			if form == "crlf" {
				in = bytes.ReplaceAll(text, []byte("\n"), []byte("\r\n"))
			}
			k2, err := ParseUnitKey(bytes.NewReader(in))
			if err != nil {
				t.Fatalf("%s: ParseUnitKey: %v\n%s", form, err, in)
			}
			if k2.Unit != unit {
				t.Errorf("unit %q, want %q", k2.Unit, unit)
			}
			if k2.Recipient().String() != k.Recipient().String() {
				t.Error("age recipient changed in the round trip")
			}
			if !k2.SigningPublicKey().Equal(k.SigningPublicKey()) {
				t.Error("signing key changed in the round trip")
			}
			if k2.Public() != k.Public() {
				t.Errorf("public key %+v, want %+v", k2.Public(), k.Public())
			}
		}
		// The age CLI reads the file as an identity file: only the
		// identity line may be without '#'.
		var ids []string
		for _, line := range strings.Split(strings.TrimSpace(string(text)), "\n") {
			if !strings.HasPrefix(line, "#") {
				ids = append(ids, line)
			}
		}
		if len(ids) != 1 || !strings.HasPrefix(ids[0], "AGE-SECRET-KEY-PQ-1") {
			t.Errorf("non-comment lines %q, want just the age identity", ids)
		}
		parsed, err := age.ParseIdentities(bytes.NewReader(text))
		if err != nil || len(parsed) != 1 {
			t.Errorf("age.ParseIdentities: %d identities, %v", len(parsed), err)
		}
	}
}

func TestParseUnitKeyErrors(t *testing.T) {
	k := newTestKey(t, "DE/forensics")
	text, _ := k.MarshalText()
	lines := strings.Split(strings.TrimSuffix(string(text), "\n"), "\n")
	without := func(prefix string) string {
		var out []string
		for _, l := range lines {
			if !strings.HasPrefix(l, prefix) {
				out = append(out, l)
			}
		}
		return strings.Join(out, "\n") + "\n"
	}
	other := newTestKey(t, "")
	classic, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	otherText, _ := other.MarshalText()
	var otherSigning string
	for _, l := range strings.Split(string(otherText), "\n") {
		if strings.HasPrefix(l, signingSecretLine) {
			otherSigning = l
		}
	}
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty", "", "no age identity"},
		{"missing signing key", without(signingSecretLine), "no evx signing secret key in key file"},
		{"missing identity", without("AGE-SECRET-KEY-PQ-1"), "no age identity (AGE-SECRET-KEY-PQ-1…) in key file"},
		{"two identities", string(text) + other.identity.String() + "\n", "more than one age identity"},
		{"two signing keys", string(text) + otherSigning + "\n", "more than one signing secret key"},
		{"classic identity", without("AGE-SECRET-KEY-PQ-1") + classic.String() + "\n", "classic X25519 age identity; evx needs a post-quantum hybrid identity"},
		{"garbage line", string(text) + "hello\n", "unexpected content in key file"},
		{"garbage line number", "# comment\n\nhello\n", "line 3: unexpected content"},
		{"malformed identity", without("AGE-SECRET-KEY-PQ-1") + "AGE-SECRET-KEY-PQ-1XYZ\n", "line 7:"},
		{"malformed signing key", without(signingSecretLine) + signingSecretLine + "ed25519:AAAA\n", "malformed signing secret key: 3 bytes, want 32"},
		{"signing key without prefix", without(signingSecretLine) + signingSecretLine + "AAAA\n", "missing \"ed25519:\" prefix"},
		{"malformed unit", strings.Replace(string(text), "DE/forensics", "de forensics", 1), "malformed unit id \"de forensics\""},
		{"too large", strings.Repeat("#\n", maxKeyFileSize), "key file too large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseUnitKey(strings.NewReader(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			// Key files are secret: an error must not echo key material.
			if strings.Contains(err.Error(), "SECRET-KEY") && !strings.Contains(err.Error(), "SECRET-KEY-PQ-1…") {
				t.Errorf("error %q quotes secret key material", err)
			}
		})
	}
}

func TestParsePublicKey(t *testing.T) {
	k := newTestKey(t, "FR/prosecutor")
	pub := k.Public()
	text, _ := pub.MarshalText()
	// PublicKey is a TextMarshaler; its JSON form is that of its fields,
	// as evx keygen -y --json prints it.
	type fields PublicKey
	js, _ := json.Marshal(fields(pub))
	keyFile, _ := k.MarshalText()
	for _, tc := range []struct {
		name string
		in   []byte
		want PublicKey
	}{
		{"text", text, pub},
		{"text with blank edges", append(append([]byte("\n  "), text...), "\n\n"...), pub},
		{"json", js, pub},
		{"bare recipient", []byte(pub.AgeRecipient + "\n"), PublicKey{AgeRecipient: pub.AgeRecipient}},
		{"key file", keyFile, pub},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePublicKey(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	if string(text) != "unit: FR/prosecutor\nage-recipient: "+pub.AgeRecipient+"\nsigning-key: "+pub.SigningKey+"\n" {
		t.Errorf("text form changed:\n%s", text)
	}
}

func TestParsePublicKeyErrors(t *testing.T) {
	k := newTestKey(t, "FR/prosecutor")
	pub := k.Public()
	classic, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	classicRecipient := classic.Recipient().String()
	for _, tc := range []struct {
		name, in, want string
	}{
		{"classic recipient", classicRecipient, "age recipient \"" + classicRecipient + "\" is not post-quantum: evx needs an age1pq1… recipient"},
		{"classic recipient in text", "age-recipient: " + classicRecipient + "\nsigning-key: " + pub.SigningKey, "is not post-quantum"},
		{"classic recipient in json", `{"age_recipient":"` + classicRecipient + `","signing_key":"` + pub.SigningKey + `"}`, "is not post-quantum"},
		{"classic key file", "# x\n" + classic.String() + "\n", "classic X25519 age identity"},
		{"malformed pq recipient", "age1pq1qqqq", "malformed age recipient \"age1pq1qqqq\""},
		{"empty", "", "line 1: expected \"name: value\""},
		{"missing recipient", "signing-key: " + pub.SigningKey, "missing age recipient"},
		{"unknown field", "age-recipient: " + pub.AgeRecipient + "\ncolour: blue", "line 2: unknown field \"colour\""},
		{"unknown json field", `{"age_recipient":"` + pub.AgeRecipient + `","colour":"blue"}`, "malformed JSON public key"},
		{"bad signing key", "age-recipient: " + pub.AgeRecipient + "\nsigning-key: ed25519:AAAA", "malformed signing key \"ed25519:AAAA\""},
		{"bad unit", "unit: fr\nage-recipient: " + pub.AgeRecipient, "malformed unit id \"fr\""},
		{"too large", strings.Repeat("x", maxKeyFileSize+1), "public key too large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePublicKey([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestSigningKeyText(t *testing.T) {
	k := newTestKey(t, "")
	s := FormatSigningKey(k.SigningPublicKey())
	pk, err := ParseSigningKey(s)
	if err != nil {
		t.Fatal(err)
	}
	if !pk.Equal(k.SigningPublicKey()) {
		t.Error("signing key changed in the round trip")
	}
	for _, bad := range []string{"", "ed25519:", s + "A", strings.TrimPrefix(s, "ed25519:"), s[:len(s)-1] + "=", "ED25519:" + s[8:]} {
		if _, err := ParseSigningKey(bad); err == nil || !strings.Contains(err.Error(), "malformed signing key") {
			t.Errorf("ParseSigningKey(%q): %v", bad, err)
		}
	}
}

func TestGenerateUnitKeyRejectsBadUnit(t *testing.T) {
	for _, u := range []string{"forensics", "de/forensics", "DE/", "DE/Forensics", "DE/a b"} {
		if _, err := GenerateUnitKey(u); err == nil || !strings.Contains(err.Error(), "malformed unit id") {
			t.Errorf("GenerateUnitKey(%q): %v", u, err)
		}
	}
}

// Key files are read only up to what they may hold: a path naming an
// endless device, or a huge file, is refused without reading it whole.
func TestReadFileLimit(t *testing.T) {
	if _, err := ReadFileLimit("/dev/zero", 1<<10); err == nil || !strings.Contains(err.Error(), "read /dev/zero: not a regular file") {
		t.Errorf("reading /dev/zero: %v", err)
	}
	big := filepath.Join(t.TempDir(), "big.pub")
	if err := os.WriteFile(big, bytes.Repeat([]byte("#\n"), maxKeyFileSize), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPublicKeyFile(big); err == nil || !strings.Contains(err.Error(), "big.pub: larger than 64KiB") {
		t.Errorf("reading an oversized public key file: %v", err)
	}
	k, err := GenerateUnitKey("DE/forensics")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := k.Public().MarshalText()
	pub := filepath.Join(t.TempDir(), "unit.pub")
	if err := os.WriteFile(pub, text, 0o644); err != nil {
		t.Fatal(err)
	}
	if p, err := ReadPublicKeyFile(pub); err != nil || p != k.Public() {
		t.Errorf("ReadPublicKeyFile = %+v, %v; want %+v", p, err, k.Public())
	}
}
