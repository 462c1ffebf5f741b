package crypto

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// payloadOffset returns where payload.age starts inside the bundle bytes,
// and where the age header ends inside payload.age.
func payloadOffset(t *testing.T, data []byte) (off, headerEnd int64) {
	t.Helper()
	b := readBundleBytes(t, data)
	_, off, _ = b.payload.Outer()
	payload := data[off : off+b.payload.Size()]
	i := bytes.Index(payload, []byte("\n--- "))
	if i < 0 {
		t.Fatal("no end of age header in payload.age")
	}
	j := bytes.IndexByte(payload[i+1:], '\n')
	return off, int64(i + 1 + j + 1)
}

func TestOpenFlippedPayloadByte(t *testing.T) {
	sender := newTestKey(t, "DE/forensics")
	recipient := newTestKey(t, "FR/prosecutor")
	files := []testFile{
		{path: "a.bin", data: patterned(3*ageChunk, 3), mode: 0o644},
		{path: "b.txt", data: []byte("small"), mode: 0o644},
	}
	data, env := sealTree(t, files, defaultSealOptions(sender, recipient))
	off, hdrEnd := payloadOffset(t, data)
	size := env.PayloadSize
	const nonce, tag = 16, 16
	for _, tc := range []struct {
		name string
		pos  int64 // inside payload.age
	}{
		{"intro", 3},
		{"stanza", 40},
		{"header mac", hdrEnd - 5},
		{"nonce", hdrEnd + 3},
		{"first chunk", hdrEnd + nonce + 100},
		{"first chunk tag", hdrEnd + nonce + ageChunk + tag - 1},
		{"middle chunk", hdrEnd + nonce + (ageChunk+tag)*2 + 500},
		{"last chunk", size - tag - 10},
		{"last byte", size - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := bytes.Clone(data)
			bad[off+tc.pos] ^= 0x01
			b := readBundleBytes(t, bad)
			if err := b.VerifySignature(); err != nil {
				t.Fatalf("the envelope is intact, yet: %v", err)
			}
			if err := b.VerifyPayloadHash(); !errors.Is(err, ErrPayloadHash) {
				t.Errorf("VerifyPayloadHash: %v", err)
			}
			_, _, parent, err := openInto(t, bad, recipient, OpenOptions{})
			if !errors.Is(err, ErrPayloadHash) {
				t.Errorf("Open: got %v, want ErrPayloadHash", err)
			}
			assertNothingWritten(t, parent)

			// Random access skips the payload hash; age's authentication
			// still catches a flip in any part it reads, and a.bin spans
			// every chunk but the last, which holds b.txt and the manifest.
			for _, only := range []string{"evidence/a.bin", "evidence/b.txt"} {
				if only == "evidence/b.txt" && tc.pos > hdrEnd+nonce && tc.pos < size-ageChunk-tag {
					continue // b.txt need not read this chunk
				}
				_, _, parent, err := openInto(t, bad, recipient, OpenOptions{Only: only})
				if err == nil {
					t.Errorf("Only %s: opened despite the flipped byte", only)
				}
				assertNothingWritten(t, parent)
			}
		})
	}
}

func TestOpenChangedEnvelope(t *testing.T) {
	sender := newTestKey(t, "DE/forensics")
	recipient := newTestKey(t, "FR/prosecutor")
	data, _ := sealTree(t, []testFile{{path: "a.txt", data: []byte("a"), mode: 0o644}}, defaultSealOptions(sender, recipient))
	b := readBundleBytes(t, data)
	payload := data[:0]
	{
		_, off, n := b.payload.Outer()
		payload = data[off : off+n]
	}
	sig := []byte(base64.StdEncoding.EncodeToString(b.Signature) + "\n")
	for _, tc := range []struct {
		name   string
		mutate func(*Envelope)
	}{
		{"purpose", func(e *Envelope) { e.Purpose = "prosecution" }},
		{"tlp", func(e *Envelope) { e.TLP = "TLP:CLEAR" }},
		{"retain until", func(e *Envelope) { e.RetainUntil = e.RetainUntil.AddDate(1, 0, 0) }},
		{"sender unit", func(e *Envelope) { e.Sender.Unit = "NL/forensics" }},
		{"recipient unit", func(e *Envelope) { e.Recipients[0].Unit = "" }},
		{"case", func(e *Envelope) { e.Case = "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, err := ParseEnvelope(b.EnvelopeJSON)
			if err != nil {
				t.Fatal(err)
			}
			tc.mutate(env)
			envJSON := mustMarshal(t, env)
			bad := containerOf(t, payload, envJSON, sig)
			if err := readBundleBytes(t, bad).VerifySignature(); !errors.Is(err, ErrBadSignature) {
				t.Errorf("VerifySignature: got %v, want ErrBadSignature", err)
			}
			_, _, parent, err := openInto(t, bad, recipient, OpenOptions{})
			if !errors.Is(err, ErrBadSignature) {
				t.Errorf("Open: got %v, want ErrBadSignature", err)
			}
			assertNothingWritten(t, parent)
		})
	}
	// The same reassembly with the envelope unchanged opens, so the
	// failures above are due to the changes alone.
	if _, _, _, err := openInto(t, containerOf(t, payload, b.EnvelopeJSON, sig), recipient, OpenOptions{}); err != nil {
		t.Errorf("reassembled bundle: %v", err)
	}
}

