package storage_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"evx/storage"
	"evx/storage/storagetest"
)

// downConfig is the configuration of a backend on endpoint, a server that
// is not S3. With region set, minio-go does not first ask the server for
// the bucket's region (a request it does not retry), so every request is
// retried as against a server that was up when the backend started.
func downConfig(endpoint, region string) storage.S3Config {
	return storage.S3Config{Endpoint: endpoint, Bucket: "evx-down", Region: region, AccessKey: "access", SecretKey: "secret", PartSize: storage.MinPartSize}
}

// closedPort returns a loopback address on which connections are refused.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// A backend whose server refuses connections reports every call as
// ErrUnavailable, with the default limits.
func TestS3ConnectionRefused(t *testing.T) {
	addr := closedPort(t)
	for _, region := range []string{"", "us-east-1"} {
		t.Run("region="+region, func(t *testing.T) {
			s, err := storage.NewS3(downConfig(addr, region))
			if err != nil {
				t.Fatal(err)
			}
			storagetest.RunUnavailable(t, s)
		})
	}
}

// countingListener accepts connections on loopback and hands each to
// handle, counting them.
type countingListener struct {
	addr  string
	conns atomic.Int64
}

func newCountingListener(t *testing.T, handle func(net.Conn)) *countingListener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{addr: l.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			cl.conns.Add(1)
			wg.Go(func() { handle(c) })
		}
	})
	return cl
}

// Each request is sent at most S3Attempts times: a server that closes
// every connection at once costs that many connections per call, no more.
func TestS3AttemptsBounded(t *testing.T) {
	cl := newCountingListener(t, func(c net.Conn) { c.Close() })
	s, err := storage.NewS3(downConfig(cl.addr, "us-east-1"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, tc := range []struct {
		call string
		f    func() error
	}{
		{"Create", func() error { return s.Create(ctx, "k", strings.NewReader("data"), 4) }},
		{"Create of a multipart object", func() error {
			return s.Create(ctx, "k", storagetest.DataReader(1, storage.MinPartSize+1), storage.MinPartSize+1)
		}},
		{"Open", func() error { _, err := s.Open(ctx, "k"); return err }},
		{"Stat", func() error { _, err := s.Stat(ctx, "k"); return err }},
		{"List", func() error { _, err := s.List(ctx, "k"); return err }},
		{"Delete", func() error { return s.Delete(ctx, "k") }},
	} {
		before := cl.conns.Load()
		err := tc.f()
		if !errors.Is(err, storage.ErrUnavailable) {
			t.Errorf("%s = %v, want ErrUnavailable", tc.call, err)
		}
		// The server closes each connection only after counting it,
		// and the client gives up only after the close.
		if n := cl.conns.Load() - before; n != int64(storage.S3Attempts) {
			t.Errorf("%s made %d connections, want %d", tc.call, n, storage.S3Attempts)
		}
	}
}

// isTimeout reports whether err says that something timed out.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// A server that accepts connections and never answers cannot hold a call:
// the wait for its answer is bounded, and so is the number of attempts.
func TestS3BlackHole(t *testing.T) {
	stop := make(chan struct{})
	cl := newCountingListener(t, func(c net.Conn) {
		defer c.Close()
		<-stop
	})
	t.Cleanup(func() { close(stop) })
	for _, region := range []string{"", "us-east-1"} {
		t.Run("region="+region, func(t *testing.T) {
			s, err := storage.NewS3WithWait(downConfig(cl.addr, region), 200*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			storagetest.RunUnavailable(t, s)
			_, err = s.Stat(t.Context(), "k")
			if !isTimeout(err) {
				t.Errorf("Stat = %v, want a timeout", err)
			}
		})
	}
}

// fakeS3 is a minimal S3 server for one object of size bytes, "obj" in
// bucket "evx-down", whose handlers stall where a test says.
func fakeS3(t *testing.T, size int64, handle func(w http.ResponseWriter, r *http.Request) bool) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if handle(w, r) {
			return
		}
		h := w.Header()
		h.Set("ETag", `"0123456789abcdef0123456789abcdef"`)
		h.Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
		h.Set("Content-Length", fmt.Sprint(size))
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// A response body that stops coming fails the read that waits for it,
// once no byte has come for the wait bound.
func TestS3StalledDownload(t *testing.T) {
	const size = 1 << 20
	stop := make(chan struct{})
	srv := fakeS3(t, size, func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet {
			return false
		}
		// Some bytes of the range asked for, then nothing.
		var start, end int64
		fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &start, &end)
		w.Header().Set("ETag", `"0123456789abcdef0123456789abcdef"`)
		w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
		w.Header().Set("Content-Length", fmt.Sprint(end-start+1))
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, size))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(make([]byte, 1000))
		w.(http.Flusher).Flush()
		select {
		case <-stop:
		case <-r.Context().Done():
		}
		return true
	})
	t.Cleanup(func() { close(stop) })
	s, err := storage.NewS3WithWait(downConfig(srv.Listener.Addr().String(), "us-east-1"), 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	o, err := s.Open(t.Context(), "obj")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	n, err := io.Copy(io.Discard, o)
	if n != 1000 || !errors.Is(err, storage.ErrUnavailable) || !isTimeout(err) || !strings.Contains(err.Error(), `"obj"`) {
		t.Errorf("Read of a stalled body: %d bytes, %v; want 1000 bytes, then ErrUnavailable", n, err)
	}
	k, err := o.ReadAt(make([]byte, 5000), 1000)
	if !errors.Is(err, storage.ErrUnavailable) || !isTimeout(err) || !strings.Contains(err.Error(), `"obj" at 1000`) {
		t.Errorf("ReadAt of a stalled body: %d bytes, %v; want ErrUnavailable", k, err)
	}
}

