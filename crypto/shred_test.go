package crypto

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"filippo.io/age"
)

func newShredKey(t testing.TB) *ShredKey {
	t.Helper()
	k, err := NewShredKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newMasterKey(t testing.TB) (*MasterKey, []byte) {
	t.Helper()
	var b bytes.Buffer
	if err := GenerateMasterKey(&b); err != nil {
		t.Fatal(err)
	}
	m, err := ParseMasterKey(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return m, b.Bytes()
}

func shredEncrypt(t testing.TB, k *ShredKey, plain []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := k.Encrypt(&b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// The sizes around age's 64 KiB chunks, where the layer's size and the
// handling of the last chunk change.
var shredSizes = []int{0, 1, ageChunkSize - 1, ageChunkSize, ageChunkSize + 1, 2*ageChunkSize - 1, 2 * ageChunkSize, 2*ageChunkSize + 1, 5*ageChunkSize + 7}

func TestShredRoundTrip(t *testing.T) {
	k := newShredKey(t)
	for _, n := range shredSizes {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			plain := randomBytes(t, n)
			ct := shredEncrypt(t, k, plain)
			if want := int64(n) + ShredOverhead(int64(n)); int64(len(ct)) != want {
				t.Fatalf("outer layer of %d bytes is %d bytes, ShredOverhead says %d", n, len(ct), want)
			}

			r, err := k.Decrypt(bytes.NewReader(ct))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, plain) {
				t.Fatalf("Decrypt returned %d bytes, not the %d written", len(got), n)
			}

			ra, size, err := k.DecryptAt(bytes.NewReader(ct), int64(len(ct)))
			if err != nil {
				t.Fatal(err)
			}
			if size != int64(n) {
				t.Fatalf("DecryptAt gives a size of %d, want %d", size, n)
			}
			got, err = io.ReadAll(io.NewSectionReader(ra, 0, size))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, plain) {
				t.Fatal("DecryptAt's plaintext differs from what was written")
			}
			// Reads that start and end around every chunk boundary.
			for off := int64(0); off <= size; off += ageChunkSize {
				for _, start := range []int64{off - 1, off, off + 1} {
					if start < 0 || start >= size {
						continue
					}
					end := min(size, start+ageChunkSize+2)
					buf := make([]byte, end-start)
					if n, err := ra.ReadAt(buf, start); n != len(buf) || (err != nil && err != io.EOF) {
						t.Fatalf("ReadAt(%d bytes at %d) = %d, %v", len(buf), start, n, err)
					}
					if !bytes.Equal(buf, plain[start:end]) {
						t.Fatalf("ReadAt at %d returned other bytes", start)
					}
				}
			}
		})
	}
}

func TestShredOverhead(t *testing.T) {
	for n, want := range map[int64]int64{
		0:                    200,
		1:                    200,
		ageChunkSize:         200,
		ageChunkSize + 1:     216,
		1 << 30:              184 + 16*(1<<14),
		1<<30 + 1:            184 + 16*(1<<14+1),
		1<<62 + ageChunkSize: 184 + 16*(1<<46+1),
		math.MaxInt64:        184 + 16*(1<<47),
	} {
		if got := ShredOverhead(n); got != want {
			t.Errorf("ShredOverhead(%d) = %d, want %d", n, got, want)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("ShredOverhead(-1) did not panic")
		}
	}()
	ShredOverhead(-1)
}

func TestShredWrongKey(t *testing.T) {
	k, other := newShredKey(t), newShredKey(t)
	ct := shredEncrypt(t, k, []byte("evidence"))
	if _, err := other.Decrypt(bytes.NewReader(ct)); !errors.Is(err, ErrWrongShredKey) {
		t.Errorf("Decrypt with another shred key: %v, want ErrWrongShredKey", err)
	}
	if _, _, err := other.DecryptAt(bytes.NewReader(ct), int64(len(ct))); !errors.Is(err, ErrWrongShredKey) {
		t.Errorf("DecryptAt with another shred key: %v, want ErrWrongShredKey", err)
	}
}

