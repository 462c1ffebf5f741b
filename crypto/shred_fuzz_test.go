package crypto

import (
	"bytes"
	"io"
	"path/filepath"
	"testing"
)

func FuzzUnwrap(f *testing.F) {
	v, file := readShredVector(f)
	m, err := ReadMasterKeyFile(filepath.Join(shredVectorsDir, v.MasterKey))
	if err != nil {
		f.Fatal(err)
	}
	good := file(v.Wrapped)
	for _, s := range [][]byte{
		good,
		file(v.OtherMaster),
		good[:len(good)-1],
		append(bytes.Clone(good), 0),
		good[len(wrappedShredKeyMagic):],
		[]byte(wrappedShredKeyMagic),
		[]byte("evx-wrapped-shred-key/v2\n"),
		nil,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := m.Unwrap(data)
		if err != nil {
			if k != nil {
				t.Fatalf("Unwrap returned a key and the error %v", err)
			}
			// Errors quote at most a version line, never a whole input.
			if len(err.Error()) > 200 {
				t.Fatalf("error of %d bytes: %.100q…", len(err.Error()), err)
			}
			return
		}
		if len(data) != wrappedShredKeySize || !bytes.HasPrefix(data, []byte(wrappedShredKeyMagic)) {
			t.Fatalf("Unwrap accepted %d bytes not of the wrapped form", len(data))
		}
		again, err := m.Wrap(k)
		if err != nil {
			t.Fatal(err)
		}
		k2, err := m.Unwrap(again)
		if err != nil || k2.id.String() != k.id.String() {
			t.Fatalf("an unwrapped key does not wrap and unwrap again: %v", err)
		}
	})
}

// FuzzShredDecrypt feeds hostile outer layers to Decrypt and DecryptAt:
// neither panics, they agree, and whatever decrypts has the size
// ShredOverhead promises.
func FuzzShredDecrypt(f *testing.F) {
	v, file := readShredVector(f)
	m, err := ReadMasterKeyFile(filepath.Join(shredVectorsDir, v.MasterKey))
	if err != nil {
		f.Fatal(err)
	}
	k, err := m.Unwrap(file(v.Wrapped))
	if err != nil {
		f.Fatal(err)
	}
	small := shredEncrypt(f, k, []byte("evidence"))
	for _, s := range [][]byte{file(v.Outer), small, shredEncrypt(f, k, nil), small[:len(small)-1], small[:shredHeaderSize], nil} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var streamed []byte
		r, errS := k.Decrypt(bytes.NewReader(data))
		if errS == nil {
			streamed, errS = io.ReadAll(r)
		}
		var random []byte
		ra, size, errR := k.DecryptAt(bytes.NewReader(data), int64(len(data)))
		if errR == nil {
			random, errR = io.ReadAll(io.NewSectionReader(ra, 0, size))
		}
		if (errS == nil) != (errR == nil) {
			t.Fatalf("Decrypt: %v; DecryptAt: %v", errS, errR)
		}
		if errS != nil {
			return
		}
		if !bytes.Equal(streamed, random) {
			t.Fatal("Decrypt and DecryptAt return different plaintexts")
		}
		if n := int64(len(streamed)); int64(len(data)) != n+ShredOverhead(n) {
			t.Fatalf("an outer layer of %d bytes decrypted to %d", len(data), n)
		}
	})
}
