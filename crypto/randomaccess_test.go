package crypto

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
)

// TestOpenOnlyRandomAccess proves that OpenOptions.Only decrypts only the
// parts of the payload it needs: opening one small file of a large bundle
// reads a small fraction of it, while a full open reads all of it.
func TestOpenOnlyRandomAccess(t *testing.T) {
	if testing.Short() {
		t.Skip("seals 32 MiB")
	}
	sender := newTestKey(t, "DE/forensics")
	recipient := newTestKey(t, "FR/prosecutor")
	// Large enough that reading it all dwarfs what random access needs,
	// small enough to stay quick under the race detector.
	const big = 16 << 20
	files := []testFile{
		{path: "a-disk.img", data: patterned(big, 1), mode: 0o600},
		{path: "b-note.txt", data: []byte("the password is under the keyboard\n"), mode: 0o644},
		{path: "c-disk.img", data: patterned(big, 2), mode: 0o600},
	}
	data, env := sealTree(t, files, defaultSealOptions(sender, recipient))
	if env.PayloadSize < 2*big {
		t.Fatalf("payload of %d bytes", env.PayloadSize)
	}

	open := func(opts OpenOptions) (int64, *OpenResult, string) {
		t.Helper()
		r := &countingReaderAt{r: bytes.NewReader(data)}
		b, err := ReadBundle(r, int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "out")
		res, err := b.Open(context.Background(), recipient, out, opts)
		if err != nil {
			t.Fatal(err)
		}
		return r.n.Load(), res, out
	}

	read, res, out := open(OpenOptions{Only: "evidence/b-note.txt"})
	t.Logf("random access read %d bytes of a %d-byte bundle", read, len(data))
	if read > 1<<20 {
		t.Errorf("opening one small file read %d bytes of a %d-byte bundle", read, len(data))
	}
	if len(res.Files) != 1 || res.PayloadVerified {
		t.Errorf("result %+v", res)
	}
	checkExtracted(t, out, "evidence/", files[1:2])

	read, res, out = open(OpenOptions{})
	if read < env.PayloadSize {
		t.Errorf("a full open read %d bytes, less than the %d-byte payload", read, env.PayloadSize)
	}
	if len(res.Files) != 3 || !res.PayloadVerified {
		t.Errorf("result %+v", res)
	}
	checkExtracted(t, out, "evidence/", files)
}