// A damaged or truncated layer fails: Decrypt when the reader reaches the
// damage, DecryptAt at once if the end is damaged.
func TestShredDamaged(t *testing.T) {
	k := newShredKey(t)
	plain := randomBytes(t, 3*ageChunkSize+5)
	ct := shredEncrypt(t, k, plain)
	cases := map[string][]byte{
		"flipped byte in the first chunk": flipped(ct, shredHeaderSize+ageNonceSize+10),
		"flipped byte in the last chunk":  flipped(ct, len(ct)-3),
		"flipped nonce byte":              flipped(ct, shredHeaderSize+1),
		"last chunk cut off":              ct[:len(ct)-(5+ageTagSize)],
		"last byte cut off":               ct[:len(ct)-1],
		"a byte added":                    append(bytes.Clone(ct), 0),
	}
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			r, err := k.Decrypt(bytes.NewReader(bad))
			if err == nil {
				_, err = io.Copy(io.Discard, r)
			}
			if err == nil {
				t.Error("Decrypt read a damaged layer to its end without an error")
			}
			ra, size, err := k.DecryptAt(bytes.NewReader(bad), int64(len(bad)))
			if err == nil {
				_, err = io.Copy(io.Discard, io.NewSectionReader(ra, 0, size))
			}
			if err == nil {
				t.Error("DecryptAt read a damaged layer to its end without an error")
			}
		})
	}
}

// base64Changed returns b with the base64 character at i changed to
// another one, so that the text still decodes.
func base64Changed(b []byte, i int) []byte {
	b = bytes.Clone(b)
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return b
}

func replaced(b []byte, i int, c byte) []byte {
	b = bytes.Clone(b)
	b[i] = c
	return b
}

func flipped(b []byte, i int) []byte {
	b = bytes.Clone(b)
	b[i] ^= 0x40
	return b
}

// Headers that are not exactly one X25519 stanza are refused before age
// reads them, so that a hostile header of many stanzas costs nothing.
func TestShredHostileHeader(t *testing.T) {
	k := newShredKey(t)
	other := newShredKey(t)
	unit := newTestKey(t, "")
	encryptWith := func(rs ...age.Recipient) []byte {
		var b bytes.Buffer
		w, err := age.Encrypt(&b, rs...)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, "evidence")
		w.Close()
		return b.Bytes()
	}
	// A header of many X25519 stanzas, the first of them k's: age would
	// try them all before its MAC check.
	many := encryptWith(k.id.Recipient(), other.id.Recipient(), other.id.Recipient())
	cases := map[string]struct {
		data []byte
		want string
	}{
		"empty":                  {nil, "lacks the age-encryption.org/v1 intro"},
		"not age":                {[]byte("PK\x03\x04 something else entirely"), "lacks the age-encryption.org/v1 intro"},
		"hybrid recipient":       {encryptWith(unit.Recipient()), "does not begin with one X25519 recipient stanza"},
		"two X25519 recipients":  {encryptWith(k.id.Recipient(), other.id.Recipient()), "more than one recipient stanza"},
		"three X25519 recipient": {many, "more than one recipient stanza"},
		"scrypt":                 {scryptEncrypted(t), "does not begin with one X25519 recipient stanza"},
		"intro only":             {[]byte(ageIntro), "does not begin with one X25519 recipient stanza"},
		"cut in the stanza":      {shredEncrypt(t, k, nil)[:100], "body is not one 32-byte line"},
		"cut in the MAC":         {shredEncrypt(t, k, nil)[:150], "more than one recipient stanza or no MAC"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := k.Decrypt(bytes.NewReader(c.data))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Decrypt: %v, want an error containing %q", err, c.want)
			}
			_, _, err = k.DecryptAt(bytes.NewReader(c.data), int64(len(c.data)))
			if err == nil {
				t.Error("DecryptAt accepted it")
			}
		})
	}
}

func scryptEncrypted(t testing.TB) []byte {
	r, err := age.NewScryptRecipient("password")
	if err != nil {
		t.Fatal(err)
	}
	r.SetWorkFactor(1)
	var b bytes.Buffer
	w, err := age.Encrypt(&b, r)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	return b.Bytes()
}

