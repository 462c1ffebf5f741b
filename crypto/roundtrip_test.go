package crypto

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
)

// patterned returns n bytes that differ from chunk to chunk, so that a
// swapped or repeated chunk would not go unnoticed: a block whose length is
// prime repeats out of step with the 64 KiB chunks. The block is copied
// rather than computed byte by byte, which the race detector makes slow.
func patterned(n int, seed byte) []byte {
	block := make([]byte, 65521)
	for i := range block {
		block[i] = byte(i/251) ^ byte(i) ^ seed
	}
	b := make([]byte, n)
	for i := 0; i < n; i += copy(b[i:], block) {
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	sender := newTestKey(t, "DE/forensics")
	recipient := newTestKey(t, "FR/prosecutor")
	mt := time.Date(2025, 11, 2, 8, 30, 1, 123456789, time.UTC)
	files := []testFile{
		{path: "report.txt", data: []byte("the suspect's laptop\n"), mode: 0o644, mtime: mt},
		{path: "images/disk.img", data: patterned(3*ageChunk+17, 1), mode: 0o600, mtime: mt.Add(time.Minute)},
		{path: "images/notes/readme", data: []byte("x"), mode: 0o755, mtime: mt.Add(-48 * time.Hour)},
		{path: "read-only", data: []byte("keep"), mode: 0o400, mtime: mt},
		{path: "empty", data: nil, mode: 0o640, mtime: mt},
	}
	opts := defaultSealOptions(sender, recipient)
	data, sealed := sealTree(t, files, opts)

	b := readBundleBytes(t, data)
	if err := b.VerifySignature(); err != nil {
		t.Fatalf("VerifySignature: %v", err)
	}
	if err := b.VerifyPayloadHash(); err != nil {
		t.Fatalf("VerifyPayloadHash: %v", err)
	}
	env := b.Envelope
	want, _ := sealed.MarshalCanonical()
	if !bytes.Equal(b.EnvelopeJSON, want) {
		t.Errorf("envelope in the bundle differs from the one Seal returned:\n%s\n%s", b.EnvelopeJSON, want)
	}
	if env.Purpose != opts.Purpose || env.Handling != opts.Handling || env.TLP != opts.TLP ||
		env.LegalBasis != opts.LegalBasis || env.Case != opts.Case {
		t.Errorf("envelope fields %+v do not match the seal options", env)
	}
	if !env.Created.Equal(fixedNow()) || !env.RetainUntil.Equal(fixedNow().Add(opts.Retain)) {
		t.Errorf("created %v, retain until %v", env.Created, env.RetainUntil)
	}
	if env.Sender != (Party{Unit: "DE/forensics", Key: FormatSigningKey(sender.SigningPublicKey())}) {
		t.Errorf("sender %+v", env.Sender)
	}
	if len(env.Recipients) != 1 || env.Recipients[0] != (Party{Unit: "FR/prosecutor", Key: recipient.Recipient().String()}) {
		t.Errorf("recipients %+v", env.Recipients)
	}
	if got := containerEntries(t, data); strings.Join(got, " ") != "payload.age envelope.json envelope.sig" {
		t.Errorf("container entries %q", got)
	}
	// Nothing about the files is visible outside the payload.
	for _, f := range files {
		if bytes.Contains(data, []byte(filepath.Base(f.path))) {
			t.Errorf("file name %q appears in the clear in the bundle", f.path)
		}
	}

	out := filepath.Join(t.TempDir(), "out")
	res, err := b.Open(context.Background(), recipient, out, OpenOptions{
		ExpectSender: FormatSigningKey(sender.SigningPublicKey()),
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if !res.PayloadVerified {
		t.Error("a full open did not report the payload as verified")
	}
	if len(res.Files) != len(files) {
		t.Errorf("Open extracted %d files, want %d", len(res.Files), len(files))
	}
	checkExtracted(t, out, "evidence/", files)
	got := snapshotTree(t, out)
	if len(got) != 1+1+len(files)+2 { // out, evidence, the files, images and images/notes
		t.Errorf("output holds unexpected entries: %q", sortedKeys(got))
	}
}

// checkExtracted checks the content, mode and mtime of each file below dir.
func checkExtracted(t *testing.T, dir, prefix string, files []testFile) {
	t.Helper()
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(prefix+f.path))
		data, err := os.ReadFile(p)
		if err != nil {
			t.Error(err)
			continue
		}
		if !bytes.Equal(data, f.data) {
			t.Errorf("%s: content differs (%d bytes, want %d)", f.path, len(data), len(f.data))
		}
		info, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode() != f.mode {
			t.Errorf("%s: mode %v, want %v", f.path, info.Mode(), f.mode)
		}
		if !f.mtime.IsZero() && !info.ModTime().Equal(f.mtime) {
			t.Errorf("%s: mtime %v, want %v", f.path, info.ModTime(), f.mtime)
		}
	}
}

func TestMultipleRecipients(t *testing.T) {
	sender := newTestKey(t, "DE/forensics")
	recipients := []*UnitKey{
		newTestKey(t, "FR/prosecutor"),
		newTestKey(t, "NL/prosecutor"),
		newTestKey(t, ""),
	}
	files := []testFile{{path: "a.txt", data: []byte("alpha"), mode: 0o644}}
	data, env := sealTree(t, files, defaultSealOptions(sender, recipients...))
	if len(env.Recipients) != len(recipients) {
		t.Fatalf("envelope lists %d recipients", len(env.Recipients))
	}
	for i, r := range recipients {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			if env.Recipients[i].Key != r.Recipient().String() || env.Recipients[i].Unit != r.Unit {
				t.Errorf("recipient %d is %+v", i, env.Recipients[i])
			}
			_, out, _, err := openInto(t, data, r, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			checkExtracted(t, out, "evidence/", files)
		})
	}
	// The sender is not a recipient of its own bundle.
	_, _, parent, err := openInto(t, data, sender, OpenOptions{})
	if !errors.Is(err, ErrNotRecipient) {
		t.Errorf("sender opened its own bundle: %v", err)
	}
	assertNothingWritten(t, parent)
}