func TestOpenWrongKeyOrSender(t *testing.T) {
	sender := newTestKey(t, "DE/forensics")
	recipient := newTestKey(t, "FR/prosecutor")
	stranger := newTestKey(t, "FR/stranger")
	data, _ := sealTree(t, []testFile{{path: "a.txt", data: []byte("a"), mode: 0o644}}, defaultSealOptions(sender, recipient))

	_, _, parent, err := openInto(t, data, stranger, OpenOptions{})
	if !errors.Is(err, ErrNotRecipient) || !strings.Contains(err.Error(), "not a recipient of this bundle (its recipients: FR/prosecutor)") {
		t.Errorf("stranger: got %v", err)
	}
	assertNothingWritten(t, parent)

	impostor := newTestKey(t, "DE/forensics")
	_, _, parent, err = openInto(t, data, recipient, OpenOptions{ExpectSender: FormatSigningKey(impostor.SigningPublicKey())})
	if !errors.Is(err, ErrUnexpectedSender) || !strings.Contains(err.Error(), FormatSigningKey(sender.SigningPublicKey())) {
		t.Errorf("unexpected sender: got %v", err)
	}
	assertNothingWritten(t, parent)

	_, _, parent, err = openInto(t, data, recipient, OpenOptions{ExpectSender: "ed25519:nonsense"})
	if err == nil || !strings.Contains(err.Error(), `malformed signing key "ed25519:nonsense"`) {
		t.Errorf("malformed expected sender: got %v", err)
	}
	assertNothingWritten(t, parent)

	// A bundle re-signed by another key, with itself as the sender, has a
	// valid signature: only the expected sender tells it apart.
	b := readBundleBytes(t, data)
	env, _ := ParseEnvelope(b.EnvelopeJSON)
	env.Sender.Key = FormatSigningKey(impostor.SigningPublicKey())
	envJSON := mustMarshal(t, env)
	_, off, n := b.payload.Outer()
	resigned := containerOf(t, data[off:off+n], envJSON, []byte(base64.StdEncoding.EncodeToString(impostor.sign(SignedMessage(envJSON)))+"\n"))
	_, _, parent, err = openInto(t, resigned, recipient, OpenOptions{ExpectSender: FormatSigningKey(sender.SigningPublicKey())})
	if !errors.Is(err, ErrUnexpectedSender) {
		t.Errorf("re-signed bundle: got %v, want ErrUnexpectedSender", err)
	}
	assertNothingWritten(t, parent)

	// A recipient listed in the envelope but left out of the age header.
	listed := newTestKey(t, "FR/listed")
	h := &handBundle{sender: sender, recipients: []*UnitKey{recipient, listed}, bundleID: NewBundleID()}
	inner, manifest := innerArchive(t, h.bundleID, []innerEntry{{name: "files/a.txt", data: []byte("a")}})
	h.payload, h.manifest = encryptTo(t, inner, recipient), sha256.Sum256(manifest)
	_, _, parent, err = openInto(t, h.bytes(t), listed, OpenOptions{})
	if !errors.Is(err, ErrNotRecipient) {
		t.Errorf("listed but not encrypted to: got %v, want ErrNotRecipient", err)
	}
	assertNothingWritten(t, parent)
}

// TestHandBuiltBundle checks that the hand-built bundles of the tests below
// open when nothing in them is malicious, so that their failures are due to
// what each makes malicious.
func TestHandBuiltBundle(t *testing.T) {
	sender := newTestKey(t, "DE/forensics")
	recipient := newTestKey(t, "FR/prosecutor")
	id := NewBundleID()
	entries := []innerEntry{
		{name: "files/a.txt", data: []byte("alpha")},
		{name: "files/dir/b.txt", data: []byte("beta"), method: zip.Deflate},
	}
	inner, manifest := innerArchive(t, id, entries)
	res, out, _, err := openInto(t, bundleWithInner(t, sender, recipient, id, inner, manifest), recipient, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Files) != 2 {
		t.Errorf("extracted %+v", res.Files)
	}
	checkExtracted(t, out, "", []testFile{
		{path: "a.txt", data: []byte("alpha"), mode: 0o644, mtime: fixedNow()},
		{path: "dir/b.txt", data: []byte("beta"), mode: 0o644, mtime: fixedNow()},
	})
}

