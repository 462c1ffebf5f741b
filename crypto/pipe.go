package crypto

import (
	"io"
	"sync"
)

// asyncWriter hands what is written to it to a goroutine that writes it to
// dst, so that the stages of sealing (hashing and archiving, encrypting,
// hashing and writing the ciphertext) run on different cores. Memory is
// bounded: depth buffers of bufSize bytes.
type asyncWriter struct {
	full chan []byte
	free chan []byte
	buf  []byte
	done chan struct{}

	mu  sync.Mutex
	err error // first error from dst; later writes fail with it
}

func newAsyncWriter(dst io.Writer, bufSize, depth int) *asyncWriter {
	w := &asyncWriter{
		full: make(chan []byte, depth),
		free: make(chan []byte, depth),
		done: make(chan struct{}),
	}
	for range depth {
		w.free <- make([]byte, 0, bufSize)
	}
	go func() {
		defer close(w.done)
		for b := range w.full {
			if w.failed() == nil {
				if _, err := dst.Write(b); err != nil {
					w.fail(err)
				}
			}
			w.free <- b[:0]
		}
	}()
	return w
}

func (w *asyncWriter) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
}

func (w *asyncWriter) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *asyncWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if err := w.failed(); err != nil {
			return n, err
		}
		if w.buf == nil {
			w.buf = <-w.free
		}
		c := copy(w.buf[len(w.buf):cap(w.buf)], p)
		w.buf = w.buf[:len(w.buf)+c]
		p = p[c:]
		n += c
		if len(w.buf) == cap(w.buf) {
			w.full <- w.buf
			w.buf = nil
		}
	}
	return n, nil
}

// Close flushes what is buffered, waits for the goroutine to write it, and
// returns the first write error. It does not close dst.
func (w *asyncWriter) Close() error {
	if w.buf != nil && len(w.buf) > 0 {
		w.full <- w.buf
	}
	w.buf = nil
	close(w.full)
	<-w.done
	return w.failed()
}
