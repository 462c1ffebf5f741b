package storage_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/minio/minio-go/v7"

	"evx/storage"
	"evx/storage/storagetest"
)

// forward sends r on to the S3 server at target and returns its answer.
func forward(r *http.Request, target string) (*http.Response, error) {
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme = "http"
	out.URL.Host = target
	// The client signed the Host header it sent.
	out.Host = r.Host
	return http.DefaultTransport.RoundTrip(out)
}

// dropConnection closes the client's connection without an answer.
func dropConnection(t *testing.T, w http.ResponseWriter) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		t.Errorf("hijacking the connection: %v", err)
		return
	}
	conn.Close()
}

// A Replace whose PUT the server carried out but whose answer was lost
// fails as unavailable storage, not as a version mismatch: the PUT is not
// sent again, which would have failed its condition against the object it
// had itself stored.
func TestS3ReplaceLostAnswer(t *testing.T) {
	cfg := storagetest.S3Env(t)
	var lose atomic.Bool
	s, p, _, _ := proxiedS3(t, func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPut || !lose.Load() {
			return false
		}
		resp, err := forward(r, cfg.Endpoint)
		if err != nil {
			t.Errorf("forwarding the PUT: %v", err)
		} else {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("the server answered the PUT with %s", resp.Status)
			}
		}
		dropConnection(t, w)
		return true
	})
	ctx := t.Context()
	v1, err := s.Replace(ctx, "pointer", []byte("one"), "")
	if err != nil {
		t.Fatal(err)
	}
	puts := p.count(http.MethodPut, 0)
	lose.Store(true)
	for _, tc := range []struct {
		data      string
		ifVersion string
	}{
		{"two", v1},
		{"three", ""}, // of another key, below
	} {
		key := "pointer"
		if tc.ifVersion == "" {
			key = "other"
		}
		v, err := s.Replace(ctx, key, []byte(tc.data), tc.ifVersion)
		if !errors.Is(err, storage.ErrUnavailable) || errors.Is(err, storage.ErrVersionMismatch) || v != "" {
			t.Errorf("Replace(%q) whose answer was lost = %q, %v; want ErrUnavailable", key, v, err)
		}
		puts++
		if n := p.count(http.MethodPut, 0); n != puts {
			t.Errorf("Replace(%q) sent its PUT %d times, want once", key, n-puts+1)
			puts = n
		}
		data, _, err := s.ReadVersion(ctx, key, 100)
		if err != nil || string(data) != tc.data {
			t.Errorf("after the lost answer, ReadVersion(%q) = %q, %v; want %q", key, data, err, tc.data)
		}
	}
}

// A conflicting concurrent write, which AWS S3 answers with 409
// ConditionalRequestConflict, is a version mismatch: nothing was stored.
func TestS3ReplaceConflict(t *testing.T) {
	var conflict atomic.Bool
	s, _, _, _ := proxiedS3(t, func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPut && conflict.Load() {
			s3Error(w, r, http.StatusConflict, "ConditionalRequestConflict")
			return true
		}
		return false
	})
	ctx := t.Context()
	v1, err := s.Replace(ctx, "pointer", []byte("one"), "")
	if err != nil {
		t.Fatal(err)
	}
	conflict.Store(true)
	for _, ifVersion := range []string{v1, ""} {
		_, err := s.Replace(ctx, "pointer", []byte("two"), ifVersion)
		if !errors.Is(err, storage.ErrVersionMismatch) || errors.Is(err, storage.ErrUnavailable) {
			t.Errorf("Replace answered ConditionalRequestConflict = %v, want ErrVersionMismatch", err)
		}
	}
}

// newVersionedS3 returns an S3 backend on a new bucket with versioning
// enabled, whose object versions are all removed at the end, and an admin
// client of its server.
func newVersionedS3(t *testing.T) (*storage.S3, string, *minio.Client) {
	t.Helper()
	cfg := storagetest.S3Env(t)
	cfg.Bucket = storagetest.NewBucket(t, cfg, "evx-test-")
	c := storagetest.AdminClient(t, cfg)
	if err := c.EnableVersioning(t.Context(), cfg.Bucket); err != nil {
		t.Fatal(err)
	}
	// Runs before NewBucket's cleanup, which removes only current objects.
	t.Cleanup(func() {
		ctx := context.Background()
		for o := range c.ListObjects(ctx, cfg.Bucket, minio.ListObjectsOptions{Recursive: true, WithVersions: true}) {
			if o.Err == nil {
				c.RemoveObject(ctx, cfg.Bucket, o.Key, minio.RemoveObjectOptions{VersionID: o.VersionID})
			}
		}
	})
	s, err := storage.NewS3(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, cfg.Bucket, c
}

// On a versioned bucket Replace compares with the current version only:
// after Delete that is a delete marker, which no ETag matches and which
// counts as no object. Each Replace keeps the object it replaced as a
// noncurrent version.
func TestS3ReplaceVersionedBucket(t *testing.T) {
	t.Run("Conformance", func(t *testing.T) {
		storagetest.RunReplace(t, func(t *testing.T) storage.Backend {
			s, _, _ := newVersionedS3(t)
			return s
		})
	})
	s, bucket, c := newVersionedS3(t)
	ctx := t.Context()
	v1, err := s.Replace(ctx, "pointer", []byte("one"), "")
	if err != nil {
		t.Fatal(err)
	}
	v2, err := s.Replace(ctx, "pointer", []byte("two"), v1)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "pointer"); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{v1, v2} {
		if _, err := s.Replace(ctx, "pointer", []byte("three"), v); !errors.Is(err, storage.ErrVersionMismatch) {
			t.Errorf("Replace over a delete marker with the version of an older object = %v, want ErrVersionMismatch", err)
		}
	}
	if _, _, err := s.ReadVersion(ctx, "pointer", 100); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("ReadVersion of a delete marker = %v, want ErrNotExist", err)
	}
	v3, err := s.Replace(ctx, "pointer", []byte("three"), "")
	if err != nil {
		t.Fatalf("Replace over a delete marker with no version: %v", err)
	}
	if data, v, err := s.ReadVersion(ctx, "pointer", 100); err != nil || string(data) != "three" || v != v3 {
		t.Errorf("ReadVersion = %q, %q, %v", data, v, err)
	}
	var objects, markers int
	for o := range c.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: "pointer", WithVersions: true}) {
		switch {
		case o.Err != nil:
			t.Fatal(o.Err)
		case o.IsDeleteMarker:
			markers++
		default:
			objects++
		}
	}
	if objects != 3 || markers != 1 {
		t.Errorf("the bucket keeps %d versions and %d delete markers of the key, want 3 and 1", objects, markers)
	}
}
