package crypto

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// testSigningKey returns the gateway signing key whose seed is the bytes
// 0, 1, …, 31: the key of the derivation test vector.
func testSigningKey() *SigningKey {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	return &SigningKey{ed25519.NewKeyFromSeed(seed)}
}

// The derived keys of testSigningKey, as docs/audit.md gives them. Another
// implementation of the derivation must reproduce these (they were
// checked with an independent HKDF and Ed25519 implementation).
const (
	vectorCheckpointKey = "evx.transfer-log/DE+562e3855+AayROGdZs4TMpQy8RnVk9IRRuUg9Olzwj5kNRgSb1CwK"
	vectorWitnessKey    = "evx.witness/DE+62daa3bc+BILpfY39NH+WZstpVi3T6k4S95bnraolqb3IraWcowQF"
)

func TestLogKeysVector(t *testing.T) {
	k := testSigningKey()
	if got := k.CheckpointVerifierKey("evx.transfer-log/DE"); got != vectorCheckpointKey {
		t.Errorf("checkpoint verifier key\n got %s\nwant %s", got, vectorCheckpointKey)
	}
	if got := k.WitnessVerifierKey("evx.witness/DE"); got != vectorWitnessKey {
		t.Errorf("witness verifier key\n got %s\nwant %s", got, vectorWitnessKey)
	}
	// The derivation is HKDF-SHA256 as RFC 5869 writes it, computed here
	// from HMAC-SHA256 alone: extract with an all-zero salt, then one
	// expand block.
	for label, want := range map[string]ed25519.PrivateKey{
		"evx transfer log checkpoint key v1": k.deriveKey(checkpointKeyLabel),
		"evx transfer log witness key v1":    k.deriveKey(witnessKeyLabel),
	} {
		extract := hmac.New(sha256.New, make([]byte, sha256.Size))
		extract.Write(k.key.Seed())
		expand := hmac.New(sha256.New, extract.Sum(nil))
		expand.Write([]byte(label))
		expand.Write([]byte{1})
		if seed := expand.Sum(nil); !bytes.Equal(seed, want.Seed()) {
			t.Errorf("%s: derived seed %x, RFC 5869 gives %x", label, want.Seed(), seed)
		}
	}
}

func TestLogKeysDistinct(t *testing.T) {
	k := testSigningKey()
	other, err := GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{
		"signing":    base64.StdEncoding.EncodeToString(k.key.Public().(ed25519.PublicKey)),
		"checkpoint": base64.StdEncoding.EncodeToString(k.deriveKey(checkpointKeyLabel).Public().(ed25519.PublicKey)),
		"witness":    base64.StdEncoding.EncodeToString(k.deriveKey(witnessKeyLabel).Public().(ed25519.PublicKey)),
		"other's checkpoint": base64.StdEncoding.EncodeToString(
			other.deriveKey(checkpointKeyLabel).Public().(ed25519.PublicKey)),
	}
	seen := map[string]string{}
	for name, pk := range keys {
		if prev, ok := seen[pk]; ok {
			t.Errorf("the %s and %s keys are the same", name, prev)
		}
		seen[pk] = name
	}
	// The same signing key always derives the same keys.
	again, err := ParseSigningKeyFile(mustText(t, k))
	if err != nil {
		t.Fatal(err)
	}
	if again.CheckpointVerifierKey("o") != k.CheckpointVerifierKey("o") || again.WitnessVerifierKey("w") != k.WitnessVerifierKey("w") {
		t.Error("a signing key read back from its file derives other log keys")
	}
}