// A request body that the server stops taking fails the upload once no
// byte has moved for the wait bound; the upload is then aborted.
func TestS3StalledUpload(t *testing.T) {
	stop := make(chan struct{})
	var parts, aborts atomic.Int64
	srv := fakeS3(t, 0, func(w http.ResponseWriter, r *http.Request) bool {
		q := r.URL.Query()
		switch {
		case r.Method == http.MethodHead:
			w.WriteHeader(http.StatusNotFound)
		case r.Method == http.MethodPost && q.Has("uploads"):
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><InitiateMultipartUploadResult><Bucket>evx-down</Bucket><Key>obj</Key><UploadId>upload-1</UploadId></InitiateMultipartUploadResult>`)
		case r.Method == http.MethodPut && q.Has("partNumber"):
			// The body is never read: once the socket buffers are
			// full, the client's writes stall.
			parts.Add(1)
			<-stop
		case r.Method == http.MethodDelete && q.Get("uploadId") == "upload-1":
			aborts.Add(1)
			w.WriteHeader(http.StatusNoContent)
		default:
			t.Errorf("unexpected request %s %s", r.Method, r.URL)
			w.WriteHeader(http.StatusNotImplemented)
		}
		return true
	})
	cfg := downConfig(srv.Listener.Addr().String(), "us-east-1")
	// Larger than what loopback sockets buffer (a few MiB each way).
	cfg.PartSize = 32 << 20
	cfg.PartConcurrency = 1
	s, err := storage.NewS3WithWait(cfg, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	const n = 32<<20 + 1
	err = s.Create(t.Context(), "obj", storagetest.DataReader(1, n), n)
	// The write times out, or the read that waits for the answer does
	// and the transport closes the connection under the write.
	if !errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), "part 1 of 2") {
		t.Errorf("Create with a stalled part upload = %v, want ErrUnavailable", err)
	}
	// Every request the client sent has been handled once the server
	// has closed.
	close(stop)
	srv.Close()
	if k := parts.Load(); k != int64(storage.S3Attempts) {
		t.Errorf("part 1 was sent %d times, want %d", k, storage.S3Attempts)
	}
	if aborts.Load() != 1 {
		t.Errorf("the upload was aborted %d times, want once", aborts.Load())
	}
}

// A server that answers every request with 503 SlowDown is unavailable.
func TestS3SlowDown(t *testing.T) {
	addr := fakeS3(t, 0, func(w http.ResponseWriter, r *http.Request) bool {
		s3Error(w, r, http.StatusServiceUnavailable, "SlowDown")
		return true
	}).Listener.Addr().String()
	s, err := storage.NewS3(downConfig(addr, "us-east-1"))
	if err != nil {
		t.Fatal(err)
	}
	storagetest.RunUnavailable(t, s)
}

// privateMinIO starts a MinIO server of its own with scripts/minio.sh and
// returns its configuration (without a bucket) and a function that stops
// it, which the test's cleanup also calls if the test has not.
func privateMinIO(t *testing.T) (storage.S3Config, func()) {
	t.Helper()
	storagetest.S3Env(t) // the binary is built where a test server runs
	out, err := exec.CommandContext(t.Context(), "../scripts/minio.sh", "start").Output()
	if err != nil {
		t.Fatalf("scripts/minio.sh start: %v", err)
	}
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "=")
		if ok {
			env[k] = v
		}
	}
	dir := env["EVX_MINIO_DIR"]
	if dir == "" || env["EVX_TEST_S3_ENDPOINT"] == "" {
		t.Fatalf("scripts/minio.sh start printed %q", out)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			if out, err := exec.Command("../scripts/minio.sh", "stop", dir).CombinedOutput(); err != nil {
				t.Errorf("scripts/minio.sh stop: %v\n%s", err, out)
			}
		})
	}
	t.Cleanup(stop)
	return storage.S3Config{
		Endpoint:  env["EVX_TEST_S3_ENDPOINT"],
		AccessKey: env["EVX_TEST_S3_ACCESS_KEY"],
		SecretKey: env["EVX_TEST_S3_SECRET_KEY"],
	}, stop
}

// A MinIO server that stops while the backend is in use: every call then
// reports ErrUnavailable, and so does reading an object opened before.
func TestS3ServerStopped(t *testing.T) {
	cfg, stop := privateMinIO(t)
	cfg.Bucket = "evx-stopped"
	// No cleanup removes the bucket: stopping the server removes its data.
	if err := storagetest.AdminClient(t, cfg).MakeBucket(t.Context(), cfg.Bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg.PartSize = storage.MinPartSize
	s, err := storage.NewS3(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	const n = 2*storage.MinPartSize + 1
	if err := s.Create(ctx, "down/object", storagetest.DataReader(5, n), n); err != nil {
		t.Fatal(err)
	}
	o, err := s.Open(ctx, "down/object")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if _, err := io.ReadFull(o, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}

	stop()

	storagetest.RunUnavailable(t, s)
	if k, err := o.ReadAt(make([]byte, 100), n/2); !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("ReadAt of an object opened before the server stopped = %d, %v; want ErrUnavailable", k, err)
	}
	// What the open stream had received before the server stopped may
	// still be read; after that, the read fails as unavailable.
	if _, err := io.Copy(io.Discard, o); err != nil && !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("Read of an object opened before the server stopped = %v; want ErrUnavailable", err)
	}
}
