package storage_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"strings"
	"sync"
	"testing"

	"github.com/minio/minio-go/v7"

	"evx/storage"
	"evx/storage/storagetest"
)

// s3Proxy forwards requests to the S3 test server, except those that its
// fault function answers itself, and records the requests it sees.
type s3Proxy struct {
	addr string

	mu       sync.Mutex
	requests []string // "METHOD partNumber" of each request, "" for non-part requests
}

// newS3Proxy starts a proxy to the S3 server at target. fault, if not nil,
// sees each request first and returns true if it has answered it.
func newS3Proxy(t *testing.T, target string, fault func(w http.ResponseWriter, r *http.Request) bool) *s3Proxy {
	t.Helper()
	p := &s3Proxy{}
	rp := &httputil.ReverseProxy{
		// Requests that the client gives up on are expected; they are
		// not worth a log line.
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			w.WriteHeader(http.StatusBadGateway)
		},
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = target
			// The client signed the Host header it sent.
			pr.Out.Host = pr.In.Host
		},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.requests = append(p.requests, r.Method+" "+r.URL.Query().Get("partNumber"))
		p.mu.Unlock()
		if fault != nil && fault(w, r) {
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.addr = srv.Listener.Addr().String()
	return p
}

// count returns how many requests the proxy saw for part n (0: requests
// that are not part uploads) with method.
func (p *s3Proxy) count(method string, part int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	want := method + " "
	if part > 0 {
		want += fmt.Sprint(part)
	}
	n := 0
	for _, r := range p.requests {
		if r == want {
			n++
		}
	}
	return n
}

// isPart reports whether r uploads part n of a multipart upload.
func isPart(r *http.Request, n int) bool {
	return r.Method == http.MethodPut && r.URL.Query().Get("partNumber") == fmt.Sprint(n)
}

// s3Error answers r with an S3 error document, after reading its body (a
// server that answers before reading the body may have the client fail
// writing it instead of reading the answer).
func s3Error(w http.ResponseWriter, r *http.Request, status int, code string) {
	io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>injected by the test proxy</Message><Resource>%s</Resource></Error>`, code, r.URL.Path)
}

// checkNoUploads fails t if the bucket has an incomplete multipart upload.
func checkNoUploads(t *testing.T, c *minio.Client, bucket string) {
	t.Helper()
	for u := range c.ListIncompleteUploads(t.Context(), bucket, "", true) {
		if u.Err != nil {
			t.Fatal(u.Err)
		}
		t.Errorf("incomplete upload %s left behind for %q", u.UploadID, u.Key)
	}
}

// proxiedS3 returns an S3 backend that reaches the test server through a
// proxy with fault, its bucket, and an admin client of the server itself.
func proxiedS3(t *testing.T, fault func(w http.ResponseWriter, r *http.Request) bool) (*storage.S3, *s3Proxy, string, *minio.Client) {
	t.Helper()
	cfg := storagetest.S3Env(t)
	cfg.Bucket = storagetest.NewBucket(t, cfg, "evx-test-")
	c := storagetest.AdminClient(t, cfg)
	p := newS3Proxy(t, cfg.Endpoint, fault)
	cfg.Endpoint = p.addr
	cfg.PartSize = storage.MinPartSize
	cfg.PartConcurrency = 2
	s, err := storage.NewS3(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, p, cfg.Bucket, c
}

// A part that fails stops the upload: the part uploading beside it is
// cancelled, no later part is read or sent, the upload is aborted and
// nothing is visible.
func TestS3FailingPart(t *testing.T) {
	part1 := make(chan struct{})
	s, p, bucket, c := proxiedS3(t, func(w http.ResponseWriter, r *http.Request) bool {
		switch {
		case isPart(r, 1):
			// Never answered: only the client giving up ends it.
			close(part1)
			if _, err := io.Copy(io.Discard, r.Body); err == nil {
				<-r.Context().Done()
			}
			return true
		case isPart(r, 2):
			<-part1
			s3Error(w, r, http.StatusBadRequest, "BadDigest")
			return true
		}
		return false
	})
	const n = 5*storage.MinPartSize + 1
	input := storagetest.DataReader(1, n)
	counted := &countingReader{r: input}
	err := s.Create(t.Context(), "obj", counted, n)
	var resp minio.ErrorResponse
	if !errors.As(err, &resp) || resp.Code != "BadDigest" || !strings.Contains(err.Error(), "part 2 of 6") {
		t.Fatalf("Create with a failing part = %v, want part 2's BadDigest", err)
	}
	if _, err := s.Stat(t.Context(), "obj"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("Stat after the failed Create = %v, want ErrNotExist", err)
	}
	// Parts 1 and 2 were read, into the only two buffers, and neither
	// upload gave its buffer back.
	if counted.n != 2*storage.MinPartSize {
		t.Errorf("Create read %d bytes of input, want the 2 parts it sent", counted.n)
	}
	for part := 3; part <= 6; part++ {
		if k := p.count(http.MethodPut, part); k != 0 {
			t.Errorf("part %d was sent %d times after part 2 failed", part, k)
		}
	}
	if p.count(http.MethodDelete, 0) != 1 {
		t.Errorf("the upload was not aborted")
	}
	checkNoUploads(t, c, bucket)
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

var errSourceBroken = errors.New("source broken")

// brokenAfter returns n bytes of r and then errSourceBroken.
type brokenAfter struct {
	r io.Reader
	n int64
}

func (b *brokenAfter) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, errSourceBroken
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.r.Read(p)
	b.n -= int64(n)
	return n, err
}

// A source that fails after some parts were uploaded fails Create with the
// source's error; the upload is aborted and nothing is visible.
func TestS3FailingSource(t *testing.T) {
	s, p, bucket, c := proxiedS3(t, nil)
	const n = 4 * storage.MinPartSize
	for _, at := range []int64{0, storage.MinPartSize, 2*storage.MinPartSize + 7, n - 1} {
		key := fmt.Sprintf("obj-%d", at)
		err := s.Create(t.Context(), key, &brokenAfter{r: storagetest.DataReader(2, n), n: at}, n)
		if !errors.Is(err, errSourceBroken) {
			t.Fatalf("Create with the source failing at %d = %v, want the source's error", at, err)
		}
		if _, err := s.Stat(t.Context(), key); !errors.Is(err, storage.ErrNotExist) {
			t.Errorf("Stat after the failed Create = %v, want ErrNotExist", err)
		}
	}
	if k := p.count(http.MethodDelete, 0); k != 4 {
		t.Errorf("%d uploads aborted, want 4", k)
	}
	checkNoUploads(t, c, bucket)
}

// A Create cancelled while parts are in flight returns the context's error,
// and still aborts its upload.
func TestS3CancelledUpload(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	s, p, bucket, c := proxiedS3(t, func(w http.ResponseWriter, r *http.Request) bool {
		if isPart(r, 2) {
			// Cancelled while part 2 is being sent, and never answered.
			cancel()
			if _, err := io.Copy(io.Discard, r.Body); err == nil {
				<-r.Context().Done()
			}
			return true
		}
		return false
	})
	const n = 4 * storage.MinPartSize
	err := s.Create(ctx, "obj", storagetest.DataReader(3, n), n)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Create = %v, want context.Canceled", err)
	}
	if _, err := s.Stat(t.Context(), "obj"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("Stat after the cancelled Create = %v, want ErrNotExist", err)
	}
	if p.count(http.MethodDelete, 0) != 1 {
		t.Errorf("the upload was not aborted")
	}
	checkNoUploads(t, c, bucket)
}
