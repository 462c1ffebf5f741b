package crypto

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
)

var updateVectors = flag.Bool("update", false, "regenerate the golden test vectors in testdata/vectors")

const vectorsDir = "testdata/vectors"

// vector is the description of a golden bundle, stored beside it as
// expected.json: everything a reader of the format must find in it.
type vector struct {
	Description string `json:"description"`
	// Key files, relative to the vector's directory.
	SenderKey     string   `json:"sender_key"`
	RecipientKeys []string `json:"recipient_keys"`

	Envelope     vectorEnvelope `json:"envelope"`
	EnvelopeJSON string         `json:"envelope_json"` // exact bytes of envelope.json
	Signature    string         `json:"signature"`     // base64, as in envelope.sig
	// The plaintext of payload.age: its entries in order and the exact
	// bytes of manifest.json.
	InnerEntries []string     `json:"inner_entries"`
	ManifestJSON string       `json:"manifest_json"`
	Files        []vectorFile `json:"files"`
}

type vectorEnvelope struct {
	Format         string        `json:"format"`
	BundleID       string        `json:"bundle_id"`
	Created        string        `json:"created"`
	RetainUntil    string        `json:"retain_until"`
	SenderUnit     string        `json:"sender_unit"`
	SenderKey      string        `json:"sender_signing_key"`
	Recipients     []vectorParty `json:"recipients"`
	Purpose        string        `json:"purpose"`
	Handling       string        `json:"handling"`
	TLP            string        `json:"tlp"`
	LegalBasis     string        `json:"legal_basis"`
	Case           string        `json:"case"`
	PayloadSize    int64         `json:"payload_size"`
	PayloadSHA256  string        `json:"payload_sha256"`
	ManifestSHA256 string        `json:"manifest_sha256"`
}

type vectorParty struct {
	Unit         string `json:"unit"`
	AgeRecipient string `json:"age_recipient"`
}

type vectorFile struct {
	Path     string `json:"path"`
	Content  string `json:"content"`
	Size     int64  `json:"size"`
	SHA256   string `json:"sha256"`
	Mode     string `json:"mode"`
	Modified string `json:"modified"`
}

// vectorSpec says how to make a golden bundle.
type vectorSpec struct {
	name, description string
	senderUnit        string
	recipientUnits    []string
	// args are the files and directories given to seal, below a scratch
	// directory holding files.
	args  []string
	files []testFile
	opts  SealOptions
}

func vectorSpecs() []vectorSpec {
	t0 := time.Date(2026, 2, 1, 10, 0, 0, 0, time.UTC)
	return []vectorSpec{
		{
			name:           "single-file",
			description:    "one file, sealed by its name, from DE/forensics to FR/prosecutor",
			senderUnit:     "DE/forensics",
			recipientUnits: []string{"FR/prosecutor"},
			args:           []string{"note.txt"},
			files:          []testFile{{path: "note.txt", data: []byte("Seized on 2026-02-01 at 10:00.\n"), mode: 0o644, mtime: t0}},
			opts: SealOptions{Purpose: "criminal-investigation", Handling: "H2", TLP: "TLP:RED",
				LegalBasis: "StPO §100a", Case: "4711/26", Retain: 90 * 24 * time.Hour,
				Now: time.Date(2026, 2, 2, 9, 30, 0, 0, time.UTC)},
		},
		{
			name:           "directory",
			description:    "a directory with files in a subdirectory and an empty file, no case reference",
			senderUnit:     "DE/forensics",
			recipientUnits: []string{"NL/prosecutor"},
			args:           []string{"case-4711"},
			files: []testFile{
				// In the order of the walk, which is the order in the bundle.
				{path: "case-4711/empty.txt", data: nil, mode: 0o640, mtime: t0.Add(-24 * time.Hour)},
				{path: "case-4711/images/photo.txt", data: []byte("pretend this is a photo: \x00\x01\x02 é"), mode: 0o600, mtime: t0.Add(123456789 * time.Nanosecond)},
				{path: "case-4711/report.txt", data: []byte("Report on the seized laptop.\nDisk image attached.\n"), mode: 0o644, mtime: t0.Add(90 * time.Minute)},
			},
			opts: SealOptions{Purpose: "mutual-legal-assistance", Handling: "H1", TLP: "TLP:AMBER",
				LegalBasis: "EIO 2026/DE/0815", Retain: 12 * 7 * 24 * time.Hour,
				Now: time.Date(2026, 2, 3, 12, 0, 0, 0, time.UTC)},
		},
		{
			name:           "two-recipients",
			description:    "two files to two recipients, one without a unit id, from a sender key without a unit id; a legal basis that needs escaping",
			senderUnit:     "",
			recipientUnits: []string{"FR/prosecutor", ""},
			args:           []string{"a.txt", "b.txt"},
			files: []testFile{
				{path: "a.txt", data: []byte("alpha\n"), mode: 0o644, mtime: t0},
				{path: "b.txt", data: []byte("beta\n"), mode: 0o755, mtime: t0.Add(time.Second)},
			},
			opts: SealOptions{Purpose: "incident-response", Handling: "H3", TLP: "TLP:AMBER+STRICT",
				LegalBasis: `Art. 29 "Budapest" Convention \ §`, Case: "INC-2026-0042", Retain: 36 * time.Hour,
				Now: time.Date(2026, 2, 4, 23, 59, 59, 0, time.UTC)},
		},
	}
}

