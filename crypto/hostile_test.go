package crypto

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"context"
	"crypto/sha256"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Bundles made to exhaust a reader's memory or CPU: small on disk, huge
// once decompressed or parsed, each properly signed and encrypted to a real
// unit key so that Open reaches the part that is hostile. Each must be
// refused, naming the failed check, with little memory allocated.

// hostileMaxAlloc bounds the bytes a reader may allocate while refusing a
// hostile bundle: half of the 64 MiB that design.md's resource invariants
// are measured against.
const hostileMaxAlloc = 32 << 20

// hostileBundle is a hostile bundle, the key that can open it and the error
// that refusing it must contain.
type hostileBundle struct {
	name string
	data []byte
	key  *UnitKey
	want string
}

// emptySHA256 is the SHA-256 of no bytes, for manifest entries of empty files.
const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// deflatedEntry is a deflated entry of a hand-built inner archive, given as
// its compressed bytes and the size, CRC-32 and SHA-256 of its content.
type deflatedEntry struct {
	compressed []byte
	size       int64
	crc        uint32
	sha256     [32]byte
}

// repeatedDeflate deflates prefix, then unit repeated copies times, then
// suffix, without compressing all of it: it compresses one chunk of units
// and then repeats that chunk's compressed blocks. A deflate block decodes
// the same wherever the 32 KiB before it are the same, and before every
// repetition they are the end of an identical chunk. copies must be at least
// the chunk's units (about 1 MiB of them).
func repeatedDeflate(t testing.TB, prefix, unit []byte, copies int, suffix []byte) deflatedEntry {
	t.Helper()
	chunkUnits := max(1, (1<<20)/len(unit))
	if copies < chunkUnits {
		t.Fatalf("repeatedDeflate: %d copies, fewer than a chunk of %d", copies, chunkUnits)
	}
	chunk := bytes.Repeat(unit, chunkUnits)
	rest := copies % chunkUnits
	var out bytes.Buffer
	w, err := flate.NewWriter(&out, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	write := func(p []byte) {
		if _, err := w.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	// First part: the prefix, the odd units and one chunk, so that what
	// precedes the repeated part is a whole chunk.
	write(prefix)
	write(bytes.Repeat(unit, rest))
	write(chunk)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	first := bytes.Clone(out.Bytes())
	out.Reset()
	write(chunk)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	repeated := bytes.Clone(out.Bytes())
	out.Reset()
	write(suffix)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	last := out.Bytes()

	chunks := copies / chunkUnits // including the one in first
	e := deflatedEntry{compressed: append(first, append(bytes.Repeat(repeated, chunks-1), last...)...)}
	h, c := sha256.New(), crc32.NewIEEE()
	both := io.MultiWriter(h, c)
	both.Write(prefix)
	both.Write(bytes.Repeat(unit, rest))
	for range chunks {
		both.Write(chunk)
	}
	both.Write(suffix)
	e.size = int64(len(prefix)+len(suffix)) + int64(copies)*int64(len(unit))
	e.crc = c.Sum32()
	copy(e.sha256[:], h.Sum(nil))
	return e
}

// deflateWhole deflates the content that write produces, at the fastest
// level, and returns it as an entry.
func deflateWhole(t testing.TB, write func(io.Writer)) deflatedEntry {
	t.Helper()
	var out bytes.Buffer
	fw, err := flate.NewWriter(&out, flate.BestSpeed)
	if err != nil {
		t.Fatal(err)
	}
	h, c := sha256.New(), crc32.NewIEEE()
	n := &countingWriter{}
	write(io.MultiWriter(fw, h, c, n))
	if err := fw.Close(); err != nil {
		t.Fatal(err)
	}
	e := deflatedEntry{compressed: out.Bytes(), size: n.n, crc: c.Sum32()}
	copy(e.sha256[:], h.Sum(nil))
	return e
}

// innerWithDeflatedManifest returns an inner archive of the given files/
// entries followed by manifest.json as the deflated entry m.
func innerWithDeflatedManifest(t testing.TB, files []innerEntry, m deflatedEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range files {
		hdr := &zip.FileHeader{Name: f.name, Method: zip.Store, Modified: fixedNow()}
		hdr.SetMode(0o644)
		w, err := zw.CreateHeader(hdr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	w, err := zw.CreateRaw(&zip.FileHeader{Name: manifestName, Method: zip.Deflate, Modified: fixedNow(),
		CRC32: m.crc, CompressedSize64: uint64(len(m.compressed)), UncompressedSize64: uint64(m.size)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(m.compressed); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// sealInner returns a bundle from sender to recipient of the given inner
// archive, whose manifest_sha256 is manifestSum.
func sealInner(t testing.TB, sender, recipient *UnitKey, id string, inner []byte, manifestSum [32]byte) []byte {
	t.Helper()
	h := &handBundle{sender: sender, recipients: []*UnitKey{recipient}, bundleID: id,
		payload: encryptTo(t, inner, recipient), manifest: manifestSum}
	return h.bytes(t)
}

// manifestHead and manifestTail are the members of a manifest around its
// files, as the canonical writer orders them.
func manifestHead(id string) string {
	return `{"bundle_id":"` + id + `","files":[`
}

func manifestTail(files int, totalSize int64) string {
	return fmt.Sprintf(`],"format":"%s","salt":"%s","total_files":%d,"total_size":%d}`,
		ManifestFormat, strings.Repeat("5a", 32), files, totalSize)
}

// manifestBomb is a manifest.json of copies empty file objects ("{}"),
// deflated: 3 bytes each, over a thousand to one.
func manifestBomb(t testing.TB, id string, copies int) deflatedEntry {
	t.Helper()
	return repeatedDeflate(t, []byte(manifestHead(id)), []byte(`{},`), copies-1,
		[]byte(`{}`+manifestTail(copies, 0)))
}

// deepPath returns the i-th of a set of distinct, valid paths of about
// 1,000 bytes and 490 directories each.
func deepPath(i int) string {
	return fmt.Sprintf("d%05d/%sx", i, strings.Repeat("a/", 490))
}

// deepManifest is a valid manifest.json of n empty files with deep paths,
// deflated.
func deepManifest(t testing.TB, id string, n int) deflatedEntry {
	t.Helper()
	return deflateWhole(t, func(w io.Writer) {
		io.WriteString(w, manifestHead(id))
		for i := range n {
			if i > 0 {
				io.WriteString(w, ",")
			}
			fmt.Fprintf(w, `{"mode":"0644","modified":"%s","path":"%s","sha256":"%s","size":0}`,
				fixedNow().Format(time.RFC3339), deepPath(i), emptySHA256)
		}
		io.WriteString(w, manifestTail(n, 0))
	})
}

// hostileBundles builds the hostile bundles, all sealed to one new key.
func hostileBundles(t testing.TB) []hostileBundle {
	sender := newTestKey(t, "DE/forensics")
	key := newTestKey(t, "FR/prosecutor")
	one := []innerEntry{{name: "files/a.txt", data: []byte("a")}}
	var out []hostileBundle
	add := func(name, want string, data []byte) {
		out = append(out, hostileBundle{name: name, data: data, key: key, want: want})
	}

	// A manifest of 22 million empty objects (66 MB, 64 KB deflated) beside
	// one file.
	{
		id := NewBundleID()
		m := manifestBomb(t, id, 22_000_000)
		add("manifest-bomb", "manifest.json is 66000", sealInner(t, sender, key, id, innerWithDeflatedManifest(t, one, m), m.sha256))
	}
	// The same manifest beside 8,200 files, which allow a manifest of
	// 64 MiB: the file count stops the decoding.
	{
		id := NewBundleID()
		var files []innerEntry
		for i := range 8200 {
			files = append(files, innerEntry{name: fmt.Sprintf("files/f%04d", i)})
		}
		m := manifestBomb(t, id, 22_000_000)
		add("manifest-bomb-8200-files", "inner archive holds 8200 files, the manifest lists more", sealInner(t, sender, key, id, innerWithDeflatedManifest(t, files, m), m.sha256))
	}
	// A valid manifest of 55,000 files with paths 490 directories deep
	// (65 MB, under 0.5 MB deflated) beside one file.
	{
		id := NewBundleID()
		m := deepManifest(t, id, 55_000)
		add("manifest-deep-paths", "manifest.json is 6", sealInner(t, sender, key, id, innerWithDeflatedManifest(t, one, m), m.sha256))
	}
	// An inner archive of 5,000 files with paths 490 directories deep, the
	// last of which is a directory of the first: the path set must be
	// checked in time and memory linear in the paths' length.
	{
		id := NewBundleID()
		var files []innerEntry
		for i := range 5000 {
			files = append(files, innerEntry{name: filesPrefix + deepPath(i)})
		}
		files = append(files, innerEntry{name: filesPrefix + "D00000/A/a"})
		inner, manifest := innerArchive(t, id, files)
		add("inner-deep-paths", `inner archive: file path "D00000/A/a" is also the directory of another file`, sealInner(t, sender, key, id, inner, sha256.Sum256(manifest)))
	}
	// An inner archive that declares 4,980,738 entries and holds 2
	// (archive/zip compares the counts modulo 65,536 only).
	{
		id := NewBundleID()
		inner, manifest := innerArchive(t, id, one)
		add("inner-declares-millions", "inner archive: zip directory declares 4980738 entries, over the limit of 100001",
			sealInner(t, sender, key, id, withDeclaredEntries(t, inner, 76<<16+2), sha256.Sum256(manifest)))
	}
	// An inner archive whose directory holds 300,000 entries (14 MB).
	{
		id := NewBundleID()
		inner := rawZipDirectory(300_000, func(i int) string { return "x" })
		add("inner-300000-entries", "inner archive: zip directory declares 300000 entries, over the limit of 100001",
			sealInner(t, sender, key, id, inner, sha256.Sum256(nil)))
	}
	// An outer container whose directory holds 300,000 entries.
	add("outer-300000-entries", "not an evx bundle: container: zip directory declares 300000 entries, over the limit of 3",
		rawZipDirectory(300_000, func(i int) string { return "x" }))
	// An outer container whose end record declares 3 entries in 141 bytes,
	// at offset 0 where a directory of 458,755 entries starts (archive/zip
	// reads from there when it finds a header) — again 3 modulo 65,536.
	{
		dir := rawZipDirectory(7<<16+3, func(i int) string { return "x" })
		dir = dir[:len(dir)-22-76] // the zip64 end records
		data := append(dir, zipEndRecords(3, 3*47, 0, int64(len(dir)), false)...)
		add("outer-ambiguous-directory", "not an evx bundle: not a zip container (ambiguous central directory", data)
	}
	return out
}

// TestOpenHostileBundles checks that each hostile bundle is refused by the
// check it targets, with less than hostileMaxAlloc bytes allocated. It must
// not run in parallel with other tests, whose allocations would count.
func TestOpenHostileBundles(t *testing.T) {
	for _, hb := range hostileBundles(t) {
		t.Run(hb.name, func(t *testing.T) {
			parent := t.TempDir()
			var err error
			alloc := allocatedBy(func() {
				var b *Bundle
				b, err = ReadBundle(bytes.NewReader(hb.data), int64(len(hb.data)))
				if err == nil {
					_, err = b.Open(context.Background(), hb.key, filepath.Join(parent, "out"), OpenOptions{})
				}
			})
			t.Logf("%d-byte bundle: %d bytes allocated: %v", len(hb.data), alloc, err)
			if err == nil || !strings.Contains(err.Error(), hb.want) {
				t.Errorf("got %v, want an error containing %q", err, hb.want)
			}
			if alloc > hostileMaxAlloc {
				t.Errorf("refusing it allocated %d bytes, over %d", alloc, hostileMaxAlloc)
			}
			assertNothingWritten(t, parent)
		})
	}
}

// TestRepeatedDeflate checks the hostile bundles' deflate shortcut against
// the real decompressor.
func TestRepeatedDeflate(t *testing.T) {
	unit := []byte("0123456789abcdefghijklmnopqrstu,") // 32 bytes
	copies := 3*(1<<20)/len(unit) + 17
	e := repeatedDeflate(t, []byte("head["), unit, copies, []byte("]tail"))
	got, err := io.ReadAll(flate.NewReader(bytes.NewReader(e.compressed)))
	if err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte("head["), bytes.Repeat(unit, copies)...), "]tail"...)
	if !bytes.Equal(got, want) || int64(len(want)) != e.size || sha256.Sum256(want) != e.sha256 || crc32.ChecksumIEEE(want) != e.crc {
		t.Errorf("the repeated stream decompresses to %d bytes, want %d as described (%d bytes)", len(got), len(want), e.size)
	}
}

// BenchmarkOpenHostile refuses each hostile bundle, beside opening a
// legitimate bundle of about the same size (one stored file), so
// that the two compare within one run. Record figures in docs/benchmarks.md.
//
//	go test ./crypto -run '^$' -bench OpenHostile -benchtime 5x
func BenchmarkOpenHostile(b *testing.B) {
	for _, hb := range hostileBundles(b) {
		b.Run(hb.name+"/hostile", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(hb.data)))
			out := filepath.Join(b.TempDir(), "out")
			for range b.N {
				bundle, err := ReadBundle(bytes.NewReader(hb.data), int64(len(hb.data)))
				if err == nil {
					_, err = bundle.Open(context.Background(), hb.key, out, OpenOptions{})
				}
				if err == nil || !strings.Contains(err.Error(), hb.want) {
					b.Fatalf("got %v, want an error containing %q", err, hb.want)
				}
			}
		})
		b.Run(hb.name+"/legitimate", func(b *testing.B) {
			size := max(1, len(hb.data)-2500) // what the envelope and age header add
			data, _ := sealTree(b, []testFile{{path: "disk.img", data: patterned(size, 7)}}, defaultSealOptions(hb.key, hb.key))
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			work := b.TempDir()
			b.ResetTimer()
			for i := range b.N {
				bundle, err := ReadBundle(bytes.NewReader(data), int64(len(data)))
				if err != nil {
					b.Fatal(err)
				}
				out := filepath.Join(work, fmt.Sprint(i))
				if _, err := bundle.Open(context.Background(), hb.key, out, OpenOptions{}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := os.RemoveAll(out); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
