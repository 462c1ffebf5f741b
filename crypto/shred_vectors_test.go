package crypto

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
)

// The golden vectors of the outer layer and of the wrapped-key format,
// in testdata/shred: a master key file, a shred key, that key wrapped by
// the master key and by another one, and an outer layer of two chunks.
// Every evx must read them as expected.json says. Regenerate them (after
// a deliberate format change, with a new version) with
//
//	go test ./crypto -run TestShredVectors -update
const shredVectorsDir = "testdata/shred"

type shredVector struct {
	Description string `json:"description"`
	// Files, relative to the vectors' directory.
	MasterKey   string `json:"master_key"`    // master key file
	ShredKey    string `json:"shred_key"`     // the AGE-SECRET-KEY-1… line it wraps
	Wrapped     string `json:"wrapped"`       // Wrap's output
	WrappedSize int    `json:"wrapped_size"`  // its size, the same for every key
	OtherMaster string `json:"other_wrapped"` // the key wrapped by another master key
	Outer       string `json:"outer"`         // outer layer of the plaintext
	OuterSize   int64  `json:"outer_size"`
	// The plaintext is shredVectorPlaintext(PlaintextSize).
	PlaintextSize   int64  `json:"plaintext_size"`
	PlaintextSHA256 string `json:"plaintext_sha256"`
}

// shredVectorPlaintext is a plaintext anyone can write again: byte i is
// i mod 251, so that no two chunks are alike.
func shredVectorPlaintext(n int64) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

func writeShredVectors(t *testing.T) {
	t.Helper()
	var mk bytes.Buffer
	mk.WriteString("# TEST VECTOR of evx's outer layer: this master key is public, never use it.\n")
	if err := GenerateMasterKey(&mk); err != nil {
		t.Fatal(err)
	}
	m, err := ParseMasterKey(mk.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	other, _ := newMasterKey(t)
	k := newShredKey(t)
	wrapped, err := m.Wrap(k)
	if err != nil {
		t.Fatal(err)
	}
	otherWrapped, err := other.Wrap(k)
	if err != nil {
		t.Fatal(err)
	}
	plain := shredVectorPlaintext(ageChunkSize + 1)
	outer := shredEncrypt(t, k, plain)
	sum := sha256.Sum256(plain)
	v := shredVector{
		Description:     "A master key file, a shred key wrapped by it (format evx-wrapped-shred-key/v1) and by another master key, and the outer layer of a two-chunk plaintext (byte i is i mod 251) encrypted to the shred key.",
		MasterKey:       "master.key",
		ShredKey:        "shred-key.txt",
		Wrapped:         "wrapped-shred-key",
		WrappedSize:     len(wrapped),
		OtherMaster:     "wrapped-by-other-master-key",
		Outer:           "outer.age",
		OuterSize:       int64(len(outer)),
		PlaintextSize:   int64(len(plain)),
		PlaintextSHA256: hex.EncodeToString(sum[:]),
	}
	desc, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(shredVectorsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		v.MasterKey:     mk.Bytes(),
		v.ShredKey:      []byte(k.id.String() + "\n"),
		v.Wrapped:       wrapped,
		v.OtherMaster:   otherWrapped,
		v.Outer:         outer,
		"expected.json": append(desc, '\n'),
	} {
		if err := os.WriteFile(filepath.Join(shredVectorsDir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func readShredVector(t testing.TB) (v shredVector, file func(string) []byte) {
	t.Helper()
	file = func(name string) []byte {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(shredVectorsDir, name))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	if err := json.Unmarshal(file("expected.json"), &v); err != nil {
		t.Fatal(err)
	}
	return v, file
}

func TestShredVectors(t *testing.T) {
	if *updateVectors {
		writeShredVectors(t)
	}
	v, file := readShredVector(t)
	m, err := ReadMasterKeyFile(filepath.Join(shredVectorsDir, v.MasterKey))
	if err != nil {
		t.Fatal(err)
	}
	wantKey := strings.TrimSpace(string(file(v.ShredKey)))
	wrapped := file(v.Wrapped)
	if len(wrapped) != v.WrappedSize || v.WrappedSize != wrappedShredKeySize {
		t.Fatalf("wrapped key of %d bytes; expected.json says %d, this evx %d", len(wrapped), v.WrappedSize, wrappedShredKeySize)
	}
	k, err := m.Unwrap(wrapped)
	if err != nil {
		t.Fatal(err)
	}
	if k.id.String() != wantKey {
		t.Fatal("the wrapped vector unwraps to another key than shred-key.txt")
	}
	if _, err := m.Unwrap(file(v.OtherMaster)); !errors.Is(err, ErrWrongMasterKey) {
		t.Errorf("Unwrap of the key wrapped by another master key: %v, want ErrWrongMasterKey", err)
	}

	plain := shredVectorPlaintext(v.PlaintextSize)
	if sum := sha256.Sum256(plain); hex.EncodeToString(sum[:]) != v.PlaintextSHA256 {
		t.Fatal("the plaintext generator does not match expected.json")
	}
	outer := file(v.Outer)
	if int64(len(outer)) != v.OuterSize || v.OuterSize != v.PlaintextSize+ShredOverhead(v.PlaintextSize) {
		t.Fatalf("outer layer of %d bytes; expected.json says %d, ShredOverhead %d", len(outer), v.OuterSize, v.PlaintextSize+ShredOverhead(v.PlaintextSize))
	}
	r, err := k.Decrypt(bytes.NewReader(outer))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Decrypt of the vector: %d bytes, %v", len(got), err)
	}
	ra, size, err := k.DecryptAt(bytes.NewReader(outer), int64(len(outer)))
	if err != nil || size != v.PlaintextSize {
		t.Fatalf("DecryptAt of the vector: size %d, %v", size, err)
	}
	tail := make([]byte, 2)
	if _, err := ra.ReadAt(tail, size-2); err != nil && err != io.EOF || !bytes.Equal(tail, plain[size-2:]) {
		t.Fatalf("ReadAt across the chunk boundary: %v", err)
	}

	// The documented recovery path: stock age with the master key file
	// opens the wrapped key after its first line, and with the key the
	// outer layer.
	ids, err := age.ParseIdentities(bytes.NewReader(file(v.MasterKey)))
	if err != nil {
		t.Fatal(err)
	}
	ar, err := age.Decrypt(bytes.NewReader(wrapped[len("evx-wrapped-shred-key/v1\n"):]), ids...)
	if err != nil {
		t.Fatal(err)
	}
	secret, _ := io.ReadAll(ar)
	sids, err := age.ParseIdentities(bytes.NewReader(secret))
	if err != nil {
		t.Fatal(err)
	}
	ar, err = age.Decrypt(bytes.NewReader(outer), sids...)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(ar); !bytes.Equal(got, plain) {
		t.Fatal("age alone does not open the outer layer")
	}
}
