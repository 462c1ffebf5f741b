package crypto

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"
)

// fixedNow returns the creation time of the bundles sealed by the tests, so
// that envelopes are reproducible apart from their random bundle id and
// digests.
func fixedNow() time.Time { return time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC) }

// testFile is a file to create on disk before sealing it.
type testFile struct {
	path  string // slash-separated, relative to the directory being sealed
	data  []byte
	mode  fs.FileMode
	mtime time.Time
}

func newTestKey(t testing.TB, unit string) *UnitKey {
	t.Helper()
	k, err := GenerateUnitKey(unit)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// writeTestTree creates files below dir with their modes and mtimes.
func writeTestTree(t testing.TB, dir string, files []testFile) {
	t.Helper()
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := f.mode
		if mode == 0 {
			mode = 0o644
		}
		if err := os.WriteFile(p, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		mtime := f.mtime
		if mtime.IsZero() {
			mtime = fixedNow().Add(-time.Hour)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
}

func defaultSealOptions(sender *UnitKey, recipients ...*UnitKey) SealOptions {
	opts := SealOptions{
		Sender:     sender,
		Purpose:    "criminal-investigation",
		Handling:   "H2",
		TLP:        "TLP:RED",
		LegalBasis: "StPO §100a",
		Case:       "4711/26",
		Retain:     90 * 24 * time.Hour,
		Now:        fixedNow(),
	}
	for _, r := range recipients {
		opts.Recipients = append(opts.Recipients, r.Public())
	}
	return opts
}

// sealTree writes files below a new directory named "evidence", seals it
// with opts and returns the bundle bytes. The files' bundle paths are
// "evidence/" + their path.
func sealTree(t testing.TB, files []testFile, opts SealOptions) ([]byte, *Envelope) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "evidence")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	writeTestTree(t, root, files)
	src, err := CollectFiles([]string{root})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for _, f := range files {
		buf.Grow(len(f.data) + 1<<10)
	}
	env, err := Seal(context.Background(), &buf, src, opts)
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), env
}

func readBundleBytes(t testing.TB, data []byte) *Bundle {
	t.Helper()
	b, err := ReadBundle(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatalf("ReadBundle: %v", err)
	}
	return b
}

// openInto opens data with key into a directory "out" inside a new, empty
// parent directory, and returns the error, the output path and the parent.
func openInto(t testing.TB, data []byte, key *UnitKey, opts OpenOptions) (*OpenResult, string, string, error) {
	t.Helper()
	parent := t.TempDir()
	out := filepath.Join(parent, "out")
	b, err := ReadBundle(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, out, parent, err
	}
	res, err := b.Open(context.Background(), key, out, opts)
	return res, out, parent, err
}

// assertNothingWritten checks that parent, the directory that held the
// output directory of a failed Open, is still empty: no output directory,
// no temporary directory beside it, nothing escaped from the archive.
func assertNothingWritten(t testing.TB, parent string) {
	t.Helper()
	entries, err := os.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) > 0 {
		t.Errorf("failed open left %q in %s", names, parent)
	}
}

// snapshotTree returns every path below dir with its mode, size and content.
func snapshotTree(t testing.TB, dir string) map[string]string {
	t.Helper()
	snap := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		v := info.Mode().String()
		if info.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			v += " " + string(data)
		}
		snap[rel] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// innerEntry is one entry of a hand-built inner archive.
type innerEntry struct {
	name   string
	data   []byte
	mode   fs.FileMode // 0 means a regular file with mode 0644
	method uint16
}

