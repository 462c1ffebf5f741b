package storage_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"

	"evx/storage"
	"evx/storage/storagetest"
)

func newS3(t *testing.T, cfg storage.S3Config) *storage.S3 {
	t.Helper()
	cfg.Bucket = storagetest.NewBucket(t, cfg, "evx-test-")
	s, err := storage.NewS3(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The suite runs with the smallest part size, so that its objects cross
// many part boundaries.
func TestS3Conformance(t *testing.T) {
	cfg := storagetest.S3Env(t)
	cfg.PartSize = storage.MinPartSize
	storagetest.Run(t, func(t *testing.T) storage.Backend { return newS3(t, cfg) })
}

// An object just over the default part size is a two-part upload.
func TestS3DefaultPartSize(t *testing.T) {
	s := newS3(t, storagetest.S3Env(t))
	const n = storage.DefaultPartSize + 1
	if err := s.Create(t.Context(), "obj", storagetest.DataReader(1, n), n); err != nil {
		t.Fatal(err)
	}
	o, err := s.Open(t.Context(), "obj")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	got, want := sha256.New(), sha256.New()
	if m, err := io.Copy(got, o); err != nil || m != n {
		t.Fatalf("read %d bytes: %v", m, err)
	}
	io.Copy(want, storagetest.DataReader(1, n))
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Errorf("object read back differs")
	}
}

// Failed multipart Creates abort their uploads, so that no parts are left
// costing storage.
func TestS3AbortsFailedUploads(t *testing.T) {
	cfg := storagetest.S3Env(t)
	cfg.PartSize = storage.MinPartSize
	cfg.Bucket = storagetest.NewBucket(t, cfg, "evx-test-")
	s, err := storage.NewS3(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	const n = 3*storage.MinPartSize + 1
	if err := s.Create(ctx, "short", io.LimitReader(storagetest.DataReader(2, n), n-1), n); !errors.Is(err, storage.ErrSizeMismatch) {
		t.Fatalf("short Create = %v", err)
	}
	if err := s.Create(ctx, "long", storagetest.DataReader(2, n+1), n); !errors.Is(err, storage.ErrSizeMismatch) {
		t.Fatalf("long Create = %v", err)
	}
	if err := s.Create(ctx, "exists", storagetest.DataReader(2, 1), 1); err != nil {
		t.Fatal(err)
	}
	c := storagetest.AdminClient(t, cfg)
	// Create's early existence check would refuse before uploading; put
	// the object in place only once Create has read a part, so the
	// conditional commit is what refuses it.
	r := &hookReader{r: storagetest.DataReader(3, n), at: storage.MinPartSize + 1, hook: func() {
		if _, err := c.PutObject(ctx, cfg.Bucket, "raced", strings.NewReader("x"), 1, minio.PutObjectOptions{}); err != nil {
			t.Error(err)
		}
	}}
	if err := s.Create(ctx, "raced", r, n); !errors.Is(err, storage.ErrExist) {
		t.Fatalf("Create raced by another writer = %v, want ErrExist", err)
	}
	for u := range c.ListIncompleteUploads(ctx, cfg.Bucket, "", true) {
		if u.Err != nil {
			t.Fatal(u.Err)
		}
		t.Errorf("incomplete upload left behind for %q", u.Key)
	}
	if info, err := s.Stat(ctx, "raced"); err != nil || info.Size != 1 {
		t.Errorf("the other writer's object = %v, %v; want it untouched", info, err)
	}
}

// hookReader calls hook once, when at bytes have been read.
type hookReader struct {
	r    io.Reader
	at   int64
	hook func()
	read int64
}

func (h *hookReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	before := h.read
	h.read += int64(n)
	if before < h.at && h.read >= h.at {
		h.hook()
	}
	return n, err
}

func TestS3Config(t *testing.T) {
	ok := storage.S3Config{Endpoint: "127.0.0.1:9000", Bucket: "b", AccessKey: "a", SecretKey: "s"}
	if _, err := storage.NewS3(ok); err != nil {
		t.Fatalf("NewS3(%+v): %v", ok, err)
	}
	for _, tc := range []struct {
		name   string
		change func(*storage.S3Config)
		want   string
	}{
		{"no endpoint", func(c *storage.S3Config) { c.Endpoint = "" }, "no endpoint"},
		{"scheme", func(c *storage.S3Config) { c.Endpoint = "http://127.0.0.1:9000" }, `"http://127.0.0.1:9000"`},
		{"no bucket", func(c *storage.S3Config) { c.Bucket = "" }, "no bucket"},
		{"no secret", func(c *storage.S3Config) { c.SecretKey = "" }, "secret key"},
		{"small part", func(c *storage.S3Config) { c.PartSize = storage.MinPartSize - 1 }, "part size"},
		{"CA without TLS", func(c *storage.S3Config) { c.CAFile = "ca.pem" }, "TLS is off"},
		{"missing CA", func(c *storage.S3Config) { c.UseTLS = true; c.CAFile = "/nonexistent/ca.pem" }, "CA file"},
		{"negative concurrency", func(c *storage.S3Config) { c.PartConcurrency = -1 }, "concurrency"},
	} {
		cfg := ok
		tc.change(&cfg)
		_, err := storage.NewS3(cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: NewS3 = %v, want an error mentioning %q", tc.name, err, tc.want)
		}
	}
}