func TestOpenMaliciousInnerArchive(t *testing.T) {
	sender := newTestKey(t, "DE/forensics")
	recipient := newTestKey(t, "FR/prosecutor")
	good := innerEntry{name: "files/good.txt", data: []byte("good")}
	for _, tc := range []struct {
		name    string
		entries []innerEntry
		want    string
	}{
		{"dot-dot", []innerEntry{good, {name: "files/../evil", data: []byte("evil")}}, `inner archive: file path "../evil" has an empty, "." or ".." element`},
		{"dot-dot inside", []innerEntry{good, {name: "files/a/../../x", data: []byte("evil")}}, `inner archive: file path "a/../../x" has an empty, "." or ".." element`},
		{"dot", []innerEntry{good, {name: "files/./x", data: []byte("x")}}, `"./x" has an empty, "." or ".." element`},
		{"absolute", []innerEntry{good, {name: "/abs", data: []byte("evil")}}, `inner archive: unexpected entry "/abs" outside files/`},
		{"absolute below files", []innerEntry{good, {name: "files//etc/passwd", data: []byte("evil")}}, `inner archive: file path "/etc/passwd" is absolute`},
		{"backslash", []innerEntry{good, {name: `files/..\..\evil`, data: []byte("evil")}}, `contains a backslash`},
		{"drive letter", []innerEntry{good, {name: "files/C:/evil", data: []byte("evil")}}, `looks like a drive letter`},
		{"control character", []innerEntry{good, {name: "files/a\x1b[2Jb", data: []byte("x")}}, `contains a control character`},
		{"symlink", []innerEntry{good, {name: "files/link", data: []byte("../../etc/passwd"), mode: fs.ModeSymlink | 0o777}}, `inner archive: entry "files/link" is not a regular file (L---------)`},
		{"block device", []innerEntry{good, {name: "files/dev", mode: fs.ModeDevice | 0o644}}, `entry "files/dev" is not a regular file`},
		{"char device", []innerEntry{good, {name: "files/tty", mode: fs.ModeDevice | fs.ModeCharDevice | 0o644}}, `entry "files/tty" is not a regular file`},
		{"fifo", []innerEntry{good, {name: "files/fifo", mode: fs.ModeNamedPipe | 0o644}}, `entry "files/fifo" is not a regular file`},
		{"directory entry", []innerEntry{good, {name: "files/dir/", mode: fs.ModeDir | 0o755}}, `file path "dir/" has an empty`},
		{"duplicate", []innerEntry{good, {name: "files/good.txt", data: []byte("evil")}}, `inner archive: duplicate file path "good.txt" (also "good.txt")`},
		{"case duplicate", []innerEntry{good, {name: "files/GOOD.txt", data: []byte("evil")}}, `inner archive: duplicate file path "GOOD.txt" (also "good.txt")`},
		{"file used as directory", []innerEntry{good, {name: "files/good.txt/x", data: []byte("evil")}}, `file path "good.txt/x" lies under "good.txt", which is a file`},
		{"directory used as file", []innerEntry{{name: "files/d/x", data: []byte("x")}, {name: "files/D", data: []byte("evil")}}, `file path "D" is also the directory of another file`},
		{"outside files", []innerEntry{good, {name: "evil.txt", data: []byte("evil")}}, `inner archive: unexpected entry "evil.txt" outside files/`},
		{"bare files prefix", []innerEntry{good, {name: "files/", data: nil}}, `inner archive: empty file path`},
		{"unsupported method", []innerEntry{good, {name: "files/m", data: []byte("x"), method: 99}}, `entry "files/m" uses unsupported compression method 99`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := NewBundleID()
			inner, manifest := innerArchive(t, id, tc.entries)
			data := bundleWithInner(t, sender, recipient, id, inner, manifest)
			if err := readBundleBytes(t, data).VerifySignature(); err != nil {
				t.Fatalf("hand-built bundle has a bad signature: %v", err)
			}
			_, _, parent, err := openInto(t, data, recipient, OpenOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			assertNothingWritten(t, parent)
			_, _, parent, err = openInto(t, data, recipient, OpenOptions{Only: "good.txt"})
			if err == nil {
				t.Errorf("random access to a good file of a malicious archive succeeded")
			}
			assertNothingWritten(t, parent)
		})
	}
}

