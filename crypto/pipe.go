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
	if len(w.buf) > 0 {
		w.full <- w.buf
	}
	w.buf = nil
	close(w.full)
	<-w.done
	return w.failed()
}

// ReadAhead reads a stream in its own goroutine, so that producing data
// and consuming it run on different cores: decrypting a payload and
// hashing and writing its files when opening, reading a payload and
// sending it when a gateway delivers one. It fills whole buffers, of those
// it is given, and hands a buffer's bytes over only once the previous ones
// are no longer in use; the caller may reuse the buffers once Close has
// returned.
type ReadAhead struct {
	full chan readChunk
	free chan []byte
	stop chan struct{}
	done chan struct{}
	held []byte // returned by the last Next; freed by the next call
	err  error
}

type readChunk struct {
	data []byte
	err  error
}

// NewReadAhead starts reading src into bufs (at least one).
func NewReadAhead(src io.Reader, bufs [][]byte) *ReadAhead {
	r := &ReadAhead{
		full: make(chan readChunk, len(bufs)),
		free: make(chan []byte, len(bufs)),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	for _, b := range bufs {
		r.free <- b[:cap(b)]
	}
	go r.run(src)
	return r
}

func (r *ReadAhead) run(src io.Reader) {
	defer close(r.done)
	for {
		var b []byte
		select {
		case b = <-r.free:
		case <-r.stop:
			return
		}
		// Fill the whole buffer: fewer, larger hand-offs.
		n := 0
		var err error
		for n < len(b) && err == nil {
			var m int
			m, err = src.Read(b[n:])
			n += m
		}
		select {
		case r.full <- readChunk{b[:n], err}:
		case <-r.stop:
			return
		}
		if err != nil {
			return
		}
	}
}

// Next returns the next bytes of src, valid until the following call to Next
// or Close, and once they are exhausted src's error: io.EOF at its end.
func (r *ReadAhead) Next() ([]byte, error) {
	if r.held != nil {
		r.free <- r.held
		r.held = nil
	}
	if r.err != nil {
		return nil, r.err
	}
	c := <-r.full
	r.err = c.err
	if len(c.data) == 0 {
		r.free <- c.data[:cap(c.data)]
		return nil, r.err
	}
	r.held = c.data[:cap(c.data)]
	return c.data, nil
}

// Close stops the goroutine and waits for it, so that src and the buffers
// are no longer in use: if a read of src is under way, Close returns when
// it does.
func (r *ReadAhead) Close() {
	close(r.stop)
	<-r.done
}