// The point of the layer: a byte-for-byte copy of the stored payload,
// taken while its wrapped key existed, opens with nothing the gateway or
// the recipient still holds once the wrapped key is destroyed, not even
// the recipient's own unit key.
func TestShredCopyUnreadableAfterShredding(t *testing.T) {
	unit := newTestKey(t, "FR/prosecutor")
	evidence := []byte("the evidence, sealed to the unit")
	inner := encryptTo(t, evidence, unit) // the payload as the unit sealed it
	master, masterFile := newMasterKey(t)

	k := newShredKey(t)
	stored := shredEncrypt(t, k, inner)
	wrapped, err := master.Wrap(k)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	wrappedPath := filepath.Join(dir, "bundle.key")
	if err := os.WriteFile(wrappedPath, wrapped, 0o600); err != nil {
		t.Fatal(err)
	}
	backup := bytes.Clone(stored)

	// Before shredding the chain opens: wrapped key, outer layer, unit key.
	open := func(payload []byte) ([]byte, error) {
		w, err := os.ReadFile(wrappedPath)
		if err != nil {
			return nil, err
		}
		k, err := master.Unwrap(w)
		if err != nil {
			return nil, err
		}
		r, err := k.Decrypt(bytes.NewReader(payload))
		if err != nil {
			return nil, err
		}
		r, err = age.Decrypt(r, unit.Identity())
		if err != nil {
			return nil, err
		}
		return io.ReadAll(r)
	}
	got, err := open(backup)
	if err != nil || !bytes.Equal(got, evidence) {
		t.Fatalf("before shredding, the copy opens to %q, %v", got, err)
	}

	// Shredding: the wrapped key is destroyed, and with it the only key.
	if err := os.Remove(wrappedPath); err != nil {
		t.Fatal(err)
	}
	k = nil
	if _, err := open(backup); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after shredding, opening the copy: %v, want the wrapped key missing", err)
	}
	masterIDs, err := age.ParseIdentities(bytes.NewReader(masterFile))
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]age.Identity{
		"the recipient's unit key": unit.Identity(),
		"the master key":           masterIDs[0],
		"a new shred key":          newShredKey(t).id,
	}
	for name, id := range ids {
		if _, err := age.Decrypt(bytes.NewReader(backup), id); err == nil {
			t.Errorf("age.Decrypt of the copy with %s succeeded", name)
		}
		if _, _, err := age.DecryptReaderAt(bytes.NewReader(backup), int64(len(backup)), id); err == nil {
			t.Errorf("age.DecryptReaderAt of the copy with %s succeeded", name)
		}
	}
	// The copy shows nothing of the inner layer either, not even its
	// recipient stanza, which names the kind of the recipient's key.
	if bytes.Contains(backup, []byte(hybridStanzaType)) || bytes.Contains(backup, inner[:64]) {
		t.Error("the outer layer shows the inner layer's header")
	}
}

func TestMasterKeyWrap(t *testing.T) {
	m, file := newMasterKey(t)
	k := newShredKey(t)
	wrapped, err := m.Wrap(k)
	if err != nil {
		t.Fatal(err)
	}
	if len(wrapped) != wrappedShredKeySize {
		t.Fatalf("wrapped key of %d bytes, want %d", len(wrapped), wrappedShredKeySize)
	}
	if !bytes.HasPrefix(wrapped, []byte("evx-wrapped-shred-key/v1\n")) {
		t.Fatalf("wrapped key starts with %q", wrapped[:30])
	}
	if bytes.Contains(wrapped, []byte(k.id.String())) {
		t.Fatal("the wrapped key shows the shred key")
	}
	again, err := m.Unwrap(wrapped)
	if err != nil {
		t.Fatal(err)
	}
	if again.id.String() != k.id.String() {
		t.Fatal("Unwrap returned another key")
	}
	// Wrapping is randomised: the same key wraps to other bytes.
	if w2, _ := m.Wrap(k); bytes.Equal(w2, wrapped) {
		t.Error("two wraps of one key are equal")
	}

	// Recovery needs no evx: the stock age CLI's parser reads the master
	// key file, and age opens the wrapped key after its first line.
	ids, err := age.ParseIdentities(bytes.NewReader(file))
	if err != nil || len(ids) != 1 {
		t.Fatalf("age.ParseIdentities of the master key file: %d identities, %v", len(ids), err)
	}
	r, err := age.Decrypt(bytes.NewReader(wrapped[len(wrappedShredKeyMagic):]), ids...)
	if err != nil {
		t.Fatal(err)
	}
	secret, _ := io.ReadAll(r)
	if string(secret) != k.id.String() {
		t.Fatal("age alone does not unwrap the key")
	}

	other, _ := newMasterKey(t)
	if _, err := other.Unwrap(wrapped); !errors.Is(err, ErrWrongMasterKey) {
		t.Errorf("Unwrap with another master key: %v, want ErrWrongMasterKey", err)
	}
}

// wrapRaw wraps arbitrary bytes as Wrap would wrap a key's encoding.
func wrapRaw(t testing.TB, m *MasterKey, secret string) []byte {
	t.Helper()
	var b bytes.Buffer
	b.WriteString(wrappedShredKeyMagic)
	w, err := age.Encrypt(&b, m.id.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, secret)
	w.Close()
	return b.Bytes()
}