// TestFileSizeBoundaries seals single files whose sizes lie on age's 64 KiB
// chunk boundaries.
func TestFileSizeBoundaries(t *testing.T) {
	sender := newTestKey(t, "DE/forensics")
	recipient := newTestKey(t, "FR/prosecutor")
	for _, n := range []int{0, 1, ageChunk - 1, ageChunk, ageChunk + 1, 2*ageChunk - 1, 2 * ageChunk, 2*ageChunk + 1} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			files := []testFile{{path: "f.bin", data: patterned(n, byte(n)), mode: 0o600}}
			data, _ := sealTree(t, files, defaultSealOptions(sender, recipient))
			for _, only := range []string{"", "evidence/f.bin"} {
				res, out, _, err := openInto(t, data, recipient, OpenOptions{Only: only})
				if err != nil {
					t.Fatalf("Open (only %q): %v", only, err)
				}
				if res.Files[0].Size != int64(n) {
					t.Errorf("manifest size %d", res.Files[0].Size)
				}
				checkExtracted(t, out, "evidence/", files)
			}
		})
	}
}

// TestPayloadSizeBoundaries adjusts a file's size so that the inner archive
// (age's plaintext) lies exactly on a chunk boundary, where age's last-chunk
// handling and random access are most likely to go wrong.
func TestPayloadSizeBoundaries(t *testing.T) {
	sender := newTestKey(t, "DE/forensics")
	recipient := newTestKey(t, "FR/prosecutor")
	plainSize := func(data []byte) int64 {
		b := readBundleBytes(t, data)
		_, n, err := age.DecryptReaderAt(b.Payload(), b.Payload().Size(), recipient.Identity())
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, target := range []int64{ageChunk - 1, ageChunk, ageChunk + 1, 2*ageChunk - 1, 2 * ageChunk, 2*ageChunk + 1} {
		t.Run(fmt.Sprint(target), func(t *testing.T) {
			size := target - 1000
			var data []byte
			var files []testFile
			for range 4 {
				files = []testFile{{path: "f.bin", data: patterned(int(size), 7), mode: 0o644}}
				data, _ = sealTree(t, files, defaultSealOptions(sender, recipient))
				got := plainSize(data)
				if got == target {
					break
				}
				size += target - got
			}
			if got := plainSize(data); got != target {
				t.Fatalf("could not reach an inner archive of %d bytes (got %d)", target, got)
			}
			for _, only := range []string{"", "evidence/f.bin"} {
				_, out, _, err := openInto(t, data, recipient, OpenOptions{Only: only})
				if err != nil {
					t.Fatalf("Open (only %q): %v", only, err)
				}
				checkExtracted(t, out, "evidence/", files)
			}
		})
	}
}

func TestOpenOnly(t *testing.T) {
	sender := newTestKey(t, "DE/forensics")
	recipient := newTestKey(t, "FR/prosecutor")
	files := []testFile{
		{path: "a.txt", data: []byte("alpha"), mode: 0o644},
		{path: "sub/b.txt", data: []byte("beta"), mode: 0o600},
		{path: "sub/c.txt", data: []byte("gamma"), mode: 0o644},
	}
	data, _ := sealTree(t, files, defaultSealOptions(sender, recipient))
	res, out, _, err := openInto(t, data, recipient, OpenOptions{Only: "evidence/sub/b.txt"})
	if err != nil {
		t.Fatal(err)
	}
	if res.PayloadVerified {
		t.Error("a random-access open claims to have verified the whole payload")
	}
	if len(res.Files) != 1 || res.Files[0].Path != "evidence/sub/b.txt" {
		t.Errorf("extracted %+v", res.Files)
	}
	checkExtracted(t, out, "evidence/", files[1:2])
	if got := sortedKeys(snapshotTree(t, out)); strings.Join(got, " ") != ". evidence evidence/sub evidence/sub/b.txt" {
		t.Errorf("output holds %q", got)
	}

	for _, only := range []string{"evidence/missing", "evidence/SUB/b.txt", "evidence/sub", "../evidence/a.txt", "/evidence/a.txt"} {
		_, _, parent, err := openInto(t, data, recipient, OpenOptions{Only: only})
		if err == nil {
			t.Errorf("Only %q: opened", only)
		} else if !strings.Contains(err.Error(), fmt.Sprintf("%q", only)) {
			t.Errorf("Only %q: error %q does not name the path", only, err)
		}
		assertNothingWritten(t, parent)
	}
}

func TestOpenIntoEmptyExistingDir(t *testing.T) {
	sender := newTestKey(t, "DE/forensics")
	recipient := newTestKey(t, "FR/prosecutor")
	files := []testFile{{path: "a.txt", data: []byte("alpha"), mode: 0o644}}
	data, _ := sealTree(t, files, defaultSealOptions(sender, recipient))
	out := filepath.Join(t.TempDir(), "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := readBundleBytes(t, data).Open(context.Background(), recipient, out, OpenOptions{}); err != nil {
		t.Fatal(err)
	}
	checkExtracted(t, out, "evidence/", files)
}

func TestCollectFiles(t *testing.T) {
	dir := t.TempDir()
	writeTestTree(t, dir, []testFile{
		{path: "case/a.txt", data: []byte("a")},
		{path: "case/sub/b.txt", data: []byte("b")},
		{path: "single.txt", data: []byte("s")},
	})
	got, err := CollectFiles([]string{filepath.Join(dir, "case"), filepath.Join(dir, "single.txt")})
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, f := range got {
		paths = append(paths, f.Path)
	}
	if strings.Join(paths, " ") != "case/a.txt case/sub/b.txt single.txt" {
		t.Errorf("paths %q", paths)
	}

	t.Run("no arguments", func(t *testing.T) {
		if _, err := CollectFiles(nil); err == nil || !strings.Contains(err.Error(), "no files to seal") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("empty directory", func(t *testing.T) {
		empty := filepath.Join(t.TempDir(), "empty")
		if err := os.MkdirAll(filepath.Join(empty, "also-empty"), 0o755); err != nil {
			t.Fatal(err)
		}
		files, err := CollectFiles([]string{empty})
		if err == nil || !strings.Contains(err.Error(), "no files to seal") {
			t.Errorf("sealing an empty directory: %d files, error %v", len(files), err)
		}
	})
	t.Run("symlink", func(t *testing.T) {
		d := t.TempDir()
		writeTestTree(t, d, []testFile{{path: "target", data: []byte("t")}})
		if err := os.Symlink("target", filepath.Join(d, "link")); err != nil {
			t.Skip(err)
		}
		if _, err := CollectFiles([]string{d}); err == nil || !strings.Contains(err.Error(), "symbolic link") {
			t.Errorf("got %v", err)
		}
		if _, err := CollectFiles([]string{filepath.Join(d, "link")}); err == nil || !strings.Contains(err.Error(), "symbolic link") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("duplicate", func(t *testing.T) {
		d := t.TempDir()
		writeTestTree(t, d, []testFile{{path: "x/a.txt", data: []byte("1")}, {path: "y/a.txt", data: []byte("2")}})
		_, err := CollectFiles([]string{filepath.Join(d, "x", "a.txt"), filepath.Join(d, "y", "a.txt")})
		if err == nil || !strings.Contains(err.Error(), "duplicate file path") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("case duplicate", func(t *testing.T) {
		d := t.TempDir()
		writeTestTree(t, d, []testFile{{path: "x/A.txt", data: []byte("1")}, {path: "y/a.txt", data: []byte("2")}})
		_, err := CollectFiles([]string{filepath.Join(d, "x", "A.txt"), filepath.Join(d, "y", "a.txt")})
		if err == nil || !strings.Contains(err.Error(), "duplicate file path") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("missing", func(t *testing.T) {
		_, err := CollectFiles([]string{filepath.Join(t.TempDir(), "nope")})
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("got %v", err)
		}
	})
}

func TestSealRejectsBadOptions(t *testing.T) {
	sender := newTestKey(t, "DE/forensics")
	recipient := newTestKey(t, "FR/prosecutor")
	dir := t.TempDir()
	writeTestTree(t, dir, []testFile{{path: "a.txt", data: []byte("a")}})
	files, err := CollectFiles([]string{filepath.Join(dir, "a.txt")})
	if err != nil {
		t.Fatal(err)
	}
	classic, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(*SealOptions)
		files  []SourceFile
		want   string
	}{
		{"no sender", func(o *SealOptions) { o.Sender = nil }, files, "no sender key"},
		{"no recipients", func(o *SealOptions) { o.Recipients = nil }, files, "no recipients"},
		{"classic recipient", func(o *SealOptions) { o.Recipients = []PublicKey{{AgeRecipient: classic.Recipient().String()}} }, files, "not post-quantum"},
		{"unknown purpose", func(o *SealOptions) { o.Purpose = "curiosity" }, files, "accepted: criminal-investigation"},
		{"no legal basis", func(o *SealOptions) { o.LegalBasis = "" }, files, "legal basis is required"},
		{"no retention", func(o *SealOptions) { o.Retain = 0 }, files, "retain"},
		{"zero files", func(o *SealOptions) {}, nil, "no files to seal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := defaultSealOptions(sender, recipient)
			tc.mutate(&opts)
			var buf bytes.Buffer
			_, err := Seal(context.Background(), &buf, tc.files, opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if buf.Len() != 0 {
				t.Errorf("Seal wrote %d bytes before refusing its options", buf.Len())
			}
		})
	}
}

func TestSealFileChangedWhileSealing(t *testing.T) {
	sender := newTestKey(t, "DE/forensics")
	recipient := newTestKey(t, "FR/prosecutor")
	dir := t.TempDir()
	writeTestTree(t, dir, []testFile{{path: "a.txt", data: []byte("abc")}})
	files, err := CollectFiles([]string{filepath.Join(dir, "a.txt")})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a.txt"), []byte("abcdef"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Seal(context.Background(), &bytes.Buffer{}, files, defaultSealOptions(sender, recipient))
	if err == nil || !strings.Contains(err.Error(), "changed while it was being sealed") {
		t.Errorf("got %v", err)
	}
}

func TestSealCancelled(t *testing.T) {
	sender := newTestKey(t, "DE/forensics")
	recipient := newTestKey(t, "FR/prosecutor")
	dir := t.TempDir()
	writeTestTree(t, dir, []testFile{{path: "a.txt", data: []byte("abc")}})
	files, err := CollectFiles([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = Seal(ctx, &bytes.Buffer{}, files, defaultSealOptions(sender, recipient))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("got %v", err)
	}
}