// TestOpenManifestMismatch signs inner archives whose manifest contradicts
// their files.
func TestOpenManifestMismatch(t *testing.T) {
	sender := newTestKey(t, "DE/forensics")
	recipient := newTestKey(t, "FR/prosecutor")
	a := innerEntry{name: "files/a.txt", data: []byte("alpha")}
	b := innerEntry{name: "files/b.txt", data: []byte("beta")}
	for _, tc := range []struct {
		name     string
		entries  []innerEntry
		manifest func(id string) []byte // nil: the manifest of entries
		digest   []byte                 // nil: the digest of the manifest
		want     string
	}{
		{"content differs", []innerEntry{a, {name: "files/b.txt", data: []byte("BETA")}}, func(id string) []byte {
			return manifestFor(t, id, []innerEntry{a, b})
		}, nil, `file "b.txt" does not match its SHA-256 in the manifest`},
		{"size differs", []innerEntry{a, {name: "files/b.txt", data: []byte("betaa")}}, func(id string) []byte {
			return manifestFor(t, id, []innerEntry{a, b})
		}, nil, `file "b.txt" is 5 bytes in the inner archive, 4 in the manifest`},
		{"file not in manifest", []innerEntry{a, b}, func(id string) []byte {
			return manifestFor(t, id, []innerEntry{a})
		}, nil, "inner archive holds 2 files, the manifest lists 1"},
		{"file not in archive", []innerEntry{a}, func(id string) []byte {
			return manifestFor(t, id, []innerEntry{a, b})
		}, nil, "inner archive holds 1 files, the manifest lists more"},
		{"file renamed", []innerEntry{a, {name: "files/c.txt", data: b.data}}, func(id string) []byte {
			return manifestFor(t, id, []innerEntry{a, b})
		}, nil, `file "b.txt" is in the manifest but not in the inner archive`},
		{"other bundle", []innerEntry{a}, func(string) []byte {
			return manifestFor(t, NewBundleID(), []innerEntry{a})
		}, nil, "manifest belongs to bundle"},
		{"unsigned manifest", []innerEntry{a}, nil, []byte("another manifest"), "manifest does not match the digest in the signed envelope"},
		{"manifest path escapes", []innerEntry{a}, func(id string) []byte {
			return bytes.Replace(manifestFor(t, id, []innerEntry{a}), []byte(`"path":"a.txt"`), []byte(`"path":"../a.txt"`), 1)
		}, nil, `manifest: file path "../a.txt"`},
		{"setuid mode", []innerEntry{a}, func(id string) []byte {
			return bytes.Replace(manifestFor(t, id, []innerEntry{a}), []byte(`"mode":"0644"`), []byte(`"mode":"4755"`), 1)
		}, nil, `malformed mode "4755"`},
		{"malformed manifest", []innerEntry{a}, func(string) []byte { return []byte("{") }, nil, "malformed manifest"},
		{"unknown manifest field", []innerEntry{a}, func(id string) []byte {
			return bytes.Replace(manifestFor(t, id, []innerEntry{a}), []byte(`{"bundle_id"`), []byte(`{"owner":"x","bundle_id"`), 1)
		}, nil, `malformed manifest: json: unknown field "owner"`},
		{"wrong totals", []innerEntry{a}, func(id string) []byte {
			return bytes.Replace(manifestFor(t, id, []innerEntry{a}), []byte(`"total_size":5`), []byte(`"total_size":6`), 1)
		}, nil, "files add up to 5 bytes, total_size says 6"},
		{"no files", nil, nil, nil, "the bundle holds no files"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := NewBundleID()
			manifest := manifestFor(t, id, tc.entries)
			if tc.manifest != nil {
				manifest = tc.manifest(id)
			}
			inner := buildZip(t, append(append([]innerEntry(nil), tc.entries...), innerEntry{name: manifestName, data: manifest}))
			digest := sha256.Sum256(manifest)
			if tc.digest != nil {
				digest = sha256.Sum256(tc.digest)
			}
			h := &handBundle{sender: sender, recipients: []*UnitKey{recipient}, bundleID: id,
				payload: encryptTo(t, inner, recipient), manifest: digest}
			_, _, parent, err := openInto(t, h.bytes(t), recipient, OpenOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			// What contradicts the signed envelope or manifest is told
			// apart from a malformed bundle, for callers that report a
			// failed verification.
			switch tc.name {
			case "content differs", "size differs", "file not in manifest", "file not in archive", "file renamed", "other bundle", "unsigned manifest":
				if !errors.Is(err, ErrContentMismatch) {
					t.Errorf("%v does not wrap ErrContentMismatch", err)
				}
			}
			assertNothingWritten(t, parent)
		})
	}
	for _, tc := range []struct {
		name string
		zip  []byte
		want string
	}{
		{"no manifest", buildZip(t, []innerEntry{a}), "inner archive has no manifest.json"},
		{"two manifests", buildZip(t, []innerEntry{a, {name: manifestName, data: []byte("{}")}, {name: manifestName, data: []byte("{}")}}), `inner archive: duplicate entry "manifest.json"`},
		{"not a zip", []byte("just some bytes"), "decrypted payload is not a valid inner archive"},
		{"empty plaintext", nil, "decrypted payload is not a valid inner archive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &handBundle{sender: sender, recipients: []*UnitKey{recipient}, bundleID: NewBundleID(),
				payload: encryptTo(t, tc.zip, recipient)}
			_, _, parent, err := openInto(t, h.bytes(t), recipient, OpenOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			assertNothingWritten(t, parent)
		})
	}
}