func TestUnwrapMalformed(t *testing.T) {
	m, _ := newMasterKey(t)
	k := newShredKey(t)
	good, err := m.Wrap(k)
	if err != nil {
		t.Fatal(err)
	}
	secret := k.id.String()
	body := len(wrappedShredKeyMagic) + wrappedHeaderSize
	stanza := len(wrappedShredKeyMagic) + len(ageIntro) + len("-> mlkem768x25519 ")
	cases := map[string]struct {
		data []byte
		want string
	}{
		"empty":             {nil, "lacks the evx-wrapped-shred-key/v1 line"},
		"age file only":     {good[len(wrappedShredKeyMagic):], "lacks the evx-wrapped-shred-key/v1 line"},
		"version 2":         {append([]byte("evx-wrapped-shred-key/v2\n"), good[len(wrappedShredKeyMagic):]...), `unknown version "evx-wrapped-shred-key/v2"`},
		"CRLF line":         {append([]byte("evx-wrapped-shred-key/v1\r\n"), good[len(wrappedShredKeyMagic):]...), `unknown version "evx-wrapped-shred-key/v1\r"`},
		"one byte short":    {good[:len(good)-1], fmt.Sprintf("of %d bytes, want %d", len(good)-1, wrappedShredKeySize)},
		"one byte more":     {append(bytes.Clone(good), '\n'), fmt.Sprintf("of %d bytes, want %d", len(good)+1, wrappedShredKeySize)},
		"huge":              {append(bytes.Clone(good), make([]byte, 1<<20)...), "want 1758"},
		"stanza damaged":    {base64Changed(good, stanza+100), "another master key, or its wrapped form is damaged"},
		"stanza not base64": {replaced(good, stanza+100, '!'), "malformed header"},
		"body not base64":   {replaced(good, body-60, '!'), "malformed header"},
		"stanza type":       {bytes.Replace(good, []byte("mlkem768x25519"), []byte("mlkem768x25518"), 1), "malformed header"},
		"MAC damaged":       {base64Changed(good, body-10), "unwrapping shred key: "},
		"ciphertext flip":   {flipped(good, len(good)-20), "unwrapping shred key: "},
		"tag cut, one more": {append(good[:len(good)-1:len(good)-1], 'x'), "unwrapping shred key: "},
		"lower-case key":    {wrapRaw(t, m, strings.ToLower(secret)), "malformed X25519 identity"},
		"not a key":         {wrapRaw(t, m, strings.Repeat("A", shredIdentitySize)), "malformed X25519 identity"},
		"short secret":      {wrapRaw(t, m, secret[:shredIdentitySize-1]), "want 1758"},
		"hybrid identity":   {wrapRaw(t, m, "AGE-SECRET-KEY-PQ-1"+secret[16:]+"A"), "want 1758"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := m.Unwrap(c.data)
			if err == nil || got != nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Unwrap: %v, %v; want an error containing %q", got, err, c.want)
			}
			if err != nil && strings.Contains(strings.ToUpper(err.Error()), strings.ToUpper(secret[len("AGE-SECRET-KEY-1"):])) {
				t.Error("the error shows the key")
			}
		})
	}
	if wrappedShredKeySize != 1758 {
		t.Errorf("wrapped key size %d: the documented size (docs/retention.md) is 1758", wrappedShredKeySize)
	}
}

func TestParseMasterKey(t *testing.T) {
	_, good := newMasterKey(t)
	secret := strings.TrimSpace(string(good[len(masterKeyFileHeader):]))
	classic, _ := age.GenerateX25519Identity()
	unitKeyFile, err := newTestKey(t, "DE/forensics").MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		data string
		want string
	}{
		"empty":          {"", "no age identity"},
		"comments only":  {"# nothing\n\n", "no age identity"},
		"two identities": {string(good) + secret + "\n", "line 3: more than one age identity"},
		"classic":        {"# x\n" + classic.String() + "\n", "line 2: classic X25519 age identity"},
		"garbage":        {string(good) + "password=hunter2\n", "line 3: unexpected content in master key file"},
		"malformed":      {secret[:len(secret)-2] + "qq\n", "line 1: malformed age identity"},
		"lower case":     {strings.ToLower(secret), "line 1: unexpected content"},
		"too large":      {strings.Repeat("#", maxKeyFileSize+1), "too large"},
		"comments":       {"# made for DE\r\n\n  # indented\n" + secret + "\n\n", ""},
		"unit key file":  {string(unitKeyFile), "line 6: this is a unit key file"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			m, err := ParseMasterKey([]byte(c.data))
			if c.want == "" {
				if err != nil {
					t.Fatalf("ParseMasterKey: %v", err)
				}
				return
			}
			if err == nil || m != nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("ParseMasterKey: %v, %v; want an error containing %q", m, err, c.want)
			}
			for _, s := range []string{"hunter2", secret[20:40], strings.ToLower(secret[20:40]), classic.String()[20:40]} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("the error %q quotes the file's content", err)
				}
			}
		})
	}
	// CRLF line ends, as an editor on another system may leave them.
	if _, err := ParseMasterKey(bytes.ReplaceAll(good, []byte("\n"), []byte("\r\n"))); err != nil {
		t.Errorf("CRLF master key file: %v", err)
	}
}