// buildZip writes entries into a zip archive, as they are given, with none
// of the checks that Seal applies.
func buildZip(t testing.TB, entries []innerEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		hdr := &zip.FileHeader{Name: e.name, Method: e.method, Modified: fixedNow()}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		hdr.SetMode(mode)
		create := zw.CreateHeader
		if e.method != zip.Store && e.method != zip.Deflate {
			// A method the writer has no compressor for: the data is
			// written as it is.
			hdr.CRC32 = crc32.ChecksumIEEE(e.data)
			hdr.CompressedSize64 = uint64(len(e.data))
			hdr.UncompressedSize64 = uint64(len(e.data))
			create = zw.CreateRaw
		}
		w, err := create(hdr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// manifestFor returns the canonical manifest of bundle id listing each
// files/ entry under its path below files/, as Seal would write it.
func manifestFor(t testing.TB, id string, entries []innerEntry) []byte {
	t.Helper()
	m := &Manifest{Format: ManifestFormat, BundleID: id, Salt: newSalt(), Files: []ManifestFile{}}
	for _, e := range entries {
		p, ok := strings.CutPrefix(e.name, filesPrefix)
		if !ok {
			continue
		}
		sum := sha256.Sum256(e.data)
		m.Files = append(m.Files, ManifestFile{
			Path:     p,
			Size:     int64(len(e.data)),
			SHA256:   hex.EncodeToString(sum[:]),
			Mode:     "0644",
			Modified: fixedNow().Format(time.RFC3339Nano),
		})
		m.TotalSize += int64(len(e.data))
	}
	m.TotalFiles = len(m.Files)
	data, err := canonicalJSON(m)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// innerArchive returns a hand-built inner archive: entries followed by a
// manifest that lists them, and the manifest's bytes.
func innerArchive(t testing.TB, id string, entries []innerEntry) (inner, manifest []byte) {
	t.Helper()
	manifest = manifestFor(t, id, entries)
	all := append(append([]innerEntry(nil), entries...), innerEntry{name: manifestName, data: manifest})
	return buildZip(t, all), manifest
}

func encryptTo(t testing.TB, plain []byte, recipients ...*UnitKey) []byte {
	t.Helper()
	var rs []age.Recipient
	for _, r := range recipients {
		rs = append(rs, r.Recipient())
	}
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, rs...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// handBundle assembles a bundle around an arbitrary payload, with a correct
// envelope and signature, so that a test can make just one part malicious.
type handBundle struct {
	sender     *UnitKey
	recipients []*UnitKey
	bundleID   string
	payload    []byte   // payload.age as stored
	manifest   [32]byte // the envelope's manifest_sha256
	// mutate, if set, changes the envelope before it is signed.
	mutate func(*Envelope)
}

func (h *handBundle) envelope() *Envelope {
	env := &Envelope{
		Format:         EnvelopeFormat,
		BundleID:       h.bundleID,
		Created:        fixedNow(),
		RetainUntil:    fixedNow().Add(90 * 24 * time.Hour),
		Sender:         Party{Unit: h.sender.Unit, Key: FormatSigningKey(h.sender.SigningPublicKey())},
		Purpose:        "prosecution",
		Handling:       "H3",
		TLP:            "TLP:AMBER",
		LegalBasis:     "MLA request 2026/17",
		PayloadSize:    int64(len(h.payload)),
		PayloadSHA256:  sha256.Sum256(h.payload),
		ManifestSHA256: h.manifest,
	}
	for _, r := range h.recipients {
		env.Recipients = append(env.Recipients, Party{Unit: r.Unit, Key: r.Recipient().String()})
	}
	if h.mutate != nil {
		h.mutate(env)
	}
	return env
}

func (h *handBundle) bytes(t testing.TB) []byte {
	t.Helper()
	envJSON, err := h.envelope().MarshalCanonical()
	if err != nil {
		t.Fatal(err)
	}
	sig := base64.StdEncoding.EncodeToString(h.sender.sign(SignedMessage(envJSON))) + "\n"
	return containerOf(t, h.payload, envJSON, []byte(sig))
}

// containerOf writes the outer container as Seal does, from its parts.
func containerOf(t testing.TB, payload, envJSON, sig []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range []struct {
		name string
		data []byte
	}{{payloadName, payload}, {envelopeName, envJSON}, {signatureName, sig}} {
		if err := writeStored(zw, e.name, e.data, fixedNow()); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// bundleWithInner returns a properly signed bundle from sender to recipient
// whose payload is the given inner archive, described by manifest.
func bundleWithInner(t testing.TB, sender, recipient *UnitKey, id string, inner, manifest []byte) []byte {
	t.Helper()
	h := &handBundle{
		sender:     sender,
		recipients: []*UnitKey{recipient},
		bundleID:   id,
		payload:    encryptTo(t, inner, recipient),
		manifest:   sha256.Sum256(manifest),
	}
	return h.bytes(t)
}

// countingReaderAt counts the bytes read through it; it is safe for the
// concurrent reads that Open makes.
type countingReaderAt struct {
	r io.ReaderAt
	n atomic.Int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n.Add(int64(n))
	return n, err
}

// containerEntries returns the names of a zip archive's entries, in order.
func containerEntries(t testing.TB, data []byte) []string {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
	}
	return names
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// allocatedBy returns the bytes allocated, by any goroutine, while f runs.
// A test that uses it must not run in parallel with others, whose
// allocations would count.
func allocatedBy(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}