func mustText(t *testing.T, k *SigningKey) []byte {
	t.Helper()
	b, err := k.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testCheckpoint returns the body of a C2SP checkpoint of origin.
func testCheckpoint(origin string, n int64) string {
	return torchwood.Checkpoint{Origin: origin, Tree: tlog.Tree{N: n, Hash: tlog.RecordHash([]byte("x"))}}.String()
}

func TestCheckpointSignerRoundTrip(t *testing.T) {
	k := testSigningKey()
	const origin = "evx.transfer-log/DE"
	signer, err := k.CheckpointSigner(origin)
	if err != nil {
		t.Fatal(err)
	}
	text := testCheckpoint(origin, 42)
	signed, err := note.Sign(&note.Note{Text: text}, signer)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(k.CheckpointVerifierKey(origin))
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		t.Fatal(err)
	}
	if n.Text != text || len(n.Sigs) != 1 || n.Sigs[0].Name != origin {
		t.Errorf("opened note %q signed by %+v", n.Text, n.Sigs)
	}
	// Ed25519 is deterministic: racing writers of one log sign the same
	// checkpoint into the same bytes.
	signer2, _ := testSigningKey().CheckpointSigner(origin)
	if again, _ := note.Sign(&note.Note{Text: text}, signer2); !bytes.Equal(again, signed) {
		t.Error("signing one checkpoint twice gave different bytes")
	}
	// Another gateway's key of the same name does not verify it.
	other, _ := GenerateSigningKey()
	ov, err := note.NewVerifier(other.CheckpointVerifierKey(origin))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := note.Open(signed, note.VerifierList(ov)); err == nil {
		t.Error("a checkpoint verified under another gateway's key")
	}
	// Nor does the gateway's own signing key, as a plain signed-note key.
	sv, err := note.NewEd25519VerifierKey(origin, k.key.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if v, err := note.NewVerifier(sv); err != nil {
		t.Fatal(err)
	} else if _, err := note.Open(signed, note.VerifierList(v)); err == nil {
		t.Error("a checkpoint verified under the gateway signing key itself")
	}
}

func TestWitnessSignerRoundTrip(t *testing.T) {
	de, fr := testSigningKey(), testSigningKey()
	fr.key = fr.deriveKey("another gateway, for this test")
	const origin = "evx.transfer-log/DE"
	logSigner, err := de.CheckpointSigner(origin)
	if err != nil {
		t.Fatal(err)
	}
	witness, err := fr.WitnessSigner("evx.witness/FR")
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().Unix()
	signed, err := note.Sign(&note.Note{Text: testCheckpoint(origin, 7)}, logSigner, witness)
	if err != nil {
		t.Fatal(err)
	}
	logV, err := note.NewVerifier(de.CheckpointVerifierKey(origin))
	if err != nil {
		t.Fatal(err)
	}
	wv, err := ParseWitnessVerifierKey(fr.WitnessVerifierKey("evx.witness/FR"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(signed, note.VerifierList(logV, wv))
	if err != nil {
		t.Fatal(err)
	}
	if len(n.Sigs) != 2 || n.Sigs[1].Name != "evx.witness/FR" {
		t.Fatalf("verified signatures %+v, want the log's and the witness's", n.Sigs)
	}
	if ts, err := torchwood.CosignatureTimestamp(n.Sigs[1]); err != nil || ts < before || ts > time.Now().Unix() {
		t.Errorf("cosignature timestamp %d, %v; want the signing time", ts, err)
	}
	// The witness key is not the checkpoint key: FR's own checkpoint
	// verifier, under the witness's name, does not verify the cosignature.
	mixed, err := note.NewVerifier(fr.CheckpointVerifierKey("evx.witness/FR"))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := note.Open(signed, note.VerifierList(mixed)); err == nil {
		t.Errorf("a cosignature verified under the checkpoint key: %+v", n.Sigs)
	}
	// A cosignature over another checkpoint does not verify.
	text7 := testCheckpoint(origin, 7)
	cosigned8, err := note.Sign(&note.Note{Text: testCheckpoint(origin, 8)}, witness)
	if err != nil {
		t.Fatal(err)
	}
	_, sig8, _ := bytes.Cut(cosigned8, []byte("\n\n"))
	forged := append([]byte(text7+"\n"), sig8...)
	if _, err := note.Open(forged, note.VerifierList(wv)); err == nil {
		t.Error("a cosignature of checkpoint 8 verified on checkpoint 7")
	}
	if _, err := note.Open(append([]byte(testCheckpoint(origin, 8)+"\n"), sig8...), note.VerifierList(wv)); err != nil {
		t.Errorf("the cosignature of checkpoint 8, on checkpoint 8: %v", err)
	}
}

func TestParseWitnessVerifierKey(t *testing.T) {
	k := testSigningKey()
	good := k.WitnessVerifierKey("evx.witness/DE")
	if v, err := ParseWitnessVerifierKey(good); err != nil || v.Name() != "evx.witness/DE" {
		t.Fatalf("ParseWitnessVerifierKey(%q) = %v, %v", good, v, err)
	}
	name, hash := splitVerifierKey(good)
	key64 := strings.TrimPrefix(good, name+"+"+hash+"+")
	for bad, want := range map[string]string{
		"":                                  "want name+hash+key",
		"evx.witness/DE":                    "want name+hash+key",
		"+" + hash + "+" + key64:            "want name+hash+key",
		name + "+1234+" + key64:             "want name+hash+key",
		name + "+" + hash + "+" + key64[1:]: "invalid base64",
		name + "+" + hash + "+AAAA":         "3 key bytes, want 33",
		// The checkpoint key's form: algorithm 1, not a cosignature key.
		k.CheckpointVerifierKey("evx.witness/DE"): "has algorithm 1, want 4",
		// Another name, or another hash, with the same key.
		"evx.witness/FR+" + hash + "+" + key64: "key hash does not match",
		name + "+00000000+" + key64:            "key hash does not match",
		"evx witness+" + hash + "+" + key64:    "malformed witness key",
	} {
		if _, err := ParseWitnessVerifierKey(bad); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseWitnessVerifierKey(%q) = %v, want an error containing %q", bad, err, want)
		}
	}
}

func TestLogKeysInvalidNames(t *testing.T) {
	k := testSigningKey()
	for _, name := range []string{"", "with space", "a+b", "tab\there"} {
		if _, err := k.CheckpointSigner(name); err == nil {
			t.Errorf("CheckpointSigner(%q) succeeded", name)
		}
		if v := k.CheckpointVerifierKey(name); v != "" {
			t.Errorf("CheckpointVerifierKey(%q) = %q, want \"\"", name, v)
		}
		if _, err := k.WitnessSigner(name); err == nil {
			t.Errorf("WitnessSigner(%q) succeeded", name)
		}
		if v := k.WitnessVerifierKey(name); v != "" {
			t.Errorf("WitnessVerifierKey(%q) = %q, want \"\"", name, v)
		}
	}
}