func TestReadMasterKeyFile(t *testing.T) {
	_, good := newMasterKey(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "master.key")
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := ReadMasterKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	k := newShredKey(t)
	w, _ := m.Wrap(k)
	if _, err := m.Unwrap(w); err != nil {
		t.Fatal(err)
	}

	bad := filepath.Join(dir, "bad.key")
	os.WriteFile(bad, append(bytes.Clone(good), "secret-looking junk\n"...), 0o600)
	_, err = ReadMasterKeyFile(bad)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("master key file %q: line 3", bad)) || strings.Contains(err.Error(), "junk") {
		t.Errorf("ReadMasterKeyFile of a bad file: %v", err)
	}
	for _, p := range []string{filepath.Join(dir, "missing"), dir, "/dev/zero"} {
		var pe *fs.PathError
		if _, err := ReadMasterKeyFile(p); !errors.As(err, &pe) || pe.Path != p {
			t.Errorf("ReadMasterKeyFile(%q): %v, want a *fs.PathError naming it", p, err)
		}
	}
}

// Keys formatted by mistake print no secret.
func TestShredKeysDoNotFormat(t *testing.T) {
	k := newShredKey(t)
	m, file := newMasterKey(t)
	secrets := []string{k.id.String()[20:50], strings.TrimSpace(string(file[len(masterKeyFileHeader):]))[30:60]}
	for _, verb := range []string{"%v", "%+v", "%s", "%#v", "%x", "%q"} {
		for _, v := range []any{k, m, *k, *m} {
			out := fmt.Sprintf(verb, v)
			for _, s := range secrets {
				if strings.Contains(out, s) || strings.Contains(strings.ToLower(out), strings.ToLower(s)) {
					t.Errorf("fmt.Sprintf(%q, %T) shows the key: %s", verb, v, out)
				}
			}
		}
	}
}

// The layer streams: halfway through 64 MiB, encrypted into a pipe and
// decrypted from it, the live heap holds about what a few chunks need,
// not memory in proportion to the size. (age's streaming reader allocates
// a new 64 KiB buffer for each chunk, so the bytes allocated do grow with
// the size: they are garbage at once, which this bounds, and
// BenchmarkShredLayer reports.)
func TestShredStreamsInBoundedMemory(t *testing.T) {
	const size, probe = 64 << 20, 32 << 20
	k := newShredKey(t)
	var before, mid runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		w, err := k.Encrypt(pw)
		if err == nil {
			_, err = io.Copy(w, io.LimitReader(zeroReader{}, size))
		}
		if err == nil {
			err = w.Close()
		}
		pw.CloseWithError(err)
		done <- err
	}()
	r, err := k.Decrypt(pr)
	if err == nil {
		_, err = io.Copy(io.Discard, io.LimitReader(r, probe))
	}
	if err == nil {
		runtime.GC()
		runtime.ReadMemStats(&mid)
		var n int64
		n, err = io.Copy(io.Discard, r)
		if err == nil && n != size-probe {
			err = fmt.Errorf("decrypted %d bytes, want %d", probe+n, size)
		}
	}
	pr.CloseWithError(io.ErrClosedPipe)
	if werr := <-done; werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		t.Fatal(err)
	}
	if grown := int64(mid.HeapAlloc) - int64(before.HeapAlloc); grown > 2<<20 {
		t.Errorf("halfway through %d MiB the live heap had grown by %d bytes", size>>20, grown)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// A failing source is reported as such, not as a malformed layer.
func TestShredDecryptReadError(t *testing.T) {
	k := newShredKey(t)
	boom := errors.New("connection reset")
	ct := shredEncrypt(t, k, []byte("evidence"))
	_, err := k.Decrypt(io.MultiReader(bytes.NewReader(ct[:100]), iotest.ErrReader(boom)))
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "reading the outer layer's header") {
		t.Errorf("Decrypt of a failing source: %v", err)
	}
	_, _, err = k.DecryptAt(bytes.NewReader(ct[:150]), int64(len(ct)))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("DecryptAt of a short source: %v, want io.ErrUnexpectedEOF", err)
	}
}
