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
