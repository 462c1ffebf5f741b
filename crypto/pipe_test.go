package crypto

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	mrand "math/rand/v2"
	"sync/atomic"
	"testing"
	"time"
)

// The payload hash of Open is computed from the reads decryption makes, in
// whatever order they come; it must equal the SHA-256 of the whole payload
// for every order, including none at all.
func TestPayloadHasherAnyReadOrder(t *testing.T) {
	const chunk = 64 << 10
	sizes := []int{0, 1, chunk - 1, chunk, chunk + 1, extractBufSize - 1, extractBufSize, extractBufSize + 1, 3*extractBufSize + 12345}
	type read struct{ off, n int }
	orders := map[string]func(size int, rng *mrand.Rand) []read{
		"none": func(int, *mrand.Rand) []read { return nil },
		"sequential": func(size int, _ *mrand.Rand) []read {
			var rs []read
			for off := 0; off < size; off += chunk {
				rs = append(rs, read{off, min(chunk, size-off)})
			}
			return rs
		},
		"end first, then overlapping from the start": func(size int, _ *mrand.Rand) []read {
			rs := []read{{size - min(size, 100), min(size, 100)}, {0, min(size, 4096)}}
			for off := 1000; off < size; off += chunk {
				rs = append(rs, read{off, min(chunk, size-off)})
			}
			return rs
		},
		"reverse": func(size int, _ *mrand.Rand) []read {
			var rs []read
			for end := size; end > 0; end -= chunk {
				rs = append(rs, read{max(0, end-chunk), min(chunk, end)})
			}
			return rs
		},
		"random": func(size int, rng *mrand.Rand) []read {
			var rs []read
			for range 50 {
				if size == 0 {
					break
				}
				off := rng.IntN(size)
				rs = append(rs, read{off, rng.IntN(size-off) + 1})
			}
			return rs
		},
	}
	for _, size := range sizes {
		data := make([]byte, size)
		rand.Read(data)
		want := sha256.Sum256(data)
		for name, order := range orders {
			rng := mrand.New(mrand.NewPCG(uint64(size), 1))
			p := newPayloadHasher(io.NewSectionReader(bytes.NewReader(data), 0, int64(size)))
			for _, r := range order(size, rng) {
				buf := make([]byte, r.n)
				n, err := p.ReadAt(buf, int64(r.off))
				if n != r.n || (err != nil && err != io.EOF) {
					t.Fatalf("size %d, %s: ReadAt(%d bytes at %d) = %d, %v", size, name, r.n, r.off, n, err)
				}
				if !bytes.Equal(buf, data[r.off:r.off+r.n]) {
					t.Fatalf("size %d, %s: ReadAt at %d returned the wrong bytes", size, name, r.off)
				}
			}
			got, err := p.finish(context.Background())
			if err != nil {
				t.Fatalf("size %d, %s: %v", size, name, err)
			}
			if got != want {
				t.Errorf("size %d, %s: hash %x, want %x", size, name, got, want)
			}
		}
	}
}

func TestPayloadHasherCancelled(t *testing.T) {
	data := make([]byte, 3*extractBufSize)
	p := newPayloadHasher(io.NewSectionReader(bytes.NewReader(data), 0, int64(len(data))))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.finish(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("finish after cancel: %v, want context.Canceled", err)
	}
}

// failingReader returns its data, then err.
type failingReader struct {
	data []byte
	err  error
	// reads counts calls to Read.
	reads atomic.Int64
}

func (f *failingReader) Read(p []byte) (int, error) {
	f.reads.Add(1)
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data[:min(len(f.data), 1000)])
	f.data = f.data[n:]
	return n, nil
}

func testBufs(n, size int) [][]byte {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, size)
	}
	return bufs
}

func TestReadAhead(t *testing.T) {
	const bufSize = 4096
	errBroken := errors.New("broken source")
	for _, size := range []int{0, 1, bufSize - 1, bufSize, bufSize + 1, 5*bufSize + 17} {
		for _, srcErr := range []error{io.EOF, errBroken} {
			data := make([]byte, size)
			rand.Read(data)
			ra := NewReadAhead(&failingReader{data: data, err: srcErr}, testBufs(3, bufSize))
			var got []byte
			var err error
			for {
				var b []byte
				b, err = ra.Next()
				// The bytes must stay intact while held, however far
				// the goroutine reads ahead.
				held := bytes.Clone(b)
				time.Sleep(100 * time.Microsecond)
				if !bytes.Equal(held, b) {
					t.Fatalf("size %d: held bytes were overwritten", size)
				}
				got = append(got, b...)
				if err != nil {
					break
				}
				if len(b) == 0 {
					t.Fatalf("size %d: Next returned no data and no error", size)
				}
			}
			ra.Close()
			if err != srcErr {
				t.Errorf("size %d: final error %v, want %v", size, err, srcErr)
			}
			if !bytes.Equal(got, data) {
				t.Errorf("size %d, %v: got %d bytes, want the %d written", size, srcErr, len(got), size)
			}
			if _, again := ra.Next(); again != srcErr {
				t.Errorf("size %d: Next after the end: %v, want %v", size, again, srcErr)
			}
		}
	}
}

// Close in the middle of a long source returns, and the source is no longer
// read afterwards.
func TestReadAheadCloseEarly(t *testing.T) {
	src := &failingReader{data: make([]byte, 1<<20), err: io.EOF}
	ra := NewReadAhead(src, testBufs(2, 4096))
	if _, err := ra.Next(); err != nil {
		t.Fatal(err)
	}
	ra.Close()
	reads := src.reads.Load()
	if len(src.data) == 0 {
		t.Fatal("the whole source was read ahead")
	}
	if reads != src.reads.Load() {
		t.Fatal("source read after Close returned")
	}
}

// blockingReader blocks in Read until release is closed.
type blockingReader struct {
	reading chan struct{}
	release chan struct{}
}

func (b *blockingReader) Read(p []byte) (int, error) {
	close(b.reading)
	<-b.release
	return 0, io.EOF
}

// Close waits for a read under way, so that the source is not in use when
// it returns.
func TestReadAheadCloseWaitsForRead(t *testing.T) {
	src := &blockingReader{reading: make(chan struct{}), release: make(chan struct{})}
	ra := NewReadAhead(src, testBufs(3, 10))
	<-src.reading
	closed := make(chan struct{})
	go func() { ra.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned while the source was still being read")
	case <-time.After(20 * time.Millisecond):
	}
	close(src.release)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return after the read ended")
	}
}

// errWriter accepts limit bytes, then fails.
type errWriter struct {
	limit int
	err   error
}

func (w *errWriter) Write(p []byte) (int, error) {
	if len(p) > w.limit {
		n := w.limit
		w.limit = 0
		return n, w.err
	}
	w.limit -= len(p)
	return len(p), nil
}

func TestAsyncWriterReportsErrors(t *testing.T) {
	errFull := errors.New("disk full")
	w := newAsyncWriter(&errWriter{limit: 10000, err: errFull}, 4096, 2)
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = w.Write(make([]byte, 1000))
	}
	if errClose := w.Close(); errClose != errFull {
		t.Errorf("Close: %v, want %v", errClose, errFull)
	}
	if err != nil && err != errFull {
		t.Errorf("Write: %v, want nil or %v", err, errFull)
	}

	var out bytes.Buffer
	w = newAsyncWriter(&out, 4096, 2)
	data := make([]byte, 3*4096+5)
	rand.Read(data)
	for i := 0; i < len(data); i += 1000 {
		if _, err := w.Write(data[i:min(i+1000, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), data) {
		t.Error("asyncWriter changed the data")
	}
}