// TestOpenPayloadHashMismatchAfterExtraction signs an envelope whose payload
// digest does not match a payload that otherwise decrypts and checks out,
// as a co-recipient re-encrypting the same plaintext could produce: the
// extracted files must not be left in place.
func TestOpenPayloadHashMismatchAfterExtraction(t *testing.T) {
	sender := newTestKey(t, "DE/forensics")
	recipient := newTestKey(t, "FR/prosecutor")
	id := NewBundleID()
	inner, manifest := innerArchive(t, id, []innerEntry{{name: "files/a.txt", data: []byte("alpha")}})
	h := &handBundle{sender: sender, recipients: []*UnitKey{recipient}, bundleID: id,
		payload: encryptTo(t, inner, recipient), manifest: sha256.Sum256(manifest),
		mutate: func(e *Envelope) { e.PayloadSHA256 = sha256.Sum256(encryptTo(t, inner, recipient)) }}
	data := h.bytes(t)
	_, _, parent, err := openInto(t, data, recipient, OpenOptions{})
	if !errors.Is(err, ErrPayloadHash) {
		t.Errorf("got %v, want ErrPayloadHash", err)
	}
	assertNothingWritten(t, parent)
	// Random access does not hash the payload, and says so.
	res, _, _, err := openInto(t, data, recipient, OpenOptions{Only: "a.txt"})
	if err != nil || res.PayloadVerified {
		t.Errorf("random access: %v, payload verified %v", err, res != nil && res.PayloadVerified)
	}
}

func TestOpenExistingOutputDir(t *testing.T) {
	sender := newTestKey(t, "DE/forensics")
	recipient := newTestKey(t, "FR/prosecutor")
	data, _ := sealTree(t, []testFile{{path: "a.txt", data: []byte("new"), mode: 0o644}}, defaultSealOptions(sender, recipient))
	b := readBundleBytes(t, data)

	parent := t.TempDir()
	out := filepath.Join(parent, "out")
	writeTestTree(t, out, []testFile{{path: "evidence/a.txt", data: []byte("old"), mode: 0o600}, {path: "keep", data: []byte("mine")}})
	before := snapshotTree(t, parent)
	_, err := b.Open(context.Background(), recipient, out, OpenOptions{})
	if err == nil || err.Error() != fmt.Sprintf("output directory %q is not empty", out) {
		t.Errorf("got %v", err)
	}
	if after := snapshotTree(t, parent); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("output directory changed:\nbefore %v\nafter  %v", before, after)
	}

	file := filepath.Join(parent, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Open(context.Background(), recipient, file, OpenOptions{}); err == nil || !strings.Contains(err.Error(), "output directory") {
		t.Errorf("output is a file: got %v", err)
	}
	if _, err := b.Open(context.Background(), recipient, filepath.Join(parent, "missing", "out"), OpenOptions{}); err == nil {
		t.Error("opened into a directory whose parent does not exist")
	}
	if after := snapshotTree(t, parent); len(after) != len(before)+1 {
		t.Errorf("failed opens left %v", sortedKeys(after))
	}
}

