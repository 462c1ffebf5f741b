package storage_test

import (
	"bytes"
	"io"
	"sync"
	"testing"

	"evx/storage/storagetest"
)

// ReadAt calls that continue one another are served from one streaming GET
// (see s3Object); these check that what they return is still exactly what
// ReadAt promises, whatever the pattern of calls around them.
func TestS3SequentialReadAt(t *testing.T) {
	s := newS3(t, storagetest.S3Env(t))
	const n = 2<<20 + 12345
	data := storagetest.Data(4, n)
	if err := s.Create(t.Context(), "obj", bytes.NewReader(data), n); err != nil {
		t.Fatal(err)
	}
	o, err := s.Open(t.Context(), "obj")
	if err != nil {
		t.Fatal(err)
	}

	// A sequential copy in 32 KiB calls, as io.Copy makes of a SectionReader.
	var got bytes.Buffer
	if _, err := io.CopyBuffer(struct{ io.Writer }{&got}, io.NewSectionReader(o, 0, n), make([]byte, 32<<10)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatal("sequential ReadAt copy differs from the object")
	}

	// Sequential runs broken by jumps back and forth, a short final read,
	// and reads past the end.
	const c = 100_000
	for _, off := range []int64{0, c, 2 * c, c / 2, c/2 + c, c/2 + 2*c, n - c - 7, n - 7, 5, 5 + c} {
		p := make([]byte, c)
		k, err := o.ReadAt(p, off)
		want := min(c, n-off)
		switch {
		case int64(k) != want:
			t.Errorf("ReadAt(%d at %d) read %d bytes, want %d (err %v)", c, off, k, want, err)
		case want < c && err != io.EOF:
			t.Errorf("ReadAt(%d at %d) short read with error %v, want io.EOF", c, off, err)
		case want == c && err != nil:
			t.Errorf("ReadAt(%d at %d): %v", c, off, err)
		case !bytes.Equal(p[:k], data[off:off+int64(k)]):
			t.Errorf("ReadAt(%d at %d) returned the wrong bytes", c, off)
		}
	}
	if k, err := o.ReadAt(make([]byte, 1), n); k != 0 || err != io.EOF {
		t.Errorf("ReadAt at the end = %d, %v; want 0, io.EOF", k, err)
	}

	// Parallel sequential readers of one object each read it whole.
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			var got bytes.Buffer
			if _, err := io.CopyBuffer(struct{ io.Writer }{&got}, io.NewSectionReader(o, 0, n), make([]byte, 256<<10)); err != nil {
				t.Error(err)
				return
			}
			if !bytes.Equal(got.Bytes(), data) {
				t.Error("parallel sequential ReadAt copy differs from the object")
			}
		})
	}
	wg.Wait()

	// Closing in the middle of a stream ends it; reads then fail.
	if _, err := o.ReadAt(make([]byte, 10), 1000); err != nil {
		t.Fatal(err)
	}
	if _, err := o.ReadAt(make([]byte, 10), 1010); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if k, err := o.ReadAt(make([]byte, 10), 1020); err == nil || k != 0 {
		t.Errorf("ReadAt after Close = %d, %v; want an error", k, err)
	}
}
