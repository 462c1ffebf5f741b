package crypto

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
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

// TestChunkReaderAt reads through chunkReaderAt at random offsets and
// lengths, across chunk boundaries and the end, and compares with the
// reader below it.
func TestChunkReaderAt(t *testing.T) {
	data := patterned(3*ageChunk+ageChunk/2, 5)
	src := bytes.NewReader(data)
	c := &chunkReaderAt{r: src, size: int64(len(data))}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 5000 {
		off := rng.Int64N(int64(len(data)) + 10)
		p := make([]byte, rng.IntN(2*ageChunk))
		n, err := c.ReadAt(p, off)
		q := make([]byte, len(p))
		wantN, wantErr := src.ReadAt(q, off)
		if n != wantN || !bytes.Equal(p[:n], q[:wantN]) || (n < len(p) && err == nil) {
			t.Fatalf("ReadAt(%d bytes, %d): %d, %v; want %d, %v", len(p), off, n, err, wantN, wantErr)
		}
	}
}

// TestOpenManySmallFiles bounds what opening a bundle of many small files
// allocates: age's DecryptReaderAt allocates a 64 KiB chunk on every read,
// and archive/zip reads a small file in one small read.
func TestOpenManySmallFiles(t *testing.T) {
	const files = 2000
	key := newTestKey(t, "FR/prosecutor")
	var tree []testFile
	for i := range files {
		tree = append(tree, testFile{path: fmt.Sprintf("f%04d.txt", i), data: patterned(100, byte(i))})
	}
	data, _ := sealTree(t, tree, defaultSealOptions(key, key))
	var res *OpenResult
	var err error
	alloc := allocatedBy(func() { res, _, _, err = openInto(t, data, key, OpenOptions{}) })
	if err != nil || len(res.Files) != files {
		t.Fatalf("open: %v", err)
	}
	t.Logf("opening %d files of 100 bytes allocated %d bytes", files, alloc)
	if alloc > 32<<20 {
		t.Errorf("over the limit of %d bytes", 32<<20)
	}
}