// TestOpenCancelled checks that a cancelled Open stops, neither extracting
// nor hashing the rest of the payload, and leaves nothing behind.
func TestOpenCancelled(t *testing.T) {
	sender := newTestKey(t, "DE/forensics")
	recipient := newTestKey(t, "FR/prosecutor")
	data, env := sealTree(t, []testFile{{path: "a.bin", data: patterned(8<<20, 6), mode: 0o644}}, defaultSealOptions(sender, recipient))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := &countingReaderAt{r: bytes.NewReader(data)}
	b, err := ReadBundle(r, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	parent := t.TempDir()
	_, err = b.Open(ctx, recipient, filepath.Join(parent, "out"), OpenOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("got %v", err)
	}
	assertNothingWritten(t, parent)
	if n := r.n.Load(); n > env.PayloadSize/4 {
		t.Errorf("a cancelled open read %d bytes of a %d-byte payload", n, env.PayloadSize)
	}
}

// ageHeader returns an age header with n hybrid recipient stanzas whose
// arguments are pad bytes longer in all than usual, ending with its MAC line.
func ageHeader(n, pad int) []byte {
	var b bytes.Buffer
	b.WriteString("age-encryption.org/v1\n")
	for i := range n {
		arg := 10
		if i == 0 {
			arg += pad
		}
		fmt.Fprintf(&b, "-> %s %s\n%s\n", hybridStanzaType, strings.Repeat("A", arg), strings.Repeat("B", 43))
	}
	b.WriteString("--- " + strings.Repeat("C", 43) + "\n")
	return b.Bytes()
}

func TestCheckAgeHeader(t *testing.T) {
	// The header size sits on the limit: n-1, n and n+1 bytes.
	base := len(ageHeader(1, 0))
	for _, tc := range []struct {
		size int
		ok   bool
	}{{MaxAgeHeaderSize - 1, true}, {MaxAgeHeaderSize, true}, {MaxAgeHeaderSize + 1, false}} {
		hdr := ageHeader(1, tc.size-base)
		if len(hdr) != tc.size {
			t.Fatalf("header of %d bytes, want %d", len(hdr), tc.size)
		}
		payload := append(hdr, make([]byte, 1000)...)
		r := &countingReaderAt{r: bytes.NewReader(payload)}
		err := checkAgeHeader(r, int64(len(payload)))
		if tc.ok && err != nil {
			t.Errorf("%d-byte header: %v", tc.size, err)
		}
		if !tc.ok && (err == nil || err.Error() != "age header does not end within 65536 bytes") {
			t.Errorf("%d-byte header: got %v", tc.size, err)
		}
		if r.n.Load() > MaxAgeHeaderSize {
			t.Errorf("%d-byte header: read %d bytes", tc.size, r.n.Load())
		}
	}
	for _, tc := range []struct {
		stanzas int
		ok      bool
	}{{1, true}, {MaxRecipients, true}, {MaxRecipients + 1, false}, {1000, false}} {
		err := checkAgeHeader(bytes.NewReader(ageHeader(tc.stanzas, 0)), int64(len(ageHeader(tc.stanzas, 0))))
		if tc.ok != (err == nil) {
			t.Errorf("%d stanzas: %v", tc.stanzas, err)
		}
		if !tc.ok && !strings.Contains(err.Error(), "age header has more than 20 recipient stanzas") {
			t.Errorf("%d stanzas: %v", tc.stanzas, err)
		}
	}
	for name, in := range map[string]string{
		"empty":        "",
		"not age":      "hello world\n",
		"armored":      "-----BEGIN AGE ENCRYPTED FILE-----\n",
		"other format": "age-encryption.org/v2\n--- x\n",
	} {
		if err := checkAgeHeader(strings.NewReader(in), int64(len(in))); err == nil || !strings.Contains(err.Error(), "payload is not an age file") {
			t.Errorf("%s: got %v", name, err)
		}
	}
	truncated := "age-encryption.org/v1\n-> mlkem768x25519 A\nB\n"
	if err := checkAgeHeader(strings.NewReader(truncated), int64(len(truncated))); err == nil || !strings.Contains(err.Error(), "does not end") {
		t.Errorf("truncated header: got %v", err)
	}
	// A classic recipient beside the hybrid ones would let its holder read
	// the payload without post-quantum protection.
	for _, typ := range []string{"X25519", "scrypt", "piv-p256", "mlkem768x25519x"} {
		hdr := bytes.Replace(ageHeader(3, 0), []byte("\n-> "+hybridStanzaType+" "), []byte("\n-> "+typ+" "), 1)
		err := checkAgeHeader(bytes.NewReader(hdr), int64(len(hdr)))
		want := fmt.Sprintf("age header has a %q recipient stanza: evx bundles have post-quantum hybrid (mlkem768x25519) recipients only", typ)
		if err == nil || err.Error() != want {
			t.Errorf("%s stanza: got %v, want %q", typ, err, want)
		}
	}
}

// TestOpenRejectsBadAgeHeader sends signed bundles whose payload has a
// header age would read to its end, however long, or would accept: Open
// must refuse them after reading at most the header limit of the payload.
func TestOpenRejectsBadAgeHeader(t *testing.T) {
	sender := newTestKey(t, "DE/forensics")
	recipient := newTestKey(t, "FR/prosecutor")
	endless := append([]byte("age-encryption.org/v1\n-> mlkem768x25519 "), bytes.Repeat([]byte("A"), 1<<20)...)
	for _, tc := range []struct {
		name    string
		payload []byte
		want    string
	}{
		{"endless header", endless, "age header does not end within 65536 bytes"},
		{"long header", append(ageHeader(2, MaxAgeHeaderSize), make([]byte, 100)...), "age header does not end within 65536 bytes"},
		{"too many stanzas", append(ageHeader(MaxRecipients+1, 0), make([]byte, 100)...), "age header has more than 20 recipient stanzas"},
		{"thousands of stanzas", append(ageHeader(5000, 0), make([]byte, 100)...), "age header has more than 20 recipient stanzas"},
		{"classic stanza", append(bytes.Replace(ageHeader(2, 0), []byte("-> "+hybridStanzaType), []byte("-> X25519"), 1), make([]byte, 100)...),
			`age header has a "X25519" recipient stanza: evx bundles have post-quantum hybrid (mlkem768x25519) recipients only`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &handBundle{sender: sender, recipients: []*UnitKey{recipient}, bundleID: NewBundleID(), payload: tc.payload}
			data := h.bytes(t)
			for _, only := range []string{"", "a.txt"} {
				_, _, parent, err := openInto(t, data, recipient, OpenOptions{Only: only})
				if err == nil || err.Error() != tc.want {
					t.Errorf("Only %q: got %v, want %q", only, err, tc.want)
				}
				assertNothingWritten(t, parent)
			}
			// With random access (no payload hash) the payload is read
			// no further than the header limit.
			r := &countingReaderAt{r: bytes.NewReader(data)}
			b, err := ReadBundle(r, int64(len(data)))
			if err != nil {
				t.Fatal(err)
			}
			read := r.n.Load()
			parent := t.TempDir()
			if _, err := b.Open(context.Background(), recipient, filepath.Join(parent, "out"), OpenOptions{Only: "a.txt"}); err == nil {
				t.Fatal("opened")
			}
			if n := r.n.Load() - read; n > MaxAgeHeaderSize {
				t.Errorf("read %d bytes of the payload, over the header limit", n)
			}
		})
	}
}

