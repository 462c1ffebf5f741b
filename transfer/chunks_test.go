package transfer

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
	"time"
)

func TestReadChunks(t *testing.T) {
	const size = 1000
	for _, n := range []int{0, 1, size - 1, size, size + 1, 3*size + 1, 10 * size} {
		data := bytes.Repeat([]byte("0123456789abcdefghi"), n/19+1)[:n]
		// OneByteReader: fill must gather many short reads into a chunk.
		chunks, stop := readChunks(iotest.OneByteReader(bytes.NewReader(data)), size, 3)
		var got []byte
		var last error
		for c := range chunks {
			if len(c.data) > size {
				t.Fatalf("n=%d: chunk of %d bytes, buffers are %d", n, len(c.data), size)
			}
			// The chunk must stay intact while held, however far the
			// reader runs ahead.
			held := bytes.Clone(c.data)
			time.Sleep(time.Millisecond)
			if !bytes.Equal(held, c.data) {
				t.Fatalf("n=%d: a held chunk was overwritten", n)
			}
			got = append(got, c.data...)
			last = c.err
			if c.err == nil && len(c.data) != size {
				t.Errorf("n=%d: short chunk (%d bytes) before the end", n, len(c.data))
			}
		}
		stop()
		if !bytes.Equal(got, data) || last != io.EOF {
			t.Errorf("n=%d: got %d bytes ending with %v, want %d ending with io.EOF", n, len(got), last, n)
		}
	}
}

func TestReadChunksSourceError(t *testing.T) {
	boom := errors.New("boom")
	src := io.MultiReader(bytes.NewReader(make([]byte, 2500)), iotest.ErrReader(boom))
	chunks, stop := readChunks(src, 1000, 3)
	defer stop()
	var total int
	for c := range chunks {
		total += len(c.data)
		if c.err != nil {
			if !errors.Is(c.err, boom) || total != 2500 {
				t.Errorf("ended with %v after %d bytes, want boom after 2500", c.err, total)
			}
			return
		}
	}
	t.Error("no chunk carried the source's error")
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

func TestReadChunksStopWaitsForRead(t *testing.T) {
	src := &blockingReader{reading: make(chan struct{}), release: make(chan struct{})}
	_, stop := readChunks(src, 10, 3)
	<-src.reading
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("stop returned while the source was still being read")
	case <-time.After(20 * time.Millisecond):
	}
	close(src.release)
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("stop did not return after the read ended")
	}
}