func TestVectors(t *testing.T) {
	if *updateVectors {
		for _, spec := range vectorSpecs() {
			writeVector(t, spec)
		}
	}
	dirs := vectorDirs(t)
	if len(dirs) < len(vectorSpecs()) {
		t.Fatalf("found %d test vectors in %s, want %d (make them with go test ./crypto -run TestVectors -update)", len(dirs), vectorsDir, len(vectorSpecs()))
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) { checkVector(t, dir) })
	}
}

// vectorDirs returns the directories of the golden test vectors.
func vectorDirs(t testing.TB) []string {
	t.Helper()
	entries, err := os.ReadDir(vectorsDir)
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, filepath.Join(vectorsDir, e.Name()))
		}
	}
	return dirs
}

// writeVector seals spec into a new vector directory.
func writeVector(t *testing.T, spec vectorSpec) {
	dir := filepath.Join(vectorsDir, spec.name)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeKey := func(name string, k *UnitKey) {
		text, err := k.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), text, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	v := &vector{Description: spec.description, SenderKey: "sender.key"}
	sender := newTestKey(t, spec.senderUnit)
	writeKey(v.SenderKey, sender)
	opts := spec.opts
	opts.Sender = sender
	for i, unit := range spec.recipientUnits {
		r := newTestKey(t, unit)
		name := fmt.Sprintf("recipient-%d.key", i+1)
		writeKey(name, r)
		v.RecipientKeys = append(v.RecipientKeys, name)
		opts.Recipients = append(opts.Recipients, r.Public())
	}

	src := t.TempDir()
	writeTestTree(t, src, spec.files)
	var args []string
	for _, a := range spec.args {
		args = append(args, filepath.Join(src, a))
	}
	files, err := CollectFiles(args)
	if err != nil {
		t.Fatal(err)
	}
	var bundle bytes.Buffer
	env, err := Seal(context.Background(), &bundle, files, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bundle.evx"), bundle.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	// What the spec determines comes from the spec; only the random parts
	// (bundle id, salt, age's keys and nonces) come from the bundle.
	v.Envelope = vectorEnvelope{
		Format:         EnvelopeFormat,
		BundleID:       env.BundleID,
		Created:        opts.Now.UTC().Format(timeLayout),
		RetainUntil:    opts.Now.Add(opts.Retain).UTC().Format(timeLayout),
		SenderUnit:     spec.senderUnit,
		SenderKey:      FormatSigningKey(sender.SigningPublicKey()),
		Purpose:        opts.Purpose,
		Handling:       opts.Handling,
		TLP:            opts.TLP,
		LegalBasis:     opts.LegalBasis,
		Case:           opts.Case,
		PayloadSize:    env.PayloadSize,
		PayloadSHA256:  hex.EncodeToString(env.PayloadSHA256[:]),
		ManifestSHA256: hex.EncodeToString(env.ManifestSHA256[:]),
	}
	for _, r := range opts.Recipients {
		v.Envelope.Recipients = append(v.Envelope.Recipients, vectorParty{Unit: r.Unit, AgeRecipient: r.AgeRecipient})
	}
	b := readBundleBytes(t, bundle.Bytes())
	v.EnvelopeJSON = string(b.EnvelopeJSON)
	v.Signature = base64.StdEncoding.EncodeToString(b.Signature)
	entries, manifest := decryptInner(t, b, dir, v.RecipientKeys[0])
	v.InnerEntries, v.ManifestJSON = entries, string(manifest)
	for _, f := range spec.files {
		sum := sha256.Sum256(f.data)
		v.Files = append(v.Files, vectorFile{
			Path:     f.path,
			Content:  string(f.data),
			Size:     int64(len(f.data)),
			SHA256:   hex.EncodeToString(sum[:]),
			Mode:     fmt.Sprintf("%04o", f.mode),
			Modified: f.mtime.UTC().Format(time.RFC3339Nano),
		})
	}
	desc, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "expected.json"), append(desc, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

// decryptInner decrypts payload.age with the stream API (not random access)
// using the key file keyName, and returns the inner archive's entry names
// and the bytes of its manifest.
func decryptInner(t *testing.T, b *Bundle, dir, keyName string) ([]string, []byte) {
	t.Helper()
	ids, err := age.ParseIdentities(mustOpen(t, filepath.Join(dir, keyName)))
	if err != nil {
		t.Fatalf("the age package cannot read %s: %v", keyName, err)
	}
	r, err := age.Decrypt(b.Payload(), ids...)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(plain), int64(len(plain)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var manifest []byte
	for _, f := range zr.File {
		names = append(names, f.Name)
		if f.Name == manifestName {
			rc, err := f.Open()
			if err != nil {
				t.Fatal(err)
			}
			manifest, err = io.ReadAll(rc)
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	return names, manifest
}

func mustOpen(t *testing.T, path string) io.Reader {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.NewReader(data)
}

func readVector(t testing.TB, dir string) *vector {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v vector
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%s/expected.json: %v", dir, err)
	}
	return &v
}

// checkVector checks every part of a golden bundle against its description,
// so that any change to the format fails here.
func checkVector(t *testing.T, dir string) {
	v := readVector(t, dir)
	sender, err := ReadUnitKeyFile(filepath.Join(dir, v.SenderKey))
	if err != nil {
		t.Fatal(err)
	}
	var recipients []*UnitKey
	for _, name := range v.RecipientKeys {
		k, err := ReadUnitKeyFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		recipients = append(recipients, k)
	}
	if len(recipients) == 0 {
		t.Fatal("vector without recipients")
	}

	b, f, err := OpenBundleFile(filepath.Join(dir, "bundle.evx"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	raw, err := os.ReadFile(filepath.Join(dir, "bundle.evx"))
	if err != nil {
		t.Fatal(err)
	}

	// The container: three stored entries in this order.
	zr, err := zip.NewReader(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range zr.File {
		names = append(names, e.Name)
		if e.Method != zip.Store {
			t.Errorf("container entry %s is not stored", e.Name)
		}
		if e.Name == signatureName {
			rc, _ := e.Open()
			sigText, _ := io.ReadAll(rc)
			rc.Close()
			if string(sigText) != v.Signature+"\n" {
				t.Errorf("envelope.sig is %q, want %q", sigText, v.Signature+"\n")
			}
		}
	}
	if strings.Join(names, " ") != "payload.age envelope.json envelope.sig" {
		t.Errorf("container entries %q", names)
	}

	// The envelope: exact bytes, fields, and the canonical encoding of the
	// described fields.
	if string(b.EnvelopeJSON) != v.EnvelopeJSON {
		t.Errorf("envelope.json:\n got %s\nwant %s", b.EnvelopeJSON, v.EnvelopeJSON)
	}
	want := envelopeFromVector(t, v.Envelope)
	if enc := mustMarshal(t, want); string(enc) != v.EnvelopeJSON {
		t.Errorf("the described envelope encodes as\n%s\nnot\n%s", enc, v.EnvelopeJSON)
	}
	if got := fmt.Sprintf("%+v", b.Envelope); got != fmt.Sprintf("%+v", want) {
		t.Errorf("parsed envelope\n got %s\nwant %+v", got, want)
	}
	if b.Envelope.Sender.Key != FormatSigningKey(sender.SigningPublicKey()) || b.Envelope.Sender.Unit != sender.Unit {
		t.Errorf("sender %+v does not match %s", b.Envelope.Sender, v.SenderKey)
	}
	for i, r := range recipients {
		if got := b.Envelope.Recipients[i]; got.Key != r.Recipient().String() || got.Unit != r.Unit {
			t.Errorf("recipient %d %+v does not match %s", i+1, got, v.RecipientKeys[i])
		}
	}

	// The signature: valid, and exactly what the sender's key makes over
	// the context string and the envelope (Ed25519 is deterministic).
	if err := b.VerifySignature(); err != nil {
		t.Errorf("VerifySignature: %v", err)
	}
	if got := base64.StdEncoding.EncodeToString(sender.sign([]byte("evx-envelope-signature/v1\n" + v.EnvelopeJSON))); got != v.Signature {
		t.Errorf("signing the envelope again gives %s, want %s", got, v.Signature)
	}
	if err := b.VerifyPayloadHash(); err != nil {
		t.Errorf("VerifyPayloadHash: %v", err)
	}

	// The plaintext, as any age implementation decrypts it.
	for _, name := range v.RecipientKeys {
		entries, manifest := decryptInner(t, b, dir, name)
		if strings.Join(entries, "\n") != strings.Join(v.InnerEntries, "\n") {
			t.Errorf("inner entries %q, want %q", entries, v.InnerEntries)
		}
		if string(manifest) != v.ManifestJSON {
			t.Errorf("manifest.json:\n got %s\nwant %s", manifest, v.ManifestJSON)
		}
	}
	if sum := sha256.Sum256([]byte(v.ManifestJSON)); hex.EncodeToString(sum[:]) != v.Envelope.ManifestSHA256 {
		t.Errorf("manifest digest %x, the envelope says %s", sum, v.Envelope.ManifestSHA256)
	}
	m, err := decodeManifest(strings.NewReader(v.ManifestJSON), len(v.Files))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.validate(v.Envelope.BundleID, len(v.Files)); err != nil {
		t.Fatal(err)
	}
	var wantFiles []ManifestFile
	var total int64
	for _, f := range v.Files {
		wantFiles = append(wantFiles, ManifestFile{Path: f.Path, Size: f.Size, SHA256: f.SHA256, Mode: f.Mode, Modified: f.Modified})
		total += f.Size
		sum := sha256.Sum256([]byte(f.Content))
		if hex.EncodeToString(sum[:]) != f.SHA256 || int64(len(f.Content)) != f.Size {
			t.Errorf("%s: the description's content does not match its size and digest", f.Path)
		}
	}
	if fmt.Sprint(m.Files) != fmt.Sprint(wantFiles) || m.TotalFiles != len(v.Files) || m.TotalSize != total {
		t.Errorf("manifest %+v, want files %+v", m, wantFiles)
	}

	// Opening with each recipient key: every check passes, and the files
	// come out as described.
	for i, r := range recipients {
		out := filepath.Join(t.TempDir(), "out")
		res, err := b.Open(context.Background(), r, out, OpenOptions{ExpectSender: v.Envelope.SenderKey})
		if err != nil {
			t.Fatalf("open with %s: %v", v.RecipientKeys[i], err)
		}
		if fmt.Sprint(res.Files) != fmt.Sprint(wantFiles) {
			t.Errorf("opened files %+v, want %+v", res.Files, wantFiles)
		}
		checkExtracted(t, out, "", vectorTestFiles(t, v.Files))
	}
	for _, f := range v.Files {
		out := filepath.Join(t.TempDir(), "out")
		if _, err := b.Open(context.Background(), recipients[0], out, OpenOptions{Only: f.Path}); err != nil {
			t.Fatalf("open only %s: %v", f.Path, err)
		}
		checkExtracted(t, out, "", vectorTestFiles(t, []vectorFile{f}))
	}
}

func envelopeFromVector(t *testing.T, ve vectorEnvelope) *Envelope {
	t.Helper()
	e := &Envelope{
		Format:      ve.Format,
		BundleID:    ve.BundleID,
		Sender:      Party{Unit: ve.SenderUnit, Key: ve.SenderKey},
		Purpose:     ve.Purpose,
		Handling:    ve.Handling,
		TLP:         ve.TLP,
		LegalBasis:  ve.LegalBasis,
		Case:        ve.Case,
		PayloadSize: ve.PayloadSize,
	}
	var err error
	if e.Created, err = time.Parse(time.RFC3339, ve.Created); err != nil {
		t.Fatal(err)
	}
	if e.RetainUntil, err = time.Parse(time.RFC3339, ve.RetainUntil); err != nil {
		t.Fatal(err)
	}
	for _, r := range ve.Recipients {
		e.Recipients = append(e.Recipients, Party{Unit: r.Unit, Key: r.AgeRecipient})
	}
	if err := decodeDigest(&e.PayloadSHA256, ve.PayloadSHA256); err != nil {
		t.Fatal(err)
	}
	if err := decodeDigest(&e.ManifestSHA256, ve.ManifestSHA256); err != nil {
		t.Fatal(err)
	}
	return e
}

func vectorTestFiles(t *testing.T, files []vectorFile) []testFile {
	t.Helper()
	var out []testFile
	for _, f := range files {
		var mode uint32
		if _, err := fmt.Sscanf(f.Mode, "%o", &mode); err != nil {
			t.Fatal(err)
		}
		mtime, err := time.Parse(time.RFC3339Nano, f.Modified)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, testFile{path: f.Path, data: []byte(f.Content), mode: os.FileMode(mode), mtime: mtime})
	}
	return out
}
