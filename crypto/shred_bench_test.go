package crypto

import (
	"bytes"
	"crypto/rand"
	"io"
	"testing"
)

// BenchmarkShredLayer measures what the outer layer costs a gigabyte-class
// payload, next to a baseline in the same run: "copy" moves the same bytes
// from the same source through the same pipe between two goroutines, as a
// gateway moves a payload from the network to storage, without the layer.
// "encrypt" adds Encrypt on the writing side, "encrypt+decrypt" Decrypt on
// the reading side as well; "decrypt" and "decryptAt" read a layer held in
// memory (made before the timer starts) to io.Discard. Record figures in
// docs/benchmarks.md ("Outer layer").
//
//	go test ./crypto -run '^$' -bench ShredLayer -benchtime 3x -count 5
func BenchmarkShredLayer(b *testing.B) {
	const size = 1 << 30
	k := newShredKey(b)
	b.Run("copy-1GiB", func(b *testing.B) {
		benchPipe(b, size, size, nopWriteCloser, nil)
	})
	b.Run("encrypt-1GiB", func(b *testing.B) {
		benchPipe(b, size, size+ShredOverhead(size), k.Encrypt, nil)
	})
	b.Run("encrypt+decrypt-1GiB", func(b *testing.B) {
		benchPipe(b, size, size, k.Encrypt, k.Decrypt)
	})

	var layer []byte
	makeLayer := func(b *testing.B) []byte {
		if layer == nil {
			buf := bytes.NewBuffer(make([]byte, 0, size+ShredOverhead(size)))
			w, err := k.Encrypt(buf)
			if err == nil {
				_, err = io.Copy(w, io.LimitReader(newBenchSource(b), size))
			}
			if err == nil {
				err = w.Close()
			}
			if err != nil {
				b.Fatal(err)
			}
			layer = buf.Bytes()
		}
		return layer
	}
	b.Run("decrypt-1GiB", func(b *testing.B) {
		ct := makeLayer(b)
		b.SetBytes(size)
		cpu := startCPU(b)
		for range b.N {
			r, err := k.Decrypt(bytes.NewReader(ct))
			if err != nil {
				b.Fatal(err)
			}
			if n, err := io.Copy(io.Discard, r); err != nil || n != size {
				b.Fatal(n, err)
			}
		}
		cpu.report(b, size)
	})
	b.Run("decryptAt-1GiB", func(b *testing.B) {
		ct := makeLayer(b)
		buf := make([]byte, 1<<20)
		b.SetBytes(size)
		cpu := startCPU(b)
		for range b.N {
			ra, n, err := k.DecryptAt(bytes.NewReader(ct), int64(len(ct)))
			if err != nil {
				b.Fatal(err)
			}
			// io.Discard's ReadFrom would read in 8 KiB blocks, and age
			// allocates a 64 KiB chunk for every ReadAt.
			if n, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, io.NewSectionReader(ra, 0, n), buf); err != nil || n != size {
				b.Fatal(n, err)
			}
		}
		cpu.report(b, size)
	})
}

// benchPipe copies size bytes from a benchmark source, through enc on the
// writing goroutine, an io.Pipe, and dec on the reading one, to io.Discard.
// A nil dec reads the pipe as it is. The reading side must see want bytes.
func benchPipe(b *testing.B, size, want int64, enc func(io.Writer) (io.WriteCloser, error), dec func(io.Reader) (io.Reader, error)) {
	src := newBenchSource(b)
	b.SetBytes(size)
	cpu := startCPU(b)
	for range b.N {
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() {
			w, err := enc(pw)
			if err == nil {
				_, err = io.Copy(w, io.LimitReader(src, size))
			}
			if err == nil {
				err = w.Close()
			}
			pw.CloseWithError(err)
			done <- err
		}()
		var r io.Reader = pr
		var err error
		if dec != nil {
			r, err = dec(pr)
		}
		var n int64
		if err == nil {
			n, err = io.Copy(io.Discard, r)
		}
		pr.CloseWithError(io.ErrClosedPipe)
		if werr := <-done; err == nil {
			err = werr
		}
		if err != nil || n != want {
			b.Fatal(n, err)
		}
	}
	cpu.report(b, size)
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

func nopWriteCloser(w io.Writer) (io.WriteCloser, error) { return nopCloser{w}, nil }

// benchSource reads the same 1 MiB of random bytes over and over: random,
// so that nothing in the way can compress it, and without allocating.
type benchSource struct {
	block []byte
	off   int
}

func newBenchSource(b *testing.B) *benchSource {
	block := make([]byte, 1<<20)
	rand.Read(block)
	return &benchSource{block: block}
}

func (s *benchSource) Read(p []byte) (int, error) {
	n := copy(p, s.block[s.off:])
	s.off = (s.off + n) % len(s.block)
	return n, nil
}

// BenchmarkShredKey measures the per-bundle key work: a new shred key,
// its wrapping (ML-KEM-768 encapsulation) and its unwrapping
// (decapsulation), each with its CPU time per operation.
//
//	go test ./crypto -run '^$' -bench ShredKey -count 5
func BenchmarkShredKey(b *testing.B) {
	m, _ := newMasterKey(b)
	k := newShredKey(b)
	wrapped, err := m.Wrap(k)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		op   func() error
	}{
		{"new", func() error { _, err := NewShredKey(); return err }},
		{"wrap", func() error { _, err := m.Wrap(k); return err }},
		{"unwrap", func() error { _, err := m.Unwrap(wrapped); return err }},
	} {
		b.Run(c.name, func(b *testing.B) {
			cpu := startCPU(b)
			for range b.N {
				if err := c.op(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64((processCPU(b)-cpu.start).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}