func TestSealToMaxRecipients(t *testing.T) {
	sender := newTestKey(t, "DE/forensics")
	var recipients []*UnitKey
	for range MaxRecipients {
		recipients = append(recipients, newTestKey(t, ""))
	}
	files := []testFile{{path: "a.txt", data: []byte("to many"), mode: 0o644}}
	data, _ := sealTree(t, files, defaultSealOptions(sender, recipients...))
	_, out, _, err := openInto(t, data, recipients[MaxRecipients-1], OpenOptions{})
	if err != nil {
		t.Fatalf("the largest allowed header was refused: %v", err)
	}
	checkExtracted(t, out, "evidence/", files)

	src, err := CollectFiles([]string{filepath.Join(out, "evidence")})
	if err != nil {
		t.Fatal(err)
	}
	opts := defaultSealOptions(sender, append(recipients, newTestKey(t, ""))...)
	_, err = Seal(context.Background(), &bytes.Buffer{}, src, opts)
	if want := "21 recipients, over the limit of 20"; err == nil || err.Error() != want {
		t.Errorf("sealing to more than MaxRecipients: got %v, want %q", err, want)
	}
}

func TestReadBundleBadContainer(t *testing.T) {
	sender := newTestKey(t, "DE/forensics")
	recipient := newTestKey(t, "FR/prosecutor")
	data, _ := sealTree(t, []testFile{{path: "a.txt", data: patterned(2*ageChunk, 9), mode: 0o644}}, defaultSealOptions(sender, recipient))
	good := readBundleBytes(t, data)
	_, off, n := good.payload.Outer()
	payload := data[off : off+n]
	sig := []byte(base64.StdEncoding.EncodeToString(good.Signature) + "\n")

	t.Run("truncated", func(t *testing.T) {
		for _, cut := range []int{1, 4, 30, int(off) + 10, len(data) / 2, int(off + n), len(data) - 200, len(data) - 22, len(data) - 1} {
			_, err := ReadBundle(bytes.NewReader(data[:cut]), int64(cut))
			if !errors.Is(err, ErrNotBundle) || !strings.Contains(err.Error(), "not a zip container") {
				t.Errorf("cut at %d of %d: got %v", cut, len(data), err)
			}
		}
	})
	t.Run("empty", func(t *testing.T) {
		_, err := ReadBundle(bytes.NewReader(nil), 0)
		if !errors.Is(err, ErrNotBundle) || err.Error() != "not an evx bundle: the file is empty" {
			t.Errorf("got %v", err)
		}
	})
	t.Run("random bytes", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		for _, size := range []int{1, 22, 100, 1 << 16} {
			junk := make([]byte, size)
			for i := range junk {
				junk[i] = byte(rng.Uint32())
			}
			if _, err := ReadBundle(bytes.NewReader(junk), int64(size)); !errors.Is(err, ErrNotBundle) {
				t.Errorf("%d random bytes: got %v", size, err)
			}
		}
	})
	zipOf := func(entries ...innerEntry) []byte { return buildZip(t, entries) }
	for _, tc := range []struct {
		name     string
		data     []byte
		notEvx   bool
		want     string
		openable bool
	}{
		{"plain zip", zipOf(innerEntry{name: "hello.txt", data: []byte("hi")}), true, `unexpected entry "hello.txt" in the container`, false},
		{"empty zip", zipOf(), true, "the container has no payload.age", false},
		{"extra entry", func() []byte {
			var buf bytes.Buffer
			zw := zip.NewWriter(&buf)
			for _, e := range []struct {
				name string
				data []byte
			}{{payloadName, payload}, {envelopeName, good.EnvelopeJSON}, {signatureName, sig}, {"README", []byte("x")}} {
				writeStored(zw, e.name, e.data, fixedNow())
			}
			zw.Close()
			return buf.Bytes()
		}(), true, "not an evx bundle: container: zip directory declares 4 entries, over the limit of 3", false},
		{"no signature", zipOf(innerEntry{name: payloadName, data: payload}, innerEntry{name: envelopeName, data: good.EnvelopeJSON}), true, "the container has no envelope.sig", false},
		{"no envelope", zipOf(innerEntry{name: payloadName, data: payload}, innerEntry{name: signatureName, data: sig}), true, "the container has no envelope.json", false},
		{"duplicate entry", zipOf(innerEntry{name: payloadName, data: payload}, innerEntry{name: payloadName, data: payload}), false, `malformed bundle: duplicate entry "payload.age"`, false},
		{"compressed envelope", zipOf(innerEntry{name: payloadName, data: payload}, innerEntry{name: envelopeName, data: good.EnvelopeJSON, method: zip.Deflate}, innerEntry{name: signatureName, data: sig}), false, `entry "envelope.json" is not stored uncompressed`, false},
		{"data descriptors", zipOf(innerEntry{name: payloadName, data: payload}, innerEntry{name: envelopeName, data: good.EnvelopeJSON}, innerEntry{name: signatureName, data: sig}), false, "", true},
		{"bad signature encoding", containerOf(t, payload, good.EnvelopeJSON, []byte("not base64!\n")), false, "malformed bundle: envelope.sig is not a base64 Ed25519 signature", false},
		{"signature with CRLF", containerOf(t, payload, good.EnvelopeJSON, bytes.Replace(sig, []byte("\n"), []byte("\r\n"), 1)), false, "envelope.sig is not a base64 Ed25519 signature", false},
		{"signature with inner newline", containerOf(t, payload, good.EnvelopeJSON, append(append(bytes.Clone(sig[:20]), '\n'), sig[20:]...)), false, "envelope.sig is not a base64 Ed25519 signature", false},
		{"short signature", containerOf(t, payload, good.EnvelopeJSON, []byte(base64.StdEncoding.EncodeToString(good.Signature[:32])+"\n")), false, "envelope.sig is not a base64 Ed25519 signature", false},
		{"long signature file", containerOf(t, payload, good.EnvelopeJSON, bytes.Repeat([]byte("A"), 200)), false, "malformed bundle: envelope.sig is 200 bytes, over the limit of 128", false},
		{"short payload", containerOf(t, payload[:len(payload)-1], good.EnvelopeJSON, sig), false, fmt.Sprintf("payload.age is %d bytes, the envelope says %d", n-1, n), false},
		{"non-canonical envelope", containerOf(t, payload, append(bytes.Clone(good.EnvelopeJSON), '\n'), sig), false, "envelope is not in canonical form", false},
		{"oversized envelope", containerOf(t, payload, bytes.Repeat([]byte(" "), MaxEnvelopeSize+1), sig), false, "malformed bundle: envelope.json is 65537 bytes, over the limit of 65536", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := ReadBundle(bytes.NewReader(tc.data), int64(len(tc.data)))
			if tc.openable {
				if err != nil {
					t.Fatal(err)
				}
				if _, _, _, err := openInto(t, tc.data, recipient, OpenOptions{}); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || b != nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if errors.Is(err, ErrNotBundle) != tc.notEvx {
				t.Errorf("errors.Is(%v, ErrNotBundle) = %v", err, !tc.notEvx)
			}
		})
	}
}

func TestOpenBundleFile(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := OpenBundleFile(filepath.Join(dir, "missing.evx")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if _, _, err := OpenBundleFile(dir); err == nil || !strings.Contains(err.Error(), "is not a regular file") {
		t.Errorf("directory: %v", err)
	}
	empty := filepath.Join(dir, "empty.evx")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := OpenBundleFile(empty); !errors.Is(err, ErrNotBundle) || !strings.Contains(err.Error(), empty) {
		t.Errorf("empty file: %v", err)
	}
}
